"""`tongban-probe --port N`: the readiness and liveness check of a service's gRPC port.

Kubernetes' own gRPC probe cannot present a client certificate, and every Tongban port takes
mutual TLS only (health included), so the pods' probes run this instead: gRPC health
`Check` as `tongban-monitor` (a caller with no role in any API) over the service's own TLS
directory. Exit 0 when the service answers SERVING (its partitions assigned and restored),
1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tongban.grpc_tls import client_channel, listen_address, tls_dir

MONITOR = "tongban-monitor"


async def serving(target: str, timeout: float) -> bool:  # noqa: ASYNC109 (the probe's own deadline)
    async with client_channel(target, MONITOR, tls_dir()) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tongban-probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds for the health call")
    args = parser.parse_args(argv)
    return 0 if asyncio.run(serving(listen_address(args.host, args.port), args.timeout)) else 1
