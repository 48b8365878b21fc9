"""The alert rules through Prometheus's own checker (var/bin/promtool, `make promtool`):
`check rules` accepts the file, `test rules` fires each alert on the recorded series of
infra/alerts/tongban.rules.test.yml (and keeps quiet where it should), a rule whose
threshold is wrong fails those tests, and the services' exposition passes `check metrics`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from prometheus_client import generate_latest

from tongban import telemetry

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = ROOT / "var" / "bin" / "promtool"
ALERTS = ROOT / "infra" / "alerts"


def promtool(*args: str, cwd: Path = ALERTS, stdin: str | None = None) -> subprocess.CompletedProcess:
    assert PROMTOOL.exists(), "var/bin/promtool is missing: run make promtool"
    return subprocess.run([str(PROMTOOL), *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120)


def test_promtool_accepts_the_rules():
    checked = promtool("check", "rules", "tongban.rules.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 11 rules found" in checked.stdout


def test_each_alert_fires_on_recorded_series():
    tested = promtool("test", "rules", "tongban.rules.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_rule_with_a_wrong_threshold_fails_the_recorded_series(tmp_path):
    for name in ("tongban.rules.yml", "tongban.rules.test.yml"):
        shutil.copy(ALERTS / name, tmp_path / name)
    rules = tmp_path / "tongban.rules.yml"
    rules.write_text(rules.read_text().replace("(tongban_transactions_aborted_total[10m])) > 5",
                                               "(tongban_transactions_aborted_total[10m])) > 50"))
    tested = promtool("test", "rules", "tongban.rules.test.yml", cwd=tmp_path)
    assert tested.returncode != 0
    assert "TongbanTransactionAborts" in tested.stdout + tested.stderr


def test_the_services_exposition_passes_promtool_check_metrics():
    provider, registry = telemetry.metrics_provider("intake")
    m = telemetry.RuntimeMetrics(provider.get_meter("lint"))
    m.count_records(["tongban.application.received"], "committed")
    m.handler_duration.record(0.01, {"kind": "event", "type": "T", "outcome": "ok"})
    m.emitted.add(1, {"event_type": "T"})
    m.aborted(TimeoutError())
    m.timers.add(1, {"timer": "deadline"})
    m.committed([("dlq", [("tongban.dlq.origin.topic", b"t"), ("tongban.dlq.error.class", b"E")])], "dlq", str)
    m.grpc_requests.add(1, {"method": "/a.B/C", "code": "OK"})
    m.grpc_duration.record(0.01, {"method": "/a.B/C"})
    m.set_lag({("tongban.application.received", 0): 3})
    exposition = generate_latest(registry).decode()
    provider.shutdown()
    linted = promtool("check", "metrics", stdin=exposition)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "tongban_input_lag" in exposition
