"""The bus seen from outside, for Prometheus: `tongban metrics` measures every few seconds and
serves the last measurement through OpenTelemetry's Prometheus reader.

    tongban_consumer_lag{group, topic, partition}   records a group has still to read
    tongban_dead_letters{group}                     records kept on the group's dead-letter topic
                                                    (log offsets: transaction markers count too;
                                                    alert on its growth)
    tongban_stuck_applications{stage, waiting_for}  applications without progress beyond --stuck-after
    tongban_metrics_up                              1 when the last measurement succeeded, else 0

Labels are declared names (groups, topics, partners) and stages: bounded, never personal data.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tongban import topics
from tongban.codec import SchemaRegistry
from tongban.ops import lag, stuck
from tongban.ops.records import consumer, partitions_of
from tongban.ops.topics import load_document


@dataclass
class Snapshot:
    lag: list[lag.PartitionLag] = field(default_factory=list)
    dead_letters: dict[str, int] = field(default_factory=dict)  # full group name -> records kept
    stuck: dict[tuple[str, str], int] = field(default_factory=dict)  # (stage, waiting for) -> applications
    up: bool = False


async def dead_letters(namespace: str, groups: Iterable[str], bootstrap: str | None = None) -> dict[str, int]:
    """Records kept on each group's dead-letter topic (end minus start offsets)."""
    out: dict[str, int] = {}
    client = consumer(bootstrap, group_id=None)
    await client.start()
    try:
        for group in groups:
            try:
                tps = await partitions_of(namespace + topics.dlq(group), bootstrap)
            except LookupError:
                continue  # declared since the topics were last applied
            starts, ends = await client.beginning_offsets(tps), await client.end_offsets(tps)
            out[namespace + group] = sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await client.stop()
    return out


async def measure(namespace: str, stuck_after: timedelta, bootstrap: str | None = None,
                  registry: SchemaRegistry | None = None) -> Snapshot:
    registry = registry or SchemaRegistry.load()
    groups = list(load_document().get("groups", {}))
    progress = await stuck.read(namespace, registry, bootstrap)
    found = stuck.stuck(progress, datetime.now(UTC), stuck_after)
    return Snapshot(await lag.measure(namespace, None, bootstrap), await dead_letters(namespace, groups, bootstrap),
                    {key: len(apps) for key, apps in found.items()}, up=True)


class Exporter:
    """OpenTelemetry observable gauges over the latest snapshot, read by Prometheus' scrape."""

    def __init__(self) -> None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.metrics import CallbackOptions, Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import CollectorRegistry

        self.snapshot = Snapshot()
        self.registry = CollectorRegistry()
        self.provider = MeterProvider(metric_readers=[PrometheusMetricReader(
            disable_target_info=True, scope_info_enabled=False, registry=self.registry)])
        meter = self.provider.get_meter("tongban.ops")

        def lags(_: CallbackOptions) -> list[Observation]:
            return [Observation(r.lag, {"group": r.group, "topic": r.topic, "partition": str(r.partition)})
                    for r in self.snapshot.lag]

        def letters(_: CallbackOptions) -> list[Observation]:
            return [Observation(n, {"group": g}) for g, n in self.snapshot.dead_letters.items()]

        def stuck_now(_: CallbackOptions) -> list[Observation]:
            return [Observation(n, {"stage": stage, "waiting_for": party})
                    for (stage, party), n in self.snapshot.stuck.items()]

        def up(_: CallbackOptions) -> list[Observation]:
            return [Observation(1 if self.snapshot.up else 0)]

        meter.create_observable_gauge("tongban.consumer.lag", [lags], description="records a group has still to read")
        meter.create_observable_gauge("tongban.dead_letters", [letters],
                                      description="records kept on a group's dead-letter topic")
        meter.create_observable_gauge("tongban.stuck.applications", [stuck_now],
                                      description="applications without progress beyond the threshold")
        meter.create_observable_gauge("tongban.metrics.up", [up], description="1 when the last measurement worked")

    def serve(self, host: str, port: int) -> None:
        from prometheus_client import start_http_server

        start_http_server(port, addr=host, registry=self.registry)

    def refresh_forever(self, namespace: str, stuck_after: timedelta, interval: float, bootstrap: str | None,
                        report) -> None:
        registry = SchemaRegistry.load()
        while True:
            try:
                self.snapshot = asyncio.run(measure(namespace, stuck_after, bootstrap, registry))
            except Exception as exc:  # the broker away: say so on the endpoint, keep serving
                self.snapshot = Snapshot()
                report(f"measurement failed: {type(exc).__name__}: {exc}")
            time.sleep(interval)
