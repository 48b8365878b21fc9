"""Verification's client of the data-sharing providers (the edge; rules are in domain.py).

Every call has the provider's committed response time (the sharing catalogue) as its
deadline; gRPC itself retries UNAVAILABLE a few times within it (the channel's retry
policy); a circuit breaker per provider stops asking one that keeps failing, so its
applications wait on their timers at no cost to anyone else's. Health figures (success
rate, latency, empty-hit rate) are kept per provider × evidence type.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from statistics import quantiles

import grpc
from circuitbreaker import CircuitBreaker, CircuitBreakerError  # type: ignore[import-untyped]

from tongban import telemetry
from tongban.grpc_tls import client_channel
from tongban.sharing import datasharing_pb2, datasharing_pb2_grpc, endpoints, governance

log = logging.getLogger(__name__)

PURPOSE = "跨省通办受理核验 (verification of an application's materials)"
# Statuses that say "not now" rather than "no": the provider is down, slow or overloaded.
# Codes after which asking again later can succeed: the provider away, slow, overloaded, or
# failing inside (its store away: a call cut by its restart is CANCELLED, an error it did not
# expect UNKNOWN). The application waits for the answer (`Unavailable`); only what asking again
# cannot change (a refusal, a malformed or unauthenticated query) is final.
TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.ABORTED,
             grpc.StatusCode.DATA_LOSS)
RETRY_POLICY = json.dumps({"methodConfig": [{
    "name": [{"service": "tongban.datasharing.DataSharing"}],
    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "0.5s", "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"]}}]})
FAILURES_TO_OPEN = 3  # consecutive transient failures before a provider's breaker opens
OPEN_SECONDS = 5  # then one call is let through to see whether it is back
HEALTH_LOG_SECONDS = 60  # how often the health figures are logged (for the operator's dashboard)


class Unavailable(Exception):
    """The provider cannot answer now; ask again later."""

    def __init__(self, provider: str, why: str) -> None:
        super().__init__(f"provider {provider}: {why}")
        self.provider = provider


class NotAllowed(Exception):
    """The provider refused the query (no approved demand): sharing cannot confirm it."""


@dataclass(frozen=True)
class Answer:
    evidence_type: str
    provider: str
    verdict: str  # MATCH, NO_MATCH or NOT_FOUND
    mismatched: tuple[str, ...]
    reference: str  # the e-licence id if the evidence came, else the audit entry


@dataclass
class Health:
    calls: int = 0
    answered: int = 0
    empty: int = 0
    latencies: list[float] = field(default_factory=list)

    def figures(self) -> dict[str, float]:
        cuts = quantiles(self.latencies, n=20) if len(self.latencies) > 1 else self.latencies * 19
        return {"calls": self.calls, "success_rate": self.answered / self.calls if self.calls else 1.0,
                "empty_hit_rate": self.empty / self.answered if self.answered else 0.0,
                "latency_p50_ms": round(cuts[9] * 1000, 1) if cuts else 0.0,
                "latency_p95_ms": round(cuts[18] * 1000, 1) if cuts else 0.0}


class SharingClient:
    def __init__(self, catalogue: governance.SharingCatalogue, demands: governance.DemandList,
                 env: Mapping[str, str] | None = None, tls_dir: Path | None = None,
                 requester: str = endpoints.VERIFICATION) -> None:
        self.catalogue = catalogue
        self.demands = demands
        self.requester = requester
        self._env = env
        self._tls_dir = tls_dir
        self._stubs: dict[str, datasharing_pb2_grpc.DataSharingStub] = {}
        self.breakers = {p: CircuitBreaker(failure_threshold=FAILURES_TO_OPEN, recovery_timeout=OPEN_SECONDS,
                                           expected_exception=Unavailable, name=f"datasharing-{p}-{id(self)}")
                         for p in catalogue.serving_providers()}
        # the breaker's decorator is what refuses calls while it is open
        self._guarded = {p: b.decorate(self._call) for p, b in self.breakers.items()}
        self.health: dict[tuple[str, str], Health] = {}
        self._logged_at = time.monotonic()

    def _stub(self, provider: str) -> datasharing_pb2_grpc.DataSharingStub:
        # Channels are made lazily, inside the running event loop.
        if provider not in self._stubs:
            channel = client_channel(endpoints.target(provider, self._env), self.requester, self._tls_dir,
                                     options=[("grpc.service_config", RETRY_POLICY), ("grpc.enable_retries", 1)])
            self._stubs[provider] = datasharing_pb2_grpc.DataSharingStub(channel)
        return self._stubs[provider]

    async def query(self, application_id: str, matter_code: str, evidence_type: str, subject_id: str,
                    declared: Mapping[str, str]) -> Answer:
        """Ask the provider of `evidence_type` under the requester's approved demand: the
        evidence itself where the demand allows it, else yes/no. Unavailable: ask later;
        NotAllowed: the provider refused (sharing cannot confirm it)."""
        kind = self.catalogue.evidence[evidence_type]
        demand = governance.demand_for(self.demands, self.requester, evidence_type, matter_code)
        if demand is None:
            raise NotAllowed(f"no approved demand for {evidence_type} in {matter_code}")
        request = datasharing_pb2.EvidenceQuery(
            requester=self.requester, application_id=application_id, matter_code=matter_code,
            evidence_type=evidence_type, purpose=PURPOSE, legal_basis=demand.legal_basis, subject_id=subject_id,
            declared=dict(declared), want_evidence=demand.answer == governance.EVIDENCE)
        health = self.health.setdefault((kind.provider, evidence_type), Health())
        try:
            reply = await self._guarded[kind.provider](kind, request, health)
        except CircuitBreakerError:
            raise Unavailable(kind.provider, "circuit open after repeated failures") from None
        finally:
            self._log_health()
        verdict = datasharing_pb2.EvidenceAnswer.Verdict.Name(reply.verdict)
        return Answer(evidence_type, kind.provider, verdict, tuple(reply.mismatched),
                      reply.evidence.licence_id or reply.audit_entry)

    async def _call(self, kind: governance.EvidenceType, request: datasharing_pb2.EvidenceQuery,
                    health: Health) -> datasharing_pb2.EvidenceAnswer:
        health.calls += 1
        started = time.monotonic()
        try:
            reply = await self._stub(kind.provider).Query(request, timeout=kind.response_seconds)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in TRANSIENT:
                telemetry.log(log, logging.WARNING, "provider unavailable", provider=kind.provider,
                              evidence_type=kind.type, status=exc.code().name)
                raise Unavailable(kind.provider, exc.code().name) from None
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                raise NotAllowed(exc.details() or "refused") from None
            raise
        health.answered += 1
        health.latencies.append(time.monotonic() - started)
        del health.latencies[:-1000]  # the recent ones are what health means
        if reply.verdict == datasharing_pb2.EvidenceAnswer.NOT_FOUND:
            health.empty += 1
        return reply

    def _log_health(self) -> None:
        if time.monotonic() - self._logged_at >= HEALTH_LOG_SECONDS:
            self._logged_at = time.monotonic()
            for name, figures in self.figures().items():
                telemetry.log(log, logging.INFO, "provider health", provider_evidence=name, **figures)

    def figures(self) -> dict[str, dict[str, float]]:
        """Health per provider × evidence type, e.g. {"mps/HOUSEHOLD": {"success_rate": 1.0, ...}}."""
        return {f"{p}/{e}": h.figures() for (p, e), h in sorted(self.health.items())}
