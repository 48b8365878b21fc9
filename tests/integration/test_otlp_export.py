"""The services' telemetry edges, on real processes over the real broker and store: intake
and routing run with OTEL_EXPORTER_OTLP_ENDPOINT pointing at an in-process OTLP collector
(a real gRPC server implementing TraceService/Export) and their metrics on their own ports.

- the collector receives the spans of one submitted application, from both services, in one
  trace; the same span is in the local trace file too (the JSON file stays);
- each service's metrics endpoint shows the named metrics moving (gRPC calls by method and
  code, records by topic and outcome, handler runs, input lag per partition);
- a reflection client lists intake's API over mutual TLS, as grpcurl would;
- `tongban top --once --json` reads both endpoints.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from concurrent import futures

import grpc
import pytest
from click.testing import CliRunner
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from devtools.launcher import free_port
from sim.samples import samples
from tests.support import start_stack, submit, trace_file
from tongban.grpc_tls import client_channel
from tongban.ops.cli import cli


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every exported span as (service.name, trace id, span id, name, attributes)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str, str, dict]] = []
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 (the RPC's name)
        with self.lock:
            for resource_spans in request.resource_spans:
                service = next((a.value.string_value for a in resource_spans.resource.attributes
                                if a.key == "service.name"), "")
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        attributes = {a.key: a.value.string_value for a in span.attributes}
                        self.spans.append((service, span.trace_id.hex(), span.span_id.hex(), span.name, attributes))
        return trace_service_pb2.ExportTraceServiceResponse()

    def seen(self) -> list[tuple[str, str, str, str, dict]]:
        with self.lock:
            return list(self.spans)


@pytest.fixture(scope="module")
def collector():
    servicer = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(None)


@pytest.fixture(scope="module")
def stack(namespace, collector):
    _, port = collector
    metrics = {"intake": free_port(), "routing": free_port()}
    stack = start_stack(namespace, {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        **{f"TONGBAN_METRICS_PORT_{s.upper()}": str(p) for s, p in metrics.items()}}, only=("intake", "routing"))
    stack.metrics = {s: f"127.0.0.1:{p}" for s, p in metrics.items()}
    yield stack
    stack.stop_all()


@pytest.fixture(scope="module")
def application(stack):
    return asyncio.run(submit(stack, samples("otlp")[0].request))


def wait_for(condition, within: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + within
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {within} s")
        time.sleep(0.2)


def scrape(target: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def total(seen: dict, name: str, **labels: str) -> float:
    return sum(v for found, v in seen.get(name, []) if all(found.get(k) == x for k, x in labels.items()))


def test_the_collector_receives_one_applications_spans_from_both_services(stack, collector, application):
    servicer, _ = collector

    def trace_of_submit():
        submits = [s for s in servicer.seen() if s[0] == "tongban-intake" and s[3] == "intake.Submit"]
        if not submits:
            return None
        trace_id = submits[0][1]
        services = {s[0] for s in servicer.seen() if s[1] == trace_id}
        return (trace_id, submits[0][2]) if services >= {"tongban-intake", "tongban-routing"} else None

    trace_id, span_id = wait_for(trace_of_submit, what="trace with intake's and routing's spans")
    spans = [s for s in servicer.seen() if s[1] == trace_id]
    assert any(s[0] == "tongban-routing" and s[3].startswith("handle ") for s in spans)
    assert any(s[4].get("tongban.key") == application for s in spans)
    local = [json.loads(line) for line in trace_file(stack).read_text().splitlines()]
    assert any(s["trace_id"] == trace_id and s["span_id"] == span_id for s in local)


def test_each_services_endpoint_shows_its_metrics_moving(stack, application):
    submit_ok = {"method": "/tongban.intake.v1.Intake/Submit", "code": "OK"}
    intake = wait_for(lambda: (s := scrape(stack.metrics["intake"])) and
                      total(s, "tongban_grpc_requests_total", **submit_ok) >= 1 and
                      total(s, "tongban_handler_duration_seconds_count", kind="command") >= 1 and s,
                      what="intake's Submit and command in its metrics")
    assert total(intake, "tongban_records_total", topic="tongban.commands.tongban-intake", outcome="committed") >= 1
    assert total(intake, "tongban_grpc_requests_total", method="/grpc.health.v1.Health/Check", code="OK") >= 1
    assert total(intake, "tongban_events_emitted_total") >= 1
    # Lag is measured after a batch once a fetch has answered for the partition: wait for it too.
    routing = wait_for(lambda: (s := scrape(stack.metrics["routing"])) and
                       total(s, "tongban_handler_duration_seconds_count", kind="event") >= 1 and
                       "tongban_input_lag" in s and s,
                       what="routing's handler runs and input lag in its metrics")
    assert total(routing, "tongban_records_total", outcome="committed") >= 1
    lag = routing["tongban_input_lag"]
    assert lag
    assert all(labels.keys() == {"topic", "partition"} for labels, _ in lag)
    assert all(labels["topic"].startswith("tongban.") for labels, _ in lag)  # logical names, no namespace
    before = total(intake, "tongban_grpc_requests_total", **submit_ok)
    asyncio.run(submit(stack, samples("otlp-2")[0].request))
    wait_for(lambda: total(scrape(stack.metrics["intake"]), "tongban_grpc_requests_total", **submit_ok) > before,
             what="a second Submit counted")


async def test_a_reflection_client_lists_the_running_intakes_api(stack):
    async with client_channel(stack.grpc_target("intake")) as channel:
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(timeout=10)
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        answer = await call.read()
        await call.done_writing()
    assert {"tongban.intake.v1.Intake", "grpc.health.v1.Health"} <= {
        s.name for s in answer.list_services_response.service}


def test_top_reads_both_services(stack, application):
    result = CliRunner().invoke(cli, ["top", "--once", "--json", "--interval", "0.5",
                                      *(f"--target={s}={t}" for s, t in stack.metrics.items())])
    assert result.exit_code == 0, result.output
    report = {s["service"]: s for s in json.loads(result.output)["services"]}
    assert report.keys() == {"intake", "routing"}
    assert all(s["up"] for s in report.values())
    assert all(s["lag"] is not None and s["dead_letters"] is not None for s in report.values())
