"""`tongban top`: each service's rate, lag, dead letters and handler latency, read from the
services' own metrics endpoints (tongban/telemetry.py), so it shows what Prometheus would.

A rate needs two readings: a row compares the latest scrape of a service with the one
before (`--once` scrapes twice, `--interval` apart). The p99 handler latency is that of the
handlers run between the two readings (interpolated within the histogram's buckets, as
PromQL's histogram_quantile does); none when no handler ran.
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from tongban.config import SERVICE_PORTS
from tongban.telemetry import METRICS_PORTS

SCRAPE_TIMEOUT_S = 2.0


@dataclass
class Reading:
    """One scrape of one service's endpoint, summed over labels."""

    service: str
    target: str
    at: float  # monotonic seconds
    up: bool = False
    records: float = 0.0  # input records committed
    dead_letters: float = 0.0
    lag: float = 0.0
    aborts: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative handler runs


@dataclass(frozen=True)
class Row:
    service: str
    target: str
    up: bool
    records_per_s: float | None
    lag: int | None
    dead_letters: int | None
    aborts: int | None
    p99_ms: float | None

    def as_json(self) -> dict[str, object]:
        return {"service": self.service, "target": self.target, "up": self.up,
                "records_per_s": None if self.records_per_s is None else round(self.records_per_s, 2),
                "lag": self.lag, "dead_letters": self.dead_letters, "transaction_aborts": self.aborts,
                "p99_handler_ms": None if self.p99_ms is None else round(self.p99_ms, 2)}


def default_targets(host: str = "127.0.0.1") -> dict[str, str]:
    return {service: f"{host}:{METRICS_PORTS[service]}" for service in SERVICE_PORTS}


def parse(service: str, target: str, exposition: str, at: float) -> Reading:
    reading = Reading(service, target, at, up=True)
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "tongban_records_total" and sample.labels.get("outcome") == "committed":
                reading.records += sample.value
            elif sample.name == "tongban_dead_letters_written_total":
                reading.dead_letters += sample.value
            elif sample.name == "tongban_input_lag":
                reading.lag += sample.value
            elif sample.name == "tongban_transactions_aborted_total":
                reading.aborts += sample.value
            elif sample.name == "tongban_handler_duration_seconds_bucket":
                bound = float(sample.labels["le"])
                reading.buckets[bound] = reading.buckets.get(bound, 0.0) + sample.value
    return reading


def scrape(service: str, target: str) -> Reading:
    """A service's endpoint read now; `up` False when it does not answer."""
    at = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://{target}/metrics", timeout=SCRAPE_TIMEOUT_S) as answer:
            return parse(service, target, answer.read().decode(), at)
    except (OSError, ValueError):  # refused, timed out, or not a metrics endpoint
        return Reading(service, target, at)


def scrape_all(targets: Mapping[str, str]) -> list[Reading]:
    return [scrape(service, target) for service, target in targets.items()]


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of cumulative bucket counts, interpolated linearly within its bucket
    (PromQL's histogram_quantile); the highest finite bound when it falls in +Inf."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def row(before: Reading | None, now: Reading) -> Row:
    if not now.up:
        return Row(now.service, now.target, False, None, None, None, None, None)
    rate = p99 = None
    if before is not None and before.up and now.at > before.at and now.records >= before.records:
        # A counter that went down means the service restarted: no rate across the restart.
        rate = (now.records - before.records) / (now.at - before.at)
        window = {b: now.buckets[b] - before.buckets.get(b, 0.0) for b in now.buckets}
        seconds = quantile(0.99, window)
        p99 = None if seconds is None else seconds * 1000
    return Row(now.service, now.target, True, rate, int(now.lag), int(now.dead_letters), int(now.aborts), p99)


def rows(before: Iterable[Reading], now: Iterable[Reading]) -> list[Row]:
    earlier = {r.service: r for r in before}
    return [row(earlier.get(r.service), r) for r in now]
