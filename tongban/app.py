"""Process lifecycle for a service: telemetry, store, runtime, gRPC server with health,
graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import grpc
from aiokafka.errors import KafkaError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from pymongo.errors import PyMongoError

from tongban import store, telemetry
from tongban.codec import SchemaRegistry
from tongban.config import ConfigError, Settings, load_settings
from tongban.runtime import HandlerFailed, Rejected, ServiceRuntime

log = logging.getLogger(__name__)
tracer = trace.get_tracer("tongban.grpc")


@asynccontextmanager
async def grpc_call(context: grpc.aio.ServicerContext, name: str,
                    fallback: Callable[[], Awaitable[dict[str, str]]] | None = None) -> AsyncIterator[trace.Span]:
    """A gRPC method's server span and error mapping, the same for every service.

    The span continues the caller's trace from gRPC metadata, else the one `fallback` finds
    (the trace of the application the call is about). A rule the request breaks is
    FAILED_PRECONDITION, a handler bug INTERNAL, a store or broker outage UNAVAILABLE."""
    carrier = {k: v for k, v in (context.invocation_metadata() or ()) if k in ("traceparent", "tracestate")}
    try:
        if not carrier and fallback is not None:
            carrier = await fallback()
        with tracer.start_as_current_span(name, context=propagate.extract(carrier), kind=SpanKind.SERVER) as span:
            yield span
    except Rejected as exc:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    except HandlerFailed:
        await context.abort(grpc.StatusCode.INTERNAL, f"{name} could not record the request")
    except (PyMongoError, KafkaError):
        await context.abort(grpc.StatusCode.UNAVAILABLE, "store or broker unavailable; retry")


async def serve(
    settings: Settings,
    build: Callable[[Settings, SchemaRegistry, object], ServiceRuntime],
    add_servicers: Callable[[grpc.aio.Server, ServiceRuntime], None] | None = None,
) -> None:
    """Run one service until SIGTERM or SIGINT."""
    telemetry.setup(settings)
    registry = SchemaRegistry.load()
    client, db = store.connect(settings)
    runtime = build(settings, registry, db)

    server = grpc.aio.server()
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if add_servicers:
        add_servicers(server, runtime)
    server.add_insecure_port(f"127.0.0.1:{settings.grpc_port}")
    await server.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    await runtime.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    telemetry.log(log, logging.INFO, "service started", service=settings.service, grpc_port=settings.grpc_port)
    stopped = asyncio.create_task(stop.wait())
    failed = asyncio.create_task(runtime.failed.wait())
    await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    failed.cancel()

    telemetry.log(log, logging.INFO, "stopping", service=settings.service)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace=5)
    await runtime.stop()
    await client.close()
    if runtime.failed.is_set():
        raise SystemExit(1)  # a supervisor restarts us; uncommitted work is replayed safely


def main(
    service: str,
    build: Callable[[Settings, SchemaRegistry, object], ServiceRuntime],
    add_servicers: Callable[[grpc.aio.Server, ServiceRuntime], None] | None = None,
) -> None:
    """Entry point of `python -m services.<name>`: fails fast on bad configuration."""
    try:
        settings = load_settings(service)
    except ConfigError as exc:
        raise SystemExit(f"tongban-{service}: configuration error: {exc}") from None
    asyncio.run(serve(settings, build, add_servicers))
