"""Intake service.

Inputs:  gRPC Submit / Withdraw / SupplementMaterials / Rate as commands; its own
         tongban.application.received (the numbered application comes back to the view);
         lifecycle events on tongban.application.{routed, verified, accepted, decided,
         delivered}.
Outputs: ApplicationReceived (v2, numbered), ApplicationWithdrawn and SupplementSubmitted on
         tongban.application.received; NoticeServed on tongban.application.notices;
         ServiceRating on tongban.feedback.ratings (keyed by application id: 一事一评).
State:   one progress view per application (services.intake.domain), no personal data:
         the details it shows are scrubbed of ID and phone numbers (tongban.scrub); and
         NUMBER_SHARDS numbering counters (`numbering:<shard>`).

Submitting takes two commands: SUBMIT, keyed by the application, records the view (and
the fingerprints a retry is compared with); NUMBER, keyed by the application's numbering
counter, takes the next number and publishes the numbered ApplicationReceived, which comes
back to the view. The API sends NUMBER only once the view holds its own submission, so a
concurrent retry with another payload can never be the one that is published.
"""

from __future__ import annotations

from datetime import datetime

from services.intake import domain
from tongban import topics
from tongban.events import derive_event_id
from tongban.handling import Emit, Event, Handler, Outcome, Rejected
from tongban.scrub import scrub

RECEIVED = topics.APPLICATION_RECEIVED
NOTICES = topics.APPLICATION_NOTICES
RATINGS = topics.FEEDBACK_RATINGS
INPUTS = [
    topics.APPLICATION_RECEIVED,
    topics.APPLICATION_ROUTED,
    topics.APPLICATION_VERIFIED,
    topics.APPLICATION_ACCEPTED,
    topics.APPLICATION_DECIDED,
    topics.APPLICATION_DELIVERED,
]
SUBMIT = "intake.Submit"
NUMBER = "intake.Number"
WITHDRAW = "intake.Withdraw"
SUPPLEMENT = "intake.SupplementMaterials"
RATE = "intake.Rate"


async def submit(event: Event, state: dict | None) -> Outcome:
    """`event.payload`: `received_by` (the caller's source system and role, from its
    certificate), `fingerprints` of the submitted fields, and the ApplicationReceived body."""
    if state is not None:
        return Outcome()  # the API compares a retry with the fingerprints kept here
    body = event.payload
    receiver = body.get("received_by") or {}
    progress = domain.new_progress(body["application_id"], body["matter_code"], body["submitted_at"],
                                   receiver.get("source_system", ""), receiver.get("role", ""))
    progress["receiving_division"] = body["receiving_division"]
    # As a list: field names hold dots, which the archive (MongoDB) does not take as keys.
    progress["fingerprints"] = [{"field": name, "digest": digest}
                                for name, digest in sorted(body["fingerprints"].items())]
    progress["application_number"] = ""  # the numbering command fills it in
    return Outcome(state=progress)


async def number(event: Event, counter: dict | None) -> Outcome:
    """Number one application and publish it. `event.key` is the numbering counter."""
    body = {k: v for k, v in event.payload.items() if k not in ("received_by", "fingerprints")}
    application_number, counter = domain.assign_number(counter, event.key, body["receiving_division"],
                                                       body["submitted_at"])
    # Material names and codes are the applicant's free text and travel unsealed: what they
    # repeat of the applicant (name, ID number, phone) is scrubbed here, the one place that
    # knows it in the clear. The personal fields themselves are sealed by the runtime.
    applicant = body.get("applicant") or {}
    parties = (applicant.get("name"), applicant.get("id_number"), applicant.get("phone"))
    body["materials"] = [{**m, "code": scrub(m["code"], parties), "name": scrub(m["name"], parties)}
                         for m in body["materials"]]
    body["application_number"] = application_number
    # The event is the application's (its key, and its correlation: what its personal fields
    # are sealed for), though the counter publishes it.
    return Outcome(state=counter, emits=[Emit(RECEIVED, topics.APPLICATION_RECEIVED_EVENT, body["application_id"],
                                              body, correlation_id=body["application_id"])])


async def on_received(event: Event, state: dict | None) -> Outcome:
    """The numbered application, back from the topic: the view learns its number and the
    applicant gets the receipt (收件回执)."""
    p = event.payload
    if state is None:  # received elsewhere than through Submit: operators see it
        state = domain.new_progress(p["application_id"], p["matter_code"], p["submitted_at"])
        state["receiving_division"] = p["receiving_division"]
    if state.get("application_number"):
        return Outcome()
    number = p.get("application_number", "")
    state = domain.advance(state, event.key, "NUMBERED", p["submitted_at"], number, domain.RECEIPT,
                           application_number=number)
    return _serve(event, state, domain.RECEIPT, p["submitted_at"])


async def withdraw(event: Event, state: dict | None) -> Outcome:
    """撤回. The API checked the stage; a decision that arrived since is checked again here."""
    view = _existing(state)
    try:
        domain.check_withdrawal(view)
    except domain.InvalidSubmission as exc:
        raise Rejected(str(exc)) from exc
    at = event.payload["withdrawn_at"]
    # The applicant's own words may name people: they travel sealed, and the view (which
    # holds no personal data) records only that the applicant withdrew.
    withdrawn = {"application_id": event.key, "reason": event.payload.get("reason") or "", "withdrawn_at": at}
    view = domain.advance(view, event.key, "WITHDRAWN", at, "withdrawn by the applicant")
    return Outcome(state=view, finished=True,
                   emits=[Emit(RECEIVED, topics.APPLICATION_WITHDRAWN_EVENT, event.key, withdrawn)])


async def supplement(event: Event, state: dict | None) -> Outcome:
    """补正: the materials go back to the deciding authority (through delivery)."""
    view = _existing(state)
    codes = [scrub(code) for code in event.payload["materials"]]
    try:
        domain.check_supplement(view, tuple(codes))
    except domain.InvalidSubmission as exc:
        raise Rejected(str(exc)) from exc
    at = event.payload["submitted_at"]
    submitted = {"application_id": event.key, "materials": codes, "submitted_at": at}
    view = domain.advance(view, event.key, "SUPPLEMENTED", at, ", ".join(codes))
    return Outcome(state=view, emits=[Emit(RECEIVED, topics.SUPPLEMENT_SUBMITTED_EVENT, event.key, submitted)])


def _existing(state: dict | None) -> dict:
    if state is None:
        raise Rejected("no such application")
    return state


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
    p = event.payload
    return _advance(event, state, "ACCEPTED", p["deciding_partner"], notice=(domain.ACCEPTANCE, [], ""))


async def on_refused(event: Event, state: dict | None) -> Outcome:
    """不予受理 (v1, or v2 with the authority's own remedy)."""
    p = event.payload
    remedy = p.get("remedy") or domain.REMEDY
    return _advance(event, state, "REJECTED", p["reason"],
                    notice=(domain.NON_ACCEPTANCE, [scrub(p["reason"])], remedy))


async def on_supplement_requested(event: Event, state: dict | None) -> Outcome:
    """补正告知: everything missing at once, with the deadline; the application pauses."""
    p = event.payload
    reasons = [scrub(f"{code}: {why}") for code, why in sorted(p["missing_materials"].items())]
    return _advance(event, state, "SUPPLEMENT_REQUESTED", p.get("cause") or "", supplement_by=p["supplement_by"],
                    deciding_partner=p["deciding_partner"],
                    notice=(domain.SUPPLEMENT, reasons, ""), notice_deadline=p["supplement_by"])


async def on_materials_supplemented(event: Event, state: dict | None) -> Outcome:
    return _advance(event, state, "SUPPLEMENTED", ", ".join(event.payload["materials"]))


async def on_clock_changed(event: Event, state: dict | None) -> Outcome:
    p = event.payload
    return _advance(event, state, "CLOCK_CHANGED", f"{p['kind']} {p['working_days']}: {p['reason']}")


async def on_closed(event: Event, state: dict | None) -> Outcome:
    p = event.payload
    stage = "WITHDRAWN" if p["status"] == "WITHDRAWN" else "CLOSED"
    return _advance(event, state, stage, f"{p['status']}: {p['reason']}")


async def on_decided(event: Event, state: dict | None) -> Outcome:
    p = event.payload
    if p["outcome"] == "APPROVED":
        return _advance(event, state, "DECIDED", "", result_reference=p.get("result_reference"))
    reason = p.get("reason") or ""
    return _advance(event, state, "DENIED", reason, notice=(domain.DENIAL, [scrub(reason)], domain.REMEDY))


async def on_delivered(event: Event, state: dict | None) -> Outcome:
    p = event.payload
    return _advance(event, state, "DELIVERED", p["method"], tracking_number=p.get("tracking_number"))


def _advance(event: Event, state: dict | None, stage: str, detail: str = "",
             notice: tuple[str, list[str], str] | None = None, notice_deadline: datetime | None = None,
             **facts: object) -> Outcome:
    # Details come from other services and partners; they were scrubbed where the names are
    # known, and ID and phone numbers are scrubbed once more before Track shows them.
    at = event.envelope["occurred_at"]
    if state is not None and state["terminal"]:
        notice = None  # e.g. a 补正 notice crossing a withdrawal: the concluded application is not served it
    progress = domain.advance(state, event.key, stage, at, scrub(detail), notice[0] if notice else "", **facts)
    if notice is None:
        # A concluded application leaves the hot state for the archive; Track and Rate still find it.
        return Outcome(state=progress, finished=progress["terminal"])
    kind, reasons, remedy = notice
    return _serve(event, progress, kind, at, reasons, remedy, notice_deadline)


def _serve(event: Event, view: dict, kind: str, at: datetime, reasons: list[str] | None = None,
           remedy: str = "", deadline: datetime | None = None) -> Outcome:
    """Serve a notice: on the notices topic for the notification adapter, and in the view."""
    served = domain.notice(derive_event_id(event.event_id, topics.NOTICE_SERVED_EVENT, kind), view, kind, at,
                           reasons, remedy, deadline)
    view = domain.record_notice(view, served)
    return Outcome(state=view, finished=view["terminal"],
                   emits=[Emit(NOTICES, topics.NOTICE_SERVED_EVENT, event.key, served, qualifier=kind)])


HANDLERS: dict[str, Handler] = {
    topics.APPLICATION_RECEIVED_EVENT: on_received,
    topics.APPLICATION_ROUTED_EVENT: on_routed,
    topics.APPLICATION_UNROUTABLE_EVENT: on_unroutable,
    topics.APPLICATION_VERIFIED_EVENT: on_verified,
    topics.APPLICATION_VERIFICATION_FAILED_EVENT: on_verification_failed,
    topics.APPLICATION_ACCEPTED_EVENT: on_accepted,
    topics.APPLICATION_REFUSED_EVENT: on_refused,
    topics.SUPPLEMENT_REQUESTED_EVENT: on_supplement_requested,
    topics.MATERIALS_SUPPLEMENTED_EVENT: on_materials_supplemented,
    topics.APPLICATION_CLOCK_CHANGED_EVENT: on_clock_changed,
    topics.APPLICATION_CLOSED_EVENT: on_closed,
    topics.APPLICATION_DECIDED_EVENT: on_decided,
    topics.APPLICATION_DELIVERED_EVENT: on_delivered,
}
COMMANDS: dict[str, Handler] = {SUBMIT: submit, NUMBER: number, WITHDRAW: withdraw, SUPPLEMENT: supplement,
                                RATE: rate}
