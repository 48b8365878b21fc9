"""多地联办 through the real handlers: delivery runs a joint matter's legs in turn, each with
its own party, and routing's SLA ledger follows each leg from the events delivery emits.

The matter is the catalogue's 养老保险关系转移接续 (KSTB-SOC-01): the new insured place
(广东, 440103) writes the contact letter, the old one (湖北, 420106) transfers the fund,
the new one completes."""

from datetime import UTC, datetime, timedelta

import pytest

from services.delivery import handlers as delivery
from services.delivery.channels.base import Deployment
from services.delivery.matters import Matter
from services.routing import handlers as routing
from services.routing.domain import Catalogue, PartnerRegistry
from services.routing.ledger import DONE, FAILED, LEG_FAILED, RUNNING, STOPPED, Ledger
from tests.pii_parties import cipher, seal_received
from tongban import topics
from tongban.codec import SchemaRegistry
from tongban.handling import Event, Outcome, Rejected
from tongban.workdays import WorkingCalendar

APP = "TBJOINT"
MATTER = "KSTB-SOC-01"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday
NAME = "示例"
APPLICANT = {"kind": "PERSON", "name": NAME, "id_number": "420106198506123417", "phone": None}
PLACES = {"INSURED_BEFORE": "420106", "INSURED_AFTER": "440103"}
REGISTRY = SchemaRegistry.load()
CALENDAR = WorkingCalendar.load()


# built when a test runs, not at import, so that mutation testing sees which tests run them
def delivery_handlers() -> dict:
    return delivery.make_handlers(cipher("delivery"), REGISTRY, clock=lambda: T0,
                                  results=Deployment(secret=b"joint legs", matters=lambda code: Matter(True, "")))


def routing_handlers() -> dict:
    return routing.make_handlers(Catalogue.load(), PartnerRegistry.load(), CALENDAR)

LEG_1, LEG_2, LEG_3 = f"{APP}:440000:1", f"{APP}:420000:2", f"{APP}:440000:3"


def event(event_type: str, payload: dict, topic: str, n: int = 0) -> Event:
    return Event(f"id-{event_type}-{n}", event_type, APP, payload, {"occurred_at": T0, "correlation_id": APP}, topic)


def received_payload() -> dict:
    return {"application_id": APP, "matter_code": MATTER, "channel": "PORTAL", "receiving_division": "430102",
            "home_division": "440103", "places": PLACES, "submitted_at": T0, "window_id": "",
            "applicant": {k: v if k == "kind" else seal_received(v, f"applicant.{k}", APP)
                          for k, v in APPLICANT.items()},
            "materials": [{"code": "TRANSFER_APPLICATION", "name": "申请表", "provided": True,
                           "original_checked": True}],
            "delivery_method": "POST", "postal_address": seal_received("长沙", "postal_address", APP)}


async def routed_payload() -> dict:
    """What routing decides for the application: the three legs, in order."""
    outcome = await routing_handlers()[topics.APPLICATION_RECEIVED_EVENT](
        event(topics.APPLICATION_RECEIVED_EVENT, received_payload(), topics.APPLICATION_RECEIVED), None)
    assert isinstance(outcome, Outcome)
    return outcome.emits[0].payload


def answer(outcome: str, partner: str, assignment_id: str, reason: str | None = None) -> tuple:
    return (topics.AUTHORITY_ACCEPTANCE_EVENT, {"assignment_id": assignment_id, "application_id": APP,
                                                "outcome": outcome, "reason": reason, "accepted_at": T0},
            topics.partner_decisions(partner))


def decision(outcome: str, partner: str, assignment_id: str, at: datetime = T0, reason: str | None = None) -> tuple:
    return (topics.AUTHORITY_DECISION_EVENT,
            {"assignment_id": assignment_id, "application_id": APP, "outcome": outcome,
             "result_reference": f"REF-{assignment_id}" if outcome == "APPROVED" else None, "reason": reason,
             "decided_at": at},
            topics.partner_decisions(partner))


async def start() -> tuple[dict, list[Outcome]]:
    routed = await routed_payload()
    return await feed(None, (topics.APPLICATION_RECEIVED_EVENT, received_payload(), topics.APPLICATION_RECEIVED),
                      (topics.APPLICATION_ROUTED_EVENT, routed, topics.APPLICATION_ROUTED),
                      (topics.APPLICATION_VERIFIED_EVENT, {"application_id": APP, "checks": []},
                       topics.APPLICATION_VERIFIED))


async def feed(state: dict | None, *steps) -> tuple[dict, list[Outcome]]:
    outcomes, every = [], delivery_handlers()
    for n, (event_type, payload, topic) in enumerate(steps):
        outcome = await every[event_type](event(event_type, payload, topic, n), state)
        state = outcome.state if outcome.state is not None else state
        outcomes.append(outcome)
    assert state is not None
    return state, outcomes


def emitted(outcomes: list[Outcome]) -> list:
    return [e for o in outcomes for e in o.emits]


async def ledger_after(emits: list) -> Ledger:
    """Routing's ledger fed the application and every lifecycle event delivery emitted."""
    rules = routing_handlers()
    state = (await rules[topics.APPLICATION_RECEIVED_EVENT](
        event(topics.APPLICATION_RECEIVED_EVENT, received_payload(), topics.APPLICATION_RECEIVED), None)).state
    for n, e in enumerate(emits):
        if e.topic.startswith("tongban.application.") and e.event_type in rules:
            outcome = await rules[e.event_type](event(e.event_type, e.payload, e.topic, n), state)
            state = outcome.state if outcome.state is not None else state
    assert state is not None
    return Ledger.from_state(state["ledger"])


def assignments(emits: list) -> list[tuple]:
    return [(e.topic, e.payload["assignment_id"], e.payload["step"], e.payload["leg"], e.payload["legs"],
             e.payload["deciding_division"]) for e in emits if e.event_type == topics.MATTER_ASSIGNED_EVENT]


async def test_routing_orders_the_three_legs_of_a_pension_transfer():
    routed = await routed_payload()
    assert routed["mode"] == "JOINT"
    assert [(leg["partner_id"], leg["step"]) for leg in routed["legs"]] == [
        ("440000", "CONTACT_LETTER"), ("420000", "FUND_TRANSFER"), ("440000", "COMPLETION")]


async def test_three_legs_run_in_order_each_to_its_party_and_the_last_one_decides():
    state, outcomes = await start()
    first = emitted(outcomes)
    assert assignments(first) == [(topics.partner_assignments("440000"), LEG_1, "CONTACT_LETTER", 1, 3, "440103")]

    day2, day3 = T0 + timedelta(days=1), T0 + timedelta(days=2)
    state, outcomes = await feed(state, answer("ACCEPTED", "440000", LEG_1),
                                 decision("APPROVED", "440000", LEG_1))
    after_1 = emitted(outcomes)
    assert [e.event_type for e in after_1] == [topics.APPLICATION_ACCEPTED_EVENT, topics.LEG_COMPLETED_EVENT,
                                               topics.MATTER_ASSIGNED_EVENT]
    assert assignments(after_1) == [(topics.partner_assignments("420000"), LEG_2, "FUND_TRANSFER", 2, 3, "420106")]
    # the second leg's party gets the applicant sealed for it by the runtime: opened here
    assert after_1[2].payload["applicant"]["name"] == NAME

    state, outcomes = await feed(state, answer("ACCEPTED", "420000", LEG_2),
                                 decision("APPROVED", "420000", LEG_2, day2))
    after_2 = emitted(outcomes)
    # the new insured place holds two legs: each has its own assignment id
    assert assignments(after_2) == [(topics.partner_assignments("440000"), LEG_3, "COMPLETION", 3, 3, "440103")]
    assert not any(e.event_type == topics.APPLICATION_DECIDED_EVENT for e in after_1 + after_2)

    state, outcomes = await feed(state, answer("ACCEPTED", "440000", LEG_3),
                                 decision("APPROVED", "440000", LEG_3, day3))
    last = emitted(outcomes)
    [decided] = [e for e in last if e.event_type == topics.APPLICATION_DECIDED_EVENT]
    assert (decided.payload["outcome"], decided.payload["deciding_partner"], decided.payload["result_reference"]) == (
        "APPROVED", "440000", f"REF-{LEG_3}")
    assert any(e.topic == topics.POSTAL_DISPATCHES for e in last)  # the one result goes out
    assert [e.payload["leg"] for e in after_1 + after_2 if e.event_type == topics.LEG_COMPLETED_EVENT] == [1, 2]

    ledger = await ledger_after(first + after_1 + after_2 + last)
    clocks = {c.step: (c.status, c.starts_on, c.ended_on) for c in ledger.clocks if c.leg == "DECISION"}
    assert clocks == {"CONTACT_LETTER": (DONE, T0.date(), T0.date()),
                      "FUND_TRANSFER": (DONE, T0.date(), day2.date()),
                      "COMPLETION": (DONE, day2.date(), day3.date())}
    assert ledger.clock("DELIVERY").status == RUNNING


async def test_a_failed_second_leg_ends_the_application_denied_and_tells_the_first_leg_to_undo():
    state, outcomes = await start()
    first = emitted(outcomes)
    state, outcomes = await feed(state, answer("ACCEPTED", "440000", LEG_1), decision("APPROVED", "440000", LEG_1),
                                 answer("ACCEPTED", "420000", LEG_2),
                                 decision("DENIED", "420000", LEG_2, reason=f"{NAME} 的缴费记录无法转出"))
    failing = outcomes[-1]
    assert failing.finished
    assert [(e.topic, e.event_type) for e in failing.emits] == [
        (topics.APPLICATION_DECIDED, topics.LEG_FAILED_EVENT),
        (topics.partner_assignments("440000"), topics.ASSIGNMENT_CANCELLED_EVENT),
        (topics.APPLICATION_DECIDED, topics.APPLICATION_DECIDED_EVENT)]
    failed, cancelled, decided = (e.payload for e in failing.emits)
    assert (failed["leg"], failed["step"], failed["partner_id"]) == (2, "FUND_TRANSFER", "420000")
    assert failed["compensated"] == [{"assignment_id": LEG_1, "partner_id": "440000", "step": "CONTACT_LETTER"}]
    assert cancelled["assignment_id"] == LEG_1
    assert decided["outcome"] == "DENIED"
    assert decided["reason"].startswith("leg 2 of 3 (FUND_TRANSFER) failed: ")
    assert NAME not in decided["reason"]  # the partner's words, scrubbed
    assert NAME not in failed["reason"]
    assert not assignments(failing.emits)  # the third leg never starts
    assert "applicant" not in state["received"]  # finished: nothing personal kept

    ledger = await ledger_after(first + emitted(outcomes))
    assert ledger.ended == LEG_FAILED
    assert {c.step: c.status for c in ledger.clocks if c.leg == "DECISION"} == {
        "CONTACT_LETTER": DONE, "FUND_TRANSFER": FAILED, "COMPLETION": STOPPED}


async def test_a_second_leg_refused_by_its_party_fails_it_the_same_way():
    state, _ = await start()
    state, outcomes = await feed(state, answer("ACCEPTED", "440000", LEG_1), decision("APPROVED", "440000", LEG_1),
                                 answer("REFUSED", "420000", LEG_2, reason="转出地无参保记录"))
    assert outcomes[-1].finished
    assert [e.event_type for e in outcomes[-1].emits] == [
        topics.LEG_FAILED_EVENT, topics.ASSIGNMENT_CANCELLED_EVENT, topics.APPLICATION_DECIDED_EVENT]
    assert outcomes[-1].emits[-1].payload["reason"] == "leg 2 of 3 (FUND_TRANSFER) failed: 转出地无参保记录"


@pytest.mark.parametrize("step", [
    decision("APPROVED", "440000", LEG_1),  # leg 1's party again, for its finished leg
    decision("APPROVED", "420000", LEG_1),  # leg 2's party naming leg 1's assignment
    decision("APPROVED", "440000", LEG_2),  # leg 2's assignment on another party's topic
    answer("ACCEPTED", "440000", LEG_3),  # leg 3 before it is assigned
], ids=["finished-leg", "wrong-assignment", "wrong-party", "not-yet-assigned"])
async def test_a_leg_result_from_a_party_not_holding_the_current_leg_is_refused(step):
    state, _ = await start()
    state, _ = await feed(state, answer("ACCEPTED", "440000", LEG_1), decision("APPROVED", "440000", LEG_1))
    with pytest.raises(Rejected):
        await feed(state, step)
    # the second leg still runs with its own party
    _, outcomes = await feed(state, decision("APPROVED", "420000", LEG_2))
    assert assignments(outcomes[0].emits)[0][1] == LEG_3


async def test_a_later_leg_cannot_send_a_supplement_notice():
    state, _ = await start()
    state, _ = await feed(state, answer("ACCEPTED", "440000", LEG_1), decision("APPROVED", "440000", LEG_1))
    with pytest.raises(Rejected):
        await feed(state, answer("SUPPLEMENT_REQUIRED", "420000", LEG_2))


async def test_a_withdrawal_between_legs_cancels_the_current_leg_and_undoes_the_done_one():
    state, _ = await start()
    state, _ = await feed(state, answer("ACCEPTED", "440000", LEG_1), decision("APPROVED", "440000", LEG_1))
    withdrawn = {"application_id": APP, "reason": "", "withdrawn_at": T0}
    _, outcomes = await feed(state, (topics.APPLICATION_WITHDRAWN_EVENT, withdrawn, topics.APPLICATION_RECEIVED))
    cancelled = [(e.topic, e.payload["assignment_id"]) for e in outcomes[0].emits
                 if e.event_type == topics.ASSIGNMENT_CANCELLED_EVENT]
    assert cancelled == [(topics.partner_assignments("440000"), LEG_1), (topics.partner_assignments("420000"), LEG_2)]
    # event ids derive from the cause, the type and the qualifier: each cancellation has its own
    assert len({(e.event_type, e.qualifier) for e in outcomes[0].emits}) == len(outcomes[0].emits)


async def test_the_ledger_follows_a_leg_result_read_before_the_acceptance_it_implies():
    """The acceptance and the leg results travel on different topics: routing may read a leg's
    completion first, and the late acceptance must not start a later leg's clock."""
    state, outcomes = await start()
    first = emitted(outcomes)
    day2 = T0 + timedelta(days=1)
    state, outcomes = await feed(state, answer("ACCEPTED", "440000", LEG_1),
                                 decision("APPROVED", "440000", LEG_1, day2))
    accepted, completed, _ = emitted(outcomes)
    ledger = await ledger_after([*first, completed, accepted])
    clocks = {c.step: (c.status, c.starts_on) for c in ledger.clocks if c.leg == "DECISION"}
    assert clocks == {"CONTACT_LETTER": (DONE, day2.date()), "FUND_TRANSFER": (RUNNING, day2.date()),
                      "COMPLETION": ("WAITING", None)}
    assert ledger.clock("ACCEPTANCE").status == DONE
