"""Delivery's rules through its handlers: plain functions of (event, state), no broker."""

from datetime import UTC, datetime

import pytest

from services.delivery import handlers
from services.delivery.domain import dispatch_id_for
from tongban.runtime import Event, Outcome, Rejected

APP = "TBUNIT"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
RECEIVED = {"applicant": {"kind": "PERSON", "name": "示例", "id_number": "x", "phone": None},
            "materials": [], "delivery_method": "POST", "postal_address": "长沙"}
ROUTED = {"application_id": APP, "matter_code": "KSTB-MKT-01", "mode": "RECEIVE_HERE_HANDLE_THERE",
          "deciding_partner": "440000", "deciding_division": "440300", "legs": [], "promised_working_days": 3,
          "due_at": T0}


def event(event_type: str, payload: dict, topic: str = "tongban.application.received") -> Event:
    return Event(f"id-{event_type}", event_type, APP, payload, {"occurred_at": T0, "correlation_id": APP}, topic)


async def feed(*steps) -> tuple[dict | None, list[Outcome]]:
    state, outcomes = None, []
    for event_type, payload, topic in steps:
        outcome = await handlers.HANDLERS[event_type](event(event_type, payload, topic), state)
        state = outcome.state if outcome.state is not None else state
        outcomes.append(outcome)
    return state, outcomes


RECEIVED_STEP = ("tongban.application.ApplicationReceived", {**RECEIVED, "matter_code": "KSTB-MKT-01"},
                 "tongban.application.received")
ROUTED_STEP = ("tongban.application.ApplicationRouted", ROUTED, "tongban.application.routed")
VERIFIED_STEP = ("tongban.application.ApplicationVerified", {"application_id": APP, "checks": []},
                 "tongban.application.verified")


def decision(outcome: str, partner: str = "440000") -> tuple:
    payload = {"assignment_id": f"{APP}:{partner}", "application_id": APP, "outcome": outcome,
               "result_reference": "LIC-1" if outcome == "APPROVED" else None, "reason": None, "decided_at": T0}
    return "tongban.partner.AuthorityDecision", payload, f"tongban.partner.{partner}.decisions"


@pytest.mark.parametrize("order", [(RECEIVED_STEP, ROUTED_STEP, VERIFIED_STEP),
                                   (VERIFIED_STEP, ROUTED_STEP, RECEIVED_STEP)])
async def test_work_is_assigned_once_when_received_routed_and_verified_whatever_the_order(order):
    state, outcomes = await feed(*order)
    emitted = [e for o in outcomes for e in o.emits]
    assert [(e.topic, e.event_type) for e in emitted] == [
        ("tongban.partner.440000.assignments", "tongban.partner.MatterAssigned")]
    assert emitted[0].payload["applicant"] == RECEIVED["applicant"]
    assert state["assignment"] == {"assignment_id": f"{APP}:440000", "partner_id": "440000"}


async def test_only_the_assigned_authority_may_decide():
    with pytest.raises(Rejected, match="not the assigned authority"):
        await feed(RECEIVED_STEP, ROUTED_STEP, VERIFIED_STEP, decision("APPROVED", partner="420000"))
    with pytest.raises(Rejected, match="no work is assigned"):
        await feed(RECEIVED_STEP, decision("APPROVED"))


async def test_an_approved_paper_result_goes_to_the_carrier_once_and_is_delivered_on_its_receipt():
    state, outcomes = await feed(RECEIVED_STEP, ROUTED_STEP, VERIFIED_STEP, decision("APPROVED"))
    assert [e.event_type for e in outcomes[-1].emits] == ["tongban.application.ApplicationDecided",
                                                          "tongban.delivery.PostalDispatch"]
    with pytest.raises(Rejected, match="already decided"):
        await handlers.on_decision(event(*decision("APPROVED")), state)
    receipt = {"dispatch_id": dispatch_id_for(APP), "application_id": APP, "tracking_number": "EMS1",
               "status": "DELIVERED", "at": T0}
    delivered = await handlers.on_receipt(event("tongban.delivery.PostalReceipt", receipt), state)
    assert [e.event_type for e in delivered.emits] == ["tongban.application.ApplicationDelivered"]
    again = await handlers.on_receipt(event("tongban.delivery.PostalReceipt", receipt), delivered.state)
    assert again.emits == []
    with pytest.raises(Rejected, match="did not make"):
        await handlers.on_receipt(event("tongban.delivery.PostalReceipt", {**receipt, "dispatch_id": "X"}), state)


async def test_an_electronic_result_is_delivered_with_the_decision_and_a_denial_delivers_nothing():
    electronic = (RECEIVED_STEP[0], {**RECEIVED_STEP[1], "delivery_method": "ELECTRONIC"}, RECEIVED_STEP[2])
    _, outcomes = await feed(electronic, ROUTED_STEP, VERIFIED_STEP, decision("APPROVED"))
    assert [e.event_type for e in outcomes[-1].emits] == ["tongban.application.ApplicationDecided",
                                                          "tongban.application.ApplicationDelivered"]
    _, outcomes = await feed(RECEIVED_STEP, ROUTED_STEP, VERIFIED_STEP, decision("DENIED"))
    assert [e.event_type for e in outcomes[-1].emits] == ["tongban.application.ApplicationDecided"]
