"""Tracing and logging shared by every process.

One OpenTelemetry trace follows one application: the W3C `traceparent` travels in Kafka
headers and gRPC metadata, never in payloads. Logs are JSON lines carrying the trace id;
callers log ids and types only, never personal data.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode

from tongban.config import Settings
from tongban.scrub import scrub

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
    """Configure JSON logging and the tracer provider for this process."""
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
    trace.set_tracer_provider(provider)
    return trace.get_tracer("tongban")


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
