"""Intake service.

Inputs:  gRPC Submit / Withdraw / SupplementMaterials / Rate as commands, and partners'
         submissions (services.intake.partner_feed) as PartnerSubmit / PartnerRefuse; its own
         tongban.application.received (the numbered application comes back to the view);
         lifecycle events on tongban.application.{routed, verified, accepted, decided,
         delivered}, a joint matter's LegCompleted / LegFailed (on .decided) and a bundle's
         BundleMemberHeld / BundleReleased (on .routed) among them; the carrier's
         MaterialsDispatched / MaterialsReceived on tongban.partner.ems.originals (资料寄递); its own
         ConsultationRequested / ConsultationRecorded (re-keyed to the application they name).
Outputs: ApplicationReceived (v2, numbered), ApplicationWithdrawn and SupplementSubmitted on
         tongban.application.received; NoticeServed on tongban.application.notices;
         ServiceRating (v2: the rated role, party and division from the view) on
         tongban.feedback.ratings (keyed by application id); SubmissionReceived and
         SubmissionRefused on tongban.partner.<P>.acknowledgements; ConsultationRequested and
         ConsultationRecorded (异地视频会商收件, gRPC RequestConsultation / RecordConsultation) on
         tongban.consultation.recorded.
State:   one progress view per application (services.intake.domain; a joint matter's legs
         with their party, step, state and times), no personal data:
         the details it shows are scrubbed of ID and phone numbers (tongban.scrub); and
         NUMBER_SHARDS numbering counters (`numbering:<shard>`); one entry per video consultation
         (services.intake.consultation), keyed by its id.

Submitting takes two commands: SUBMIT, keyed by the application, records the view (and
the fingerprints a retry is compared with); NUMBER, keyed by the application's numbering
counter, takes the next number and publishes the numbered ApplicationReceived, which comes
back to the view. The API sends NUMBER only once the view holds its own submission, so a
concurrent retry with another payload can never be the one that is published. The
partner feed sends PartnerSubmit and NUMBER in that order for each submission it reads in
order, which gives the same guarantee (see partner_feed).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from services.intake import consultation, domain
from tongban import topics
from tongban.events import derive_event_id
from tongban.handling import Emit, Event, Handler, KeyOf, Outcome, Rejected
from tongban.scrub import scrub

RECEIVED = topics.APPLICATION_RECEIVED
NOTICES = topics.APPLICATION_NOTICES
RATINGS = topics.FEEDBACK_RATINGS
CONSULTATIONS = topics.CONSULTATIONS
INPUTS = [
    topics.APPLICATION_RECEIVED,
    topics.APPLICATION_ROUTED,
    topics.APPLICATION_VERIFIED,
    topics.APPLICATION_ACCEPTED,
    topics.APPLICATION_DECIDED,
    topics.APPLICATION_DELIVERED,
    topics.POSTAL_ORIGINALS,  # 资料寄递: the parcel of paper originals, for the timeline
    topics.CONSULTATIONS,  # its own video consultations, for the timeline of the application they name
]
SUBMIT = "intake.Submit"
# A partner's submission (services/intake/partner_feed.py): checked and either recorded like
# SUBMIT (then numbered by NUMBER) or refused back to the partner.
PARTNER_SUBMIT = "intake.PartnerSubmit"
PARTNER_REFUSE = "intake.PartnerRefuse"
NUMBER = "intake.Number"
WITHDRAW = "intake.Withdraw"
SUPPLEMENT = "intake.SupplementMaterials"
RATE = "intake.Rate"
REQUEST_CONSULTATION = "intake.RequestConsultation"
RECORD_CONSULTATION = "intake.RecordConsultation"


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
    # Who is rated for what (Rate): the receiving window in its division, the deciding
    # authority in the home division.
    progress["window_id"] = body.get("window_id") or ""
    progress["home_division"] = body["home_division"]
    progress["bundle_id"] = body.get("bundle_id") or ""  # 一件事一次办: routed with the bundle's other matters
    # As a list: field names hold dots, which the archive (MongoDB) does not take as keys.
    progress["fingerprints"] = [{"field": name, "digest": digest}
                                for name, digest in sorted(body["fingerprints"].items())]
    progress["application_number"] = ""  # the numbering command fills it in
    return Outcome(state=progress)


async def partner_submit(event: Event, state: dict | None) -> Outcome:
    """`event.payload`: `partner`, `submission_id`, `fingerprints` and the ApplicationReceived
    body. The first submission under the partner's id is recorded like SUBMIT; a resend is a
    duplicate; another payload under the same id is refused, naming what differs."""
    body = event.payload
    partner, submission_id = body["partner"], body["submission_id"]
    if state is not None and not state.get("fingerprints") and state.get("application_number"):
        # NUMBER's owner was quicker than this one (the two commands are on different
        # partitions): the numbered application is this submission, the first one NUMBER saw.
        return _adopt(state, body)
    if state is not None:
        kept = {f["field"]: f["digest"] for f in state.get("fingerprints") or []}
        if changed := domain.differing(kept, body["fingerprints"]):
            return _refuse_partner(partner, submission_id, body["submitted_at"],
                                   [f"submission_id was used for another submission; it differs in: "
                                    f"{', '.join(changed)}"])
        return Outcome()
    received = {k: v for k, v in body.items() if k not in ("partner", "submission_id")}
    outcome = await submit(Event(event.event_id, SUBMIT, event.key, {
        **received, "received_by": {"source_system": domain.partner_system(partner), "role": "partner"}},
        event.envelope, event.topic), None)
    assert outcome.state is not None, "a new application is recorded"
    return Outcome(state={**outcome.state, "partner_submission": {"partner": partner, "submission_id": submission_id}})


def _adopt(view: dict, body: dict) -> Outcome:
    origin = {"partner": body["partner"], "submission_id": body["submission_id"]}
    kept = [{"field": name, "digest": digest} for name, digest in sorted(body["fingerprints"].items())]
    view = {**view, "source_system": domain.partner_system(body["partner"]), "source_role": "partner",
            "fingerprints": kept, "partner_submission": origin}
    return Outcome(state=view, emits=[_received_answer(view, body["submitted_at"])])


def _received_answer(view: dict, at: datetime) -> Emit:
    """The partner learns the application number its submission became."""
    origin = view["partner_submission"]
    answer = {"submission_id": origin["submission_id"], "application_id": view["application_id"],
              "application_number": view["application_number"], "received_at": at}
    return Emit(topics.partner_acknowledgements(origin["partner"]), topics.SUBMISSION_RECEIVED_EVENT,
                origin["submission_id"], answer)


async def partner_refuse(event: Event, state: dict | None) -> Outcome:
    """A partner's submission that failed the formal check: every problem goes back to it."""
    body = event.payload
    return _refuse_partner(body["partner"], body["submission_id"], body["refused_at"], body["problems"])


def _refuse_partner(partner: str, submission_id: str, at: datetime, problems: list[str]) -> Outcome:
    refused = {"submission_id": submission_id, "problems": problems, "refused_at": at}
    return Outcome(emits=[Emit(topics.partner_acknowledgements(partner), topics.SUBMISSION_REFUSED_EVENT,
                               submission_id, refused)])


async def number(event: Event, counter: dict | None) -> Outcome:
    """Number one application and publish it. `event.key` is the numbering counter."""
    body = {k: v for k, v in event.payload.items() if k not in ("received_by", "fingerprints", "source_partner")}
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
    # are sealed for), though the counter publishes it; a partner's submission names the partner.
    return Outcome(state=counter, emits=[Emit(RECEIVED, topics.APPLICATION_RECEIVED_EVENT, body["application_id"],
                                              body, correlation_id=body["application_id"],
                                              source_partner=event.payload.get("source_partner") or "")])


async def on_received(event: Event, state: dict | None) -> Outcome:
    """The numbered application, back from the topic: the view learns its number and the
    applicant gets the receipt (收件回执)."""
    p = event.payload
    if state is None:  # received elsewhere than through Submit: operators see it
        state = domain.new_progress(p["application_id"], p["matter_code"], p["submitted_at"])
        state.update(receiving_division=p["receiving_division"], home_division=p["home_division"],
                     window_id=p.get("window_id") or "")
    if state.get("application_number"):
        return Outcome()
    number = p.get("application_number", "")
    state = domain.advance(state, event.key, "NUMBERED", p["submitted_at"], number, domain.RECEIPT,
                           application_number=number)
    served = _serve(event, state, domain.RECEIPT, p["submitted_at"])
    if not state.get("partner_submission"):
        return served
    return replace(served, emits=[*served.emits, _received_answer(state, p["submitted_at"])])


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
    view = domain.legs_ended(domain.advance(view, event.key, "WITHDRAWN", at, "withdrawn by the applicant"), at,
                             "withdrawn by the applicant")
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
    """好差评: the rated party and its division come from the application, never from the
    caller; a second rating of the same kind is refused with the reason (the API checked
    both; a rating that raced another is checked again here)."""
    if state is None:
        raise Rejected("no such application")
    body = event.payload
    role = body.get("rated_role") or domain.SERVICE
    interaction_id = body.get("interaction_id") or ""
    try:
        domain.check_rating(state, body["level"], body["channel"], body.get("comment"), role, interaction_id)
    except domain.InvalidSubmission as exc:
        raise Rejected(str(exc)) from exc
    if repeated := domain.repeated_rating(state, role, body["channel"], interaction_id):
        raise Rejected(repeated)
    rating_id = rating_id_for(event.event_id)
    party, division = domain.rated_party(state, role)
    rating = {
        "rating_id": rating_id,
        "application_id": event.key,
        "matter_code": state["matter_code"],
        "division_code": division,
        "party": party,
        "level": body["level"],
        "channel": body["channel"],
        "comment": body.get("comment") or None,
        "rated_at": body["rated_at"],
        "rated_role": role,
        "interaction_id": interaction_id or None,
    }
    kept = {"rating_id": rating_id, "level": body["level"], "rated_role": role, "channel": body["channel"],
            "interaction_id": interaction_id}
    state["ratings"] = [*state["ratings"], kept]
    return Outcome(state=state, finished=state["terminal"],
                   emits=[Emit(RATINGS, topics.SERVICE_RATING_EVENT, event.key, rating)])


async def on_routed(event: Event, state: dict | None) -> Outcome:
    p = event.payload
    outcome = _advance(event, state, "ROUTED", p["mode"], deciding_partner=p["deciding_partner"],
                       deciding_division=p.get("deciding_division"), due_at=p["due_at"], matter_code=p["matter_code"])
    assert outcome.state is not None, "_advance always gives the view"
    at = event.envelope["occurred_at"]
    view = domain.first_leg_assigned(domain.joint_legs(outcome.state, p["mode"], p["legs"]), at)
    # The legs may be learned after the outcome they led to (another topic was read first).
    decided = next((h["at"] for h in view["history"] if h["stage"] == "DECIDED"), None)
    if decided is not None:
        view = domain.last_leg_decided(view, decided)
    if view["terminal"]:
        view = domain.legs_ended(view, at, view["stage"])
    return replace(outcome, state=view)


async def on_unroutable(event: Event, state: dict | None) -> Outcome:
    return _advance(event, state, "REJECTED", event.payload["reason"])


async def on_under_review(event: Event, state: dict | None) -> Outcome:
    # Waits for an operator in routing's review queue: a step, not a stage (a re-route moves it on).
    return _advance(event, state, "UNDER_REVIEW", event.payload["reason"])


async def on_bundle_held(event: Event, state: dict | None) -> Outcome:
    """一件事一次办: the application waits for the other matters of its bundle (a step, not a stage)."""
    return _advance(event, state, "BUNDLE_WAITING", "waiting for the other matters of its bundle",
                    bundle_id=event.payload["bundle_id"])


async def on_bundle_released(event: Event, state: dict | None) -> Outcome:
    """The bundle is complete (routed together) or cannot be (each of its applications under review)."""
    p = event.payload
    detail = f"{p['bundle_code'] or 'bundle'}: {p['release']}" + (f": {p['reason']}" if p["reason"] else "")
    return _advance(event, state, "BUNDLE_RELEASED", detail, bundle_id=p["bundle_id"],
                    bundle_code=p["bundle_code"] or None, bundle_applications=list(p["applications"]))


async def on_verified(event: Event, state: dict | None) -> Outcome:
    outcome = _advance(event, state, "VERIFIED")
    assert outcome.state is not None, "_advance always gives the view"
    return replace(outcome, state=domain.first_leg_assigned(outcome.state, event.envelope["occurred_at"]))


async def on_leg_completed(event: Event, state: dict | None) -> Outcome:
    """多地联办: one leg is done and the next one's party has the application."""
    p = event.payload
    view = domain.leg_completed(state or _unseen(event), p)
    return Outcome(state=view, finished=view["terminal"])


async def on_leg_failed(event: Event, state: dict | None) -> Outcome:
    """多地联办: a leg failed; the application's denial follows (ApplicationDecided)."""
    p = event.payload
    view = domain.leg_failed(state or _unseen(event), p, scrub(p["reason"]))
    return Outcome(state=view, finished=view["terminal"])


def _unseen(event: Event) -> dict:
    """A view for an application intake has not recorded (received elsewhere): operators see it."""
    return domain.new_progress(event.key, "", event.envelope["occurred_at"])


async def on_verification_failed(event: Event, state: dict | None) -> Outcome:
    p = event.payload
    detail = "; ".join(p["reasons"] + [f"补正: {m}" for m in p["missing_materials"]])
    return _advance(event, state, "REJECTED", detail)


async def on_accepted(event: Event, state: dict | None) -> Outcome:
    p = event.payload
    outcome = _advance(event, state, "ACCEPTED", p["deciding_partner"], notice=(domain.ACCEPTANCE, [], ""))
    assert outcome.state is not None, "_advance always gives the view"
    # Leg 1's party accepted: it holds leg 1, whatever was read first.
    view = outcome.state
    if domain.is_joint(view):
        view = domain.leg_reached(view, 1, domain.ASSIGNED, p["accepted_at"])
    return replace(outcome, state=view)


async def on_refused(event: Event, state: dict | None) -> Outcome:
    """不予受理 (v1, or v2 with the authority's own remedy)."""
    p = event.payload
    remedy = p.get("remedy") or domain.REMEDY
    if state is not None and (leg := domain.current_leg(state)):  # a joint matter's first party refused it
        state = domain.leg_reached(state, leg["number"], domain.FAILED, event.envelope["occurred_at"],
                                   detail=scrub(p["reason"]))
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
    # Delivery's close cancels the current leg and undoes the done ones.
    if state is not None:
        state = domain.legs_ended(state, p["closed_at"], f"{p['status']}: {scrub(p['reason'])}", undo_done=True)
    return _advance(event, state, stage, f"{p['status']}: {p['reason']}")


async def on_decided(event: Event, state: dict | None) -> Outcome:
    p = event.payload
    if p["outcome"] == "APPROVED":
        if state is not None:  # a joint matter's approval is its last leg's result
            state = domain.last_leg_decided(state, p["decided_at"])
        return _advance(event, state, "DECIDED", "", result_reference=p.get("result_reference"))
    reason = p.get("reason") or ""
    # A denial the authority gave no reason for lists none, not an empty line.
    return _advance(event, state, "DENIED", reason,
                    notice=(domain.DENIAL, [scrub(reason)] if reason else [], domain.REMEDY))


async def on_delivered(event: Event, state: dict | None) -> Outcome:
    p = event.payload
    return _advance(event, state, "DELIVERED", p["method"], tracking_number=p.get("tracking_number"))


async def on_originals_dispatched(event: Event, state: dict | None) -> Outcome:
    """资料寄递: the carrier took the paper originals at the window. A step of the timeline
    with the parcel's tracking number, not a stage: the file moves on while the paper travels."""
    p = event.payload
    return _advance(event, state, "ORIGINALS_DISPATCHED", f"{p['tracking_number']} to {p['to_party']}")


async def on_originals_received(event: Event, state: dict | None) -> Outcome:
    p = event.payload
    return _advance(event, state, "ORIGINALS_RECEIVED", f"{p['tracking_number']} signed for by {p['received_by']}")


async def request_consultation(event: Event, state: dict | None) -> Outcome:
    """异地视频会商收件 asked for (the API checked the request). `event.key` is the
    consultation id; a retry finds the consultation and changes nothing."""
    if state is not None:
        return Outcome()
    body = {**event.payload, "reason": scrub(event.payload.get("reason"))}
    return Outcome(state=consultation.new_consultation(body),
                   emits=[Emit(CONSULTATIONS, topics.CONSULTATION_REQUESTED_EVENT, event.key, body)])


async def record_consultation(event: Event, state: dict | None) -> Outcome:
    """The consultation's one outcome and agreed checklist. The API checked it; a second,
    different outcome that raced the first is refused here, a retry of the first changes nothing."""
    if state is None:
        raise Rejected("no such consultation")
    body = event.payload
    if why := consultation.conflict(state, body["outcome"], body["agreed_materials"]):
        raise Rejected(why)
    if state.get("outcome") is not None:
        return Outcome()
    recorded = {"consultation_id": event.key, "application_id": state["application_id"],
                "matter_code": state["matter_code"], "deciding_partner": state["deciding_partner"],
                "outcome": body["outcome"], "agreed_materials": list(body["agreed_materials"]),
                "held_at": body.get("held_at"), "note": scrub(body.get("note")), "recorded_at": body["recorded_at"]}
    return Outcome(state=consultation.recorded(state, recorded), finished=True,
                   emits=[Emit(CONSULTATIONS, topics.CONSULTATION_RECORDED_EVENT, event.key, recorded)])


def consultation_key(event: Event) -> str:
    """A consultation's events go to the application they name (its timeline); one before the
    application was received stays with the consultation, where it changes nothing."""
    return event.payload.get("application_id") or event.key


async def on_consultation(event: Event, state: dict | None) -> Outcome:
    """A step of the application's timeline (not a stage): the authority consulted and the
    proposed checklist, or the outcome and the agreed checklist."""
    if not event.payload.get("application_id"):
        return Outcome()
    stage = ("CONSULTATION_REQUESTED" if event.event_type == topics.CONSULTATION_REQUESTED_EVENT
             else "CONSULTATION_RECORDED")
    return _advance(event, state, stage, consultation.step_detail(event.payload))


def _advance(event: Event, state: dict | None, stage: str, detail: str = "",
             notice: tuple[str, list[str], str] | None = None, notice_deadline: datetime | None = None,
             **facts: object) -> Outcome:
    # Details come from other services and partners; they were scrubbed where the names are
    # known, and ID and phone numbers are scrubbed once more before Track shows them.
    at = event.envelope["occurred_at"]
    if state is not None and state["terminal"]:
        notice = None  # e.g. a 补正 notice crossing a withdrawal: the concluded application is not served it
    progress = domain.advance(state, event.key, stage, at, scrub(detail), notice[0] if notice else "", **facts)
    if progress["terminal"]:  # a joint matter's legs that have not run never will
        progress = domain.legs_ended(progress, at, progress["stage"])
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
    topics.APPLICATION_UNDER_REVIEW_EVENT: on_under_review,
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
    topics.LEG_COMPLETED_EVENT: on_leg_completed,
    topics.LEG_FAILED_EVENT: on_leg_failed,
    topics.BUNDLE_MEMBER_HELD_EVENT: on_bundle_held,
    topics.BUNDLE_RELEASED_EVENT: on_bundle_released,
    topics.MATERIALS_DISPATCHED_EVENT: on_originals_dispatched,
    topics.MATERIALS_RECEIVED_EVENT: on_originals_received,
    topics.CONSULTATION_REQUESTED_EVENT: on_consultation,
    topics.CONSULTATION_RECORDED_EVENT: on_consultation,
}
KEYS: dict[str, KeyOf] = {topics.CONSULTATION_REQUESTED_EVENT: consultation_key,
                         topics.CONSULTATION_RECORDED_EVENT: consultation_key}
COMMANDS: dict[str, Handler] = {SUBMIT: submit, NUMBER: number, WITHDRAW: withdraw, SUPPLEMENT: supplement,
                                RATE: rate, PARTNER_SUBMIT: partner_submit, PARTNER_REFUSE: partner_refuse,
                                REQUEST_CONSULTATION: request_consultation, RECORD_CONSULTATION: record_consultation}
