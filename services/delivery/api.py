"""Delivery's gRPC servicer: a thin adapter from requests to runtime commands.

Who may call (the caller and its role come from its client certificate, tongban.grpc_tls):

- RecordArrival, ConfirmPickUp: window systems.
- Redirect: window and portal systems, for the applicant after a return.
- Resolve: operators (the manual-handling queue).
- Pending: windows and operators.

A request is first tried against the committed file with the very handler that will apply
it (handlers are pure), so a rule it breaks is FAILED_PRECONDITION at once; then it is
written to delivery's command topic and the partition's owner applies it.
"""

from __future__ import annotations

import grpc

from services.delivery import delivery_pb2, delivery_pb2_grpc, handlers
from tongban import windows
from tongban.app import grpc_call
from tongban.events import now_utc
from tongban.grpc_tls import authorize, deny
from tongban.handling import Event, Handler
from tongban.runtime import ServiceRuntime

WINDOWS = ("window",)
REDIRECTORS = ("window", "portal")
OPERATORS = ("operator",)
READERS = ("window", "operator")
METHODS = ("POST", "WINDOW")


class DeliveryServicer(delivery_pb2_grpc.DeliveryServicer):
    def __init__(self, runtime: ServiceRuntime, handlers_by_command: dict[str, Handler],
                 registry: windows.WindowRegistry | None = None) -> None:
        self.runtime = runtime
        self.handlers = handlers_by_command
        self.windows = registry or windows.registry()

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
        async with grpc_call(context, method, lambda: self.runtime.trace_of(request.application_id)):
            await self._command(context, command, request.application_id, command_id,
                                {"window_id": request.window_id})
            return delivery_pb2.Accepted(application_id=request.application_id)

    async def Redirect(self, request, context):  # noqa: N802
        await authorize(context, "delivery.Redirect", REDIRECTORS)
        async with grpc_call(context, "delivery.Redirect", lambda: self.runtime.trace_of(request.application_id)):
            await self._redirect(context, request, operator=False)
            return delivery_pb2.Accepted(application_id=request.application_id)

    async def Resolve(self, request, context):  # noqa: N802
        await authorize(context, "delivery.Resolve", OPERATORS)
        async with grpc_call(context, "delivery.Resolve", lambda: self.runtime.trace_of(request.application_id)):
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

    async def _redirect(self, context, request, operator: bool) -> None:
        if request.method not in METHODS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"method must be one of {', '.join(METHODS)}")
        if not request.request_reference:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request_reference is required")
        payload = {"method": request.method, "address": request.postal_address or None, "operator": operator}
        kind = "resolve" if operator else "redirect"
        await self._command(context, handlers.REDIRECT, request.application_id,
                            f"{kind}:{request.application_id}:{request.request_reference}", payload)

    async def _file(self, context, application_id: str) -> dict:
        state = await self.runtime.state_of(application_id)
        if state is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such application")
        assert state is not None, "abort raises"
        return state

    async def _command(self, context, command: str, key: str, command_id: str, payload: dict) -> None:
        """Try the request on the committed file (a broken rule raises Rejected: FAILED_PRECONDITION),
        then hand it to the owner. An instance that does not own the file answers UNAVAILABLE
        (NotReady): the client asks another instance, and only the owner can try the rule."""
        state = await self._file(context, key)
        trial = Event(command_id, command, key, payload, {"occurred_at": now_utc(), "correlation_id": key}, "command")
        await self.handlers[command](trial, state)
        await self.runtime.submit(command, key, command_id, payload)
