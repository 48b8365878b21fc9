"""Intake's side of the acceptance lifecycle through its handlers: numbering, notices, 补正,
withdrawal, the timeline and what Watch sends. No broker."""

from datetime import UTC, datetime, timedelta

import pytest

from services.intake import domain, handlers, notify
from tongban import topics
from tongban.handling import Event, Outcome, Rejected

APP = "TBLIFECYCLE"
T0 = datetime(2026, 12, 4, 1, 0, tzinfo=UTC)  # 09:00 in Beijing
NAME, ID_NUMBER, PHONE = "李四", "420106198506123410", "13800000000"
P = "tongban.application."
SUBMITTED = {"application_id": APP, "matter_code": "KSTB-MKT-01", "channel": "PORTAL",
             "receiving_division": "430102001001", "home_division": "440300",
             "applicant": {"kind": "PERSON", "name": NAME, "id_number": ID_NUMBER, "phone": PHONE},
             "materials": [{"code": "APPLICATION_FORM", "name": "申请书", "provided": True, "original_checked": True}],
             "delivery_method": "ELECTRONIC", "postal_address": None, "submitted_at": T0, "window_id": "",
             "places": {}, "bundle_id": "", "commitments": [], "deferred_materials": {}}
COMMAND = {**SUBMITTED, "received_by": {"source_system": "hunan-portal", "role": "portal"},
           "fingerprints": {"matter_code": "a1b2c3"}}
NUMBER = "430102-20261204-0000001-X"


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


ROUTED = (P + "ApplicationRouted", {"application_id": APP, "matter_code": "KSTB-MKT-01", "mode": "FULLY_ONLINE",
                                    "deciding_partner": "440000", "deciding_division": "440300", "legs": [],
                                    "promised_working_days": 3, "due_at": at(3 * 24 * 60)})
VERIFIED = (P + "ApplicationVerified", {"application_id": APP, "checks": []})
NUMBERED = (P + "ApplicationReceived", {**SUBMITTED, "application_number": NUMBER})
ACCEPTED = (P + "ApplicationAccepted", {"application_id": APP, "deciding_partner": "440000", "accepted_at": T0})
SUPPLEMENT_REQUESTED = (P + "SupplementRequested", {
    "application_id": APP, "deciding_partner": "440000", "cause": "材料不全",
    "missing_materials": {"ARTICLES": "公司章程未签字", "PREMISES_PROOF": "缺少住所证明"},
    "requested_at": T0, "supplement_by": at(5 * 24 * 60)})
MATERIALS_SUPPLEMENTED = (P + "MaterialsSupplemented", {
    "application_id": APP, "assignment_id": "A1", "deciding_partner": "440000",
    "materials": ["ARTICLES", "PREMISES_PROOF"], "supplemented_at": T0})
REFUSED_V1 = (P + "ApplicationRefused", {"application_id": APP, "deciding_partner": "440000",
                                         "reason": "不属于本机关职权范围"})
REFUSED_V2 = (P + "ApplicationRefused", {"application_id": APP, "deciding_partner": "440000",
                                         "reason": "不属于本机关职权范围", "remedy": "请向广东省市场监管局申请"})
APPROVED = (P + "ApplicationDecided", {"application_id": APP, "deciding_partner": "440000", "outcome": "APPROVED",
                                       "result_reference": "LIC-1", "reason": None, "decided_at": T0})
DENIED = (P + "ApplicationDecided", {"application_id": APP, "deciding_partner": "440000", "outcome": "DENIED",
                                     "result_reference": None, "reason": "不符合法定条件", "decided_at": T0})
DELIVERED = (P + "ApplicationDelivered", {"application_id": APP, "method": "ELECTRONIC", "dispatch_id": "D1",
                                          "tracking_number": None, "delivered_at": T0})
EXPIRED = (P + "ApplicationClosed", {"application_id": APP, "status": "SUPPLEMENT_EXPIRED",
                                     "reason": "补正期限已过", "closed_at": T0})
CLOSED_WITHDRAWN = (P + "ApplicationClosed", {"application_id": APP, "status": "WITHDRAWN", "reason": "撤回",
                                              "closed_at": T0})


def event(event_type: str, payload: dict, n: int = 0, key: str = APP, occurred: datetime | None = None) -> Event:
    return Event(f"id-{n}-{event_type}", event_type, key, payload,
                 {"occurred_at": occurred or at(n), "correlation_id": key}, "command")


async def received() -> dict:
    """A submitted application, numbered."""
    state = (await handlers.submit(event(handlers.SUBMIT, COMMAND), None)).state
    return (await handlers.on_received(event(*NUMBERED), state)).state


async def feed(*steps, state: dict | None = None) -> tuple[dict | None, list[Outcome]]:
    outcomes = []
    for n, step in enumerate(steps, start=1):
        event_type, payload, *occurred = step
        outcome = await handlers.HANDLERS[event_type](event(event_type, payload, n,
                                                            occurred=occurred[0] if occurred else None), state)
        state = outcome.state if outcome.state is not None else state
        outcomes.append(outcome)
    return state, outcomes


async def command(kind: str, payload: dict, state: dict | None, n: int = 50) -> Outcome:
    return await handlers.COMMANDS[kind](event(kind, payload, n), state)


def notices(outcomes: list[Outcome]) -> list[dict]:
    return [e.payload for o in outcomes for e in o.emits if e.event_type == topics.NOTICE_SERVED_EVENT]


# ---------------------------------------------------------------------------- numbering

async def test_each_counter_numbers_in_sequence_and_starts_again_each_day():
    key = domain.numbering_key(APP)
    counter, numbers = None, []
    for when in (T0, T0, at(60), T0 + timedelta(days=1)):
        outcome = await handlers.number(Event("n", handlers.NUMBER, key, {**COMMAND, "submitted_at": when},
                                              {"occurred_at": when}, "command"), counter)
        counter = outcome.state
        numbers.append(outcome.emits[0].payload["application_number"])
        assert outcome.emits[0].correlation_id == APP, "sealed for the application, not the counter"
    shard = key[-2:]
    assert [n.rsplit("-", 1)[0] for n in numbers] == [
        f"430102-20261204-{shard}00001", f"430102-20261204-{shard}00002", f"430102-20261204-{shard}00003",
        f"430102-20261205-{shard}00001"]
    assert all(domain.is_valid_number(n) for n in numbers)


def test_a_submission_stamped_before_the_counters_day_takes_the_counters_day_and_never_repeats_a_number():
    today, counter = domain.assign_number(None, "numbering:03", "430102", T0 + timedelta(days=1))
    late, counter = domain.assign_number(counter, "numbering:03", "430102", T0)
    assert today.split("-")[1] == late.split("-")[1] == "20261205"
    assert today != late


def test_the_date_is_the_date_in_beijing():
    number, _ = domain.assign_number(None, "numbering:00", "430102", datetime(2026, 12, 4, 17, 0, tzinfo=UTC))
    assert number.split("-")[1] == "20261205"


def test_the_shard_is_fixed_by_the_application_id_and_the_check_character_catches_a_typing_error():
    assert domain.numbering_key(APP) == domain.numbering_key(APP)
    assert len({domain.numbering_key(f"TB{n:020X}") for n in range(500)}) == domain.NUMBER_SHARDS
    number, _ = domain.assign_number(None, "numbering:07", "430102", T0)
    typo = number[:8] + ("1" if number[8] != "1" else "2") + number[9:]
    assert domain.is_valid_number(number)
    assert not domain.is_valid_number(typo)


async def test_the_numbered_application_comes_back_to_the_view_and_the_receipt_is_served_once():
    state = (await handlers.submit(event(handlers.SUBMIT, COMMAND), None)).state
    outcome = await handlers.on_received(event(*NUMBERED), state)
    assert outcome.state["application_number"] == NUMBER
    [receipt] = notices([outcome])
    assert (receipt["kind"], receipt["application_number"], receipt["application_id"]) == ("RECEIPT", NUMBER, APP)
    assert outcome.state["history"][-1]["stage"] == "NUMBERED"
    assert outcome.state["history"][-1]["notice"] == "RECEIPT"
    again = await handlers.on_received(event(*NUMBERED, n=2), outcome.state)
    assert again.emits == []
    assert again.state is None


# ---------------------------------------------------------------------------- notices

REMEDY = domain.REMEDY


@pytest.mark.parametrize(("step", "kind", "reasons", "remedy"), [
    (ACCEPTED, "ACCEPTANCE", [], ""),
    (REFUSED_V1, "NON_ACCEPTANCE", ["不属于本机关职权范围"], REMEDY),
    (REFUSED_V2, "NON_ACCEPTANCE", ["不属于本机关职权范围"], "请向广东省市场监管局申请"),
    (DENIED, "DENIAL", ["不符合法定条件"], REMEDY),
    (SUPPLEMENT_REQUESTED, "SUPPLEMENT", ["ARTICLES: 公司章程未签字", "PREMISES_PROOF: 缺少住所证明"], ""),
])
async def test_each_outcome_the_applicant_must_receive_is_served_with_reasons_and_remedy(step, kind, reasons, remedy):
    state, outcomes = await feed(step, state=await received())
    [served] = notices(outcomes)
    assert (served["kind"], served["reasons"], served["remedy"], served["application_number"]) == (
        kind, reasons, remedy, NUMBER)
    assert outcomes[0].emits[0].topic == topics.APPLICATION_NOTICES
    assert [n["kind"] for n in state["notices"]] == ["RECEIPT", kind]
    assert not {NAME, ID_NUMBER, PHONE} & set(repr(served).split("'"))


async def test_a_denial_or_non_acceptance_names_reconsideration_and_litigation():
    assert "行政复议" in REMEDY
    assert "行政诉讼" in REMEDY


async def test_an_approval_and_a_delivery_serve_no_notice_of_their_own():
    _, outcomes = await feed(APPROVED, DELIVERED, state=await received())
    assert notices(outcomes) == []


async def test_a_notice_is_served_once_per_cause():
    state = await received()
    _, first = await feed(ACCEPTED, state=state)
    _, second = await feed(ACCEPTED, state=state)
    assert notices(first)[0]["notice_id"] == notices(second)[0]["notice_id"]


# ---------------------------------------------------------------------------- 补正

async def test_a_supplement_notice_pauses_the_application_until_the_applicant_supplements():
    state, _ = await feed(ROUTED, VERIFIED, SUPPLEMENT_REQUESTED, state=await received())
    assert state["stage"] == "SUPPLEMENT_REQUESTED"
    assert domain.deadline(state) == SUPPLEMENT_REQUESTED[1]["supplement_by"]
    assert domain.responsible_for(state["stage"], "440000") == "APPLICANT"
    assert "补正告知书" in domain.next_step(state)
    outcome = await command(handlers.SUPPLEMENT, {"materials": ["ARTICLES", "PREMISES_PROOF"], "submitted_at": T0},
                            state)
    [emit] = outcome.emits
    assert (emit.topic, emit.event_type, emit.payload) == (
        topics.APPLICATION_RECEIVED, topics.SUPPLEMENT_SUBMITTED_EVENT,
        {"application_id": APP, "materials": ["ARTICLES", "PREMISES_PROOF"], "submitted_at": T0})
    assert outcome.state["stage"] == "SUPPLEMENTED"
    assert domain.deadline(outcome.state) == ROUTED[1]["due_at"]
    again, _ = await feed(SUPPLEMENT_REQUESTED, MATERIALS_SUPPLEMENTED, ACCEPTED, state=outcome.state)
    assert again["stage"] == "ACCEPTED"


async def test_supplementing_without_an_open_notice_is_refused():
    with pytest.raises(Rejected, match="no 补正 is open"):
        await command(handlers.SUPPLEMENT, {"materials": ["ARTICLES"], "submitted_at": T0}, await received())


async def test_a_missed_supplement_deadline_closes_the_application():
    state, outcomes = await feed(SUPPLEMENT_REQUESTED, EXPIRED, state=await received())
    assert (state["stage"], state["terminal"], outcomes[-1].finished) == ("CLOSED", True, True)
    assert state["history"][-1]["detail"] == "SUPPLEMENT_EXPIRED: 补正期限已过"


# ---------------------------------------------------------------------------- 撤回

async def test_a_withdrawal_before_the_decision_is_published_and_ends_the_application():
    state, _ = await feed(ROUTED, VERIFIED, ACCEPTED, state=await received())
    outcome = await command(handlers.WITHDRAW, {"reason": f"不办了 {PHONE}", "withdrawn_at": at(9)}, state)
    [emit] = outcome.emits
    assert (emit.topic, emit.event_type, emit.key) == (topics.APPLICATION_RECEIVED, topics.APPLICATION_WITHDRAWN_EVENT,
                                                       APP)
    # the applicant's words go out as given (the runtime seals the personal field) ...
    assert emit.payload == {"application_id": APP, "reason": f"不办了 {PHONE}", "withdrawn_at": at(9)}
    assert (outcome.state["stage"], outcome.state["terminal"], outcome.finished) == ("WITHDRAWN", True, True)
    # ... and the progress view, which holds no personal data, keeps none of them
    assert PHONE not in str(outcome.state)
    closed, _ = await feed(CLOSED_WITHDRAWN, state=outcome.state)
    assert closed["stage"] == "WITHDRAWN"


@pytest.mark.parametrize("steps", [(APPROVED,), (DENIED,), (APPROVED, DELIVERED), (REFUSED_V1,), (EXPIRED,)])
async def test_a_withdrawal_after_the_decision_or_the_end_is_refused(steps):
    state, _ = await feed(*steps, state=await received())
    with pytest.raises(Rejected, match="cannot be withdrawn"):
        await command(handlers.WITHDRAW, {"reason": "", "withdrawn_at": T0}, state)


async def test_a_withdrawal_of_an_unknown_application_is_refused():
    with pytest.raises(Rejected, match="no such application"):
        await command(handlers.WITHDRAW, {"reason": "", "withdrawn_at": T0}, None)


# ---------------------------------------------------------------------------- timeline and Watch

async def test_the_timeline_is_ordered_by_when_things_happened_not_when_intake_learned_them():
    delivered_late = (*DELIVERED, at(30))
    decided_earlier = (*APPROVED, at(20))
    state, _ = await feed(ROUTED, delivered_late, decided_earlier, state=await received())
    assert [h["stage"] for h in state["history"]][-2:] == ["DELIVERED", "DECIDED"]
    assert [h["stage"] for h in domain.timeline(state)][-2:] == ["DECIDED", "DELIVERED"]


async def test_every_step_has_a_sequence_watch_resumes_after_and_a_responsible_party():
    state, _ = await feed(ROUTED, VERIFIED, ACCEPTED, state=await received())
    assert [h["sequence"] for h in state["history"]] == [1, 2, 3, 4, 5]
    assert [h["stage"] for h in domain.steps_after(state, 3)] == ["VERIFIED", "ACCEPTED"]
    assert domain.steps_after(state, 5) == []
    assert [h["responsible"] for h in state["history"]] == [
        "RECEIVING_WINDOW", "", "DECIDING_AUTHORITY:440000", "DECIDING_AUTHORITY:440000",
        "DECIDING_AUTHORITY:440000"]


@pytest.mark.parametrize(("steps", "responsible", "next_words"), [
    ((), "RECEIVING_WINDOW", "handed to the deciding authority"),
    ((ROUTED, VERIFIED), "DECIDING_AUTHORITY:440000", "accepts (受理) or asks for 补正"),
    ((ROUTED, ACCEPTED), "DECIDING_AUTHORITY:440000", "decides"),
    ((ROUTED, APPROVED, DELIVERED), "", ""),
])
async def test_track_says_who_acts_next_and_on_what(steps, responsible, next_words):
    state, _ = await feed(*steps, state=await received())
    assert domain.responsible_for(state["stage"], state.get("deciding_partner", "")) == responsible
    assert next_words in domain.next_step(state)
    if not next_words:
        assert domain.next_step(state) == ""
        assert domain.deadline(state) is None


async def test_a_clock_change_is_a_step_on_the_way_not_a_stage():
    clock = (P + "ApplicationClockChanged", {"application_id": APP, "deciding_partner": "440000",
                                            "kind": "EXTENDED", "working_days": 5, "reason": "需要现场核查",
                                            "changed_at": T0})
    state, _ = await feed(ROUTED, ACCEPTED, clock, state=await received())
    assert state["stage"] == "ACCEPTED"
    assert state["history"][-1]["detail"] == "EXTENDED 5: 需要现场核查"


# ---------------------------------------------------------------------------- the notification adapter

async def test_each_notice_becomes_one_message_with_the_number_and_nothing_personal():
    submitted = (await handlers.submit(event(handlers.SUBMIT, COMMAND), None)).state
    numbered = await handlers.on_received(event(*NUMBERED), submitted)
    _, outcomes = await feed(SUPPLEMENT_REQUESTED, REFUSED_V1, state=numbered.state)
    served = notices([numbered, *outcomes])
    sender = notify.SimulatedSender()
    assert await notify.deliver([*served, served[0]], sender) == 4
    assert [m.kind for m in sender.sent.values()] == ["RECEIPT", "SUPPLEMENT", "NON_ACCEPTANCE"], "once per notice"
    for message in sender.sent.values():
        assert NUMBER in message.text
        assert not any(value in message.text for value in (NAME, ID_NUMBER, PHONE))
    assert "2026-12-09" in sender.sent[served[1]["notice_id"]].text  # the 补正 deadline, Beijing date


async def test_a_notice_of_a_kind_the_adapter_does_not_know_is_left_to_track():
    sender = notify.SimulatedSender()
    unknown = {"notice_id": "n1", "application_id": APP, "application_number": NUMBER, "kind": "LATER_KIND",
               "reasons": [], "remedy": "", "deadline": None, "served_at": T0}
    assert await notify.deliver([unknown], sender) == 0


async def test_a_concluded_application_is_served_no_more_notices():
    state = await received()
    withdrawn = (await command(handlers.WITHDRAW, {"reason": "", "withdrawn_at": T0}, state)).state
    state, outcomes = await feed(SUPPLEMENT_REQUESTED, state=withdrawn)
    assert notices(outcomes) == []
    assert state["stage"] == "WITHDRAWN"
    assert state["history"][-1]["stage"] == "SUPPLEMENT_REQUESTED", "still recorded"
