"""Who consulted an applicant's records for an application, and why (PIPL art. 35): the
call intake's Track (or a portal) makes to the data-sharing exchange.

Every provider answers for all chains (the audit trail is the exchange's), so one
call to any provider is enough; intake calls as `tongban-intake` (endpoints.TRACK).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tongban.grpc_tls import client_channel
from tongban.sharing import datasharing_pb2, datasharing_pb2_grpc, endpoints

DEADLINE_SECONDS = 3


@dataclass(frozen=True)
class Consultation:
    requester: str
    evidence_type: str
    purpose: str
    legal_basis: str
    at_millis: int
    answer: str  # MATCH, NO_MATCH, NOT_FOUND, EVIDENCE, DENIED or DISPUTED


async def consultations(application_id: str, caller: str = endpoints.TRACK, provider: str = endpoints.PROVIDERS[0],
                        env: Mapping[str, str] | None = None, tls_dir: Path | None = None) -> list[Consultation]:
    """Oldest first. Raises grpc.aio.AioRpcError if the exchange cannot answer now."""
    async with client_channel(endpoints.target(provider, env), caller, tls_dir) as channel:
        reply = await datasharing_pb2_grpc.DataSharingStub(channel).AccessLog(
            datasharing_pb2.AccessLogRequest(application_id=application_id), timeout=DEADLINE_SECONDS)
    return [Consultation(a.requester, a.evidence_type, a.purpose, a.legal_basis, a.at_millis, a.answer)
            for a in reply.accesses]
