"""One data-sharing provider's gRPC server: the DataSharing API over its own record store,
under the sharing catalogue and the demand list, every access recorded in its audit chain.

Who asks is the caller its client certificate names; a query naming another requester is
refused like one without an approved demand (PERMISSION_DENIED), and recorded as well.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import signal
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from pymongo.errors import PyMongoError

from services.datasharing import records
from services.datasharing.anchor import anchor_periodically
from services.datasharing.audit import Access, AuditChain, accesses_for
from tongban import grpc_tls, reflection, store, telemetry, topics
from tongban.bus import make_producer, publish_schemas
from tongban.codec import SchemaRegistry
from tongban.config import Settings
from tongban.events import encode_event, now_utc
from tongban.sharing import datasharing_pb2, datasharing_pb2_grpc, endpoints, governance
from tongban.sharing.datasharing_pb2 import EvidenceAnswer

log = logging.getLogger(__name__)
# Roles that may read an application's access list for the applicant (a portal or window
# showing it, an operator answering a complaint), and intake (Track); requesters may not.
ACCESS_LOG_READERS = ("portal", "window", "operator")
# An applicant disputes through a portal or window; an officer as the operator.
DISPUTERS = ("portal", "window", "operator")
GROUNDS = ("RECORD_WRONG", "RECORD_OUTDATED", "NOT_THE_APPLICANTS")
AUDIT_ENTRY = re.compile(r"[a-z0-9_]{1,32}:[0-9]{1,12}")  # what a dispute may quote: it travels unsealed


def _store_away_is_unavailable(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Every answer is recorded in the audit trail first: without the store there is no
    answer, and the caller is told UNAVAILABLE (ask again), not UNKNOWN."""
    @functools.wraps(method)
    async def answering(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except PyMongoError as exc:
            telemetry.log(log, logging.WARNING, "audit trail unavailable", error=type(exc).__name__)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the audit trail cannot be written now; ask again")
    return answering


class DataSharingServicer(datasharing_pb2_grpc.DataSharingServicer):
    def __init__(self, provider: str, catalogue: governance.SharingCatalogue, demands: governance.DemandList,
                 store_: records.RecordStore, chain: AuditChain, disputes: Callable[[dict], Awaitable[None]]) -> None:
        self.provider = provider
        self.disputes = disputes
        self.catalogue = catalogue
        self.demands = demands
        self.records = store_
        self.chain = chain

    @_store_away_is_unavailable
    async def Query(self, request, context):  # noqa: N802 (gRPC method name)
        caller = grpc_tls.caller_of(context) if _has_certificate(context) else None
        if caller is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "datasharing.Query: no client certificate")
        assert caller is not None
        kind = self.catalogue.evidence.get(request.evidence_type)
        if kind is None or kind.provider != self.provider:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"provider {self.provider} does not hold evidence {request.evidence_type!r}")
        assert kind is not None, "abort raises"
        query = governance.Query(request.requester, request.matter_code, request.evidence_type, request.purpose,
                                 request.legal_basis, request.want_evidence)
        if request.requester != caller.source_system:
            ruling = governance.Ruling(False, False,
                                       f"the requester must be the caller itself, not {request.requester}")
        else:
            ruling = governance.rule(self.catalogue, self.demands, query, date.today())
        # who asked is who the certificate names, whatever the request claims
        access = Access(caller.source_system, request.application_id, request.matter_code,
                        request.evidence_type, request.purpose, request.legal_basis, "DENIED")
        if not ruling.allowed:
            await self.chain.append(Access(**{**access.__dict__, "reason": ruling.reason}))
            telemetry.log(log, logging.WARNING, "evidence query refused", provider=self.provider,
                          requester=caller.source_system, evidence_type=request.evidence_type, reason=ruling.reason)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"datasharing.Query: {ruling.reason}")
        verdict = records.verify(self.records, request.evidence_type, request.subject_id, dict(request.declared),
                                 kind.declared)
        record = verdict.record
        licence = record.licence if ruling.with_evidence and verdict.verdict == records.MATCH and record else None
        head = await self.chain.append(Access(**{**access.__dict__,
                                                 "answer": "EVIDENCE" if licence else verdict.verdict}))
        answer = EvidenceAnswer(verdict=EvidenceAnswer.Verdict.Value(verdict.verdict), mismatched=verdict.mismatched,
                                provider=self.provider, audit_entry=f"{self.chain.chain}:{head.sequence}")
        if licence is not None and record is not None:
            answer.evidence.CopyFrom(datasharing_pb2.Evidence(
                licence_id=licence.licence_id, issuer=licence.issuer, issued_on=licence.issued_on,
                fields={k: v for k, v in record.fields.items() if k not in kind.declared}))
        return answer

    @_store_away_is_unavailable
    async def AccessLog(self, request, context):  # noqa: N802
        caller = grpc_tls.caller_of(context) if _has_certificate(context) else None
        if caller is None or caller.source_system != endpoints.TRACK:  # intake shows it on Track
            await grpc_tls.authorize(context, "datasharing.AccessLog", ACCESS_LOG_READERS)
        entries = await accesses_for(self.chain.db, request.application_id)
        return datasharing_pb2.AccessLogReply(accesses=[
            datasharing_pb2.Access(requester=e["requester"], evidence_type=e["evidence_type"], purpose=e["purpose"],
                                   legal_basis=e["legal_basis"], at_millis=e["at_millis"], answer=e["answer"])
            for e in entries])


    @_store_away_is_unavailable
    async def Dispute(self, request, context):  # noqa: N802
        caller = await grpc_tls.authorize(context, "datasharing.Dispute", DISPUTERS)
        if request.ground not in GROUNDS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"ground must be one of {', '.join(GROUNDS)}")
        if request.audit_entry and not AUDIT_ENTRY.fullmatch(request.audit_entry):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "audit_entry is <chain>:<sequence>, as answered")
        kind = self.catalogue.evidence.get(request.evidence_type)
        if kind is None or kind.provider != self.provider or not request.application_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"a dispute names an application and evidence {self.provider} holds")
        head = await self.chain.append(Access(caller.source_system, request.application_id, "",
                                              request.evidence_type, "校核纠错 (a dispute of a record)", "",
                                              "DISPUTED", f"{request.ground} of {request.audit_entry or 'an answer'}"))
        days = self.catalogue.providers[self.provider].correction_working_days
        dispute_id = f"{self.chain.chain}:{head.sequence}"
        await self.disputes({"dispute_id": dispute_id, "application_id": request.application_id,
                             "provider": self.provider, "evidence_type": request.evidence_type,
                             "audit_entry": request.audit_entry, "ground": request.ground,
                             "disputed_by": f"{caller.source_system}/{caller.role}",
                             "correction_working_days": days})
        return datasharing_pb2.DisputeReply(dispute_id=dispute_id, correction_working_days=days)


def _has_certificate(context: grpc.aio.ServicerContext) -> bool:
    return bool((context.auth_context() or {}).get("x509_pem_cert"))


async def serve(settings: Settings, provider: str, anchor_every: float) -> None:
    """Run one provider until SIGTERM or SIGINT; healthy once its audit chain is reachable."""
    catalogue = governance.load_catalogue()
    demands = governance.load_demands(catalogue)
    if provider not in catalogue.serving_providers():
        raise SystemExit(f"datasharing: {provider!r} shares nothing in the sharing catalogue")
    telemetry.setup(settings)
    if not all(path.exists() for path in grpc_tls.server_files(settings.grpc_tls_dir, provider)):
        # A local run makes its own; a deployment mounts them read-only, without the CA's key.
        endpoints.ensure_certificates(settings.grpc_tls_dir, [provider], [settings.grpc_host])
    client, db = store.connect(settings)
    chain = AuditChain(db, provider)
    await chain.ensure_indexes()

    registry = SchemaRegistry.load()
    producer = make_producer(settings, client_id=f"tongban-datasharing-{provider}")
    await producer.start()
    await publish_schemas(producer, settings, registry)

    async def publish_dispute(body: dict) -> None:
        _, value = encode_event(registry, topics.EVIDENCE_DISPUTED_EVENT, body, cause_id=body["dispute_id"],
                                correlation_id=body["application_id"], source_system="tongban-datasharing")
        await producer.send_and_wait(settings.topic(topics.DATASHARING_DISPUTES),
                                     key=body["application_id"].encode(), value=value)

    server = grpc.aio.server(options=[grpc_tls.EXCLUSIVE_PORT])
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    datasharing_pb2_grpc.add_DataSharingServicer_to_server(
        DataSharingServicer(provider, catalogue, demands, records.RecordStore.load(provider), chain, publish_dispute),
        server)
    reflection.enable(server, [health.SERVICE_NAME,
                               datasharing_pb2.DESCRIPTOR.services_by_name["DataSharing"].full_name])
    address = grpc_tls.listen_address(settings.grpc_host, endpoints.port(provider))
    server.add_secure_port(address, grpc_tls.server_credentials(settings.grpc_tls_dir, provider))
    await server.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    anchoring = asyncio.create_task(anchor_periodically(producer, settings, registry, chain, anchor_every, stop))
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    telemetry.log(log, logging.INFO, "provider started", provider=provider, address=address,
                  started_at=now_utc().isoformat())
    await stop.wait()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace=5)
    await anchoring
    await producer.stop()
    await client.close()
