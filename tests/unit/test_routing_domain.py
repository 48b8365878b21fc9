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
from tongban import divisions
from tongban.workdays import WorkingCalendar

# Monday 2025-09-22, 10:00 in Beijing
MONDAY = datetime(2025, 9, 22, 2, 0, tzinfo=UTC)

ENTRY = """
invented = true
source = "测试清单"
department = "测试部门"
level = "COUNTY"
legal_basis = ["《测试条例》"]
acceptance_conditions = []
fee = "不收费"
result_type = "REGISTRATION"
guide = "测试指南"
"""

FIXTURE_CATALOGUE = f"""
[[matter]]
code = "T-ONLINE"
name = "只能网办的事项"
subject = "PERSON"
modes = ["FULLY_ONLINE"]
place = "HOUSEHOLD"
promised_working_days = 2
statutory_working_days = 5
postal_delivery = false
required_materials = [{{ code = "RESIDENT_ID", name = "居民身份证", essential = true }}]
{ENTRY}
[[matter]]
code = "T-JOINT"
name = "两段联办的事项"
subject = "COMPANY"
modes = ["JOINT"]
place = "HOUSEHOLD"
promised_working_days = 7
statutory_working_days = 10
postal_delivery = true
required_materials = []
legs = [{{ step = "FIRST", working_days = 3 }}, {{ step = "SECOND", working_days = 4, place = "RESIDENCE" }}]
{ENTRY}
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
partner_id = "110101"
division_code = "110101"
name = "北京市东城区"
kind = "COUNTY"
received_in = ["430100"]
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
    places=None,
) -> ApplicationFacts:
    return ApplicationFacts("A-1", matter_code, channel, receiving, home, received_at, places or {})


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
    assert len(names) >= 30
    assert {
        "内资企业及分支机构设立登记",
        "企业职工基本养老保险关系转移接续",
        "结婚登记",
        "跨省异地就医备案",
        "不动产抵押登记",
        "排污许可",
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
    assert pension.place == "INSURED_AFTER"
    assert pension.legs == (
        LegTemplate("CONTACT_LETTER", 15, "INSURED_AFTER"),
        LegTemplate("FUND_TRANSFER", 15, "INSURED_BEFORE"),
        LegTemplate("COMPLETION", 15, "INSURED_AFTER"),
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
        ("110101", True),
        ("439999", False),  # shaped like a Hunan code, but no such division
        ("110100", False),  # 北京市市辖区 is no longer listed
        ("710000", True),  # in GB/T 2260; no partner agreement covers it (routing says so)
        ("990000", False),
        ("43010", False),
        ("4301020010", False),
        ("43O102", False),
        ("４３０１０２", False),  # noqa: RUF001 - full-width digits are the point of this case
    ],
)
def test_known_divisions(code, known):
    assert divisions.is_known(code) is known


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
    assert fixture_partners.deciding_partner("110101", "430102").partner_id == "110101"
    assert fixture_partners.deciding_partner("110101", "433101").partner_id == "110000"
    assert fixture_partners.partner_for_division("110101").partner_id == "110101"
    assert fixture_partners.partner_for_division("110102").partner_id == "110000"


def test_registry_rejects_unknown_partner_division():
    with pytest.raises(ValueError, match="partner 990000: unknown division 990000"):
        PartnerRegistry([PartnerAgreement(Partner("990000", "990000", "?"))])


def test_registry_rejects_duplicate_partner():
    hunan = PartnerAgreement(Partner("430000", "430000", "湖南省"))
    with pytest.raises(ValueError, match="partner 430000 appears twice"):
        PartnerRegistry([hunan, hunan])


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


# --- places of handling ----------------------------------------------------

# one division per kind, each decided by a different partner; the home division (Beijing)
# has no agreement, so a decision there would be unroutable
PLACES = {
    "HOUSEHOLD": "420102",
    "RESIDENCE": "440103",
    "INSURED_BEFORE": "360102",
    "INSURED_AFTER": "450103",
    "ENTERPRISE": "500103",
    "PROPERTY": "520102",
}


def matter_at(place: str, legs: tuple[LegTemplate, ...] = ()) -> Matter:
    days = sum(leg.working_days for leg in legs) or 1
    modes = (JOINT,) if legs else (FULLY_ONLINE, RECEIVE_HERE_HANDLE_THERE)
    return replace(VALID_MATTER, code="T-PLACE", place=place, modes=modes, legs=legs,
                   promised_working_days=days, statutory_working_days=days)


def route_at(place, partners, calendar, legs=(), **changes):
    catalogue = Catalogue([matter_at(place, legs)])
    return decide_route(facts("T-PLACE", **{"home": "110101", "places": PLACES, **changes}),
                        catalogue, partners, calendar)


@pytest.mark.parametrize(
    ("place", "division", "partner"),
    [
        ("HOUSEHOLD", "420102", "420000"),
        ("RESIDENCE", "440103", "440000"),
        ("INSURED_BEFORE", "360102", "360000"),
        ("INSURED_AFTER", "450103", "450000"),
        ("ENTERPRISE", "500103", "500000"),
        ("PROPERTY", "520102", "520000"),
        ("ANYWHERE", "430102", "430000"),  # 全国通办: where the file was received
    ],
)
def test_the_place_rule_names_the_deciding_division(partners, calendar, place, division, partner):
    decision = route_at(place, partners, calendar)
    assert (decision.deciding_division, decision.deciding_partner) == (division, partner)
    assert decision.legs == (RoutingLeg(partner, division, "DECIDE", 1),)


@pytest.mark.parametrize("place", [p for p in PLACES])
def test_a_v1_application_has_its_home_division_stand_for_the_place(partners, calendar, place):
    decision = route_at(place, partners, calendar, home="420102", places={})
    assert decision.deciding_division == "420102"


def test_anywhere_ignores_the_home_division_of_a_v1_application(partners, calendar):
    decision = route_at("ANYWHERE", partners, calendar, home="110101", places={}, receiving="433101")
    assert (decision.deciding_division, decision.deciding_partner) == ("433101", "430000")


@pytest.mark.parametrize("place", [p for p in PLACES])
def test_a_missing_place_is_unroutable_with_the_kind_it_needs(partners, calendar, place):
    others = {kind: code for kind, code in PLACES.items() if kind != place}
    with pytest.raises(Unroutable) as caught:
        route_at(place, partners, calendar, places=others)
    assert caught.value.reason == (f"the matter is handled at the {place} place; "
                                   f"the application names no {place} division")


def test_an_unknown_place_division_is_unroutable_without_echoing_it(partners, calendar):
    with pytest.raises(Unroutable) as caught:
        route_at("PROPERTY", partners, calendar, places={**PLACES, "PROPERTY": "439999"})
    assert caught.value.reason == "PROPERTY division is not a known GB/T 2260 code"


def test_a_place_without_an_agreement_is_unroutable_naming_the_kind(partners, calendar):
    with pytest.raises(Unroutable) as caught:
        route_at("HOUSEHOLD", partners, calendar, places={**PLACES, "HOUSEHOLD": "110101"})
    assert caught.value.reason == "no partner agreement covers HOUSEHOLD division 110101 for files received in 430102"


def test_a_twelve_digit_place_is_decided_at_county_level(partners, calendar):
    decision = route_at("RESIDENCE", partners, calendar, places={**PLACES, "RESIDENCE": "440103001002"})
    assert decision.deciding_division == "440103"


def test_joint_legs_run_at_their_own_places_whoever_received_the_file(catalogue, partners, calendar):
    # received in Hubei, a third place: the legs are still the old and new insured places'
    decision = decide_route(
        facts("KSTB-SOC-01", receiving="420102", home="110101",
              places={"INSURED_BEFORE": "440103", "INSURED_AFTER": "430102"}),
        catalogue, partners, calendar)
    assert (decision.deciding_partner, decision.deciding_division) == ("430000", "430102")
    assert decision.legs == (
        RoutingLeg("430000", "430102", "CONTACT_LETTER", 15),
        RoutingLeg("440000", "440103", "FUND_TRANSFER", 15),
        RoutingLeg("430000", "430102", "COMPLETION", 15),
    )


def test_a_joint_leg_without_its_place_is_unroutable(catalogue, partners, calendar):
    with pytest.raises(Unroutable, match="names no INSURED_BEFORE division"):
        decide_route(facts("KSTB-SOC-01", places={"INSURED_AFTER": "430102"}), catalogue, partners, calendar)


def test_marriage_registration_is_decided_where_the_couple_appears(catalogue, partners, calendar):
    decision = decide_route(facts("KSTB-CIV-01", receiving="440103", home="420102"), catalogue, partners, calendar)
    assert (decision.deciding_partner, decision.deciding_division) == ("440000", "440103")


def test_a_division_no_partner_covers_is_unroutable(catalogue, partners, calendar):
    with pytest.raises(Unroutable, match="no partner agreement covers home division 710000"):
        decide_route(facts(home="710000"), catalogue, partners, calendar)


@pytest.mark.parametrize("channel", ["WINDOW", "PORTAL"])
def test_every_catalogue_matter_routes_when_its_places_are_given(catalogue, partners, calendar, channel):
    for matter in catalogue.all():
        decision = decide_route(facts(matter.code, channel, places=PLACES), catalogue, partners, calendar)
        assert decision.mode in matter.modes
        assert sum(leg.working_days for leg in decision.legs) == matter.promised_working_days
