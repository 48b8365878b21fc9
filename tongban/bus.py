"""Kafka clients with the project's delivery settings, and the schema topic.

Producers: acks=all with idempotence. Consumers: read_committed, manual commits, batched
fetches, range assignment so that equally partitioned topics are co-located (a key's
partition is the same on every lifecycle topic, which is what timer and outbox ownership
rely on).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    UnknownProducerId,
)
from aiokafka.partitioner import murmur2

from tongban.codec import SchemaRegistry, schema_full_name
from tongban.config import Settings
from tongban.schema_compat import check_full_transitive

log = logging.getLogger(__name__)

SCHEMAS_TOPIC = "tongban.schemas"


def make_producer(settings: Settings, client_id: str | None = None,
                  transactional_id: str | None = None) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        client_id=client_id or f"tongban-{settings.service}",
        acks="all",
        enable_idempotence=True,
        transactional_id=transactional_id,
        transaction_timeout_ms=30000,
        linger_ms=5,
        request_timeout_ms=30000,
        **settings.kafka_client_options(),
    )


# The broker no longer accepts this producer's idempotence state (seen after a broker restart
# with batches in flight): only a new producer gets going again.
PRODUCER_STATE_ERRORS = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch,
                         InvalidProducerIdMapping, ProducerFenced, ProducerClosed)


async def renewed(producer: AIOKafkaProducer, settings: Settings, client_id: str | None = None) -> AIOKafkaProducer:
    """Replace a producer stuck in such a state. What it had not confirmed is sent again from
    the outbox (or the uncommitted input), with the same event ids."""
    try:
        await producer.stop()
    except Exception:  # it is broken already; closing is best effort
        log.debug("closing a broken producer failed", exc_info=True)
    fresh = make_producer(settings, client_id)
    await fresh.start()
    log.warning("producer renewed after the broker refused its idempotence state")
    return fresh


# How long the broker may hold a fetch that finds no record. A fetch returns as soon as a
# record is there, so at idle a long wait costs no latency and spares the broker and every
# process about twenty fetches a second. Under load it is short: aiokafka keeps one fetch in
# flight per broker and leaves out of it the partitions whose records the application has not
# taken yet, so a partition drained meanwhile waits for that fetch to end (a fixed 5 s wait
# tripled p99 in a bench run, 2026-12-05; a fixed 500 ms left the idle processes at 9 %).
BUSY_FETCH_WAIT_MS = 100
IDLE_FETCH_WAIT_MS = 5_000
IDLE_AFTER_S = 2.0  # this long without a record and the consumer counts as idle
# aiokafka's fetcher also wakes on a timer (`consumer_timeout_ms`, 200 ms by default) to look
# for work no event told it about; every event that matters (a fetch answered, records taken,
# a seek, a partition resumed or revoked) wakes it anyway. At 200 ms an idle consumer cost
# 0.09-0.12 % of a core, at 1 s 0.045-0.057 % (ten idle consumers on the local broker,
# 2026-12-05), and a process of the stack holds up to 15 of them.
FETCHER_POLL_MS = 1_000


class PacedConsumer(AIOKafkaConsumer):
    """A consumer whose fetch wait follows its traffic, as `getmany` sees it:
    BUSY_FETCH_WAIT_MS while records arrive, IDLE_FETCH_WAIT_MS once none has for IDLE_AFTER_S;
    its fetcher looks for work on its own every FETCHER_POLL_MS.

    aiokafka reads the wait from its fetcher each time it builds a fetch request
    (`Fetcher._fetch_max_wait_ms`, aiokafka 0.14; tests/integration/test_fetch_pace_broker.py holds
    that), so a new value applies from the next fetch."""

    def __init__(self, *topics: str, clock: Callable[[], float] = time.monotonic, **options: Any) -> None:
        options.setdefault("consumer_timeout_ms", FETCHER_POLL_MS)
        super().__init__(*topics, fetch_max_wait_ms=BUSY_FETCH_WAIT_MS, **options)
        self._clock = clock
        self._last_record = clock()

    @property
    def fetch_wait_ms(self) -> int | None:
        """The wait the next fetch asks for (None before start)."""
        fetcher = getattr(self, "_fetcher", None)
        return None if fetcher is None else int(fetcher._fetch_max_wait_ms)

    def _pace(self, got_records: bool) -> None:
        fetcher = getattr(self, "_fetcher", None)
        if fetcher is None:  # not started
            return
        now = self._clock()
        if got_records:
            self._last_record = now
            fetcher._fetch_max_wait_ms = BUSY_FETCH_WAIT_MS
        elif now - self._last_record >= IDLE_AFTER_S:
            fetcher._fetch_max_wait_ms = IDLE_FETCH_WAIT_MS

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list]:
        batch = await super().getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)
        self._pace(any(batch.values()))
        return batch


def make_consumer(settings: Settings, topics: list[str], group: str | None = None) -> PacedConsumer:
    return PacedConsumer(
        *topics,
        group_id=group or settings.group,
        client_id=f"tongban-{settings.service}",
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        partition_assignment_strategy=(RangePartitionAssignor,),
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(settings.session_timeout_ms // 3, 300),
        max_poll_records=500,
        **settings.kafka_client_options(),
    )


def rewind(consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list]) -> None:
    """Fetch an uncommitted batch again (after an outage); partitions lost in a rebalance
    meanwhile restart from their commit with their new owner."""
    assigned = consumer.assignment()
    for tp, records in batch.items():
        if tp in assigned:
            consumer.seek(tp, records[0].offset)


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for this key."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


async def publish_schemas(producer: AIOKafkaProducer, settings: Settings, registry: SchemaRegistry) -> None:
    """Writers announce every schema they know, keyed by fingerprint, on the compacted topic."""
    topic = settings.topic(SCHEMAS_TOPIC)
    sends = [
        await producer.send(topic, key=version.fingerprint.hex().encode(), value=version.schema_json.encode())
        for version in registry.all_versions()
    ]
    await asyncio.gather(*sends)


async def learn_schemas(settings: Settings, registry: SchemaRegistry) -> int:
    """Read the schema topic from the start to its end; returns how many schemas were new."""
    topic = settings.topic(SCHEMAS_TOPIC)
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False,
        isolation_level="read_committed",
        **settings.kafka_client_options(),
    )
    await consumer.start()
    learned = 0
    try:
        partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or {0})]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    if record.value is None:
                        continue
                    try:
                        known = registry.by_fingerprint(bytes.fromhex(record.key.decode()))
                        if known is None and compatible_with_local(registry, record.value.decode()):
                            registry.add_writer_schema(record.value.decode())
                            learned += 1
                    except Exception:
                        log.warning("ignored an unreadable entry on the schema topic", exc_info=True)
    finally:
        await consumer.stop()
    return learned


def compatible_with_local(registry: SchemaRegistry, schema_json: str) -> bool:
    """A writer schema from the schema topic is learned only if it is FULL_TRANSITIVE with
    every local version of its record name: anyone allowed to write the topic could otherwise
    make our readers misread (or refuse) the events of that name. A new name is taken."""
    name = schema_full_name(schema_json)
    local = [version.schema_json for version in registry.versions(name)]
    problems = check_full_transitive([*local, schema_json]) if local else []
    if problems:
        log.warning("refused a writer schema for %s that breaks FULL_TRANSITIVE: %s", name, problems[0])
    return not problems

