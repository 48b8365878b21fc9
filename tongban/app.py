"""Process lifecycle for a service: telemetry, store, runtime, gRPC server with health,
graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import cast

import grpc
from aiokafka.errors import KafkaError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from pymongo.errors import PyMongoError

from tongban import grpc_tls, reflection, store, telemetry
from tongban.codec import SchemaRegistry
from tongban.config import ConfigError, Settings, load_settings
from tongban.handling import Rejected, Wiring
from tongban.runtime import HandlerFailed, NotReady, Refused, ServiceRuntime
from tongban.runtime.archive import MongoArchive
from tongban.scrub import scrub

log = logging.getLogger(__name__)
tracer = trace.get_tracer("tongban.grpc")
# Requests up to this size reach the service's own checks, which name the field and limit
# (INVALID_ARGUMENT); larger ones are refused by gRPC itself (RESOURCE_EXHAUSTED).
MAX_REQUEST_BYTES = 8 * 1024 * 1024


_beside: set[asyncio.Task] = set()


def grpc_server(settings: Settings) -> grpc.aio.Server:
    """A service's gRPC server: request size capped, and at most
    `settings.grpc_max_concurrent_rpcs` calls open at once. A call beyond that is answered
    RESOURCE_EXHAUSTED at once (retry with back-off; a Submit retried with the same client
    reference is the same application), so a burst cannot grow the process without bound."""
    return grpc.aio.server(interceptors=[telemetry.GrpcMetrics()],
                           options=[("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                                    grpc_tls.EXCLUSIVE_PORT],
                           maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs)


def keep_beside(task: asyncio.Task) -> asyncio.Task:
    """Keep a task that runs beside the runtime (a catalogue follower, the notification
    sender, a reader of partners' topics) until the service stops. It is cancelled and
    awaited before the runtime stops, while the loop still runs: a Kafka client closed only
    when `asyncio.run` cancels everything at once waits for its own cancelled helpers, and
    the process hangs until it is killed."""
    _beside.add(task)
    return task


async def _stop_beside(within: float = 10.0) -> None:
    for task in _beside:
        task.cancel()
    if _beside:
        await asyncio.wait(_beside, timeout=within)


@asynccontextmanager
async def grpc_call(context: grpc.aio.ServicerContext, name: str,
                    fallback: Callable[[], Awaitable[dict[str, str]]] | None = None) -> AsyncIterator[trace.Span]:
    """A gRPC method's server span and error mapping, the same for every service.

    The span continues the caller's trace from gRPC metadata, else the one `fallback` finds
    (the trace of the application the call is about). A rule the request breaks is
    FAILED_PRECONDITION, a request too large to carry INVALID_ARGUMENT, a handler bug
    INTERNAL, a store or broker outage (or a key this instance does not serve) UNAVAILABLE.
    Anything else is INTERNAL with an error id, logged with that id: never the exception's
    text, which may quote the request. Details are scrubbed of ID and phone numbers, and the
    span records an exception's class only."""
    carrier = {k: v for k, v in (context.invocation_metadata() or ()) if k in ("traceparent", "tracestate")}
    try:
        if not carrier and fallback is not None:
            carrier = await fallback()
        with telemetry.safe_span(tracer, name, context=propagate.extract(carrier), kind=SpanKind.SERVER) as span:
            yield span
    except grpc.aio.AbortError:
        raise  # the method's own abort, with its own status
    except Rejected as exc:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, scrub(str(exc)))
    except Refused as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, scrub(str(exc)))
    except HandlerFailed:
        await context.abort(grpc.StatusCode.INTERNAL, f"{name} could not record the request")
    except NotReady as exc:
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    except (PyMongoError, KafkaError):
        await context.abort(grpc.StatusCode.UNAVAILABLE, "store or broker unavailable; retry")
    except Exception:
        error_id = secrets.token_hex(8)
        log.error("unexpected error in a gRPC call", exc_info=True,  # class and code locations only
                  extra={"fields": {"method": name, "error_id": error_id}})
        await context.abort(grpc.StatusCode.INTERNAL, f"{name} failed unexpectedly; error id {error_id}")


async def serve(
    settings: Settings,
    wiring: Callable[[Settings], Wiring],
    add_servicers: Callable[[grpc.aio.Server, ServiceRuntime], None] | None = None,
) -> None:
    """Run one service until SIGTERM or SIGINT. Healthy (SERVING) once its partitions are
    assigned and their state restored. The gRPC port takes mutual TLS only: a client
    certificate from Tongban's CA for every call, health included (which needs no role)."""
    credentials = grpc_tls.server_credentials(settings.grpc_tls_dir, settings.service)
    telemetry.setup(settings)
    registry = SchemaRegistry.load()
    client, db = store.connect(settings)
    runtime = ServiceRuntime(settings, registry, telemetry.RUNTIME.instrument(wiring(settings)), MongoArchive(db))

    server = grpc_server(settings)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    registering = reflection.Registering(server)
    if add_servicers:
        add_servicers(cast(grpc.aio.Server, registering), runtime)
    reflection.enable(server, [health.SERVICE_NAME, *registering.services])
    server.add_secure_port(grpc_tls.listen_address(settings.grpc_host, settings.grpc_port), credentials)
    await server.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    stopped = asyncio.create_task(stop.wait())
    starting = asyncio.create_task(runtime.start())  # waits for a broker that is away
    await asyncio.wait([starting, stopped], return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
    else:
        starting.result()  # a deployment error (a missing topic) stops the process here
    failed = asyncio.create_task(runtime.failed.wait())
    ready = asyncio.create_task(runtime.ready.wait())
    await asyncio.wait([ready, stopped, failed], return_when=asyncio.FIRST_COMPLETED)
    if ready.done():
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        telemetry.log(log, logging.INFO, "service started", service=settings.service, grpc_host=settings.grpc_host,
                      grpc_port=settings.grpc_port)
        await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
    for waiter in (stopped, failed, ready):
        waiter.cancel()

    telemetry.log(log, logging.INFO, "stopping", service=settings.service)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace=5)
    await _stop_beside()
    await runtime.stop()
    await client.close()
    if runtime.failed.is_set():
        raise SystemExit(1)  # a supervisor restarts us; uncommitted work is replayed safely


def main(
    service: str,
    wiring: Callable[[Settings], Wiring],
    add_servicers: Callable[[grpc.aio.Server, ServiceRuntime], None] | None = None,
) -> None:
    """Entry point of `python -m services.<name>`: fails fast on bad configuration."""
    try:
        settings = load_settings(service)
        settings.kafka_client_options()  # its own Kafka identity is complete (a secret found) before anything starts
    except ConfigError as exc:
        raise SystemExit(f"tongban-{service}: configuration error: {exc}") from None
    try:
        asyncio.run(serve(settings, wiring, add_servicers))
    except grpc_tls.TlsFilesMissing as exc:
        raise SystemExit(f"tongban-{service}: configuration error: {exc}") from None
