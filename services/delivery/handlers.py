"""Delivery service.

Inputs:  ApplicationReceived / Routed / Verified (the file, the deciding authority, the go);
         AuthorityAcceptance and AuthorityDecision on tongban.partner.<id>.decisions (only
         from the assigned authority); PostalReceipt on tongban.partner.ems.receipts.
Outputs: MatterAssigned on tongban.partner.<id>.assignments; ApplicationAccepted/Refused on
         tongban.application.accepted; ApplicationDecided on tongban.application.decided;
         PostalDispatch on tongban.partner.ems.dispatches; ApplicationDelivered on
         tongban.application.delivered.
State:   one file per application: what intake received, the routing decision, the
         assignment, the decision and the dispatch.
"""

from __future__ import annotations

from services.delivery import domain
from tongban.events import now_utc
from tongban.runtime import Emit, Event, Outcome, Rejected

APP = "tongban.application."
LIFECYCLE_INPUTS = ["tongban.application.received", "tongban.application.routed", "tongban.application.verified"]
RECEIPTS = "tongban.partner.ems.receipts"
DISPATCHES = "tongban.partner.ems.dispatches"


def inputs(partner_ids: list[str]) -> list[str]:
    return LIFECYCLE_INPUTS + [f"tongban.partner.{p}.decisions" for p in partner_ids] + [RECEIPTS]


def _sender(event: Event) -> str:
    """The partner id of a partner topic: tongban.partner.<id>.<stream>."""
    return event.topic.split(".")[2]


def _assign(key: str, file: dict) -> Outcome:
    if not domain.ready_to_assign(file):
        return Outcome(state=file)
    received, routed = file["received"], file["routed"]
    partner = routed["deciding_partner"]
    assignment_id = domain.assignment_id_for(key, partner)
    file["assignment"] = {"assignment_id": assignment_id, "partner_id": partner}
    assigned = {
        "assignment_id": assignment_id,
        "application_id": key,
        "matter_code": routed["matter_code"],
        "mode": routed["mode"],
        "deciding_division": routed["deciding_division"],
        "applicant": received["applicant"],
        "materials": received["materials"],
        "promised_working_days": routed["promised_working_days"],
        "due_at": routed["due_at"],
    }
    topic = f"tongban.partner.{partner}.assignments"
    return Outcome(state=file, emits=[Emit(topic, "tongban.partner.MatterAssigned", key, assigned)])


async def on_received(event: Event, state: dict | None) -> Outcome:
    p = event.payload
    received = {k: p[k] for k in ("applicant", "materials", "delivery_method", "postal_address")}
    return _assign(event.key, {**(state or {}), "received": received})


async def on_routed(event: Event, state: dict | None) -> Outcome:
    return _assign(event.key, {**(state or {}), "routed": event.payload})


async def on_verified(event: Event, state: dict | None) -> Outcome:
    return _assign(event.key, {**(state or {}), "verified": True})


async def on_acceptance(event: Event, state: dict | None) -> Outcome:
    p = event.payload
    assignment = _check(event, state)
    partner = assignment["partner_id"]
    if p["outcome"] == "ACCEPTED":
        body = {"application_id": event.key, "deciding_partner": partner, "accepted_at": p["accepted_at"]}
        emit = Emit("tongban.application.accepted", APP + "ApplicationAccepted", event.key, body)
    elif p["outcome"] == "REFUSED":
        body = {"application_id": event.key, "deciding_partner": partner, "reason": p["reason"] or "refused"}
        emit = Emit("tongban.application.accepted", APP + "ApplicationRefused", event.key, body)
    else:
        raise Rejected(f"acceptance outcome {p['outcome']} is not handled yet")
    return Outcome(state={**state, "acceptance": p["outcome"]}, emits=[emit])


async def on_decision(event: Event, state: dict | None) -> Outcome:
    p = event.payload
    assignment = _check(event, state)
    if "decision" in state:
        raise Rejected("the authority already decided this application")
    file = {**state, "decision": p["outcome"]}
    decided = {
        "application_id": event.key,
        "deciding_partner": assignment["partner_id"],
        "outcome": p["outcome"],
        "result_reference": p["result_reference"],
        "reason": p["reason"],
        "decided_at": p["decided_at"],
    }
    emits = [Emit("tongban.application.decided", APP + "ApplicationDecided", event.key, decided)]
    if p["outcome"] == "APPROVED":
        emits.append(_dispatch(event.key, file, p["result_reference"]))
    return Outcome(state=file, emits=emits)


def _dispatch(key: str, file: dict, result_reference: str | None) -> Emit:
    received = file["received"]
    dispatch_id = domain.dispatch_id_for(key)
    file["dispatch_id"] = dispatch_id
    if domain.needs_carrier(received["delivery_method"]):
        applicant = received["applicant"]
        body = {
            "dispatch_id": dispatch_id,
            "application_id": key,
            "recipient_name": applicant["name"],
            "address": received["postal_address"],
            "phone": applicant["phone"],
            "item": f"result {result_reference or ''}".strip(),
        }
        return Emit(DISPATCHES, "tongban.delivery.PostalDispatch", key, body)
    file["delivered"] = True
    body = {"application_id": key, "method": received["delivery_method"], "dispatch_id": dispatch_id,
            "tracking_number": None, "delivered_at": now_utc()}
    return Emit("tongban.application.delivered", APP + "ApplicationDelivered", key, body)


async def on_receipt(event: Event, state: dict | None) -> Outcome:
    p = event.payload
    if state is None or state.get("dispatch_id") != p["dispatch_id"]:
        raise Rejected("receipt for a dispatch this service did not make")
    if p["status"] != "DELIVERED" or state.get("delivered"):
        return Outcome(state={**state, "postal_status": p["status"]})
    body = {"application_id": event.key, "method": "POST", "dispatch_id": p["dispatch_id"],
            "tracking_number": p["tracking_number"], "delivered_at": p["at"]}
    return Outcome(state={**state, "postal_status": p["status"], "delivered": True},
                   emits=[Emit("tongban.application.delivered", APP + "ApplicationDelivered", event.key, body)])


def _check(event: Event, state: dict | None) -> dict:
    try:
        return domain.check_sender(state, _sender(event), event.payload["assignment_id"])
    except domain.NotAssigned as exc:
        raise Rejected(str(exc)) from exc


HANDLERS = {
    APP + "ApplicationReceived": on_received,
    APP + "ApplicationRouted": on_routed,
    APP + "ApplicationVerified": on_verified,
    "tongban.partner.AuthorityAcceptance": on_acceptance,
    "tongban.partner.AuthorityDecision": on_decision,
    "tongban.delivery.PostalReceipt": on_receipt,
}
