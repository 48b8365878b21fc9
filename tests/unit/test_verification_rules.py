"""Verification's rules through its handlers: the check runs once both inputs are in, in
either order, and the applicant's personal data is not kept after it."""

from datetime import UTC, date, datetime

import pytest
from stdnum.cn import ric, uscc

from services.verification import handlers
from services.verification.domain import (
    COMPANY,
    FAILED,
    PASSED,
    PERSON,
    WARNING,
    Applicant,
    ProvidedMaterial,
    RequiredMaterial,
    verify_application,
)
from tests.pii_parties import cipher, seal_received
from tongban.handling import Event, Outcome
from tongban.pii import PiiError

APP = "TBUNIT"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
CIPHER = cipher("verification")
NAME, PHONE = "张三", "13800000000"
VALID_ID = "43010219900307123" + ric.calc_check_digit("43010219900307123X")
MATERIAL = {"code": "RESIDENT_ID", "name": "居民身份证", "provided": True, "original_checked": True}


def applicant(name: str = NAME, id_number: str = VALID_ID, application_id: str = APP) -> dict:
    """Sealed as intake seals it: for verification and delivery, bound to this application."""
    return {"kind": "PERSON", "name": seal_received(name, "applicant.name", application_id),
            "id_number": seal_received(id_number, "applicant.id_number", application_id),
            "phone": seal_received(PHONE, "applicant.phone", application_id)}


def received(materials=(MATERIAL,), **changes) -> tuple:
    body = {"application_id": APP, "matter_code": "KSTB-MED-01", "channel": "PORTAL", "receiving_division": "430102",
            "home_division": "420106", "applicant": applicant(**changes), "materials": list(materials),
            "delivery_method": "ELECTRONIC", "postal_address": None, "submitted_at": T0}
    return "tongban.application.ApplicationReceived", body


ROUTED = ("tongban.application.ApplicationRouted",
          {"application_id": APP, "matter_code": "KSTB-MED-01", "mode": "FULLY_ONLINE", "deciding_partner": "420000",
           "deciding_division": "420106", "legs": [], "promised_working_days": 3, "due_at": T0})
UNROUTABLE = ("tongban.application.ApplicationUnroutable",
              {"application_id": APP, "matter_code": "NOPE", "reason": "matter code is not in the catalogue"})
RECEIVED = received()


async def handle(step: tuple, state: dict | None) -> Outcome:
    event_type, payload = step
    e = Event(f"id-{event_type}", event_type, APP, payload, {"occurred_at": T0}, "tongban.application.received")
    # made inside each test (not at import) so that mutation testing sees which test runs them
    return await handlers.make_handlers(CIPHER)[event_type](e, state)


async def feed(*steps) -> tuple[dict | None, list[Outcome]]:
    state, outcomes = None, []
    for step in steps:
        outcome = await handle(step, state)
        state = outcome.state if outcome.state is not None else state
        outcomes.append(outcome)
    return state, outcomes


def holds_personal_data(state: dict) -> bool:
    text = repr(state)
    return "application" in state or "applicant" in text or any(
        v in text for v in (NAME, VALID_ID, PHONE, RECEIVED[1]["applicant"]["id_number"]))


@pytest.mark.parametrize("order", [(RECEIVED, ROUTED), (ROUTED, RECEIVED)])
async def test_a_valid_file_is_verified_once_both_inputs_are_in_whatever_the_order(order):
    state, outcomes = await feed(*order)
    assert outcomes[0].emits == []
    assert outcomes[0].finished is False
    [emit] = outcomes[1].emits
    assert (emit.topic, emit.event_type, emit.key) == (
        "tongban.application.verified", "tongban.application.ApplicationVerified", APP)
    assert emit.payload["application_id"] == APP
    assert emit.payload["checks"] == [
        {"check": "applicant_name", "outcome": "PASSED", "detail": "name given"},
        {"check": "resident_id", "outcome": "PASSED", "detail": "resident ID number is valid"},
        {"check": "material:RESIDENT_ID", "outcome": "PASSED", "detail": "provided, original checked"}]
    assert state["result"] == "PASSED"


async def test_the_identity_number_is_checked_in_plaintext_opened_with_the_key():
    _, outcomes = await feed(ROUTED, received(id_number=VALID_ID[:-1] + ("0" if VALID_ID[-1] != "0" else "1")))
    [emit] = outcomes[-1].emits
    assert emit.event_type == "tongban.application.ApplicationVerificationFailed"
    assert emit.payload["reasons"] == ["resident ID number check character does not match"]


async def test_a_failed_file_lists_every_reason_and_every_missing_material():
    missing = [{**MATERIAL, "provided": False}, {"code": "PHOTO", "name": "照片", "provided": False,
                                                  "original_checked": False}]
    state, outcomes = await feed(received(materials=missing, name=" "), ROUTED)
    [emit] = outcomes[-1].emits
    assert (emit.topic, emit.event_type, emit.key) == (
        "tongban.application.verified", "tongban.application.ApplicationVerificationFailed", APP)
    assert emit.payload == {"application_id": APP,
                            "reasons": ["applicant name is empty", "居民身份证 is missing", "照片 is missing"],
                            "missing_materials": ["RESIDENT_ID", "PHOTO"]}
    assert state["result"] == "FAILED"
    assert outcomes[-1].finished is True


async def test_reasons_never_repeat_the_applicants_name_or_number():
    _, outcomes = await feed(ROUTED, received(id_number="4301021990030712"))
    text = repr(outcomes[-1].emits[0].payload)
    assert NAME not in text
    assert "4301021990030712" not in text


async def test_material_names_that_repeat_the_applicant_are_scrubbed_from_the_reasons():
    careless = {"code": f"POWER_{VALID_ID}", "name": f"{NAME}的委托书（电话{PHONE}）", "provided": False,
                "original_checked": False}
    _, outcomes = await feed(ROUTED, received(materials=(MATERIAL, careless)))
    payload = outcomes[-1].emits[0].payload
    assert payload["reasons"] == ["[NAME]的委托书（电话[PHONE]） is missing"]
    assert payload["missing_materials"] == ["POWER_[NAME]"]
    text = repr(payload)
    assert NAME not in text
    assert VALID_ID not in text
    assert PHONE not in text


async def test_a_sealed_value_moved_from_another_application_does_not_open():
    moved = received()
    moved[1]["applicant"]["id_number"] = applicant(application_id="TBOTHER")["id_number"]
    with pytest.raises(PiiError, match="another field or application"):
        await feed(ROUTED, moved)


async def test_a_value_moved_to_another_field_does_not_open():
    moved = received()
    moved[1]["applicant"]["name"] = moved[1]["applicant"]["phone"]
    with pytest.raises(PiiError, match="another field or application"):
        await feed(ROUTED, moved)


@pytest.mark.parametrize("order", [(RECEIVED, ROUTED), (ROUTED, RECEIVED)])
async def test_the_work_is_done_once_the_result_is_out_and_not_before(order):
    _, outcomes = await feed(*order)
    assert [o.finished for o in outcomes] == [False, True]


@pytest.mark.parametrize("order", [(RECEIVED, ROUTED), (ROUTED, RECEIVED)])
async def test_personal_data_is_not_kept_after_the_check_whatever_the_order(order):
    state, _ = await feed(*order)
    assert not holds_personal_data(state)


@pytest.mark.parametrize("order", [(UNROUTABLE, RECEIVED), (RECEIVED, UNROUTABLE)])
async def test_an_unroutable_file_is_not_verified_and_its_personal_data_is_not_kept(order):
    state, outcomes = await feed(*order)
    assert [e for o in outcomes for e in o.emits] == []
    assert state["result"] == "UNROUTABLE"
    assert not holds_personal_data(state)
    assert outcomes[-1].finished is True


async def test_an_unroutable_file_is_done_as_soon_as_routing_gives_up():
    _, [outcome] = await feed(UNROUTABLE)
    assert outcome.finished is True
    assert outcome.emits == []


async def test_a_repeated_input_after_the_result_verifies_nothing_again_and_keeps_no_personal_data():
    state, _ = await feed(RECEIVED, ROUTED)
    for step in (RECEIVED, ROUTED):
        again = await handle(step, state)
        assert again.emits == []
        assert again.finished is True
        assert again.state["result"] == "PASSED"
        assert not holds_personal_data(again.state)


async def test_the_file_is_kept_until_routing_decides():
    state, [outcome] = await feed(RECEIVED)
    assert outcome.emits == []
    assert outcome.finished is False
    assert state["application"]["applicant"] == RECEIVED[1]["applicant"], "sealed, as received"


# ---------------------------------------------------------------------------- the words an applicant reads
# Check details travel in events and 补正 notices: each is pinned so that a changed wording
# is a decision, not an accident.

TODAY = date(2025, 9, 22)


def resident_id(first17: str) -> str:
    return first17 + ric.calc_check_digit(first17 + "X")


def credit_code(first17: str) -> str:
    return first17 + uscc.calc_check_digit(first17)


VALID_USCC = credit_code("91430102MA4L0000X")


def id_check(applicant: Applicant) -> tuple[str, str, str]:
    check = verify_application(applicant, [], None, TODAY).checks[1]
    return check.check, check.outcome, check.detail


@pytest.mark.parametrize(("number", "detail"), [
    (VALID_ID, "resident ID number is valid"),
    (VALID_ID[:-1], "resident ID number must be 17 digits and a check character"),
    (VALID_ID[:-1] + ("0" if VALID_ID[-1] != "0" else "1"), "resident ID number check character does not match"),
    (resident_id("43010219900230123"), "resident ID number holds an impossible birth date"),
    (resident_id("99010219900307123"), "resident ID number region code did not exist at birth"),
    (resident_id("43010220300307123"), "resident ID number holds a birth date in the future"),
])
def test_each_resident_id_check_says_exactly_what_is_wrong(number, detail):
    outcome = PASSED if detail.endswith("is valid") else FAILED
    assert id_check(Applicant(PERSON, NAME, number, None)) == ("resident_id", outcome, detail)


def test_a_person_born_today_has_a_valid_birth_date():
    born_today = resident_id("430102" + TODAY.strftime("%Y%m%d") + "123")
    assert id_check(Applicant(PERSON, NAME, born_today, None))[1] == PASSED


@pytest.mark.parametrize(("code", "outcome", "detail"), [
    (VALID_USCC, PASSED, "credit code is valid"),
    (VALID_USCC[:-1], FAILED, "credit code must have 18 characters"),
    ("91430102MA4L0000I0", FAILED, "credit code holds characters GB 32100 does not use"),
    (VALID_USCC[:-1] + ("0" if VALID_USCC[-1] != "0" else "1"), WARNING,
     "credit code check character does not match; confirm with the registry"),
])
def test_each_credit_code_check_says_exactly_what_is_wrong(code, outcome, detail):
    assert id_check(Applicant(COMPANY, "某某科技有限公司", code, None)) == ("credit_code", outcome, detail)


def test_an_unknown_applicant_kind_fails_with_its_reason():
    assert id_check(Applicant("ROBOT", NAME, VALID_ID, None)) == (
        "applicant_kind", FAILED, "kind must be PERSON or COMPANY")


def test_a_given_name_passes_with_its_detail():
    check = verify_application(Applicant(PERSON, NAME, VALID_ID, None), [], None, TODAY).checks[0]
    assert (check.check, check.outcome, check.detail) == ("applicant_name", PASSED, "name given")


def test_each_material_check_says_whether_the_original_was_seen_or_what_is_missing():
    materials = [ProvidedMaterial("A", "申请书", True, True), ProvidedMaterial("B", "照片", True, False)]
    required = [RequiredMaterial("A", "申请书", True), RequiredMaterial("B", "照片", True),
                RequiredMaterial("C", "章程", True), RequiredMaterial("D", "营业执照", False)]
    result = verify_application(Applicant(PERSON, NAME, VALID_ID, None), materials, required, TODAY)
    assert [(c.check, c.outcome, c.detail) for c in result.checks[2:]] == [
        ("material:A", PASSED, "provided, original checked"),
        ("material:B", PASSED, "provided"),
        ("material:C", FAILED, "章程 is missing"),
        ("material:D", WARNING, "营业执照 is missing; accepted, result waits for it"),
    ]
    assert result.missing_materials == ("C",)
