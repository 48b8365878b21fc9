"""A service's own metrics, read the way Prometheus reads them (the exposition text of the
service's registry): handler latency and outcomes through the instrumented wiring, events
emitted, timers fired, dead letters by origin and error class, aborted transactions, input
lag per partition, and gRPC calls by method and the status code the client really saw.
No label carries personal data: requests, payloads and reasons full of it leave none."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.intake import intake_pb2, intake_pb2_grpc
from services.intake.api import IntakeServicer
from sim.samples import samples
from tongban import telemetry
from tongban.grpc_tls import client_channel, server_credentials
from tongban.handling import Emit, Event, Outcome, Rejected, Wiring

NAME, ID_NUMBER, PHONE = "张三丰", "430102198801011234", "13800138000"
ALLOWED_LABELS = {"topic", "outcome", "kind", "type", "event_type", "error", "timer", "method", "code", "partition",
                  "le"}


@pytest.fixture
def measured():
    provider, registry = telemetry.metrics_provider("intake")
    yield telemetry.RuntimeMetrics(provider.get_meter("test")), registry
    provider.shutdown()


def scrape(registry) -> dict[str, list[tuple[dict[str, str], float]]]:
    """sample name -> [(labels, value)], from the exposition text a scrape gets."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def value(samples_: dict, name: str, **labels: str) -> float:
    return sum(v for found, v in samples_.get(name, []) if all(found.get(k) == x for k, x in labels.items()))


def event(payload: dict) -> Event:
    return Event("e-1", "tongban.application.ApplicationReceived", "app-1", payload, {}, "tongban.application.received")


async def accepted(event: Event, state):
    return Outcome(state={"seen": True}, emits=[Emit("tongban.application.routed", "tongban.application.Routed",
                                                     event.key, {"applicant": {"name": NAME}})])


async def refused(event: Event, state):
    raise Rejected(f"applicant {NAME} {ID_NUMBER} may not apply")


async def broken(event: Event, state):
    raise KeyError(PHONE)


async def test_the_instrumented_wiring_times_handlers_by_kind_type_and_outcome(measured):
    m, registry = measured
    wiring = m.instrument(Wiring("intake", inputs=[], handlers={"tongban.application.ApplicationReceived": accepted},
                                 commands={"Submit": refused}, timers={"deadline": broken}))
    personal = {"name": NAME, "id_number": ID_NUMBER, "phone": PHONE}
    outcome = await wiring.handlers["tongban.application.ApplicationReceived"](event(personal), None)
    assert outcome.state == {"seen": True}  # what the handler said passes through unchanged
    with pytest.raises(Rejected):
        await wiring.commands["Submit"](event(personal), None)
    with pytest.raises(KeyError):
        await wiring.timers["deadline"](event(personal), None)
    seen = scrape(registry)
    count = "tongban_handler_duration_seconds_count"
    assert value(seen, count, kind="event", type="tongban.application.ApplicationReceived", outcome="ok") == 1
    assert value(seen, count, kind="command", type="Submit", outcome="rejected") == 1
    assert value(seen, count, kind="timer", type="deadline", outcome="error") == 1
    assert value(seen, "tongban_handler_duration_seconds_bucket", kind="event", le="+Inf") == 1
    assert value(seen, "tongban_events_emitted_total", event_type="tongban.application.Routed") == 1
    assert value(seen, "tongban_timers_fired_total", timer="deadline") == 1
    assert_no_personal_data(seen)


def test_dead_letters_aborts_records_and_lag_are_counted_by_their_labels(measured):
    m, registry = measured
    dlq = "t1-tongban.dlq.tongban-intake"
    dead = [("tongban.dlq.origin.topic", b"t1-tongban.application.received"),
            ("tongban.dlq.error.class", b"MalformedRecord"),
            ("tongban.dlq.error.message", f"bad {ID_NUMBER}".encode())]
    m.committed([(dlq, dead), (dlq, dead), ("t1-tongban.application.routed", [("traceparent", b"00-1-2-01")])],
                dlq, lambda topic: topic.removeprefix("t1-"))
    m.aborted(TimeoutError(f"{PHONE} timed out"))
    m.count_records(["tongban.application.received"] * 3 + ["tongban.commands.tongban-intake"], "committed")
    m.set_lag({("tongban.application.received", 0): 7, ("tongban.application.received", 1): 0})
    seen = scrape(registry)
    assert value(seen, "tongban_dead_letters_written_total", topic="tongban.application.received",
                 error="MalformedRecord") == 2
    assert value(seen, "tongban_dead_letters_written_total") == 2  # the ordinary output is no dead letter
    assert value(seen, "tongban_transactions_aborted_total", error="TimeoutError") == 1
    assert value(seen, "tongban_records_total", topic="tongban.application.received", outcome="committed") == 3
    assert value(seen, "tongban_input_lag", topic="tongban.application.received", partition="0") == 7
    m.set_lag({("tongban.application.received", 1): 2})  # partition 0 went to another instance
    seen = scrape(registry)
    assert [labels["partition"] for labels, _ in seen["tongban_input_lag"]] == ["1"]
    assert_no_personal_data(seen)


class NoRuntime:
    async def state_of(self, key):
        return None

    async def trace_of(self, key):
        return {}

    async def submit(self, *args):
        raise AssertionError("not reached in this test")


async def test_grpc_calls_are_counted_by_method_and_the_code_the_client_saw(measured, tls):
    m, registry = measured
    server = grpc.aio.server(interceptors=[telemetry.GrpcMetrics(m)])
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    intake_pb2_grpc.add_IntakeServicer_to_server(IntakeServicer(NoRuntime()), server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(tls, "intake"))
    await server.start()
    codes = []
    try:
        async with client_channel(f"127.0.0.1:{port}", "hunan-portal", tls) as channel:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            intake = intake_pb2_grpc.IntakeStub(channel)
            request = samples("m1")[0].request
            request.applicant.name, request.applicant.id_number = NAME, ID_NUMBER
            for call, message in ((intake.Track, intake_pb2.TrackRequest(application_id=ID_NUMBER)),
                                  (intake.Submit, request)):
                try:
                    await call(message, timeout=5)
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as error:
                    codes.append(error.code())
            with pytest.raises(grpc.aio.AioRpcError):  # not a method of this server: not counted
                await channel.unary_unary(f"/{ID_NUMBER}/x")(b"", timeout=5)
    finally:
        await server.stop(None)
    seen = scrape(registry)
    assert value(seen, "tongban_grpc_requests_total", method="/grpc.health.v1.Health/Check", code="OK") == 1
    assert value(seen, "tongban_grpc_requests_total", method="/tongban.intake.v1.Intake/Track",
                 code=codes[0].name) == 1
    assert value(seen, "tongban_grpc_requests_total", method="/tongban.intake.v1.Intake/Submit",
                 code=codes[1].name) == 1
    assert value(seen, "tongban_grpc_requests_total") == 3
    assert value(seen, "tongban_grpc_duration_seconds_count", method="/tongban.intake.v1.Intake/Track") == 1
    assert_no_personal_data(seen)


def assert_no_personal_data(seen: dict) -> None:
    assert seen, "nothing was scraped"
    for samples_ in seen.values():
        for labels, _ in samples_:
            assert set(labels) <= ALLOWED_LABELS, labels
            for text in labels.values():
                for personal in (NAME, ID_NUMBER, PHONE, "张"):
                    assert personal not in text, labels
