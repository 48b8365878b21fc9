"""Following routing's catalogue: every MatterChanged on the compacted
`tongban.catalogue.changes` (keyed by matter code), from the topic's start, then as it comes.

Intake's formal check and verification's material rules each keep a read model of the
catalogue; this is the one reader they share. It uses no consumer group, so every
instance reads the whole topic, and it waits out a broker outage or a topic not made yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from tongban import bus, telemetry, topics
from tongban.codec import CodecError, SchemaRegistry
from tongban.config import Settings

log = logging.getLogger(__name__)
RETRY_SECONDS = 5


class NotYet(Exception):
    """The topic is not there (yet): `make topics` or its ACLs have not run."""


async def follow_matter_changes(settings: Settings, registry: SchemaRegistry,
                                apply: Callable[[dict[str, Any]], None]) -> None:
    """Call `apply` with the body of every MatterChanged, oldest first; runs until cancelled."""
    while True:
        try:
            await _read(settings, registry, apply)
        except (KafkaError, OSError, NotYet) as exc:
            telemetry.log(log, logging.WARNING, "catalogue not readable; retrying", error=type(exc).__name__)
            await asyncio.sleep(RETRY_SECONDS)


async def _read(settings: Settings, registry: SchemaRegistry, apply: Callable[[dict[str, Any]], None]) -> None:
    consumer = bus.make_consumer(settings, [])
    await consumer.start()
    try:
        topic = settings.topic(topics.CATALOGUE_CHANGES)
        # A consumer without a subscription keeps no metadata of the topic: ask the cluster.
        metadata = await consumer._client.fetch_all_metadata()
        partitions = [TopicPartition(topic, p) for p in sorted(metadata.partitions_for_topic(topic) or ())]
        if not partitions:
            raise NotYet(f"{topics.CATALOGUE_CHANGES} is not visible yet")
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while True:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    try:
                        event_type, body = registry.decode(record.value)
                    except CodecError:
                        # a newer writer's schema not learned yet, or garbage: skip, never stop
                        telemetry.log(log, logging.WARNING, "unreadable catalogue record", offset=record.offset)
                        continue
                    if event_type == topics.MATTER_CHANGED_EVENT:
                        apply(body)
    finally:
        await consumer.stop()
