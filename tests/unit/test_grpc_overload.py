"""A burst of calls beyond a service's bound is refused at once with RESOURCE_EXHAUSTED,
which callers retry, instead of being held in memory; the bound is a setting."""

import asyncio

import grpc
import pytest

from tongban.app import grpc_server
from tongban.config import ConfigError, load_settings


def _identity(message: bytes) -> bytes:
    return message


async def test_a_call_beyond_the_bound_is_resource_exhausted_and_a_retry_after_it_is_served():
    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow(request: bytes, context) -> bytes:
        entered.set()
        await release.wait()
        return request

    server = grpc_server(load_settings("feedback", {"TONGBAN_GRPC_MAX_CONCURRENT_RPCS": "1"}))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Slow", {
        "Call": grpc.unary_unary_rpc_method_handler(slow, _identity, _identity)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/test.Slow/Call")
            first = asyncio.ensure_future(call(b"first", timeout=10))
            await asyncio.wait_for(entered.wait(), 10)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(b"second", timeout=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            release.set()
            assert await first == b"first"
            assert await call(b"third", timeout=10) == b"third"
    finally:
        await server.stop(None)


def test_the_bound_defaults_to_512_and_must_be_at_least_one():
    assert load_settings("feedback", {}).grpc_max_concurrent_rpcs == 512
    with pytest.raises(ConfigError, match="TONGBAN_GRPC_MAX_CONCURRENT_RPCS"):
        load_settings("feedback", {"TONGBAN_GRPC_MAX_CONCURRENT_RPCS": "0"})
