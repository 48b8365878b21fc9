"""Routing's rules through its handler, with the catalogue, partner registry and calendar it
runs with: one decision per application, published, and the work done after it."""

from datetime import UTC, datetime

import pytest

from services.routing import handlers
from services.routing.domain import Catalogue, MaterialRequirement, Partner, PartnerAgreement, PartnerRegistry
from services.routing.workdays import WorkingCalendar
from tongban.handling import Event, Outcome

APP = "TBUNIT"
MONDAY = datetime(2025, 9, 22, 2, 0, tzinfo=UTC)  # 10:00 in Beijing
RULES = (Catalogue.load(), PartnerRegistry.load(), WorkingCalendar.load())
RECEIVED = "tongban.application.ApplicationReceived"
NAME, ID_NUMBER = "张三", "420106198506123417"


def received(**changes) -> dict:
    return {"application_id": APP, "matter_code": "KSTB-MED-01", "channel": "PORTAL", "receiving_division": "430102",
            "home_division": "420106",
            "applicant": {"kind": "PERSON", "name": NAME, "id_number": ID_NUMBER, "phone": None},
            "materials": [], "delivery_method": "ELECTRONIC", "postal_address": None, "submitted_at": MONDAY,
            **changes}


async def route(**changes) -> Outcome:
    body = received(**changes)
    # Handlers are made inside each test (not at import) so that mutation testing sees which test runs them.
    return await handlers.make_handlers(*RULES)[RECEIVED](Event("id-1", RECEIVED, APP, body, {"occurred_at": MONDAY},
                                          "tongban.application.received"), None)


def test_routing_reads_received_applications_only():
    assert handlers.INPUTS == ["tongban.application.received"]
    assert list(handlers.make_handlers(*RULES)) == [RECEIVED]


async def test_a_routable_application_is_routed_to_its_home_authority_and_published():
    outcome = await route()
    [emit] = outcome.emits
    assert (emit.topic, emit.event_type, emit.key) == (
        "tongban.application.routed", "tongban.application.ApplicationRouted", APP)
    assert emit.payload == {
        "application_id": APP, "matter_code": "KSTB-MED-01", "mode": "FULLY_ONLINE",
        "deciding_partner": "420000", "deciding_division": "420106",
        "legs": [{"partner_id": "420000", "division_code": "420106", "step": "DECIDE", "working_days": 2}],
        "promised_working_days": 2,
        # two working days after Monday, to the last millisecond of Wednesday in Beijing
        "due_at": datetime(2025, 9, 24, 15, 59, 59, 999000, tzinfo=UTC),
    }


async def test_the_routing_decision_is_kept_and_the_work_is_done():
    outcome = await route()
    assert outcome.state == {"decision": outcome.emits[0].payload}
    assert outcome.finished is True


async def test_a_window_application_is_received_here_and_handled_there():
    outcome = await route(channel="WINDOW")
    assert outcome.emits[0].payload["mode"] == "RECEIVE_HERE_HANDLE_THERE"


async def test_a_joint_matter_gets_its_legs_alternating_from_home():
    outcome = await route(matter_code="KSTB-SOC-01", channel="WINDOW")
    payload = outcome.emits[0].payload
    assert payload["mode"] == "JOINT"
    assert [leg["partner_id"] for leg in payload["legs"]][:2] == ["420000", "430000"]
    assert all(set(leg) == {"partner_id", "division_code", "step", "working_days"} for leg in payload["legs"])


@pytest.mark.parametrize(("changes", "reason"), [
    ({"matter_code": "KSTB-NOPE-99"}, "matter code is not in the catalogue"),
    ({"home_division": "990000"}, "home division is not a known GB/T 2260 code"),
    ({"home_division": "370102", "receiving_division": "430102"},
     "no partner agreement covers home division 370102 for files received in 430102"),
])
async def test_an_unroutable_application_is_published_with_its_reason_and_the_work_is_done(changes, reason):
    outcome = await route(**changes)
    [emit] = outcome.emits
    assert (emit.topic, emit.event_type, emit.key) == (
        "tongban.application.routed", "tongban.application.ApplicationUnroutable", APP)
    assert emit.payload == {"application_id": APP, "matter_code": changes.get("matter_code", "KSTB-MED-01"),
                            "reason": reason}
    assert outcome.state == {"unroutable": reason}
    assert outcome.finished is True


async def test_an_unroutable_reason_never_echoes_personal_data_typed_into_a_field():
    outcome = await route(home_division=ID_NUMBER, channel=NAME)
    reason = outcome.emits[0].payload["reason"]
    assert ID_NUMBER not in reason
    assert NAME not in reason
    assert ID_NUMBER not in repr(outcome.state)
    assert NAME not in repr(outcome.state)


async def test_routing_keeps_no_personal_data():
    outcome = await route()
    assert NAME not in repr(outcome.state)
    assert ID_NUMBER not in repr(outcome.state)


# ---------------------------------------------------------------------------- the data files

def test_the_catalogue_file_gives_each_matter_its_materials_and_postal_delivery(tmp_path):
    path = tmp_path / "catalogue.toml"
    path.write_text("""
[[matter]]
code = "T-1"
name = "测试事项"
subject = "COMPANY"
modes = ["FULLY_ONLINE"]
promised_working_days = 1
statutory_working_days = 2
postal_delivery = true
required_materials = [{ code = "FORM", name = "申请书", essential = true },
                      { code = "LICENCE", name = "营业执照", essential = false }]
""")
    matter = Catalogue.load(path).get("T-1")
    assert matter.postal_delivery is True
    assert matter.required_materials == (MaterialRequirement("FORM", "申请书", True),
                                         MaterialRequirement("LICENCE", "营业执照", False))


def test_empty_data_files_load_as_empty_registries(tmp_path):
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert Catalogue.load(empty).all() == []
    registry = PartnerRegistry.load(empty)
    assert registry.get("430000") is None
    assert not registry.is_known_division("430000")


def test_a_matter_code_appears_once_in_the_catalogue():
    matter = Catalogue.load().get("KSTB-MED-01")
    with pytest.raises(ValueError, match=r"^matter code KSTB-MED-01 appears twice$"):
        Catalogue([matter, matter])


def test_a_partner_appears_once_and_only_at_known_divisions():
    hunan = PartnerAgreement(Partner("430000", "430000", "湖南省"))
    with pytest.raises(ValueError, match=r"^partner 430000 appears twice$"):
        PartnerRegistry([hunan, hunan], {"430000": "湖南省"})
    with pytest.raises(ValueError, match=r"^partner 430000: unknown division 430000$"):
        PartnerRegistry([hunan], {})


async def test_an_unknown_receiving_division_is_unroutable_with_its_reason():
    outcome = await route(receiving_division="990000")
    assert outcome.emits[0].payload["reason"] == "receiving division is not a known GB/T 2260 code"
