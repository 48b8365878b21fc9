"""Intake's gRPC servicer: a thin adapter from requests to runtime commands and queries.

Who may call (the caller and its role come from its client certificate, tongban.grpc_tls):

- Submit: window, portal and partner systems. `source_system` is the caller's own: left
  empty it is filled in from the certificate, another one is PERMISSION_DENIED.
- Track: those and operators, for an application the caller may see (`domain.may_see`).
- Rate: window, portal and partner systems, for an application they may see.
"""

from __future__ import annotations

import grpc

from services.intake import domain, handlers, intake_pb2, intake_pb2_grpc
from tongban.app import grpc_call
from tongban.events import millis, now_utc
from tongban.grpc_tls import Caller, authorize, deny
from tongban.runtime import ServiceRuntime

SUBMITTERS = ("window", "portal", "partner")
TRACKERS = (*SUBMITTERS, "operator")
RATERS = SUBMITTERS
NOT_YOURS = "the caller may not see this application (another system received it)"


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
    )


def received_body(application_id: str, request: intake_pb2.SubmitRequest) -> dict:
    """The ApplicationReceived body (without envelope) for a checked submission."""
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
    }


class IntakeServicer(intake_pb2_grpc.IntakeServicer):
    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime

    async def Submit(self, request, context):  # noqa: N802 (gRPC method name)
        caller = await authorize(context, "intake.Submit", SUBMITTERS)
        async with grpc_call(context, "intake.Submit") as span:
            if request.source_system and request.source_system != caller.source_system:
                await deny(context, "intake.Submit", caller,
                           f"source_system must be the caller's own ({caller.source_system}, from its certificate)")
            request.source_system = caller.source_system
            if not request.client_reference:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "client_reference is required")
            try:
                domain.check_submission(_submission(request))
            except domain.InvalidSubmission as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            application_id = domain.application_id_for(request.source_system, request.client_reference)
            span.set_attribute("tongban.application_id", application_id)
            # Durably on intake's command topic: the partition's owner records it (a retry
            # is the same command and is dropped), so the caller has its id at once.
            received_by = {"source_system": caller.source_system, "role": caller.role}
            await self.runtime.submit(handlers.SUBMIT, application_id, f"submit:{application_id}",
                                      {**received_body(application_id, request), "received_by": received_by})
            return intake_pb2.SubmitReply(application_id=application_id, stage="RECEIVED")

    async def Track(self, request, context):  # noqa: N802
        caller = await authorize(context, "intake.Track", TRACKERS)
        async with grpc_call(context, "intake.Track"):
            state = await self._visible(context, "intake.Track", caller, request.application_id)
            return intake_pb2.Progress(
                application_id=state["application_id"],
                matter_code=state["matter_code"],
                stage=state["stage"],
                terminal=state["terminal"],
                history=[intake_pb2.ProgressStep(stage=h["stage"], at_millis=millis(h["at"]), detail=h["detail"])
                         for h in state["history"]],
                deciding_partner=state.get("deciding_partner", ""),
                due_at_millis=millis(state["due_at"]) if state.get("due_at") else 0,
                result_reference=state.get("result_reference", ""),
                tracking_number=state.get("tracking_number", ""),
                ratings=[r["level"] for r in state["ratings"]],
            )

    async def Rate(self, request, context):  # noqa: N802
        caller = await authorize(context, "intake.Rate", RATERS)
        # 一事一评: the rating joins the application's own trace unless the caller sends one.
        async with grpc_call(context, "intake.Rate", lambda: self.runtime.trace_of(request.application_id)):
            if not request.rating_reference:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "rating_reference is required")
            problem = domain.too_long("rating_reference", request.rating_reference, domain.MAX_REFERENCE_LENGTH)
            progress = await self._visible(context, "intake.Rate", caller, request.application_id)
            try:
                if problem:
                    raise domain.InvalidSubmission([problem])
                domain.check_rating(progress, request.level, request.channel, request.comment)
            except domain.InvalidSubmission as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            command_id = f"rate:{request.application_id}:{request.rating_reference}"
            payload = {"level": request.level, "channel": request.channel, "comment": request.comment,
                       "rated_at": now_utc()}
            await self.runtime.submit(handlers.RATE, request.application_id, command_id, payload)
            return intake_pb2.RateReply(rating_id=handlers.rating_id_for(command_id))

    async def _visible(self, context, method: str, caller: Caller, application_id: str) -> dict:
        """The application's progress view, if it exists (NOT_FOUND) and the caller may see
        it (PERMISSION_DENIED)."""
        state = await self.runtime.state_of(application_id)
        if state is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such application")
        assert state is not None, "abort raises"
        if not domain.may_see(state, caller.source_system, caller.role):
            await deny(context, method, caller, NOT_YOURS)
        return state
