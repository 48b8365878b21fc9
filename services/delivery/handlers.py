"""Delivery service.

Inputs:  ApplicationReceived / Routed / Verified (the file, the deciding authority, the go);
         AuthorityAcceptance and AuthorityDecision on tongban.partner.<id>.decisions (only
         from the assigned authority); PostalReceipt on tongban.partner.ems.receipts.
Outputs: MatterAssigned on tongban.partner.<id>.assignments; ApplicationAccepted/Refused on
         tongban.application.accepted; ApplicationDecided on tongban.application.decided;
         PostalDispatch on tongban.partner.ems.dispatches; ApplicationDelivered on
         tongban.application.delivered.
State:   one file per application: what intake received, the routing decision, the
         assignment, the decision and the dispatch. The applicant's personal fields stay
         sealed as intake sealed them (for verification and delivery); delivery opens them only
         to seal them again for the assigned partner or the carrier, and to scrub partner
         reasons, and drops them once the file is finished.
"""

from __future__ import annotations

from services.delivery import domain
from tongban import topics
from tongban.codec import SchemaRegistry
from tongban.events import now_utc
from tongban.handling import Emit, Event, Handler, Outcome, Rejected
from tongban.pii import PiiCipher, open_record
from tongban.scrub import scrub

LIFECYCLE_INPUTS = [topics.APPLICATION_RECEIVED, topics.APPLICATION_ROUTED, topics.APPLICATION_VERIFIED]
RECEIPTS = topics.POSTAL_RECEIPTS
DISPATCHES = topics.POSTAL_DISPATCHES


def inputs(partner_ids: list[str]) -> list[str]:
    return LIFECYCLE_INPUTS + [topics.partner_decisions(p) for p in partner_ids] + [RECEIPTS]


def _sender(event: Event) -> str:
    """The partner that wrote the record: the id in its topic, tongban.partner.<id>.<stream>,
    which the broker's ACLs let that partner alone write (a replay through the retry topic
    keeps its origin topic, and only operators may write there). The envelope's
    `source_partner` is the client's own claim: one that disagrees is dead-lettered."""
    sender = event.topic.split(".")[2]
    claimed = event.envelope.get("source_partner")
    if claimed is not None and claimed != sender:
        raise Rejected(f"the envelope names partner {claimed}, but the record came on partner {sender}'s topic")
    return sender


class _Opener:
    """Opens the personal fields of the file's `received` part where intake sealed them (this
    application's ApplicationReceived), with delivery's own key."""

    def __init__(self, cipher: PiiCipher, registry: SchemaRegistry) -> None:
        self.cipher = cipher
        self.registry = registry

    def received(self, key: str, file: dict) -> dict:
        return open_record(self.registry, topics.APPLICATION_RECEIVED_EVENT, file["received"], self.cipher, key)

    def parties(self, key: str, file: dict) -> list[str]:
        """What names the application's parties, for scrubbing partner text."""
        if not any(file.get("received", {}).get("applicant", {}).values()):
            return []
        applicant = self.received(key, file)["applicant"]
        return [v for v in (applicant.get("name"), applicant.get("id_number"), applicant.get("phone")) if v]


def _finished(file: dict) -> dict:
    """The file once its work is done: the applicant's personal fields are no longer needed
    and are not archived."""
    received = file.get("received")
    if not received:
        return file
    return {**file, "received": {k: v for k, v in received.items() if k not in ("applicant", "postal_address")}}


def make_handlers(cipher: PiiCipher, registry: SchemaRegistry | None = None) -> dict[str, Handler]:
    opener = _Opener(cipher, registry or SchemaRegistry.load())

    def assign(key: str, file: dict) -> Outcome:
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
            # Opened here, sealed again by the runtime for this partner only.
            "applicant": opener.received(key, file)["applicant"],
            "materials": received["materials"],
            "promised_working_days": routed["promised_working_days"],
            "due_at": routed["due_at"],
        }
        topic = topics.partner_assignments(partner)
        return Outcome(state=file, emits=[Emit(topic, topics.MATTER_ASSIGNED_EVENT, key, assigned)])

    async def on_received(event: Event, state: dict | None) -> Outcome:
        p = event.payload
        received = {k: p[k] for k in ("applicant", "materials", "delivery_method", "postal_address")}
        return assign(event.key, {**(state or {}), "received": received})

    async def on_routed(event: Event, state: dict | None) -> Outcome:
        return assign(event.key, {**(state or {}), "routed": event.payload})

    async def on_verified(event: Event, state: dict | None) -> Outcome:
        return assign(event.key, {**(state or {}), "verified": True})

    async def on_acceptance(event: Event, state: dict | None) -> Outcome:
        p = event.payload
        assignment = _check(event, state)
        assert state is not None  # _check refuses a file without an assignment
        partner = assignment["partner_id"]
        if p["outcome"] == "ACCEPTED":
            body = {"application_id": event.key, "deciding_partner": partner, "accepted_at": p["accepted_at"]}
            emit = Emit(topics.APPLICATION_ACCEPTED, topics.APPLICATION_ACCEPTED_EVENT, event.key, body)
        elif p["outcome"] == "REFUSED":
            # The partner's words travel unsealed and reach Track: nothing of the applicant.
            reason = scrub(p["reason"], opener.parties(event.key, state)) or "refused"
            body = {"application_id": event.key, "deciding_partner": partner, "reason": reason}
            emit = Emit(topics.APPLICATION_ACCEPTED, topics.APPLICATION_REFUSED_EVENT, event.key, body)
        else:
            raise Rejected(f"acceptance outcome {p['outcome']} is not handled yet")
        refused = p["outcome"] == "REFUSED"
        file = {**state, "acceptance": p["outcome"]}
        return Outcome(state=_finished(file) if refused else file, emits=[emit], finished=refused)

    async def on_decision(event: Event, state: dict | None) -> Outcome:
        p = event.payload
        assignment = _check(event, state)
        assert state is not None  # _check refuses a file without an assignment
        if state.get("acceptance") == "REFUSED":
            raise Rejected("the authority refused to accept this application; it cannot decide it")
        if "decision" in state:
            raise Rejected("the authority already decided this application")
        file = {**state, "decision": p["outcome"]}
        parties = opener.parties(event.key, file) if p["reason"] or p["result_reference"] else []
        decided = {
            "application_id": event.key,
            "deciding_partner": assignment["partner_id"],
            "outcome": p["outcome"],
            "result_reference": p["result_reference"],
            "reason": scrub(p["reason"], parties) if p["reason"] is not None else None,
            "decided_at": p["decided_at"],
        }
        emits = [Emit(topics.APPLICATION_DECIDED, topics.APPLICATION_DECIDED_EVENT, event.key, decided)]
        if p["outcome"] == "APPROVED":
            emits.append(dispatch(event.key, file, p["result_reference"], parties))
        # Done once denied or delivered without the carrier; a postal dispatch waits for its receipt.
        finished = p["outcome"] != "APPROVED" or file.get("delivered", False)
        return Outcome(state=_finished(file) if finished else file, emits=emits, finished=finished)

    def dispatch(key: str, file: dict, result_reference: str | None, parties: list[str]) -> Emit:
        received = file["received"]
        dispatch_id = domain.dispatch_id_for(key)
        file["dispatch_id"] = dispatch_id
        if domain.needs_carrier(received["delivery_method"]):
            opened = opener.received(key, file)
            applicant = opened["applicant"]
            # Opened here, sealed again by the runtime for the carrier only.
            body = {
                "dispatch_id": dispatch_id,
                "application_id": key,
                "recipient_name": applicant["name"],
                "address": opened["postal_address"],
                "phone": applicant["phone"],
                "item": scrub(f"result {result_reference or ''}".strip(), parties),
            }
            return Emit(DISPATCHES, topics.POSTAL_DISPATCH_EVENT, key, body)
        file["delivered"] = True
        body = {"application_id": key, "method": received["delivery_method"], "dispatch_id": dispatch_id,
                "tracking_number": None, "delivered_at": now_utc()}
        return Emit(topics.APPLICATION_DELIVERED, topics.APPLICATION_DELIVERED_EVENT, key, body)

    async def on_receipt(event: Event, state: dict | None) -> Outcome:
        p = event.payload
        _sender(event)  # the carrier's own topic, and an envelope that agrees
        if state is None or state.get("dispatch_id") != p["dispatch_id"]:
            raise Rejected("receipt for a dispatch this service did not make")
        if p["status"] != "DELIVERED" or state.get("delivered"):
            return Outcome(state={**state, "postal_status": p["status"]})
        body = {"application_id": event.key, "method": "POST", "dispatch_id": p["dispatch_id"],
                "tracking_number": p["tracking_number"], "delivered_at": p["at"]}
        file = _finished({**state, "postal_status": p["status"], "delivered": True})
        return Outcome(state=file, finished=True,
                       emits=[Emit(topics.APPLICATION_DELIVERED, topics.APPLICATION_DELIVERED_EVENT, event.key, body)])

    return {
        topics.APPLICATION_RECEIVED_EVENT: on_received,
        topics.APPLICATION_ROUTED_EVENT: on_routed,
        topics.APPLICATION_VERIFIED_EVENT: on_verified,
        topics.AUTHORITY_ACCEPTANCE_EVENT: on_acceptance,
        topics.AUTHORITY_DECISION_EVENT: on_decision,
        topics.POSTAL_RECEIPT_EVENT: on_receipt,
    }


def _check(event: Event, state: dict | None) -> dict:
    try:
        return domain.check_sender(state, _sender(event), event.payload["assignment_id"])
    except domain.NotAssigned as exc:
        raise Rejected(str(exc)) from exc
