"""`tongban-probe`, the pods' readiness and liveness check: gRPC health over mutual TLS as
`tongban-monitor`, against a real in-process gRPC server with certificates from a CA made for
this module. Exit 0 only while the server answers SERVING."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tongban.grpc_tls import server_credentials
from tongban.ops import probe


async def test_probe_follows_the_health_status(tls, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TONGBAN_GRPC_TLS_DIR", str(tls))
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(tls, "intake"))
    await server.start()
    try:
        await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)  # restoring its state
        assert await asyncio.to_thread(probe.main, ["--port", str(port)]) == 1
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert await asyncio.to_thread(probe.main, ["--port", str(port)]) == 0
    finally:
        await server.stop(None)
    assert await asyncio.to_thread(probe.main, ["--port", str(port), "--timeout", "1"]) == 1  # nobody listens
