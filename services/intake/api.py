"""Intake's gRPC servicer: a thin adapter from requests to runtime commands and queries.

Who may call (the caller and its role come from its client certificate, tongban.grpc_tls):

- Submit: window, portal and partner systems. `source_system` is the caller's own: left
  empty it is filled in from the certificate, another one is PERMISSION_DENIED.
- Track, Watch: those and operators, for an application the caller may see (`domain.may_see`).
- Rate, Withdraw, SupplementMaterials: window, portal and partner systems, for an
  application they may see.
- RequestConsultation: window systems, for a window they operate (windows.toml) and an
  application they may see (or a pre-application reference); RecordConsultation: the window
  system that asked.

A request that fails the formal check is INVALID_ARGUMENT with a google.rpc.BadRequest
naming each field; a retried Submit with another payload is ALREADY_EXISTS naming the
fields that differ (never their values).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from functools import partial

import grpc
from google.protobuf import any_pb2

# No type information in these two (googleapis-common-protos, grpcio-status).
from google.rpc import code_pb2, error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status  # type: ignore[import-untyped]

from services.intake import consultation, domain, handlers, intake_pb2, intake_pb2_grpc
from tongban.app import grpc_call
from tongban.events import millis, now_utc
from tongban.grpc_tls import Caller, authorize, deny
from tongban.pii import looks_sealed
from tongban.runtime import ServiceRuntime
from tongban.sharing.access import Consultation

SUBMITTERS = ("window", "portal", "partner")
TRACKERS = (*SUBMITTERS, "operator")
RATERS = SUBMITTERS
CONSULTERS = ("window",)  # 异地视频会商收件 is held at a 跨省通办 window
NOT_YOURS = "the caller may not see this application (another system received it)"
# How long Submit waits for its own commands to be applied before it says UNAVAILABLE (the
# application is then recorded all the same: a retry with the same key answers with it).
APPLIED_WITHIN = 15.0
# Watch wakes on each commit of its application; this long without one it looks again anyway.
WATCH_QUIET = 30.0


def _submission(request: intake_pb2.SubmitRequest) -> domain.Submission:
    return domain.Submission(
        matter_code=request.matter_code,
        channel=request.channel,
        receiving_division=request.receiving_division,
        home_division=request.home_division,
        applicant_kind=request.applicant.kind,
        applicant_name=request.applicant.name,
        applicant_id_number=request.applicant.id_number,
        materials=tuple(m.code for m in request.materials),
        delivery_method=request.delivery_method,
        postal_address=request.postal_address or None,
        material_names=tuple(m.name for m in request.materials),
        applicant_phone=request.applicant.phone,
        client_reference=request.client_reference,
        source_system=request.source_system,
        window_id=request.window_id,
        provided=tuple(m.provided for m in request.materials),
        commitments=tuple(request.commitments),
        deferred_materials=dict(request.deferred_materials),
        bundle_reference=request.bundle_reference,
    )


def received_body(application_id: str, request: intake_pb2.SubmitRequest) -> dict:
    """The ApplicationReceived body (without envelope and number) for a checked submission."""
    return {
        "application_id": application_id,
        "matter_code": request.matter_code,
        "channel": request.channel,
        "receiving_division": request.receiving_division,
        "home_division": request.home_division,
        "applicant": {
            "kind": request.applicant.kind,
            "name": request.applicant.name,
            "id_number": request.applicant.id_number,
            "phone": request.applicant.phone or None,
        },
        "materials": [
            {"code": m.code, "name": m.name, "provided": m.provided, "original_checked": m.original_checked}
            for m in request.materials
        ],
        "delivery_method": request.delivery_method,
        "postal_address": request.postal_address or None,
        "submitted_at": now_utc(),
        "window_id": request.window_id,
        "places": {},
        "bundle_id": domain.bundle_id_for(request.source_system, request.bundle_reference),
        "commitments": list(request.commitments),
        "deferred_materials": dict(request.deferred_materials),
    }


def compared_fields(request: intake_pb2.SubmitRequest) -> dict[str, object]:
    """What makes two submissions under one key the same application, by the API's names."""
    compared: dict[str, object] = {
        "matter_code": request.matter_code, "channel": request.channel,
        "receiving_division": request.receiving_division, "home_division": request.home_division,
        "applicant.kind": request.applicant.kind, "applicant.name": request.applicant.name,
        "applicant.id_number": request.applicant.id_number, "applicant.phone": request.applicant.phone,
        "materials": [(m.code, m.name, m.provided, m.original_checked) for m in request.materials],
        "delivery_method": request.delivery_method, "postal_address": request.postal_address,
        "window_id": request.window_id, "commitments": sorted(request.commitments),
        "deferred_materials": sorted(request.deferred_materials.items()),
    }
    # Only when given: applications recorded before bundles keep their fingerprints.
    return compared | ({"bundle_reference": request.bundle_reference} if request.bundle_reference else {})


def bad_request(problems: list[str], code: int = code_pb2.INVALID_ARGUMENT) -> grpc.Status:
    """INVALID_ARGUMENT (or `code`) with a google.rpc.BadRequest: one field violation per problem."""
    details = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field=domain.field_of(p), description=p) for p in problems])
    packed = any_pb2.Any()
    packed.Pack(details)
    return rpc_status.to_status(status_pb2.Status(code=code, message="; ".join(problems), details=[packed]))


async def refuse(context, problems: list[str], code: int = code_pb2.INVALID_ARGUMENT) -> None:
    status = bad_request(problems, code)
    await context.abort(status.code, status.details, status.trailing_metadata)


AccessLog = Callable[[str], Awaitable[list[Consultation]]]


class IntakeServicer(intake_pb2_grpc.IntakeServicer):
    def __init__(self, runtime: ServiceRuntime, catalogue: domain.Catalogue | None = None,
                 windows: domain.WindowRegistry | None = None, access_log: AccessLog | None = None) -> None:
        self.runtime = runtime
        self.catalogue = catalogue
        self.windows = windows
        self.access_log = access_log  # the data-sharing exchange's audit trail, per application

    async def Submit(self, request, context):  # noqa: N802 (gRPC method name)
        caller = await authorize(context, "intake.Submit", SUBMITTERS)
        async with grpc_call(context, "intake.Submit") as span:
            if request.source_system and request.source_system != caller.source_system:
                await deny(context, "intake.Submit", caller,
                           f"source_system must be the caller's own ({caller.source_system}, from its certificate)")
            request.source_system = caller.source_system
            if not request.client_reference:
                await refuse(context, ["client_reference is required"])
            if self.windows is not None and (bound := domain.window_binding(
                    caller.source_system, caller.role, request.window_id, self.windows)):
                status, problem = bound
                await refuse(context, [problem], getattr(code_pb2, status))
            try:
                domain.check_submission(_submission(request), self.catalogue, self.windows)
            except domain.InvalidSubmission as exc:
                await refuse(context, exc.problems)
            application_id = domain.application_id_for(request.source_system, request.client_reference)
            span.set_attribute("tongban.application_id", application_id)
            fingerprints = domain.fingerprints(application_id, compared_fields(request))
            body = received_body(application_id, request)
            view = await self.runtime.state_of(application_id)
            if view is None:
                # Durably on intake's command topic: the partition's owner records it (a retry
                # is the same command and is dropped).
                received_by = {"source_system": caller.source_system, "role": caller.role}
                await self.runtime.submit(handlers.SUBMIT, application_id, f"submit:{application_id}",
                                          {**body, "received_by": received_by, "fingerprints": fingerprints})
                view = await self._applied(context, application_id, lambda v: v is not None)
            # A view without fingerprints was received before they were kept: nothing to compare.
            kept = {f["field"]: f["digest"] for f in view.get("fingerprints") or []}
            if kept and (changed := domain.differing(kept, fingerprints)):
                await context.abort(grpc.StatusCode.ALREADY_EXISTS,
                                    f"client_reference was used for another submission; it differs in: "
                                    f"{', '.join(changed)}")
            if domain.awaits_number(view):
                await self.runtime.submit(handlers.NUMBER, domain.numbering_key(application_id),
                                          f"number:{application_id}", body)
                view = await self._applied(context, application_id, lambda v: bool(v and v.get("application_number")))
            return intake_pb2.SubmitReply(application_id=application_id, stage="RECEIVED",
                                          application_number=view.get("application_number", ""))

    async def _applied(self, context, application_id: str, done: Callable[[dict | None], bool]) -> dict:
        """The view once the owner has applied our command (woken by its commit, not polled)."""
        view = await self.runtime.wait_for_state(application_id, done, APPLIED_WITHIN)
        if view is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                "the application is recorded but not yet numbered; retry with the same key")
        assert view is not None, "abort raises"
        return view

    async def Track(self, request, context):  # noqa: N802
        caller = await authorize(context, "intake.Track", TRACKERS)
        async with grpc_call(context, "intake.Track"):
            state = await self._visible(context, "intake.Track", caller, request.application_id)
            deadline = domain.deadline(state)
            return intake_pb2.Progress(
                application_id=state["application_id"],
                matter_code=state["matter_code"],
                stage=state["stage"],
                terminal=state["terminal"],
                history=[_step(h) for h in domain.timeline(state)],
                deciding_partner=state.get("deciding_partner", ""),
                due_at_millis=millis(state["due_at"]) if state.get("due_at") else 0,
                result_reference=state.get("result_reference", ""),
                tracking_number=state.get("tracking_number", ""),
                ratings=[r["level"] for r in state["ratings"]],
                application_number=state.get("application_number", ""),
                responsible=domain.responsible_for(state["stage"], domain.acting_party(state)),
                next_step=domain.next_step(state),
                deadline_millis=millis(deadline) if deadline else 0,
                notices=[intake_pb2.Notice(notice_id=n["notice_id"], kind=n["kind"],
                                           served_at_millis=millis(n["served_at"]), reasons=n["reasons"],
                                           remedy=n["remedy"]) for n in state.get("notices", [])],
                legs=[_leg(leg) for leg in state.get("legs", [])],
                bundle_id=state.get("bundle_id", ""), bundle_code=state.get("bundle_code", ""),
                bundle_applications=state.get("bundle_applications", []),
            )

    async def Consultations(self, request, context):  # noqa: N802
        caller = await authorize(context, "intake.Consultations", TRACKERS)
        async with grpc_call(context, "intake.Consultations"):
            await self._visible(context, "intake.Consultations", caller, request.application_id)
            if self.access_log is None:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no data-sharing exchange is configured")
            assert self.access_log is not None, "abort raises"
            try:
                found = await self.access_log(request.application_id)
            except grpc.aio.AioRpcError:
                # The applicant retries later; the exchange's own error may name its internals.
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the data-sharing exchange cannot answer now")
            return intake_pb2.ConsultationList(application_id=request.application_id, consultations=[
                intake_pb2.Consultation(requester=c.requester, evidence_type=c.evidence_type, purpose=c.purpose,
                                        legal_basis=c.legal_basis, at_millis=c.at_millis, answer=c.answer)
                for c in found])

    async def Watch(self, request, context) -> AsyncIterator[intake_pb2.ProgressStep]:  # noqa: N802
        """Every step after `after_sequence`, in the order intake learned them, as they come;
        the stream ends once the application has concluded and every step is sent."""
        caller = await authorize(context, "intake.Watch", TRACKERS)
        sent = request.after_sequence
        async with grpc_call(context, "intake.Watch"):
            state = await self._visible(context, "intake.Watch", caller, request.application_id)
            while True:
                for step in domain.steps_after(state, sent):
                    yield _step(step)
                    sent = step["sequence"]
                if state["terminal"]:
                    return
                state = await self.runtime.wait_for_state(
                    request.application_id, partial(_moved_on, state), WATCH_QUIET) or state

    async def Withdraw(self, request, context):  # noqa: N802
        caller = await authorize(context, "intake.Withdraw", RATERS)
        async with grpc_call(context, "intake.Withdraw", lambda: self.runtime.trace_of(request.application_id)):
            state = await self._visible(context, "intake.Withdraw", caller, request.application_id)
            problem = domain.too_long("reason", request.reason, domain.MAX_COMMENT_LENGTH)
            if problem or looks_sealed(request.reason):
                await refuse(context, [problem or f"reason: {domain.SEALED_INPUT}"])
            try:
                domain.check_withdrawal(state)
            except domain.InvalidSubmission as exc:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            await self.runtime.submit(handlers.WITHDRAW, request.application_id,
                                      f"withdraw:{request.application_id}",
                                      {"reason": request.reason, "withdrawn_at": now_utc()})
            return intake_pb2.WithdrawReply(stage="WITHDRAWN")

    async def SupplementMaterials(self, request, context):  # noqa: N802
        caller = await authorize(context, "intake.SupplementMaterials", RATERS)
        async with grpc_call(context, "intake.SupplementMaterials",
                             lambda: self.runtime.trace_of(request.application_id)):
            state = await self._visible(context, "intake.SupplementMaterials", caller, request.application_id)
            codes = tuple(m.code for m in request.materials)
            problems = [p for i, code in enumerate(codes)
                        if (p := domain.too_long(f"materials[{i}].code", code, domain.MAX_CODE_LENGTH))]
            if problems or len(codes) > domain.MAX_MATERIALS:
                await refuse(context, problems or [f"materials: at most {domain.MAX_MATERIALS} items"])
            try:
                domain.check_supplement(state, codes)
            except domain.InvalidSubmission as exc:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            # One supplement per 补正 round: a retry of this round is the same command.
            round_ = sum(1 for h in state["history"] if h["stage"] == "SUPPLEMENT_REQUESTED")
            await self.runtime.submit(handlers.SUPPLEMENT, request.application_id,
                                      f"supplement:{request.application_id}:{round_}",
                                      {"materials": list(codes), "submitted_at": now_utc()})
            return intake_pb2.SupplementReply(stage="SUPPLEMENTED")

    async def Rate(self, request, context):  # noqa: N802
        caller = await authorize(context, "intake.Rate", RATERS)
        # 一事一评: the rating joins the application's own trace unless the caller sends one.
        async with grpc_call(context, "intake.Rate", lambda: self.runtime.trace_of(request.application_id)):
            if not request.rating_reference:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "rating_reference is required")
            problem = domain.too_long("rating_reference", request.rating_reference, domain.MAX_REFERENCE_LENGTH)
            progress = await self._visible(context, "intake.Rate", caller, request.application_id)
            role = request.rated_role or domain.SERVICE
            try:
                if problem:
                    raise domain.InvalidSubmission([problem])
                domain.check_rating(progress, request.level, request.channel, request.comment, role,
                                    request.interaction_id)
            except domain.InvalidSubmission as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            command_id = f"rate:{request.application_id}:{request.rating_reference}"
            rating_id = handlers.rating_id_for(command_id)

            def settled(view: dict | None) -> str | None:
                """None once our rating is in the view; why not, once another of its kind is."""
                if view is None or rating_id in {r["rating_id"] for r in view["ratings"]}:
                    return None
                return domain.repeated_rating(view, role, request.channel, request.interaction_id) or ""

            # A retry of a rating that was applied is answered with its id, not refused.
            if repeated := settled(progress):
                await context.abort(grpc.StatusCode.ALREADY_EXISTS, repeated)
            payload = {"level": request.level, "channel": request.channel, "comment": request.comment,
                       "rated_at": now_utc(), "rated_role": role, "interaction_id": request.interaction_id}
            await self.runtime.submit(handlers.RATE, request.application_id, command_id, payload)
            # Two ratings of one kind sent at once both pass the check above; the owner applies
            # one and refuses the other, so the answer waits for the owner's verdict.
            view = await self.runtime.wait_for_state(
                request.application_id, lambda v: v is not None and settled(v) != "", APPLIED_WITHIN)
            if view is None:
                await context.abort(grpc.StatusCode.UNAVAILABLE,
                                    "the rating is recorded but not applied yet; retry with the same rating_reference")
            if repeated := settled(view):
                await context.abort(grpc.StatusCode.ALREADY_EXISTS, repeated)
            return intake_pb2.RateReply(rating_id=rating_id)

    async def RequestConsultation(self, request, context):  # noqa: N802
        caller = await authorize(context, "intake.RequestConsultation", CONSULTERS)
        async with grpc_call(context, "intake.RequestConsultation") as span:
            if self.windows is not None and (bound := domain.window_binding(
                    caller.source_system, caller.role, request.window_id, self.windows)):
                status, problem = bound
                await refuse(context, [problem], getattr(code_pb2, status))
            checklist = tuple(request.proposed_materials)
            try:
                consultation.check_request(
                    application_id=request.application_id, reference=request.pre_application_reference,
                    matter_code=request.matter_code, window_id=request.window_id,
                    deciding_partner=request.deciding_partner, checklist=checklist, reason=request.reason,
                    catalogue=self.catalogue)
            except domain.InvalidSubmission as exc:
                await refuse(context, exc.problems)
            if request.application_id:
                view = await self._visible(context, "intake.RequestConsultation", caller, request.application_id)
                if view["matter_code"] and view["matter_code"] != request.matter_code:
                    await refuse(context, ["matter_code: not the matter of the application"])
                if view["terminal"]:
                    await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                        f"the application has concluded ({view['stage']})")
            consultation_id = consultation.consultation_id_for(
                caller.source_system, request.application_id or request.pre_application_reference,
                request.matter_code, request.window_id, request.deciding_partner, checklist)
            span.set_attribute("tongban.consultation_id", consultation_id)
            if await self.runtime.state_of(consultation_id) is None:
                body = {"consultation_id": consultation_id, "application_id": request.application_id or None,
                        "pre_application_reference": request.pre_application_reference or None,
                        "matter_code": request.matter_code, "window_id": request.window_id,
                        "deciding_partner": request.deciding_partner, "proposed_materials": list(checklist),
                        "reason": request.reason, "requested_by": caller.source_system, "requested_at": now_utc()}
                await self.runtime.submit(handlers.REQUEST_CONSULTATION, consultation_id,
                                          f"consult:{consultation_id}", body)
                # RecordConsultation right after this answer must find it.
                if await self.runtime.wait_for_state(consultation_id, lambda v: v is not None, APPLIED_WITHIN) is None:
                    await context.abort(grpc.StatusCode.UNAVAILABLE,
                                        "the consultation is requested but not recorded yet; retry the same request")
            return intake_pb2.RequestConsultationReply(consultation_id=consultation_id)

    async def RecordConsultation(self, request, context):  # noqa: N802
        caller = await authorize(context, "intake.RecordConsultation", CONSULTERS)
        async with grpc_call(context, "intake.RecordConsultation"):
            if not request.consultation_id:
                await refuse(context, ["consultation_id is required"])
            asked = (await self.runtime.state_of(request.consultation_id)
                     if consultation.is_consultation_id(request.consultation_id) else None)
            if asked is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, "no such consultation")
            assert asked is not None, "abort raises"
            if asked["requested_by"] != caller.source_system:
                await deny(context, "intake.RecordConsultation", caller,
                           "the consultation was requested by another system")
            agreed = tuple(request.agreed_materials)
            held_at = datetime.fromtimestamp(request.held_at_millis / 1000, UTC) if request.held_at_millis else None
            now = now_utc()
            try:
                consultation.check_record(asked, request.outcome, agreed, held_at, request.note, now, self.catalogue)
            except domain.InvalidSubmission as exc:
                await refuse(context, exc.problems)
            if why := consultation.conflict(asked, request.outcome, agreed):
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, why)
            # One command per distinct outcome: a retry of it is a duplicate, another one is refused.
            what = hashlib.sha256("\x1f".join((request.outcome, *sorted(agreed))).encode()).hexdigest()[:16]
            await self.runtime.submit(handlers.RECORD_CONSULTATION, request.consultation_id,
                                      f"consult-record:{request.consultation_id}:{what}",
                                      {"outcome": request.outcome, "agreed_materials": list(agreed),
                                       "held_at": held_at, "note": request.note, "recorded_at": now})
            # Two outcomes sent at once both pass the check above; the owner keeps the first.
            view = await self.runtime.wait_for_state(
                request.consultation_id, lambda v: v is not None and v.get("outcome") is not None, APPLIED_WITHIN)
            if view is None:
                await context.abort(grpc.StatusCode.UNAVAILABLE,
                                    "the outcome is sent but not recorded yet; retry the same request")
            assert view is not None, "abort raises"
            if why := consultation.conflict(view, request.outcome, agreed):
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, why)
            return intake_pb2.RecordConsultationReply(consultation_id=request.consultation_id, outcome=view["outcome"])

    async def _visible(self, context, method: str, caller: Caller, application_id: str) -> dict:
        """The application's progress view, if it exists (NOT_FOUND) and the caller may see
        it (PERMISSION_DENIED)."""
        if not application_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "application_id is required")
        other_aggregate = domain.is_numbering_key(application_id) or consultation.is_consultation_id(application_id)
        state = None if other_aggregate else await self.runtime.state_of(application_id)
        if state is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such application")
        assert state is not None, "abort raises"
        if not domain.may_see(state, caller.source_system, caller.role):
            await deny(context, method, caller, NOT_YOURS)
        return state


def _moved_on(seen: dict, now: dict | None) -> bool:
    return now is not None and now != seen


def _step(step: dict) -> intake_pb2.ProgressStep:
    return intake_pb2.ProgressStep(stage=step["stage"], at_millis=millis(step["at"]), detail=step["detail"],
                                   sequence=step.get("sequence", 0), responsible=step.get("responsible", ""),
                                   notice=step.get("notice", ""), leg=step.get("leg", 0), party=step.get("party", ""))


def _leg(leg: dict) -> intake_pb2.Leg:
    times = {f"{name}_millis": millis(leg[name])
             for name in ("assigned_at", "completed_at", "failed_at", "cancelled_at") if leg.get(name)}
    return intake_pb2.Leg(number=leg["number"], step=leg.get("step", ""), party=leg.get("party", ""),
                          division=leg.get("division", ""), state=leg["state"], detail=leg.get("detail", ""),
                          result_reference=leg.get("result_reference", ""), **times)
