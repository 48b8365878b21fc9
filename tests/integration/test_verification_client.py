"""Verification's data-sharing client against a real provider server (mutual TLS, its own
audit chain in the store): health figures per provider × evidence type; a provider that
goes away is given up on fast once its circuit breaker opens, and used again once back."""

from __future__ import annotations

import asyncio
import os
import secrets
import time

import grpc
import pytest
from pymongo import AsyncMongoClient
from stdnum.cn import ric

from devtools.launcher import free_port
from services.datasharing import records
from services.datasharing.audit import AuditChain
from services.datasharing.server import DataSharingServicer
from services.verification import sharing
from services.verification.sharing import SharingClient, Unavailable
from tongban import grpc_tls
from tongban.sharing import datasharing_pb2_grpc, endpoints, governance

pytestmark = pytest.mark.integration

CATALOGUE = governance.load_catalogue()
DEMANDS = governance.load_demands(CATALOGUE)
TEST_1 = ("测试一", "43012119800101111" + ric.calc_check_digit("43012119800101111X"))


async def start_provider(port: int, chain: AuditChain, published: list) -> grpc.aio.Server:
    async def publish(body: dict) -> None:
        published.append(body)

    server = grpc.aio.server()
    datasharing_pb2_grpc.add_DataSharingServicer_to_server(
        DataSharingServicer("mps", CATALOGUE, DEMANDS, records.RecordStore.load("mps"), chain, publish), server)
    server.add_secure_port(f"127.0.0.1:{port}", grpc_tls.server_credentials(grpc_tls.tls_dir(), "mps"))
    await server.start()
    return server


@pytest.fixture
async def audit_chain():
    endpoints.ensure_certificates(grpc_tls.tls_dir(), ["mps"])
    database = f"t{secrets.token_hex(3)}_tongban_datasharing"
    client = AsyncMongoClient(os.environ.get("TONGBAN_MONGO_URI", "mongodb://127.0.0.1:27217/"), tz_aware=True)
    chain = AuditChain(client[database], "mps")
    await chain.ensure_indexes()
    yield chain
    await client.drop_database(database)
    await client.close()


async def test_health_figures_and_the_circuit_breaker_of_a_provider_that_goes_away_and_comes_back(audit_chain):
    port = free_port()
    client = SharingClient(CATALOGUE, DEMANDS, env={endpoints.port_variable("mps"): str(port)})
    server = await start_provider(port, audit_chain, [])

    async def ask(name: str = TEST_1[0], subject: str = TEST_1[1]):
        return await client.query("TB-CLIENT", "KSTB-PSB-01", "HOUSEHOLD", subject,
                                  {"name": name, "household_division": "370102"})

    for n in range(40):
        answer = await ask() if n % 4 else await ask(subject="43012119990909999" + ric.calc_check_digit(
            "43012119990909999X"))
        assert answer.verdict == ("MATCH" if n % 4 else "NOT_FOUND")
    figures = client.figures()["mps/HOUSEHOLD"]
    assert figures["calls"] == 40
    assert figures["success_rate"] == 1.0
    assert figures["empty_hit_rate"] == 0.25
    deadline_ms = 1000 * CATALOGUE.evidence["HOUSEHOLD"].response_seconds
    assert 0 < figures["latency_p50_ms"] <= figures["latency_p95_ms"] < deadline_ms
    print(f"\nprovider health with a local provider: {figures}")

    await server.stop(grace=None)
    failures = []
    for _ in range(sharing.FAILURES_TO_OPEN):
        started = time.monotonic()
        with pytest.raises(Unavailable, match=r"UNAVAILABLE|DEADLINE_EXCEEDED"):
            await ask()
        failures.append(time.monotonic() - started)
    started = time.monotonic()
    with pytest.raises(Unavailable, match="circuit open"):
        await ask()
    open_seconds = time.monotonic() - started
    assert open_seconds < 0.05, "an open breaker does not call at all"
    print(f"down: {[round(f * 1000) for f in failures]} ms per call with retries; open breaker: "
          f"{open_seconds * 1000:.2f} ms")
    assert client.figures()["mps/HOUSEHOLD"]["success_rate"] < 1.0

    server = await start_provider(port, audit_chain, [])
    try:
        deadline = time.monotonic() + sharing.OPEN_SECONDS + 10
        while True:  # half-open after OPEN_SECONDS: one call goes through and closes it
            try:
                assert (await ask()).verdict == "MATCH"
                break
            except Unavailable:
                assert time.monotonic() < deadline, "the provider is back but the breaker never let a call through"
                await asyncio.sleep(0.5)
        assert client.breakers["mps"].closed
        entries = await audit_chain.entries()
        assert len(entries) == 41, "every answer recorded, once"
    finally:
        await server.stop(grace=None)

