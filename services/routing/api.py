"""Routing's gRPC APIs: the query API over the catalogue (了解政策、查找事项), a thin adapter
from requests to the catalogue's search over the data files routing runs with; and the
review queue for unroutable work.

Who may call (the role comes from the caller's client certificate, tongban.grpc_tls): the
catalogue API, windows, portals, partner systems and operators; the review queue, operators.
Answers hold no personal data. A re-route or rejection is first tried against the committed
state with the very handler that will apply it (handlers are pure), so a rule it breaks is
FAILED_PRECONDITION at once; then it is written to routing's command topic.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from services.routing import handlers, review, routing_pb2, routing_pb2_grpc
from services.routing.catalogue import MODES, SUBJECTS, Catalogue, Matter, Query
from services.routing.domain import PartnerRegistry
from services.routing.publishing import publish_catalogue
from tongban import divisions
from tongban.app import grpc_call
from tongban.events import now_utc
from tongban.grpc_tls import authorize
from tongban.handling import Event, Handler
from tongban.runtime import ServiceRuntime

log = logging.getLogger(__name__)
READERS = ("window", "portal", "partner", "operator")
OPERATORS = ("operator",)


def matter_message(matter: Matter, deciding_partner: str = "") -> routing_pb2.Matter:
    return routing_pb2.Matter(
        code=matter.code, invented=matter.invented, name=matter.name, source=matter.source,
        department=matter.department, level=matter.level, legal_basis=list(matter.legal_basis),
        subject=matter.subject, modes=list(matter.modes), place=matter.place,
        acceptance_conditions=list(matter.acceptance_conditions),
        promised_working_days=matter.promised_working_days, statutory_working_days=matter.statutory_working_days,
        fee=matter.fee, result_type=matter.result_type, postal_delivery=matter.postal_delivery, guide=matter.guide,
        materials=[routing_pb2.Material(code=m.code, name=m.name, essential=m.essential, commitment=m.commitment,
                                        shared_evidence=m.shared_evidence) for m in matter.required_materials],
        version=matter.version, note=matter.note, deciding_partner=deciding_partner,
    )


def filter_problems(request: routing_pb2.FindMattersRequest) -> list[str]:
    """Filters that can match nothing because they are malformed; named, never echoed."""
    problems = []
    if request.mode and request.mode not in MODES:
        problems.append(f"mode must be one of {', '.join(MODES)}")
    if request.subject and request.subject not in SUBJECTS:
        problems.append(f"subject must be one of {', '.join(SUBJECTS)}")
    if request.division and not divisions.is_known(request.division):
        problems.append("division is not a known GB/T 2260 code")
    return problems


class CatalogueServicer(routing_pb2_grpc.CatalogueServicer):
    def __init__(self, catalogue: Catalogue, partners: PartnerRegistry) -> None:
        self.catalogue = catalogue
        self.partners = partners

    async def FindMatters(self, request, context):  # noqa: N802 (gRPC method name)
        await authorize(context, "routing.FindMatters", READERS)
        async with grpc_call(context, "routing.FindMatters"):
            problems = filter_problems(request)
            if problems:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems))
            matters = self.catalogue.search(Query(request.keyword, request.mode, request.department, request.subject))
            reply = routing_pb2.FindMattersReply(catalogue_edition=self.catalogue.edition)
            if request.division:
                # The catalogue is national; a division offers its matters when a partner
                # works there under an agreement, and that partner is who decides there.
                partner = self.partners.partner_for_division(request.division)
                reply.division_name = divisions.name(request.division) or ""
                reply.matters.extend(matter_message(m, partner.partner_id) for m in matters if partner)
            else:
                reply.matters.extend(matter_message(m) for m in matters)
            return reply

    async def GetMatter(self, request, context):  # noqa: N802
        await authorize(context, "routing.GetMatter", READERS)
        async with grpc_call(context, "routing.GetMatter"):
            matter = self.catalogue.get(request.code)
            if matter is not None:
                return matter_message(matter)
            await context.abort(grpc.StatusCode.NOT_FOUND, "no matter with that code in the catalogue")


    async def ListBundles(self, request, context):  # noqa: N802
        await authorize(context, "routing.ListBundles", READERS)
        async with grpc_call(context, "routing.ListBundles"):
            reply = routing_pb2.ListBundlesReply()
            for bundle in self.catalogue.bundles():
                matters = [m for m in map(self.catalogue.get, bundle.matters) if m is not None]
                names = (bundle.name, *(m.name for m in matters))
                if not request.keyword or any(request.keyword in name for name in names):
                    reply.bundles.append(routing_pb2.Bundle(code=bundle.code, name=bundle.name,
                                                            matters=[matter_message(m) for m in matters]))
            return reply


class ReviewServicer(routing_pb2_grpc.ReviewServicer):
    def __init__(self, runtime: ServiceRuntime, handlers_by_command: dict[str, Handler]) -> None:
        self.runtime = runtime
        self.handlers = handlers_by_command

    async def ListUnroutable(self, request, context):  # noqa: N802 (gRPC method name)
        await authorize(context, "routing.ListUnroutable", OPERATORS)
        async with grpc_call(context, "routing.ListUnroutable"):
            queue = await self.runtime.state_of(review.QUEUE) or {}
            entries = sorted(queue.get("entries", {}).values(), key=lambda e: (e["since_ms"], e["application_id"]))
            return routing_pb2.ListUnroutableReply(entries=[
                routing_pb2.UnroutableEntry(application_id=e["application_id"], matter_code=e["matter_code"],
                                            reason=e["reason"], since_millis=e["since_ms"]) for e in entries])

    async def Reroute(self, request, context):  # noqa: N802
        caller = await authorize(context, "routing.Reroute", OPERATORS)
        async with grpc_call(context, "routing.Reroute", lambda: self.runtime.trace_of(request.application_id)):
            payload = {"deciding_partner": request.deciding_partner, "reason": request.reason,
                       "operator": caller.source_system}
            await self._command(context, handlers.REROUTE, request.application_id,
                                f"reroute:{request.application_id}", payload)
            return routing_pb2.ReviewAccepted(application_id=request.application_id)

    async def RejectUnroutable(self, request, context):  # noqa: N802
        caller = await authorize(context, "routing.RejectUnroutable", OPERATORS)
        async with grpc_call(context, "routing.RejectUnroutable",
                             lambda: self.runtime.trace_of(request.application_id)):
            payload = {"reason": request.reason, "operator": caller.source_system}
            await self._command(context, handlers.REJECT, request.application_id,
                                f"reject:{request.application_id}", payload)
            return routing_pb2.ReviewAccepted(application_id=request.application_id)

    async def _command(self, context, command: str, key: str, command_id: str, payload: dict) -> None:
        """Try the request on the committed state (a broken rule raises Rejected:
        FAILED_PRECONDITION), then hand it to the owner. One resolution per application: a
        second is the same command id, which the owner drops."""
        state = await self.runtime.state_of(key)
        if state is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such application")
        trial = Event(command_id, command, key, payload, {"occurred_at": now_utc(), "correlation_id": key}, "command")
        await self.handlers[command](trial, state)
        await self.runtime.submit(command, key, command_id, payload)


class RoutingApi:
    """What routing adds to its process: the query and review servicers, and the catalogue publication
    started once the runtime serves its partitions (the task is kept here so it lives)."""

    def __init__(self, catalogue: Catalogue, partners: PartnerRegistry) -> None:
        self.catalogue = catalogue
        self.partners = partners
        self.publishing: asyncio.Task | None = None

    def add_servicers(self, server: grpc.aio.Server, runtime: ServiceRuntime) -> None:
        routing_pb2_grpc.add_CatalogueServicer_to_server(CatalogueServicer(self.catalogue, self.partners), server)
        routing_pb2_grpc.add_ReviewServicer_to_server(ReviewServicer(runtime, runtime.wiring.commands), server)
        self.publishing = asyncio.get_running_loop().create_task(
            publish_catalogue(runtime, self.catalogue), name="publish-catalogue")
        self.publishing.add_done_callback(_report_failure)


def _report_failure(task: asyncio.Task) -> None:
    """Routing keeps routing without it; the next start publishes what changed."""
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        log.error("catalogue publication failed: %s", type(exc).__name__, exc_info=exc)
