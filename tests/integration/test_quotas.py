"""Per-partner client quotas from infra/topics.toml [quotas], applied by tongban.ops.quotas:
a flooding partner is slowed to about its produce quota while another partner's produce
latency stays as it was. Measured, with generous margins (a busy 2-core machine).

The flooder is the 12345 feed (partner-12345): no simulated partner runs as it, so the
throttling it earns cannot slow another test's partners (quotas are per user, cluster-wide).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import pytest
from aiokafka import AIOKafkaProducer

from tests.support import KAFKA, KAFKA_ACLS
from tongban.ops import quotas
from tongban.ops.kafka_admin import ops_settings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not KAFKA_ACLS, reason="the broker does not authenticate (TONGBAN_KAFKA_SECURITY=PLAINTEXT)"),
]

FLOODER, VICTIM = "partner-12345", "partner-370100"
FLOOD_TOPIC, VICTIM_TOPIC = "tongban.feedback.workorders", "tongban.partner.370100.decisions"
VALUE = os.urandom(64 * 1024)  # incompressible; no compression is configured anyway
FLOOD_S = 8.0


def producer_for(options: dict) -> AIOKafkaProducer:
    return AIOKafkaProducer(**options, acks="all", enable_idempotence=True, linger_ms=5,
                            max_batch_size=1024 * 1024, max_request_size=2 * 1024 * 1024, request_timeout_ms=60000)


async def flood(options: dict, topic: str, seconds: float) -> float:
    """Bytes per second the broker acknowledged while sending as fast as it lets us."""
    producer = producer_for(options)
    await producer.start()
    try:
        sent = 0
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            pending = [await producer.send(topic, VALUE, key=str(i).encode()) for i in range(16)]
            await asyncio.gather(*pending)
            sent += len(pending) * len(VALUE)
        return sent / (time.monotonic() - started)
    finally:
        await producer.stop()


async def latencies(options: dict, topic: str, until: asyncio.Event | None = None, count: int = 40) -> list[float]:
    """Milliseconds per acknowledged 200-byte send, back to back, `count` of them or until `until`."""
    producer = producer_for(options)
    await producer.start()
    out: list[float] = []
    try:
        while (len(out) < count) if until is None else not until.is_set():
            started = time.perf_counter()
            await producer.send_and_wait(topic, b"x" * 200, key=b"victim")
            out.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0)
    finally:
        await producer.stop()
    return out


async def test_a_flooding_partner_is_held_to_its_quota_and_another_partner_is_unaffected(namespace):
    settings = ops_settings()
    await quotas.apply(settings)
    assert await quotas.plan(settings) == []
    quota = quotas.generate()[FLOODER]["producer_byte_rate"]
    flooder = settings.as_principal(FLOODER).kafka_client_options()
    victim = settings.as_principal(VICTIM).kafka_client_options()

    baseline = await latencies(victim, namespace + VICTIM_TOPIC)
    unthrottled = await flood(KAFKA, namespace + FLOOD_TOPIC, 2.0)  # the admin has no quota: what the machine does

    done = asyncio.Event()

    async def flood_then_stop() -> float:
        try:
            return await flood(flooder, namespace + FLOOD_TOPIC, FLOOD_S)
        finally:
            done.set()

    throttled, during = await asyncio.gather(flood_then_stop(), latencies(victim, namespace + VICTIM_TOPIC, done))

    report = (f"quota {quota / 2**20:.2f} MiB/s; unthrottled {unthrottled / 2**20:.1f} MiB/s; flooder "
              f"{throttled / 2**20:.2f} MiB/s; victim median {statistics.median(baseline):.1f} ms alone, "
              f"{statistics.median(during):.1f} ms during the flood ({len(during)} sends)")
    print(report)
    assert unthrottled > 4 * quota, f"this machine cannot flood past the quota, nothing to show: {report}"
    # Kafka averages over ~11 one-second samples, so the first burst passes: a margin of 2.5x.
    assert throttled < 2.5 * quota, f"the flooder was not held to its quota: {report}"
    assert throttled < unthrottled / 2, report
    assert len(during) >= 10, f"the other partner hardly got a send in: {report}"
    assert statistics.median(during) < 3 * statistics.median(baseline) + 25, f"the other partner slowed down: {report}"
