"""gRPC server reflection, so `grpcurl list` (and any reflection client) sees a service's API.

grpc.aio keeps no list of the services registered on a server, so `Registering` stands in
for the server while a service adds its servicers and notes each service's name."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection


class Registering:
    """A grpc.aio.Server as `add_servicers` sees it: registrations pass through, names are kept."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server
        self.services: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.services += [h.service_name() for h in handlers if hasattr(h, "service_name")]
        self._server.add_generic_rpc_handlers(handlers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


def enable(server: grpc.aio.Server, services: Iterable[str]) -> None:
    """Serve reflection for `services` (and for reflection itself)."""
    reflection.enable_server_reflection((*dict.fromkeys(services), reflection.SERVICE_NAME), server)
