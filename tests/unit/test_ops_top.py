"""`tongban top` over real metrics endpoints: two in-process services serve their
RuntimeMetrics on loopback ports (the same Prometheus exposition a service serves), a third
target answers nothing. `--once --json` reads each twice and reports records per second,
lag, dead letters, aborts and the p99 handler latency of the handlers run in between; a
service that does not answer is `down` and the exit status is 1."""

from __future__ import annotations

import json
import threading

import pytest
from click.testing import CliRunner
from prometheus_client import start_http_server

from devtools.launcher import free_port
from tongban import telemetry
from tongban.ops import top
from tongban.ops.cli import cli


@pytest.fixture
def endpoint():
    """A RuntimeMetrics served on its own port, as serve_metrics serves a service's."""
    made = []

    def make() -> tuple[telemetry.RuntimeMetrics, str]:
        provider, registry = telemetry.metrics_provider("test")
        port = free_port()
        server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
        made.append((provider, server, thread))
        return telemetry.RuntimeMetrics(provider.get_meter("test")), f"127.0.0.1:{port}"

    yield make
    for provider, server, thread in made:
        server.shutdown()
        thread.join()
        provider.shutdown()


def test_a_row_compares_two_readings_of_a_real_endpoint(endpoint):
    m, target = endpoint()
    m.count_records(["tongban.application.received"] * 5, "committed")
    before = top.scrape("intake", target)
    m.count_records(["tongban.application.received"] * 30, "committed")
    m.count_records(["tongban.application.received"] * 99, "aborted")  # read again: not a rate
    for _ in range(99):
        m.handler_duration.record(0.002, {"kind": "event", "type": "X", "outcome": "ok"})
    m.handler_duration.record(4.0, {"kind": "event", "type": "X", "outcome": "ok"})
    m.set_lag({("tongban.application.received", 0): 40, ("tongban.application.received", 1): 2})
    m.committed([("dlq", [("tongban.dlq.origin.topic", b"t"), ("tongban.dlq.error.class", b"E")])], "dlq", str)
    now = top.scrape("intake", target)
    now.at = before.at + 2.0  # the rate's time base, fixed so the test can check it exactly
    (found,) = top.rows([before], [now])
    assert found.up
    assert found.records_per_s == pytest.approx(15.0)
    assert (found.lag, found.dead_letters, found.aborts) == (42, 1, 0)
    # 99 runs in the (0.001, 0.0025] bucket and one at 4 s: the p99 is the 99th run, in that bucket
    assert found.p99_ms == pytest.approx(2.5)


def test_a_restarted_service_has_no_rate_across_the_restart():
    before = top.Reading("intake", "x", 0.0, up=True, records=500)
    now = top.Reading("intake", "x", 2.0, up=True, records=10)
    assert top.row(before, now).records_per_s is None


@pytest.mark.parametrize(("buckets", "p99"), [
    ({0.1: 0, 1.0: 100, float("inf"): 100}, 0.1 + 0.9 * 0.99),
    ({0.1: 50, 1.0: 50, float("inf"): 100}, 1.0),  # beyond the highest finite bound
    ({0.1: 0, float("inf"): 0}, None),
])
def test_quantiles_interpolate_within_the_bucket_like_histogram_quantile(buckets, p99):
    assert top.quantile(0.99, buckets) == (pytest.approx(p99) if p99 is not None else None)


def test_top_once_json_reports_each_service_and_fails_when_one_is_down(endpoint):
    intake, intake_target = endpoint()
    routing, routing_target = endpoint()
    intake.set_lag({("tongban.application.received", 0): 7})
    routing.count_records(["tongban.application.received"] * 3, "committed")
    stop = threading.Event()

    def traffic() -> None:  # routing keeps handling records while top reads it
        while not stop.wait(0.01):
            routing.count_records(["tongban.application.received"], "committed")
            routing.handler_duration.record(0.02, {"kind": "event", "type": "X", "outcome": "ok"})

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        result = CliRunner().invoke(cli, ["top", "--once", "--json", "--interval", "0.5",
                                          "--target", f"intake={intake_target}",
                                          "--target", f"routing={routing_target}",
                                          "--target", f"delivery=127.0.0.1:{free_port()}"])
    finally:
        stop.set()
        worker.join()
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    by_service = {s["service"]: s for s in report["services"]}
    assert by_service["intake"] == {"service": "intake", "target": intake_target, "up": True, "records_per_s": 0.0,
                                    "lag": 7, "dead_letters": 0, "transaction_aborts": 0, "p99_handler_ms": None}
    assert by_service["routing"]["records_per_s"] > 0
    assert 10 < by_service["routing"]["p99_handler_ms"] <= 25  # the 20 ms runs, in the (10, 25] ms bucket
    assert by_service["delivery"]["up"] is False
    assert by_service["delivery"]["lag"] is None


def test_top_once_table_and_exit_zero_when_all_are_up(endpoint):
    _, target = endpoint()
    result = CliRunner().invoke(cli, ["top", "--once", "--interval", "0.1", "--target", f"feedback={target}"])
    assert result.exit_code == 0, result.output
    assert "feedback" in result.output
    assert "records/s" in result.output


def test_a_target_must_name_its_service():
    result = CliRunner().invoke(cli, ["top", "--once", "--target", "127.0.0.1:9551"])
    assert result.exit_code == 2
    assert "SERVICE=HOST:PORT" in result.output
