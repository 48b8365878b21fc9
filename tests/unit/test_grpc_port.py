"""Each service's gRPC port is its own: a second server on a port already served refuses to
start, instead of sharing the port (SO_REUSEPORT) so that callers of one service reach
another one and get UNIMPLEMENTED. The launcher never hands one port to two processes."""

import socket

import pytest

from devtools import launcher
from tongban.app import grpc_server
from tongban.config import load_settings


async def test_a_second_server_cannot_bind_a_port_a_service_already_serves():
    first = grpc_server(load_settings("intake", {}))
    port = first.add_insecure_port("127.0.0.1:0")
    await first.start()
    try:
        second = grpc_server(load_settings("routing", {}))
        with pytest.raises(RuntimeError, match="bind"):
            second.add_insecure_port(f"127.0.0.1:{port}")
    finally:
        await first.stop(None)


def test_the_launcher_never_hands_out_a_port_twice_even_when_the_kernel_offers_it_again(monkeypatch):
    offered = iter([40001, 40001, 40002])

    class Kernel(socket.socket):
        def bind(self, address):
            super().bind(address)
            self.offered = next(offered)

        def getsockname(self):
            return ("127.0.0.1", self.offered)

    monkeypatch.setattr(launcher.socket, "socket", Kernel)
    monkeypatch.setattr(launcher, "_handed_out", set())
    assert [launcher.free_port(), launcher.free_port()] == [40001, 40002]
