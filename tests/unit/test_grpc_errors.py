"""What a gRPC caller, a log line and a span get when something fails: our own words, scrubbed,
or an error id; never an exception's text, which may quote the request."""

import json
import logging
import re
import sys

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tongban.app as app
from tongban.handling import Rejected
from tongban.telemetry import JsonLinesSpanExporter, JsonLogFormatter

PERSONAL = "张三 420106198506123417 13800000000"


class Context:
    """The part of grpc.aio.ServicerContext that grpc_call uses."""

    code: grpc.StatusCode | None = None
    details: str = ""

    def invocation_metadata(self):
        return ()

    async def abort(self, code, details):
        self.code, self.details = code, details
        raise grpc.aio.AbortError()


@pytest.fixture
def spans(monkeypatch):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(app, "tracer", provider.get_tracer("test"))
    return exporter


async def call(error: BaseException) -> Context:
    context = Context()
    with pytest.raises(grpc.aio.AbortError):
        async with app.grpc_call(context, "intake.Submit"):
            raise error
    return context


async def test_an_unexpected_error_is_internal_with_an_error_id_logged_with_the_id(spans, caplog):
    with caplog.at_level(logging.ERROR, logger="tongban.app"):
        context = await call(KeyError(PERSONAL))
    assert context.code == grpc.StatusCode.INTERNAL
    error_id = re.fullmatch(r"intake\.Submit failed unexpectedly; error id ([0-9a-f]{16})", context.details)[1]
    [record] = caplog.records
    assert record.fields == {"method": "intake.Submit", "error_id": error_id}
    line = JsonLogFormatter().format(record)
    assert json.loads(line)["error"] == "KeyError"
    assert error_id in line
    assert "张三" not in line
    assert "420106198506123417" not in line
    [span] = spans.get_finished_spans()
    assert [(e.name, dict(e.attributes)) for e in span.events] == [("exception", {"exception.type": "KeyError"})]
    assert span.status.description == "KeyError"


async def test_our_own_refusals_keep_their_words_but_lose_id_and_phone_numbers(spans):
    context = await call(Rejected(f"partner said: {PERSONAL}"))
    assert context.code == grpc.StatusCode.FAILED_PRECONDITION
    assert context.details == "partner said: 张三 [ID] [PHONE]"
    assert "420106198506123417" not in repr(spans.get_finished_spans()[0].events)


async def test_a_methods_own_abort_keeps_its_status(spans):
    context = Context()
    with pytest.raises(grpc.aio.AbortError):
        async with app.grpc_call(context, "intake.Track"):
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such application")
    assert (context.code, context.details) == (grpc.StatusCode.NOT_FOUND, "no such application")


def test_log_lines_and_exported_spans_carry_no_exception_text_and_are_scrubbed(tmp_path, spans):
    try:
        raise ValueError(PERSONAL)
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "partner wrote %s", ("13800000000",),
                                   sys.exc_info())
    record.fields = {"reason": "证件 420106198506123417", "offset": 13800000000}
    entry = json.loads(JsonLogFormatter().format(record))
    assert entry["msg"] == "partner wrote [PHONE]"
    assert entry["reason"] == "证件 [ID]"
    assert entry["offset"] == 13800000000, "numbers in fields are ids and counts, left alone"
    assert "张三" not in json.dumps(entry, ensure_ascii=False)

    with app.telemetry.safe_span(app.tracer, "work"):
        pass
    with pytest.raises(ValueError, match=PERSONAL), app.telemetry.safe_span(app.tracer, "fails"):
        raise ValueError(PERSONAL)
    out = tmp_path / "traces.jsonl"
    JsonLinesSpanExporter(str(out)).export(spans.get_finished_spans())
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(s["name"], s["status"], s["events"]) for s in exported] == [
        ("work", "UNSET", []),
        ("fails", "ERROR", [{"name": "exception", "attributes": {"exception.type": "ValueError"}}])]
    assert "张三" not in out.read_text()
