"""Verification's rules through its handlers: the check runs once both inputs are in, in
either order, asks the data-sharing providers the matter's materials need (a fake port
here; tests/e2e/test_verification_sharing.py runs the real ones), waits on a timer while a
provider is down, and keeps none of the applicant's personal data after it."""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import pytest
from stdnum.cn import ric, uscc

from services.verification import handlers, matters
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
from services.verification.sharing import Answer, NotAllowed, Unavailable
from tests.pii_parties import cipher, seal_received
from tongban.handling import Event, Outcome
from tongban.pii import PiiError
from tongban.sharing import governance

APP = "TBUNIT"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
CIPHER = cipher("verification")
NAME, PHONE = "张三", "13800000000"
VALID_ID = "43010219900307123" + ric.calc_check_digit("43010219900307123X")
MATERIAL = {"code": "RESIDENT_ID", "name": "居民身份证", "provided": True, "original_checked": True}
CATALOGUE = governance.load_catalogue()


@dataclass
class Providers:
    """The Evidence port: answers per evidence type (MATCH by default), or down."""

    verdicts: dict = field(default_factory=dict)
    down: set = field(default_factory=set)
    refused: set = field(default_factory=set)
    asked: list = field(default_factory=list)
    catalogue: governance.SharingCatalogue = CATALOGUE

    async def query(self, application_id, matter_code, evidence_type, subject_id, declared):
        self.asked.append((evidence_type, subject_id, dict(declared)))
        provider = CATALOGUE.evidence[evidence_type].provider
        if provider in self.down:
            raise Unavailable(provider, "UNAVAILABLE")
        if evidence_type in self.refused:
            raise NotAllowed("no approved demand")
        verdict, mismatched = self.verdicts.get(evidence_type, ("MATCH", ()))
        return Answer(evidence_type, provider, verdict, tuple(mismatched), f"{provider}:1")


def applicant(name: str = NAME, id_number: str = VALID_ID, application_id: str = APP) -> dict:
    """Sealed as intake seals it: for verification and delivery, bound to this application."""
    return {"kind": "PERSON", "name": seal_received(name, "applicant.name", application_id),
            "id_number": seal_received(id_number, "applicant.id_number", application_id),
            "phone": seal_received(PHONE, "applicant.phone", application_id)}


def received(materials=(MATERIAL,), matter="KSTB-MED-01", home="420106", places=None, commitments=(),
             **changes) -> tuple:
    body = {"application_id": APP, "matter_code": matter, "channel": "PORTAL", "receiving_division": "430102",
            "home_division": home, "applicant": applicant(**changes), "materials": list(materials),
            "delivery_method": "ELECTRONIC", "postal_address": None, "submitted_at": T0,
            "places": places or {}, "commitments": list(commitments), "deferred_materials": {}}
    return "tongban.application.ApplicationReceived", body


def material(code: str, name: str = "", provided: bool = True, original_checked: bool = False) -> dict:
    return {"code": code, "name": name or code, "provided": provided, "original_checked": original_checked}


ROUTED = ("tongban.application.ApplicationRouted",
          {"application_id": APP, "matter_code": "KSTB-MED-01", "mode": "FULLY_ONLINE", "deciding_partner": "420000",
           "deciding_division": "420106", "legs": [], "promised_working_days": 3, "due_at": T0})
UNROUTABLE = ("tongban.application.ApplicationUnroutable",
              {"application_id": APP, "matter_code": "NOPE", "reason": "matter code is not in the catalogue"})
RECEIVED = received()
RETRY = ("timer", handlers.EVIDENCE_RETRY)
COMMITMENT_CHECK = ("timer", handlers.COMMITMENT_CHECK)


async def handle(step: tuple, state: dict | None, providers: Providers | None = None) -> Outcome:
    kind, payload = step
    # made inside each test (not at import) so that mutation testing sees which test runs them
    events, timers = handlers.make_handlers(CIPHER, providers or Providers(verdicts={"IDENTITY": ("NOT_FOUND", ())}),
                                            matters.load())
    if kind == "timer":
        e = Event("timer:1", "tongban.runtime.TimerFired", APP, {"name": payload}, {"correlation_id": APP}, "timer")
        return await timers[payload](e, state)
    e = Event(f"id-{kind}", kind, APP, payload, {"occurred_at": T0}, "tongban.application.received")
    return await events[kind](e, state)


async def feed(*steps, providers: Providers | None = None) -> tuple[dict | None, list[Outcome]]:
    state, outcomes = None, []
    for step in steps:
        outcome = await handle(step, state, providers)
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
        {"check": "resident_id", "outcome": "PASSED", "detail": "resident ID number is valid"}]
    # no identity record: the original the window checked stands in; 容缺 for the rest
    assert emit.payload["materials"] == [
        {"code": "RESIDENT_ID", "satisfied_by": "ORIGINAL", "detail": "original checked at the receiving window",
         "evidence_reference": ""},
        {"code": "RESIDENCE_PROOF", "satisfied_by": "DEFERRED", "detail": "容缺: accepted, the result waits for it",
         "evidence_reference": ""}]
    assert state["result"] == "VERIFIED"


async def test_a_material_the_records_confirm_needs_no_original():
    providers = Providers()
    _, outcomes = await feed(received(materials=[material("RESIDENT_ID")]), ROUTED, providers=providers)
    [emit] = outcomes[-1].emits
    assert emit.event_type == "tongban.application.ApplicationVerified"
    assert emit.payload["materials"][0] == {"code": "RESIDENT_ID", "satisfied_by": "SHARED",
                                            "detail": "IDENTITY confirmed by hn_psb", "evidence_reference": "hn_psb:1"}
    assert providers.asked == [("IDENTITY", VALID_ID, {"name": NAME})], "yes/no on what was declared"


async def test_a_record_that_contradicts_the_declaration_fails_the_material_with_its_reason():
    providers = Providers(verdicts={"HOUSEHOLD": ("NO_MATCH", ("household_division",))})
    mats = [material("RESIDENT_ID", original_checked=True), material("HOUSEHOLD_REGISTER", "户口簿"),
            material("SETTLEMENT_PROOF", original_checked=True)]
    state, outcomes = await feed(received(materials=mats, matter="KSTB-PSB-01", home="370102",
                                          places={"HOUSEHOLD": "370103"}), ROUTED, providers=providers)
    [emit] = outcomes[-1].emits
    assert emit.event_type == "tongban.application.ApplicationVerificationFailed"
    assert emit.payload["outcome"] == "FAILED"
    assert emit.payload["materials"] == [
        {"code": "HOUSEHOLD_REGISTER", "problem": "CONTRADICTED",
         "reason": "居民户口簿: the HOUSEHOLD record of mps does not confirm the declared household_division"}]
    assert ("HOUSEHOLD", VALID_ID, {"name": NAME, "household_division": "370103"}) in providers.asked, \
        "the household place declared in ApplicationReceived v2 places"
    assert state["result"] == "FAILED"


async def test_supplement_required_lists_every_missing_material_at_once():
    providers = Providers(verdicts={"IDENTITY": ("NOT_FOUND", ()), "HOUSEHOLD": ("NOT_FOUND", ())})
    mats = [material("RESIDENT_ID", "居民身份证"), material("HOUSEHOLD_REGISTER", "户口簿", provided=False)]
    _, outcomes = await feed(received(materials=mats, matter="KSTB-PSB-01"), ROUTED, providers=providers)
    [emit] = outcomes[-1].emits
    assert emit.payload["outcome"] == "SUPPLEMENT_REQUIRED"
    assert emit.payload["missing_materials"] == ["RESIDENT_ID", "HOUSEHOLD_REGISTER", "SETTLEMENT_PROOF"]
    assert [m["problem"] for m in emit.payload["materials"]] == ["ORIGINAL_NOT_CHECKED", "MISSING", "MISSING"]
    assert outcomes[-1].finished is True


async def test_a_refused_query_is_treated_as_sharing_cannot_confirm():
    providers = Providers(refused={"IDENTITY"})
    _, outcomes = await feed(received(materials=[material("RESIDENT_ID", original_checked=True)]), ROUTED,
                             providers=providers)
    assert outcomes[-1].emits[0].payload["materials"][0]["satisfied_by"] == "ORIGINAL"


async def test_while_a_provider_is_down_the_application_waits_on_a_timer_and_says_what_it_waits_for():
    providers = Providers(down={"mps"})
    mats = [material("RESIDENT_ID"), material("HOUSEHOLD_REGISTER"),
            material("SETTLEMENT_PROOF", original_checked=True)]
    state, outcomes = await feed(received(materials=mats, matter="KSTB-PSB-01"), ROUTED, RETRY, providers=providers)
    first, again = outcomes[1], outcomes[2]
    [awaited] = first.emits
    assert awaited.event_type == "tongban.application.EvidenceAwaited"
    assert (awaited.payload["providers"], awaited.payload["evidence_types"]) == (["mps"], ["HOUSEHOLD"])
    assert [t.name for t in first.timers] == [handlers.EVIDENCE_RETRY]
    assert first.finished is False
    assert again.emits == [], "said once while the same provider is awaited"
    assert again.timers[0].due_at - first.timers[0].due_at >= handlers.retry_delay(1), "backs off"
    assert state["answers"]["IDENTITY"]["verdict"] == "MATCH", "what did answer is kept, not asked again"
    providers.down.clear()
    asked_before = len(providers.asked)
    state, [done] = await feed_from(state, RETRY, providers=providers)
    assert [a[0] for a in providers.asked[asked_before:]] == ["HOUSEHOLD"]
    assert done.emits[0].event_type == "tongban.application.ApplicationVerified"
    assert done.finished is True
    assert not holds_personal_data(state)


async def feed_from(state, *steps, providers):
    outcomes = []
    for step in steps:
        outcome = await handle(step, state, providers)
        state = outcome.state if outcome.state is not None else state
        outcomes.append(outcome)
    return state, outcomes


async def test_a_committed_material_is_not_asked_for_now_and_is_checked_later():
    providers = Providers()
    mats = [material("RESIDENT_ID", original_checked=True), material("TRANSFER_APPLICATION", original_checked=True)]
    state, outcomes = await feed(received(materials=mats, matter="KSTB-SOC-01",
                                          commitments=["CONTRIBUTION_CERTIFICATE"]), ROUTED, providers=providers)
    [emit] = outcomes[-1].emits
    assert emit.payload["materials"][2]["satisfied_by"] == "COMMITMENT"
    assert "SOCIAL_INSURANCE" not in [a[0] for a in providers.asked]
    assert [t.name for t in outcomes[-1].timers] == [handlers.COMMITMENT_CHECK]
    assert outcomes[-1].finished is False, "kept until the later check"
    state, [later] = await feed_from(state, COMMITMENT_CHECK, providers=providers)
    assert providers.asked[-1][0] == "SOCIAL_INSURANCE"
    assert state["commitment_check"] == {"SOCIAL_INSURANCE": "MATCH"}
    assert later.finished is True
    assert "subject" not in state


async def test_the_identity_number_is_checked_in_plaintext_opened_with_the_key():
    providers = Providers()
    _, outcomes = await feed(ROUTED, received(id_number=VALID_ID[:-1] + ("0" if VALID_ID[-1] != "0" else "1")),
                             providers=providers)
    [emit] = outcomes[-1].emits
    assert emit.event_type == "tongban.application.ApplicationVerificationFailed"
    assert emit.payload["reasons"] == ["resident ID number check character does not match"]
    assert providers.asked == [], "an invalid number is not worth a provider's time"


async def test_a_failed_file_lists_every_reason_and_every_missing_material():
    missing = [{**MATERIAL, "provided": False}]
    state, outcomes = await feed(received(materials=missing, matter="KSTB-SOC-02", name=" "), ROUTED)
    [emit] = outcomes[-1].emits
    assert (emit.topic, emit.event_type, emit.key) == (
        "tongban.application.verified", "tongban.application.ApplicationVerificationFailed", APP)
    assert emit.payload["reasons"] == ["applicant name is empty", "居民身份证 is missing", "近期免冠证件照 is missing"]
    assert emit.payload["missing_materials"] == ["RESIDENT_ID", "PHOTO"]
    assert emit.payload["outcome"] == "FAILED"
    assert state["result"] == "FAILED"
    assert outcomes[-1].finished is True


async def test_a_matter_outside_the_catalogue_needs_every_material_it_names():
    missing = [{**MATERIAL, "provided": False}, material("PHOTO", "照片", provided=False)]
    _, outcomes = await feed(received(materials=missing, matter="KSTB-XXX-99"), ROUTED)
    assert outcomes[-1].emits[0].payload == {
        "application_id": APP, "outcome": "FAILED", "reasons": ["居民身份证 is missing", "照片 is missing"],
        "missing_materials": ["RESIDENT_ID", "PHOTO"], "materials": []}


async def test_reasons_never_repeat_the_applicants_name_or_number():
    _, outcomes = await feed(ROUTED, received(id_number="4301021990030712"))
    text = repr(outcomes[-1].emits[0].payload)
    assert NAME not in text
    assert "4301021990030712" not in text


async def test_material_names_that_repeat_the_applicant_are_scrubbed_from_the_reasons():
    careless = {"code": f"POWER_{VALID_ID}", "name": f"{NAME}的委托书（电话{PHONE}）", "provided": False,
                "original_checked": False}
    _, outcomes = await feed(ROUTED, received(materials=(MATERIAL, careless), matter="KSTB-XXX-99"))
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
        assert again.state["result"] == "VERIFIED"
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


# ---------------------------------------------------------------------------- the catalogue's materials

def matter_changed(change: str = "UPDATED", materials=None) -> dict:
    return {"matter_code": "KSTB-SOC-01", "change": change, "materials": [
        {"code": "RESIDENT_ID", "name": "居民身份证", "essential": True, "commitment": False,
         "shared_evidence": "DATA_CHECK"},
        {"code": "CONTRIBUTION_CERTIFICATE", "name": "参保缴费凭证", "essential": True, "commitment": False,
         "shared_evidence": "DATA_CHECK"}] if materials is None else materials}


def test_the_catalogue_topic_replaces_the_fallback_file_per_matter():
    view = matters.MatterView(matters.load())
    assert [r.code for r in view["KSTB-SOC-01"]] == ["RESIDENT_ID", "TRANSFER_APPLICATION", "CONTRIBUTION_CERTIFICATE"]
    view.apply(matter_changed())
    assert view["KSTB-SOC-01"] == (RequiredMaterial("RESIDENT_ID", "居民身份证", True, False),
                                   RequiredMaterial("CONTRIBUTION_CERTIFICATE", "参保缴费凭证", True, False))
    view.apply(matter_changed(materials=[]))  # a v1 record says nothing of materials
    assert len(view["KSTB-SOC-01"]) == 2
    view.apply(matter_changed("WITHDRAWN"))
    assert "KSTB-SOC-01" not in view


async def test_a_commitment_the_catalogue_does_not_allow_for_a_material_does_not_replace_it():
    view = matters.MatterView(matters.load())
    view.apply(matter_changed())
    events, _ = handlers.make_handlers(CIPHER, Providers(verdicts={"SOCIAL_INSURANCE": ("NOT_FOUND", ())}), view)
    state = None
    for kind, payload in (received(materials=[material("RESIDENT_ID", original_checked=True)], matter="KSTB-SOC-01",
                                   commitments=["CONTRIBUTION_CERTIFICATE"]), ROUTED):
        outcome = await events[kind](Event(f"id-{kind}", kind, APP, payload, {}, "t"), state)
        state = outcome.state
    [emit] = outcome.emits
    assert emit.payload["outcome"] == "SUPPLEMENT_REQUIRED"
    assert emit.payload["missing_materials"] == ["CONTRIBUTION_CERTIFICATE"]
