"""The registries beside the catalogue: GB/T 2260 divisions (tongban.divisions), partners,
and windows with their authorisations (tongban.windows)."""

from datetime import date, datetime

import pytest

from services.routing.catalogue import Catalogue
from services.routing.domain import PartnerRegistry
from tongban import divisions, windows
from tongban.windows import CHECK_ORIGINALS, HAND_OVER, RECEIVE, WindowRegistry

TODAY = date(2026, 12, 4)


# ---------------------------------------------------------------- divisions

def test_the_division_list_is_complete_at_county_level():
    table = divisions.listed()
    assert len(table) > 3000  # the MCA list has about 3,200 codes at county level and above
    assert sum(code.endswith("0000") for code in table) == 34  # 31 mainland, Taiwan, Hong Kong, Macao
    assert divisions.EDITION == "MCA 2021-12"


@pytest.mark.parametrize(("code", "name"), [
    ("430000", "湖南省"),
    ("433100", "湘西土家族苗族自治州"),
    ("433101", "吉首市"),
    ("433101001000", "吉首市"),  # a township code by its county
    ("330113", "临平区"),  # created in 2021: the edition is that recent
    ("330103", None),  # 下城区, merged away in 2021
    ("439999", None),
    ("4301020", None),
])
def test_names_come_from_the_list(code, name):
    assert divisions.name(code) == name


@pytest.mark.parametrize(("ancestor", "code", "inside"), [
    ("430000", "433101001001", True),
    ("433100", "433101", True),
    ("370100", "370102", True),
    ("370100", "370202", False),
    ("430000", "440103", False),
])
def test_containment_follows_the_code_levels(ancestor, code, inside):
    assert divisions.contains(ancestor, code) is inside


def test_the_partner_registry_checks_divisions_against_the_list(tmp_path):
    path = tmp_path / "partners.toml"
    path.write_text('[[partner]]\npartner_id = "439999"\ndivision_code = "439999"\nname = "?"\n')
    with pytest.raises(ValueError, match=r"partners.toml: partner 439999: unknown division 439999$"):
        PartnerRegistry.load(path)
    path.write_text('[[partner]]\npartner_id = "430000"\ndivision_code = "430000"\n')
    with pytest.raises(ValueError, match=r"partners.toml: a partner lacks field name$"):
        PartnerRegistry.load(path)


def test_partners_name_their_kind_and_agreement():
    registry = PartnerRegistry.load()
    jinan = registry.get("370100")
    assert jinan.kind == "CITY"
    assert {p.kind for p in registry.all()} <= {"PROVINCE", "CITY"}


# ---------------------------------------------------------------- windows and authorisations

@pytest.fixture(scope="module")
def registry() -> WindowRegistry:
    return WindowRegistry.load()


def test_authorisations_name_catalogue_matters_and_partners(registry):
    catalogue, partners = Catalogue.load(), PartnerRegistry.load()
    for grant in registry.authorisations():
        assert all(code == windows.EVERY or catalogue.get(code) for code in grant.matters), grant
        assert grant.on_behalf_of == windows.EVERY or partners.get(grant.on_behalf_of), grant


def test_windows_sit_in_known_divisions(registry):
    assert all(divisions.is_known(w.division) for w in registry.windows())
    township = registry.window("HN-433101001-BM-01")
    assert len(township.division) == 12


@pytest.mark.parametrize(("window", "matter", "act", "on", "allowed", "reason"), [
    ("HN-430102-KSTB-01", "KSTB-MKT-01", RECEIVE, TODAY, True, ""),
    ("HN-430102-KSTB-01", "KSTB-NRA-01", HAND_OVER, TODAY, True, ""),
    ("HN-430102-KSTB-01", "KSTB-MKT-01", RECEIVE, date(2028, 1, 1), False,
     "the window's authorisation to RECEIVE this matter is not valid on 2028-01-01"),
    ("HN-433101001-BM-01", "KSTB-SOC-02", RECEIVE, date(2025, 6, 1), True, ""),
    ("HN-433101001-BM-01", "KSTB-SOC-02", RECEIVE, TODAY, False,
     "the window's authorisation to RECEIVE this matter is not valid on 2026-12-04"),
    ("HN-433101001-BM-01", "KSTB-MKT-01", RECEIVE, date(2025, 6, 1), False,
     "the window holds no authorisation to RECEIVE this matter"),
    ("HN-433101001-BM-01", "KSTB-SOC-02", CHECK_ORIGINALS, date(2025, 6, 1), False,
     "the window holds no authorisation to CHECK_ORIGINALS this matter"),
    ("HN-999999-X", "KSTB-MKT-01", RECEIVE, TODAY, False, "the window is not a registered 跨省通办 window"),
    ("HN-430102-KSTB-01", "KSTB-MKT-01", "STAMP", TODAY, False,
     "act must be one of RECEIVE, CHECK_ORIGINALS, HAND_OVER"),
])
def test_authorisation_by_window_matter_act_and_day(registry, window, matter, act, on, allowed, reason):
    verdict = registry.authorised(window, matter, act, on)
    assert (verdict.allowed, verdict.reason) == (allowed, reason)
    assert bool(verdict) is allowed


def test_a_verdict_says_on_whose_behalf(registry):
    assert windows.authorised("HN-433101-KSTB-01", "KSTB-PSB-01", RECEIVE, TODAY).on_behalf_of == ("370100", "430000")


@pytest.mark.parametrize(("division", "allowed"), [
    ("430102", True),
    ("430102001001", True),  # a township of the window's county
    ("430103", False),  # another county than the window's
    ("439999", False),
])
def test_intake_may_receive_only_at_the_windows_own_division(registry, division, allowed):
    at = datetime(2026, 12, 4, 10, 0, tzinfo=windows.SHANGHAI)
    assert registry.may_receive("HN-430102-KSTB-01", "KSTB-MED-01", division, at) is allowed


@pytest.mark.parametrize(("caller", "window_id", "speaks"), [
    ("changsha-window", "HN-430103-KSTB-01", True),
    ("xiangxi-window", "HN-433101-KSTB-01", True),
    ("xiangxi-window", "HN-430103-KSTB-01", False),  # another city's window
    ("changsha-window", "HN-430103-KSTB-01-ELSEWHERE", False),  # not a registered window
    ("hunan-portal", "HN-430103-KSTB-01", False),
])
def test_a_window_act_is_taken_only_from_a_system_of_that_window(registry, caller, window_id, speaks):
    assert registry.speaks_for(caller, window_id) is speaks


@pytest.mark.parametrize(("text", "problem"), [
    ('[[window]]\nwindow_id = "W"\ndivision = "439999"\nhost_authority = "x"\nchannels = ["WINDOW"]\nsystems = ["w"]\n',
     "window W: division is not a known GB/T 2260 code"),
    ('[[authorisation]]\nwindow_id = "W"\nacts = ["RECEIVE"]\nmatters = ["*"]\non_behalf_of = "*"\n'
     "valid_from = 2024-01-01\nvalid_until = 2025-01-01\n", "authorisation of window W: no such window"),
    ('[[window]]\nwindow_id = "W"\ndivision = "430102"\nhost_authority = "x"\nchannels = ["WINDOW"]\nsystems = ["w"]\n'
     '[[authorisation]]\nwindow_id = "W"\nacts = ["RECEIVE"]\nmatters = ["*"]\non_behalf_of = "*"\n'
     "valid_from = 2025-01-01\nvalid_until = 2024-01-01\n", "authorisation of window W: valid_until is before"),
    ('[[window]]\nwindow_id = "W"\ndivision = "430102"\nhost_authority = "x"\nchannels = ["WINDOW"]\nsystems = ["w"]\n'
     '[[authorisation]]\nwindow_id = "W"\nacts = ["SIGN"]\nmatters = ["*"]\non_behalf_of = "*"\n'
     "valid_from = 2024-01-01\nvalid_until = 2025-01-01\n", "authorisation of window W: acts must be"),
    ('[[window]]\nwindow_id = "W"\ndivision = "430102"\nhost_authority = "x"\nchannels = ["FAX"]\nsystems = ["w"]\n',
     "window W: channels must be a non-empty subset of"),
    ('[[window]]\nwindow_id = "W"\ndivision = "430102"\nchannels = ["WINDOW"]\nsystems = ["w"]\n',
     "an entry lacks field host_authority"),
    ('[[window]]\nwindow_id = "W"\ndivision = "430102"\nhost_authority = "x"\nchannels = ["WINDOW"]\nsystems = []\n',
     "window W: systems must name at least one caller"),
    ('[[window]]\nwindow_id = "W"\ndivision = "430102"\nhost_authority = "x"\nchannels = ["WINDOW"]\n',
     "an entry lacks field systems"),
])
def test_a_broken_registry_file_is_refused_with_the_file_and_entry(tmp_path, text, problem):
    path = tmp_path / "windows.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"windows\.toml: ") as caught:
        WindowRegistry.load(path)
    assert str(caught.value).startswith(f"{path}: {problem}")
