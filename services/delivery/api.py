"""Delivery's gRPC servicer: a thin adapter from requests to runtime commands.

Who may call (the caller and its role come from its client certificate, tongban.grpc_tls):

- RecordArrival, ConfirmPickUp: window systems.
- Redirect: window and portal systems, for the applicant after a return.
- Resolve: operators (the manual-handling queue).
- Pending: windows and operators.
- ListManual: operators (the manual-handling queue on this instance's partitions).

A request is first tried by the owner of the application's partition, on its file, with the
very handler that will apply it (handlers are pure), whichever instance took the call
(services/delivery/verdicts.py): a rule it breaks is FAILED_PRECONDITION with the handler's
reason, an unknown application NOT_FOUND. Only then is it written to delivery's command topic
and the owner applies it. No verdict in time is UNAVAILABLE; a retry is the same request.
"""

from __future__ import annotations

import grpc

from services.delivery import delivery_pb2, delivery_pb2_grpc, handlers, manual_queue
from services.delivery.verdicts import Verdicts
from tongban import windows
from tongban.app import grpc_call
from tongban.bus import partition_for
from tongban.grpc_tls import authorize, deny
from tongban.runtime import NotReady, ServiceRuntime
from tongban.scrub import scrub

WINDOWS = ("window",)
REDIRECTORS = ("window", "portal")
OPERATORS = ("operator",)
READERS = ("window", "operator")
METHODS = ("POST", "WINDOW")
# How long a call waits for the owner's verdict at most (less if the caller's deadline is nearer).
VERDICT_WITHIN = 10.0


class DeliveryServicer(delivery_pb2_grpc.DeliveryServicer):
    def __init__(self, runtime: ServiceRuntime, registry: windows.WindowRegistry | None = None,
                 verdicts: Verdicts | None = None) -> None:
        self.runtime = runtime
        self.windows = registry or windows.registry()
        self.verdicts = verdicts or Verdicts(runtime)

    async def _window_caller(self, context, method: str, window_id: str) -> None:
        """A window act comes from a system of that window (windows.toml `systems`): a
        certificate with the window role does not speak for every window."""
        caller = await authorize(context, method, WINDOWS)
        if not self.windows.speaks_for(caller.source_system, window_id):
            await deny(context, method, caller, "the caller does not speak for that window")

    async def RecordArrival(self, request, context):  # noqa: N802 (gRPC method name)
        return await self._window_act(context, "delivery.RecordArrival", handlers.RECORD_ARRIVAL, request,
                                      f"arrival:{request.application_id}:{request.window_id}")

    async def ConfirmPickUp(self, request, context):  # noqa: N802
        return await self._window_act(context, "delivery.ConfirmPickUp", handlers.CONFIRM_PICKUP, request,
                                      f"pickup:{request.application_id}")

    async def _window_act(self, context, method: str, command: str, request, command_id: str):
        """A window's act on a result, taken from a system of that window only."""
        await self._window_caller(context, method, request.window_id)
        async with grpc_call(context, method, lambda: self._trace_of(request.application_id)):
            await self._command(context, command, request.application_id, command_id,
                                {"window_id": request.window_id})
            return delivery_pb2.Accepted(application_id=request.application_id)

    async def Redirect(self, request, context):  # noqa: N802
        await authorize(context, "delivery.Redirect", REDIRECTORS)
        async with grpc_call(context, "delivery.Redirect", lambda: self._trace_of(request.application_id)):
            await self._redirect(context, request, operator=False)
            return delivery_pb2.Accepted(application_id=request.application_id)

    async def Resolve(self, request, context):  # noqa: N802
        await authorize(context, "delivery.Resolve", OPERATORS)
        async with grpc_call(context, "delivery.Resolve", lambda: self._trace_of(request.application_id)):
            await self._redirect(context, request, operator=True)
            return delivery_pb2.Accepted(application_id=request.application_id)

    async def Pending(self, request, context):  # noqa: N802
        await authorize(context, "delivery.Pending", READERS)
        async with grpc_call(context, "delivery.Pending"):
            state = await self._file(context, request.application_id)
            result = state.get("result", {})
            return delivery_pb2.ResultStatus(
                application_id=request.application_id, method=result.get("method", ""),
                status=result.get("status", ""), attempt=result.get("attempt", 0),
                manual_reason=result.get("manual_reason", ""), delivered=bool(state.get("delivered")))

    async def ListManual(self, request, context):  # noqa: N802
        await authorize(context, "delivery.ListManual", OPERATORS)
        async with grpc_call(context, "delivery.ListManual"):
            # From the files of this instance's partitions, not the archive: queued work is unfinished.
            partitions, entries = await self.runtime.owned_states(manual_queue.waiting, manual_queue.MARK)
            return delivery_pb2.ListManualReply(
                entries=[_entry(e, partition_for(e.application_id, self.runtime.partitions))
                         for e in manual_queue.oldest_first(entries)],
                partitions=partitions, partition_count=self.runtime.partitions)

    async def _redirect(self, context, request, operator: bool) -> None:
        if request.method not in METHODS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"method must be one of {', '.join(METHODS)}")
        if not request.request_reference:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request_reference is required")
        payload = {"method": request.method, "address": request.postal_address or None, "operator": operator}
        if operator and request.reason:
            payload["reason"] = scrub(request.reason)
        kind = "resolve" if operator else "redirect"
        await self._command(context, handlers.REDIRECT, request.application_id,
                            f"{kind}:{request.application_id}:{request.request_reference}", payload)

    async def _trace_of(self, application_id: str) -> dict[str, str]:
        """The application's trace, to keep the call in it; none where its file is not (the
        owner's verdict is asked for all the same)."""
        try:
            return await self.runtime.trace_of(application_id)
        except NotReady:
            return {}

    async def _file(self, context, application_id: str) -> dict:
        state = await self.runtime.state_of(application_id)
        if state is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such application")
        assert state is not None, "abort raises"
        return state

    async def _command(self, context, command: str, key: str, command_id: str, payload: dict) -> None:
        """The owner tries the request and says how it went; an OK request goes to the owner.
        Asked through the command topic even on the owner: the trial then comes after every
        request written before it (a window's pick-up after its arrival), never before."""
        if not key:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "application_id is required")
        remaining = context.time_remaining()
        within = VERDICT_WITHIN if remaining is None else min(VERDICT_WITHIN, remaining - 0.5)
        verdict = await self.verdicts.ask(command, key, command_id, payload, within)
        if verdict is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                "the application's owner did not answer in time; retry the same request")
        assert verdict is not None, "abort raises"
        if verdict.code != "OK":
            await context.abort(grpc.StatusCode[verdict.code], verdict.reason)
        await self.runtime.submit(command, key, command_id, payload)


def _entry(waiting: manual_queue.Waiting, partition: int) -> delivery_pb2.ManualEntry:
    return delivery_pb2.ManualEntry(
        application_id=waiting.application_id, matter_code=waiting.matter_code,
        deciding_partner=waiting.deciding_partner, method=waiting.method, reason_code=waiting.reason_code,
        return_reasons=list(waiting.return_reasons), attempt=waiting.attempt, since_millis=waiting.since_ms,
        partition=partition)
