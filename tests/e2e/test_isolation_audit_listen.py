"""A running service's gRPC port listens where TONGBAN_GRPC_HOST says and nowhere else:
loopback by default (issue 8). What the kernel reports as listening sockets is the independent
sink; the health check through the local CA shows the port is the service's."""

import ipaddress
import socket
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devtools.launcher import MONITOR
from tests.support import start_stack
from tongban.grpc_tls import client_channel

pytestmark = pytest.mark.integration

LISTEN = "0A"  # TCP state in /proc/net/tcp*


def listening_addresses(port: int) -> set[str]:
    """Every local address with a socket listening on `port`, IPv4 and IPv6."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state != LISTEN or int(hex_port, 16) != port:
                continue
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word in host (little-endian) order.
            packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.ip_address(socket.inet_ntop(family, packed))
            # gRPC may bind an IPv6 socket to an IPv4 address (::ffff:127.0.0.1): the same address.
            mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
            found.add(str(mapped or ip))
    return found


async def serving(stack, service: str) -> int:
    async with client_channel(stack.grpc_target(service), MONITOR) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return reply.status


@pytest.fixture(params=[({}, "127.0.0.1"), ({"TONGBAN_GRPC_HOST": "::1"}, "::1")], ids=["default", "configured"])
def routing(namespace, request):
    """Routing alone, started with the parameter's environment; (stack, the address expected)."""
    env, expected = request.param
    stack = start_stack(namespace, env=env, only=("routing",))
    yield stack, expected
    stack.stop_all()


async def test_a_service_listens_only_on_the_configured_host_loopback_by_default(routing):
    stack, expected = routing
    assert await serving(stack, "routing") == health_pb2.HealthCheckResponse.SERVING
    assert listening_addresses(stack.ports["routing"]) == {expected}
