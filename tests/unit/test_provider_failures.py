"""What verification makes of a data-sharing provider that fails, and what a provider tells
its caller when its store is away: an application waits for evidence it can get later and is
never dead-lettered for a provider's passing trouble (a chaos run lost 32 that way)."""

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata
from pymongo.errors import AutoReconnect

from services.datasharing.server import _store_away_is_unavailable
from services.verification.sharing import NotAllowed, SharingClient, Unavailable
from tongban.sharing import governance

CATALOGUE = governance.load_catalogue()
DEMANDS = governance.load_demands(CATALOGUE)


def failing_with(code: grpc.StatusCode) -> object:
    class Stub:
        async def Query(self, request, **options):  # noqa: N802 (gRPC method name)
            raise AioRpcError(code, Metadata(), Metadata(), details="trouble")
    return Stub()


def client_failing_with(code: grpc.StatusCode) -> SharingClient:
    client = SharingClient(CATALOGUE, DEMANDS, env={})
    client._stub = lambda provider: failing_with(code)  # type: ignore[method-assign,assignment,return-value]
    return client


def a_query() -> tuple[str, str]:
    """A matter and evidence type verification may ask about (an approved demand of its own)."""
    demand = next(d for d in DEMANDS.demands
                  if d.requester == "tongban-verification" and d.status == governance.APPROVED)
    return sorted(demand.matters)[0], demand.evidence


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                  grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL,
                                  grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED])
async def test_a_failing_provider_is_asked_again_later(code):
    matter, evidence = a_query()
    with pytest.raises(Unavailable):
        await client_failing_with(code).query("TB1", matter, evidence, "id", {})


async def test_a_refusal_is_final_and_a_malformed_query_is_our_error():
    matter, evidence = a_query()
    with pytest.raises(NotAllowed):
        await client_failing_with(grpc.StatusCode.PERMISSION_DENIED).query("TB1", matter, evidence, "id", {})
    with pytest.raises(AioRpcError):
        await client_failing_with(grpc.StatusCode.INVALID_ARGUMENT).query("TB1", matter, evidence, "id", {})


class Aborted(Exception):
    pass


class Context:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        raise Aborted(details)


async def test_a_provider_whose_audit_trail_is_away_answers_unavailable():
    class Provider:
        @_store_away_is_unavailable
        async def Query(self, request, context):  # noqa: N802
            raise AutoReconnect("store away")

        @_store_away_is_unavailable
        async def AccessLog(self, request, context):  # noqa: N802
            return "answered"

    context = Context()
    with pytest.raises(Aborted, match="ask again"):
        await Provider().Query(None, context)
    assert context.code == grpc.StatusCode.UNAVAILABLE
    assert await Provider().AccessLog(None, Context()) == "answered"
