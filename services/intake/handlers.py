"""Intake service.

Inputs:  gRPC Submit / Track / Rate; lifecycle events on tongban.application.{routed,
         verified, accepted, decided, delivered}.
Outputs: ApplicationReceived on tongban.application.received; ServiceRating on
         tongban.feedback.ratings (keyed by application id: 一事一评).
State:   one progress view per application (services.intake.domain), no personal data:
         the details it shows are scrubbed of ID and phone numbers (tongban.scrub).
"""

from __future__ import annotations

from services.intake import domain
from tongban import topics
from tongban.events import derive_event_id
from tongban.handling import Emit, Event, Handler, Outcome, Rejected
from tongban.scrub import scrub

RECEIVED = topics.APPLICATION_RECEIVED
RATINGS = topics.FEEDBACK_RATINGS
INPUTS = [
    topics.APPLICATION_ROUTED,
    topics.APPLICATION_VERIFIED,
    topics.APPLICATION_ACCEPTED,
    topics.APPLICATION_DECIDED,
    topics.APPLICATION_DELIVERED,
]
SUBMIT = "intake.Submit"
RATE = "intake.Rate"


async def submit(event: Event, state: dict | None) -> Outcome:
    """`event.payload` is the ApplicationReceived body, already formally checked by the API,
    and `received_by`: the receiving caller's source system and role, from its certificate."""
    body = dict(event.payload)
    receiver = body.pop("received_by", None) or {}
    progress = domain.new_progress(body["application_id"], body["matter_code"], body["submitted_at"],
                                   receiver.get("source_system", ""), receiver.get("role", ""))
    progress["receiving_division"] = body["receiving_division"]
    # Material names and codes are the applicant's free text and travel unsealed: what they
    # repeat of the applicant (name, ID number, phone) is scrubbed here, the one place that
    # knows it in the clear. The personal fields themselves are sealed by the runtime.
    applicant = body.get("applicant") or {}
    parties = (applicant.get("name"), applicant.get("id_number"), applicant.get("phone"))
    if "materials" in body:
        body["materials"] = [{**m, "code": scrub(m["code"], parties), "name": scrub(m["name"], parties)}
                             for m in body["materials"]]
    return Outcome(state=progress, emits=[Emit(RECEIVED, topics.APPLICATION_RECEIVED_EVENT, event.key, body)])


def rating_id_for(command_id: str) -> str:
    """The rating's id follows from the Rate request's id, so the API can answer with it at once."""
    return derive_event_id(command_id, "rating")


async def rate(event: Event, state: dict | None) -> Outcome:
    if state is None:
        raise Rejected("no such application")
    body = event.payload
    try:
        domain.check_rating(state, body["level"], body["channel"], body.get("comment"))
    except domain.InvalidSubmission as exc:
        raise Rejected(str(exc)) from exc
    rating_id = rating_id_for(event.event_id)
    rating = {
        "rating_id": rating_id,
        "application_id": event.key,
        "matter_code": state["matter_code"],
        "division_code": state.get("receiving_division", ""),
        "party": state.get("deciding_partner", ""),
        "level": body["level"],
        "channel": body["channel"],
        "comment": body.get("comment") or None,
        "rated_at": body["rated_at"],
    }
    state["ratings"] = [*state["ratings"], {"rating_id": rating_id, "level": body["level"]}]
    return Outcome(state=state, finished=state["terminal"],
                   emits=[Emit(RATINGS, topics.SERVICE_RATING_EVENT, event.key, rating)])


async def on_routed(event: Event, state: dict | None) -> Outcome:
    p = event.payload
    return _advance(event, state, "ROUTED", p["mode"], deciding_partner=p["deciding_partner"],
                    due_at=p["due_at"], matter_code=p["matter_code"])


async def on_unroutable(event: Event, state: dict | None) -> Outcome:
    return _advance(event, state, "REJECTED", event.payload["reason"])


async def on_verified(event: Event, state: dict | None) -> Outcome:
    return _advance(event, state, "VERIFIED")


async def on_verification_failed(event: Event, state: dict | None) -> Outcome:
    p = event.payload
    detail = "; ".join(p["reasons"] + [f"补正: {m}" for m in p["missing_materials"]])
    return _advance(event, state, "REJECTED", detail)


async def on_accepted(event: Event, state: dict | None) -> Outcome:
    return _advance(event, state, "ACCEPTED", event.payload["deciding_partner"])


async def on_refused(event: Event, state: dict | None) -> Outcome:
    return _advance(event, state, "REJECTED", event.payload["reason"])


async def on_decided(event: Event, state: dict | None) -> Outcome:
    p = event.payload
    stage = "DECIDED" if p["outcome"] == "APPROVED" else "DENIED"
    return _advance(event, state, stage, p.get("reason") or "", result_reference=p.get("result_reference"))


async def on_delivered(event: Event, state: dict | None) -> Outcome:
    p = event.payload
    return _advance(event, state, "DELIVERED", p["method"], tracking_number=p.get("tracking_number"))


def _advance(event: Event, state: dict | None, stage: str, detail: str = "", **facts: object) -> Outcome:
    # Details come from other services and partners; they were scrubbed where the names are
    # known, and ID and phone numbers are scrubbed once more before Track shows them.
    progress = domain.advance(state, event.key, stage, event.envelope["occurred_at"], scrub(detail), **facts)
    # A concluded application leaves the hot state for the archive; Track and Rate still find it.
    return Outcome(state=progress, finished=progress["terminal"])


HANDLERS: dict[str, Handler] = {
    topics.APPLICATION_ROUTED_EVENT: on_routed,
    topics.APPLICATION_UNROUTABLE_EVENT: on_unroutable,
    topics.APPLICATION_VERIFIED_EVENT: on_verified,
    topics.APPLICATION_VERIFICATION_FAILED_EVENT: on_verification_failed,
    topics.APPLICATION_ACCEPTED_EVENT: on_accepted,
    topics.APPLICATION_REFUSED_EVENT: on_refused,
    topics.APPLICATION_DECIDED_EVENT: on_decided,
    topics.APPLICATION_DELIVERED_EVENT: on_delivered,
}
COMMANDS: dict[str, Handler] = {SUBMIT: submit, RATE: rate}
