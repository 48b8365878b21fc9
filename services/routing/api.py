"""Routing's gRPC query API over the catalogue (了解政策、查找事项): a thin adapter from
requests to the catalogue's search; it reads only the data files routing runs with.

Who may call (the role comes from the caller's client certificate, tongban.grpc_tls):
windows, portals, partner systems and operators. Answers hold no personal data.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from services.routing import routing_pb2, routing_pb2_grpc
from services.routing.catalogue import MODES, SUBJECTS, Catalogue, Matter, Query
from services.routing.domain import PartnerRegistry
from services.routing.publishing import publish_catalogue
from tongban import divisions
from tongban.app import grpc_call
from tongban.grpc_tls import authorize
from tongban.runtime import ServiceRuntime

log = logging.getLogger(__name__)
READERS = ("window", "portal", "partner", "operator")


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


class RoutingApi:
    """What routing adds to its process: the query servicer, and the catalogue publication
    started once the runtime serves its partitions (the task is kept here so it lives)."""

    def __init__(self, catalogue: Catalogue, partners: PartnerRegistry) -> None:
        self.catalogue = catalogue
        self.partners = partners
        self.publishing: asyncio.Task | None = None

    def add_servicers(self, server: grpc.aio.Server, runtime: ServiceRuntime) -> None:
        routing_pb2_grpc.add_CatalogueServicer_to_server(CatalogueServicer(self.catalogue, self.partners), server)
        self.publishing = asyncio.get_running_loop().create_task(
            publish_catalogue(runtime, self.catalogue), name="publish-catalogue")
        self.publishing.add_done_callback(_report_failure)


def _report_failure(task: asyncio.Task) -> None:
    """Routing keeps routing without it; the next start publishes what changed."""
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        log.error("catalogue publication failed: %s", type(exc).__name__, exc_info=exc)
