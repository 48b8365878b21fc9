"""`tongban metrics`' exposition of a measurement (no broker): names, labels, values."""

from __future__ import annotations

from prometheus_client import generate_latest

from tongban.ops.lag import PartitionLag
from tongban.ops.metrics import Exporter, Snapshot


def test_a_measurement_is_exposed_with_declared_names_as_labels():
    exporter = Exporter()
    exporter.snapshot = Snapshot([PartitionLag("tongban-routing", "tongban.application.received", 2, 5, 9)],
                                 {"tongban-routing": 3}, {("assigned to the deciding authority", "partner-420000"): 2},
                                 up=True)
    lines = {line for line in generate_latest(exporter.registry).decode().splitlines() if not line.startswith("#")}
    assert lines == {
        'tongban_consumer_lag{group="tongban-routing",partition="2",topic="tongban.application.received"} 4.0',
        'tongban_dead_letters{group="tongban-routing"} 3.0',
        'tongban_stuck_applications{stage="assigned to the deciding authority",waiting_for="partner-420000"} 2.0',
        "tongban_metrics_up 1.0",
    }


def test_a_failed_measurement_says_so_and_shows_nothing_stale():
    exporter = Exporter()
    exporter.snapshot = Snapshot()
    lines = [line for line in generate_latest(exporter.registry).decode().splitlines() if not line.startswith("#")]
    assert lines == ["tongban_metrics_up 0.0"]
