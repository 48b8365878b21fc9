from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from services.routing.domain import (
    FULLY_ONLINE,
    JOINT,
    RECEIVE_HERE_HANDLE_THERE,
    ApplicationFacts,
    Catalogue,
    LegTemplate,
    MaterialRequirement,
    Matter,
    Partner,
    PartnerAgreement,
    PartnerRegistry,
    RoutingLeg,
    Unroutable,
    decide_route,
)
from services.routing.workdays import WorkingCalendar

# Monday 2025-09-22, 10:00 in Beijing
MONDAY = datetime(2025, 9, 22, 2, 0, tzinfo=UTC)

FIXTURE_CATALOGUE = """
[[matter]]
code = "T-ONLINE"
name = "只能网办的事项"
subject = "PERSON"
modes = ["FULLY_ONLINE"]
promised_working_days = 2
statutory_working_days = 5
postal_delivery = false
required_materials = [{ code = "RESIDENT_ID", name = "居民身份证", essential = true }]

[[matter]]
code = "T-JOINT"
name = "两段联办的事项"
subject = "COMPANY"
modes = ["JOINT"]
promised_working_days = 7
statutory_working_days = 10
postal_delivery = true
legs = [{ step = "FIRST", working_days = 3 }, { step = "SECOND", working_days = 4 }]
"""

FIXTURE_PARTNERS = """
[[partner]]
partner_id = "430000"
division_code = "430000"
name = "湖南省"

[[partner]]
partner_id = "110000"
division_code = "110000"
name = "北京市"

[[partner]]
partner_id = "110100"
division_code = "110100"
name = "北京市市辖区"
received_in = ["430100"]

[divisions]
"110000" = "北京市"
"430000" = "湖南省"
"""


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load()


@pytest.fixture(scope="module")
def partners() -> PartnerRegistry:
    return PartnerRegistry.load()


@pytest.fixture(scope="module")
def calendar() -> WorkingCalendar:
    return WorkingCalendar()


@pytest.fixture
def fixture_catalogue(tmp_path) -> Catalogue:
    path = tmp_path / "catalogue.toml"
    path.write_text(FIXTURE_CATALOGUE)
    return Catalogue.load(path)


@pytest.fixture
def fixture_partners(tmp_path) -> PartnerRegistry:
    path = tmp_path / "partners.toml"
    path.write_text(FIXTURE_PARTNERS)
    return PartnerRegistry.load(path)


def facts(
    matter_code="KSTB-MKT-01",
    channel="WINDOW",
    receiving="430102",
    home="420102",
    received_at=MONDAY,
) -> ApplicationFacts:
    return ApplicationFacts("A-1", matter_code, channel, receiving, home, received_at)


VALID_MATTER = Matter(
    code="X",
    name="测试事项",
    subject="PERSON",
    modes=(FULLY_ONLINE,),
    promised_working_days=1,
    statutory_working_days=1,
    postal_delivery=False,
    required_materials=(),
    legs=(),
)


# --- catalogue -------------------------------------------------------------


def test_catalogue_has_the_named_matters(catalogue):
    names = {m.name for m in catalogue.all()}
    assert len(names) >= 10
    assert {
        "公司设立登记",
        "养老保险关系转移接续",
        "结婚登记",
        "跨省异地就医备案",
    } <= names


def test_catalogue_matter_fields(catalogue):
    company = catalogue.get("KSTB-MKT-01")
    assert company.subject == "COMPANY"
    assert company.promised_working_days == 3
    assert company.postal_delivery
    assert (
        MaterialRequirement("ARTICLES", "公司章程", True) in company.required_materials
    )


def test_pension_transfer_has_three_legs_of_fifteen_days(catalogue):
    pension = catalogue.get("KSTB-SOC-01")
    assert pension.modes == (JOINT,)
    assert pension.legs == (
        LegTemplate("CONTACT_LETTER", 15),
        LegTemplate("FUND_TRANSFER", 15),
        LegTemplate("COMPLETION", 15),
    )


def test_catalogue_codes_are_well_formed(catalogue):
    for m in catalogue.all():
        assert m.code.startswith("KSTB-")
        assert len(m.code) == len("KSTB-MKT-01")


def test_unknown_matter_code_is_none(catalogue):
    assert catalogue.get("KSTB-XXX-99") is None


def test_fixture_catalogue_loads(fixture_catalogue):
    assert [m.code for m in fixture_catalogue.all()] == ["T-ONLINE", "T-JOINT"]
    assert fixture_catalogue.get("T-JOINT").required_materials == ()


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"subject": "ROBOT"}, "subject must be one of"),
        ({"modes": ()}, "modes must be a non-empty subset of"),
        ({"modes": ("BY_PIGEON",)}, "modes must be a non-empty subset of"),
        ({"promised_working_days": 2}, "need 0 <= promised_working_days <= statutory_working_days"),  # above statutory
        ({"modes": (JOINT,), "legs": ()}, "legs must add up to promised_working_days"),
        ({"modes": (JOINT, FULLY_ONLINE), "legs": (LegTemplate("A", 1),)}, "a JOINT matter lists JOINT alone"),
        ({"legs": (LegTemplate("A", 1),)}, "only JOINT matters have legs"),
        (
            {
                "required_materials": (
                    MaterialRequirement("M", "a", True),
                    MaterialRequirement("M", "b", False),
                )
            },
            "material codes repeat",
        ),
    ],
)
def test_invalid_matters_rejected(changes, problem):
    with pytest.raises(ValueError, match=problem):
        replace(VALID_MATTER, **changes)


def test_duplicate_matter_code_rejected():
    with pytest.raises(ValueError, match="matter code X appears twice"):
        Catalogue([VALID_MATTER, VALID_MATTER])


# --- partner registry ------------------------------------------------------


def test_partners_are_their_division_codes(partners):
    for pid in ("430000", "420000", "360000", "440000", "450000", "520000", "500000"):
        partner = partners.get(pid)
        assert partner.division_code == partner.partner_id == pid
    assert partners.get("370100").name == "济南市"
    assert partners.get("999999") is None


@pytest.mark.parametrize(
    ("code", "known"),
    [
        ("430000", True),
        ("433101", True),
        ("650102", True),
        ("430102001001", True),  # village-level statistical code in Hunan
        ("710000", False),  # Taiwan is outside the table
        ("990000", False),
        ("43010", False),
        ("4301020010", False),
        ("43O102", False),
        ("４３０１０２", False),  # noqa: RUF001 - full-width digits are the point of this case
    ],
)
def test_known_divisions(partners, code, known):
    assert partners.is_known_division(code) is known


def test_home_in_hunan_is_decided_locally(partners):
    assert partners.deciding_partner("430102", "420102").partner_id == "430000"
    assert partners.deciding_partner("433101001001", "440103").partner_id == "430000"


def test_neighbour_province_decides_for_its_divisions(partners):
    assert partners.deciding_partner("420102", "430102").partner_id == "420000"
    assert partners.deciding_partner("500103", "430102").partner_id == "500000"


def test_point_to_point_only_for_files_received_in_xiangxi(partners):
    assert partners.deciding_partner("370102", "433101").partner_id == "370100"
    assert partners.deciding_partner("370102", "433101003002").partner_id == "370100"
    assert partners.deciding_partner("370102", "430102") is None
    # the agreement covers Jinan only, not the rest of Shandong
    assert partners.deciding_partner("370202", "433101") is None


def test_no_agreement_with_other_provinces(partners):
    assert partners.deciding_partner("110101", "430102") is None


def test_most_specific_partner_wins(fixture_partners):
    assert fixture_partners.deciding_partner("110101", "430102").partner_id == "110100"
    assert fixture_partners.deciding_partner("110101", "433101").partner_id == "110000"
    assert fixture_partners.partner_for_division("110101").partner_id == "110100"


def test_registry_rejects_unknown_partner_division():
    with pytest.raises(ValueError, match="partner 990000: unknown division 990000"):
        PartnerRegistry([PartnerAgreement(Partner("990000", "990000", "?"))], {})


def test_registry_rejects_duplicate_partner():
    hunan = PartnerAgreement(Partner("430000", "430000", "湖南省"))
    with pytest.raises(ValueError, match="partner 430000 appears twice"):
        PartnerRegistry([hunan, hunan], {"430000": "湖南省"})


# --- decide_route ----------------------------------------------------------


def test_window_application_is_received_here_and_handled_at_home(
    catalogue, partners, calendar
):
    decision = decide_route(facts(), catalogue, partners, calendar)
    assert decision.mode == RECEIVE_HERE_HANDLE_THERE
    assert decision.deciding_partner == "420000"
    assert decision.deciding_division == "420102"
    assert decision.legs == (RoutingLeg("420000", "420102", "DECIDE", 3),)
    assert decision.promised_working_days == 3


@pytest.mark.parametrize("channel", ["WINDOW", "TERMINAL", "PARTNER"])
def test_away_channels_receive_here(catalogue, partners, calendar, channel):
    decision = decide_route(facts(channel=channel), catalogue, partners, calendar)
    assert decision.mode == RECEIVE_HERE_HANDLE_THERE


@pytest.mark.parametrize("channel", ["PORTAL", "MOBILE"])
def test_online_channels_go_fully_online(catalogue, partners, calendar, channel):
    decision = decide_route(facts(channel=channel), catalogue, partners, calendar)
    assert decision.mode == FULLY_ONLINE


def test_window_falls_back_to_fully_online(fixture_catalogue, partners, calendar):
    decision = decide_route(
        facts("T-ONLINE", "WINDOW"), fixture_catalogue, partners, calendar
    )
    assert decision.mode == FULLY_ONLINE


def test_portal_falls_back_to_receive_here(catalogue, partners, calendar):
    # marriage registration is in person only
    decision = decide_route(
        facts("KSTB-CIV-01", "PORTAL"), catalogue, partners, calendar
    )
    assert decision.mode == RECEIVE_HERE_HANDLE_THERE


def test_decision_rights_never_move(catalogue, partners, calendar):
    for channel in ("WINDOW", "PORTAL", "PARTNER"):
        for home, partner in (("430102", "430000"), ("450103", "450000")):
            decision = decide_route(
                facts(channel=channel, receiving="440103", home=home),
                catalogue,
                partners,
                calendar,
            )
            assert decision.deciding_partner == partner
            assert decision.deciding_division == home


def test_twelve_digit_home_decided_at_county_level(catalogue, partners, calendar):
    decision = decide_route(
        facts(home="420102001002", receiving="430102003001"),
        catalogue,
        partners,
        calendar,
    )
    assert decision.deciding_division == "420102"


def test_pension_transfer_legs_alternate_from_home(catalogue, partners, calendar):
    decision = decide_route(
        facts("KSTB-SOC-01", "WINDOW", receiving="440103", home="430102"),
        catalogue,
        partners,
        calendar,
    )
    assert decision.mode == JOINT
    assert decision.deciding_partner == "430000"
    assert decision.legs == (
        RoutingLeg("430000", "430102", "CONTACT_LETTER", 15),
        RoutingLeg("440000", "440103", "FUND_TRANSFER", 15),
        RoutingLeg("430000", "430102", "COMPLETION", 15),
    )
    assert decision.promised_working_days == 45


def test_joint_whatever_the_channel(fixture_catalogue, partners, calendar):
    decision = decide_route(
        facts("T-JOINT", "MOBILE", receiving="433101", home="370102"),
        fixture_catalogue,
        partners,
        calendar,
    )
    assert decision.mode == JOINT
    assert decision.legs == (
        RoutingLeg("370100", "370102", "FIRST", 3),
        RoutingLeg("430000", "433101", "SECOND", 4),
    )


def test_joint_without_partner_at_receiving_division(catalogue, partners, calendar):
    with pytest.raises(Unroutable, match="receiving division 110101"):
        decide_route(
            facts("KSTB-SOC-01", receiving="110101", home="430102"),
            catalogue,
            partners,
            calendar,
        )


def test_point_to_point_routes_to_jinan(catalogue, partners, calendar):
    decision = decide_route(
        facts(receiving="433101", home="370102"), catalogue, partners, calendar
    )
    assert decision.deciding_partner == "370100"
    assert decision.deciding_division == "370102"


def test_point_to_point_does_not_cover_other_receivers(catalogue, partners, calendar):
    with pytest.raises(Unroutable) as caught:
        decide_route(
            facts(receiving="430102", home="370102"), catalogue, partners, calendar
        )
    assert "370102" in caught.value.reason
    assert "430102" in caught.value.reason


def test_unknown_matter_is_unroutable(catalogue, partners, calendar):
    with pytest.raises(Unroutable) as caught:
        decide_route(facts("NOPE"), catalogue, partners, calendar)
    assert "catalogue" in caught.value.reason


def test_unknown_channel_is_unroutable(catalogue, partners, calendar):
    with pytest.raises(Unroutable, match="channel"):
        decide_route(facts(channel="FAX"), catalogue, partners, calendar)


@pytest.mark.parametrize("field", ["home", "receiving"])
def test_unknown_division_is_unroutable_without_echoing_it(
    catalogue, partners, calendar, field
):
    typed_by_mistake = "430102199003071234"  # an ID number in the division field
    with pytest.raises(Unroutable) as caught:
        decide_route(facts(**{field: typed_by_mistake}), catalogue, partners, calendar)
    assert field in caught.value.reason
    assert typed_by_mistake not in caught.value.reason


def test_home_without_agreement_is_unroutable(catalogue, partners, calendar):
    with pytest.raises(Unroutable, match="no partner agreement"):
        decide_route(facts(home="110101"), catalogue, partners, calendar)


def test_due_at_is_end_of_beijing_working_day_in_utc(catalogue, partners, calendar):
    # received Friday 26 Sep; 3 working days: Sun 28 (make-up), Mon 29, Tue 30 Sep
    received = datetime(2025, 9, 26, 1, 0, tzinfo=UTC)
    decision = decide_route(facts(received_at=received), catalogue, partners, calendar)
    assert decision.due_at == datetime(2025, 9, 30, 15, 59, 59, 999000, tzinfo=UTC)


def test_due_at_skips_national_day(catalogue, partners, calendar):
    received = datetime(2025, 9, 30, 1, 0, tzinfo=UTC)
    decision = decide_route(
        facts("KSTB-MED-01", received_at=received), catalogue, partners, calendar
    )
    assert decision.due_at.astimezone(UTC).date() == date(2025, 10, 10)


def test_due_at_uses_fixture_calendar_overrides(tmp_path, catalogue, partners):
    path = tmp_path / "overrides.toml"
    path.write_text("non_working = [2027-11-16]\n")
    overridden = WorkingCalendar.load(path)
    received = datetime(2027, 11, 15, 2, 0, tzinfo=UTC)  # Monday
    decision = decide_route(
        facts("KSTB-SOC-03", received_at=received), catalogue, partners, overridden
    )
    assert decision.due_at.date() == date(2027, 11, 17)


def test_on_the_spot_matter_is_due_the_same_day(catalogue, partners, calendar):
    decision = decide_route(facts("KSTB-CIV-01"), catalogue, partners, calendar)
    assert decision.due_at == datetime(2025, 9, 22, 15, 59, 59, 999000, tzinfo=UTC)


def test_received_at_must_be_aware():
    with pytest.raises(ValueError, match="received_at must be timezone-aware"):
        facts(received_at=datetime(2025, 9, 22, 10, 0))
