"""Anchoring audit chain heads outside the store, and reading the last anchor back.

The compacted topic keeps the latest head per chain. Someone able to rewrite the store
cannot also rewrite what the broker holds under another identity, so the check in
`audit.check_chain` against the last anchor finds a rewritten tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.datasharing.audit import AuditChain, Head, check_extension
from tongban import telemetry, topics
from tongban.codec import CodecError, SchemaRegistry
from tongban.config import Settings
from tongban.events import encode_event

log = logging.getLogger(__name__)


async def anchor_periodically(producer: AIOKafkaProducer, settings: Settings, registry: SchemaRegistry,
                              chain: AuditChain, every: float, stop: asyncio.Event) -> None:
    """Every `every` seconds (and once more on stop), anchor the chain's head if it moved and
    extends the last anchor: a store whose anchored tail was rewritten is reported, never
    anchored."""
    anchored = await last_anchor(settings, registry, chain.chain)
    while True:
        stopping = stop.is_set()
        try:
            anchored = await _anchor_if_moved(producer, settings, registry, chain, anchored)
        except Exception as exc:  # the store or broker is away: try again next round
            telemetry.log(log, logging.WARNING, "anchoring failed", chain=chain.chain, error=type(exc).__name__)
        if stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def _anchor_if_moved(producer: AIOKafkaProducer, settings: Settings, registry: SchemaRegistry, chain: AuditChain,
                           anchored: Head | None) -> Head | None:
    head = await chain.head()
    if head.sequence == 0 or head == anchored:
        return anchored  # idle: nothing asked of the store
    first = anchored.sequence if anchored else 1
    entries = await chain.entries_between(first, head.sequence)
    if len(entries) != head.sequence - first + 1:
        telemetry.log(log, logging.ERROR, "audit chain has a gap; not anchored", chain=chain.chain,
                      missing=first + len(entries))
        return anchored
    broken = check_extension(entries, anchored)
    if broken is not None:
        telemetry.log(log, logging.ERROR, "audit chain broken; not anchored", chain=chain.chain, broken=str(broken))
        return anchored
    await publish(producer, settings, registry, chain.chain, head)
    return head


async def publish(producer: AIOKafkaProducer, settings: Settings, registry: SchemaRegistry, chain: str,
                  head: Head) -> None:
    _, value = encode_event(registry, topics.CHAIN_ANCHORED_EVENT,
                            {"chain": chain, "sequence": head.sequence, "hash": head.hash},
                            cause_id=f"{chain}:{head.sequence}", correlation_id=chain,
                            source_system="tongban-datasharing")
    await producer.send_and_wait(settings.topic(topics.DATASHARING_ANCHORS), key=chain.encode(), value=value)


async def last_anchor(settings: Settings, registry: SchemaRegistry, chain: str) -> Head | None:
    """The latest anchored head of `chain`: read the anchor topic to its end."""
    topic = settings.topic(topics.DATASHARING_ANCHORS)
    # Without a group, a subscription is given every partition of the topic.
    consumer = AIOKafkaConsumer(topic, group_id=None, enable_auto_commit=False, isolation_level="read_committed",
                                auto_offset_reset="earliest", **settings.kafka_client_options())
    await consumer.start()
    try:
        partitions = list(consumer.assignment())
        ends = await consumer.end_offsets(partitions)
        head = None
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    if record.key != chain.encode():
                        continue
                    try:
                        _, body = registry.decode(record.value)
                    except CodecError:
                        continue
                    head = Head(body["sequence"], body["hash"])
        return head
    finally:
        await consumer.stop()

