"""Tracing, metrics and logging shared by every process.

One OpenTelemetry trace follows one application: the W3C `traceparent` travels in Kafka
headers and gRPC metadata, never in payloads. Spans go to `TONGBAN_TRACE_FILE` and, when the
standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, over OTLP/gRPC.
Logs are JSON lines carrying the trace id; callers log ids and types only, never personal data.

Each service serves its own metrics (`RUNTIME`, below) for Prometheus on
`TONGBAN_METRICS_PORT_<SERVICE>` (default `METRICS_PORTS`; 0 turns the endpoint off). Every
label is a declared name (topic, event type, timer, gRPC method), a status code, an
exception class or a partition number: bounded, never personal data.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Status, StatusCode

from tongban.config import Settings
from tongban.handling import Event, Handler, Outcome, Rejected, Wiring
from tongban.scrub import scrub

METRICS_PORTS = {"intake": 9551, "routing": 9552, "verification": 9553, "delivery": 9554, "feedback": 9555}
# Handler latencies run from well under a millisecond (pure rules) to seconds (a slow store).
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Headers = Sequence[tuple[str, bytes]]


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans to a file, one JSON object a line (used by tests and `make run`)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            ctx = span.get_span_context()
            assert ctx is not None, "a span the SDK ended has a context"
            parent = span.parent
            lines.append(
                json.dumps(
                    {
                        "service": span.resource.attributes.get("service.name"),
                        "name": span.name,
                        "trace_id": format(ctx.trace_id, "032x"),
                        "span_id": format(ctx.span_id, "016x"),
                        "parent_id": format(parent.span_id, "016x") if parent else None,
                        "attributes": dict(span.attributes or {}),
                        "status": span.status.status_code.name,
                        "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events],
                    },
                    ensure_ascii=False,
                )
            )
        with self._lock, open(self._path, "a", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
        return SpanExportResult.SUCCESS


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        span_ctx = trace.get_current_span().get_span_context()
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        if span_ctx.is_valid:
            entry["trace_id"] = format(span_ctx.trace_id, "032x")
        # Fields are ids, types and counts; free text among them (a reason) is scrubbed again.
        entry.update({k: scrub(v) if isinstance(v, str) else v for k, v in getattr(record, "fields", {}).items()})
        if record.exc_info and record.exc_info[0]:
            # Class and code locations only: exception messages may carry personal data.
            entry["error"] = record.exc_info[0].__name__
            frames = traceback.extract_tb(record.exc_info[2])[-6:]
            entry["stack"] = [f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in frames]
        return json.dumps(entry, ensure_ascii=False)


def setup(settings: Settings) -> trace.Tracer:
    """Configure JSON logging, the tracer provider and the metrics endpoint for this process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("pymongo").setLevel(logging.WARNING)

    provider = TracerProvider(resource=Resource.create({"service.name": f"tongban-{settings.service}"}))
    if settings.trace_file:
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(settings.trace_file)))
    if otlp_configured(os.environ):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # The exporter reads the rest of OTEL_EXPORTER_OTLP_* itself (headers, TLS, timeout);
        # the batch processor keeps a slow collector off the handlers' path.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    serve_metrics(settings.service, os.environ)
    return trace.get_tracer("tongban")


def otlp_configured(env: Mapping[str, str]) -> bool:
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def metrics_port(service: str, env: Mapping[str, str]) -> int:
    raw = env.get(f"TONGBAN_METRICS_PORT_{service.upper()}")
    return int(raw) if raw else METRICS_PORTS.get(service, 0)


def metrics_provider(service: str) -> tuple[MeterProvider, Any]:
    """A meter provider whose readings Prometheus scrapes from the returned registry."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    reader = PrometheusMetricReader(disable_target_info=True, scope_info_enabled=False, registry=registry)
    return MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": f"tongban-{service}"})), \
        registry


def serve_metrics(service: str, env: Mapping[str, str]) -> int | None:
    """Make `RUNTIME` (and any meter) real and serve it on the service's metrics port; the
    port bound, or None when switched off or taken (a second instance on one host keeps
    running without an endpoint rather than failing)."""
    port = metrics_port(service, env)
    provider, registry = metrics_provider(service)
    metrics.set_meter_provider(provider)
    if not port:
        return None
    from prometheus_client import start_http_server

    host = env.get("TONGBAN_METRICS_HOST") or "127.0.0.1"
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log(logging.getLogger(__name__), logging.WARNING, "metrics endpoint not served", port=port,
            error=type(exc).__name__)
        return None
    return port


class RuntimeMetrics:
    """The instruments of one service process. Created on the global meter, they measure
    nothing until `serve_metrics` installs a provider (unit tests pass their own meter)."""

    def __init__(self, meter: Meter) -> None:
        self.records = meter.create_counter(
            "tongban.records", description="input records by logical topic and outcome "
            "(committed, aborted: read again after an outage, fenced, skipped: task not active)")
        self.handler_duration = meter.create_histogram(
            "tongban.handler.duration", unit="s", explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
            description="handler run time by kind (event, command, timer), type and outcome")
        self.emitted = meter.create_counter(
            "tongban.events.emitted", description="events handlers returned, by event type (a batch read "
            "again after an abort counts again)")
        self.dead_letters = meter.create_counter(
            "tongban.dead_letters.written", description="dead letters committed, by origin topic and error class")
        self.aborts = meter.create_counter(
            "tongban.transactions.aborted", description="task transactions lost, by exception class")
        self.timers = meter.create_counter("tongban.timers.fired", description="timer handlers run, by timer name")
        self.grpc_requests = meter.create_counter(
            "tongban.grpc.requests", description="gRPC calls by method and status code")
        self.grpc_duration = meter.create_histogram(
            "tongban.grpc.duration", unit="s", explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
            description="gRPC call time by method")
        self.store_duration = meter.create_histogram(
            "tongban.store.call.duration", unit="s", explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
            description="MongoDB-wire store call time (retries included) by operation and collection family")
        self._lag: dict[tuple[str, int], int] = {}
        meter.create_observable_gauge("tongban.input.lag", [self._observe_lag],
                                      description="records on an input partition this instance has not read yet")

    def _observe_lag(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(n, {"topic": topic, "partition": str(p)}) for (topic, p), n in list(self._lag.items())]

    def set_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """The lag of every partition this instance holds now (partitions it lost disappear)."""
        self._lag = dict(lags)

    def count_records(self, topics: Iterable[str], outcome: str) -> None:
        counts: dict[str, int] = {}
        for topic in topics:
            counts[topic] = counts.get(topic, 0) + 1
        for topic, n in counts.items():
            self.records.add(n, {"topic": topic, "outcome": outcome})

    def committed(self, records: Iterable[tuple[str, Sequence[tuple[str, bytes]]]], dlq_topic: str,
                  logical: Callable[[str], str]) -> None:
        """Count the dead letters among a committed transaction's records (topic, headers)."""
        for topic, headers in records:
            if topic != dlq_topic:
                continue
            found = dict(headers)
            origin = found.get("tongban.dlq.origin.topic", b"").decode("utf-8", "replace")
            error = found.get("tongban.dlq.error.class", b"").decode("utf-8", "replace")
            self.dead_letters.add(1, {"topic": logical(origin), "error": error})

    def aborted(self, exc: BaseException) -> None:
        self.aborts.add(1, {"error": type(exc).__name__})

    def timed(self, kind: str, name: str, handler: Handler) -> Handler:
        """`handler`, measured: its run time and outcome, the events it returns, timers fired."""

        async def measured(event: Event, state: dict[str, Any] | None) -> Outcome:
            started = time.perf_counter()
            outcome = "error"
            try:
                result = await handler(event, state)
                outcome = "ok"
            except Rejected:
                outcome = "rejected"
                raise
            finally:
                self.handler_duration.record(time.perf_counter() - started,
                                             {"kind": kind, "type": name, "outcome": outcome})
                if kind == "timer":
                    self.timers.add(1, {"timer": name})
            for emit in result.emits:
                self.emitted.add(1, {"event_type": emit.event_type})
            return result

        return measured

    def instrument(self, wiring: Wiring) -> Wiring:
        """The same wiring with every handler, command and timer handler measured."""
        return dataclasses.replace(
            wiring,
            handlers={n: self.timed("event", n, h) for n, h in wiring.handlers.items()},
            commands={n: self.timed("command", n, h) for n, h in wiring.commands.items()},
            timers={n: self.timed("timer", n, h) for n, h in wiring.timers.items()},
        )


RUNTIME = RuntimeMetrics(metrics.get_meter("tongban.runtime"))


class GrpcMetrics(grpc.aio.ServerInterceptor):
    """Counts every call to a registered method by method and status code, and times it.
    Unknown methods are not counted (their names are the caller's, unbounded)."""

    def __init__(self, measures: RuntimeMetrics = RUNTIME) -> None:
        self._m = measures

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails],
                                                             Awaitable[grpc.RpcMethodHandler]],
                                handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary), handler.request_deserializer, handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, handler.stream_unary), handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, handler.unary_stream), handler.request_deserializer,
                handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(method, handler.stream_stream), handler.request_deserializer,
            handler.response_serializer)

    def _done(self, method: str, context: grpc.aio.ServicerContext, started: float,
              error: BaseException | None) -> None:
        code = context.code()  # set by an abort or set_code; a StatusCode or its number
        names = [c.name for c in grpc.StatusCode if code in (c, c.value[0])]
        if names:
            name = names[0]
        elif error is None:
            name = "OK"
        else:  # an exception gRPC reports as UNKNOWN, or the call's task cancelled
            name = "UNKNOWN" if isinstance(error, Exception) else "CANCELLED"
        self._m.grpc_requests.add(1, {"method": method, "code": name})
        self._m.grpc_duration.record(time.perf_counter() - started, {"method": method})

    def _unary(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        async def measured(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started, error = time.perf_counter(), None
            try:
                return await behaviour(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._done(method, context, started, error)

        return measured

    def _streaming(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        async def measured(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started, error = time.perf_counter(), None
            try:
                result = behaviour(request, context)
                if hasattr(result, "__aiter__"):
                    async for response in result:
                        yield response
                else:  # a method that writes its responses through the context
                    await result
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._done(method, context, started, error)

        return measured


def inject_headers() -> list[tuple[str, bytes]]:
    """The current trace context as Kafka headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(k, v.encode()) for k, v in carrier.items()]


def extract_headers(headers: Headers | None) -> otel_context.Context:
    carrier = {k: v.decode("latin-1") for k, v in (headers or ()) if k in ("traceparent", "tracestate")}
    return propagate.extract(carrier)


def log(logger: logging.Logger, level: int, msg: str, **fields: object) -> None:
    """Log with structured fields (ids, types, counts: never personal data)."""
    logger.log(level, msg, extra={"fields": fields})


@contextmanager
def safe_span(tracer: trace.Tracer, name: str, **kwargs: Any) -> Iterator[trace.Span]:
    """`tracer.start_as_current_span` whose exceptions leave only their class on the span:
    OpenTelemetry's own recording puts the exception's text and stack (which may quote
    personal data) into a span event and the status description."""
    with tracer.start_as_current_span(name, record_exception=False, set_status_on_exception=False,
                                      **kwargs) as span:
        try:
            yield span
        except Exception as exc:
            span.add_event("exception", {"exception.type": type(exc).__name__})
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
