"""A consumer's fetch wait follows its traffic: short while records arrive (a drained
partition waits for the fetch in flight), long once it is idle (fewer fetches for the broker
and every process). The fetcher here is a stand-in; tests/integration/test_fetch_pace_broker.py
checks the requests a real broker receives."""

from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tongban.bus import BUSY_FETCH_WAIT_MS, FETCHER_POLL_MS, IDLE_AFTER_S, IDLE_FETCH_WAIT_MS, PacedConsumer

TP = TopicPartition("tongban.application.received", 0)


@pytest.fixture
async def paced(monkeypatch):
    """A PacedConsumer over a scripted base `getmany`, with a clock the test moves."""
    batches: list[dict] = []
    now = [1000.0]

    async def scripted(self, *partitions, timeout_ms=0, max_records=None):
        return batches.pop(0)

    monkeypatch.setattr(AIOKafkaConsumer, "getmany", scripted)
    consumer = PacedConsumer(bootstrap_servers="127.0.0.1:1", clock=lambda: now[0])
    consumer._fetcher = SimpleNamespace(_fetch_max_wait_ms=BUSY_FETCH_WAIT_MS)

    async def fetch(records: int, after_s: float = 0.0, *, empty_partitions: bool = False) -> int | None:
        now[0] += after_s
        batches.append({TP: [object()] * records} if records or empty_partitions else {})
        await consumer.getmany(timeout_ms=500)
        return consumer.fetch_wait_ms

    return fetch


async def test_an_empty_fetch_soon_after_a_record_keeps_the_short_wait(paced):
    assert await paced(3) == BUSY_FETCH_WAIT_MS
    assert await paced(0, after_s=IDLE_AFTER_S / 2) == BUSY_FETCH_WAIT_MS


async def test_no_record_for_the_idle_time_lengthens_the_wait(paced):
    assert await paced(1) == BUSY_FETCH_WAIT_MS
    assert await paced(0, after_s=IDLE_AFTER_S) == IDLE_FETCH_WAIT_MS


async def test_the_first_record_after_idle_shortens_it_again(paced):
    await paced(0, after_s=IDLE_AFTER_S * 3)
    assert await paced(0) == IDLE_FETCH_WAIT_MS
    assert await paced(1) == BUSY_FETCH_WAIT_MS
    # and the idle time counts from that record, not from the start
    assert await paced(0, after_s=IDLE_AFTER_S / 2) == BUSY_FETCH_WAIT_MS


async def test_a_batch_with_only_empty_partitions_counts_as_no_record(paced):
    await paced(1)
    assert await paced(0, after_s=IDLE_AFTER_S, empty_partitions=True) == IDLE_FETCH_WAIT_MS


async def test_a_consumer_not_started_has_no_wait_to_pace():
    assert PacedConsumer(bootstrap_servers="127.0.0.1:1").fetch_wait_ms is None


async def test_an_idle_fetcher_looks_for_work_once_a_second_not_five_times():
    # aiokafka's default (200 ms) doubled an idle consumer's CPU; events wake the fetcher anyway
    assert PacedConsumer(bootstrap_servers="127.0.0.1:1")._consumer_timeout == FETCHER_POLL_MS / 1000 == 1.0
    # a caller that needs another pace still says so
    assert PacedConsumer(bootstrap_servers="127.0.0.1:1", consumer_timeout_ms=200)._consumer_timeout == 0.2
