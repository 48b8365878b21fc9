"""Publishing the catalogue: one MatterChanged per matter whose entry changed.

The compacted `tongban.catalogue.changes` (keyed by matter code) is itself the record of
what was published: at start, routing reads it to its end, compares each matter's latest
record with the catalogue it loaded, and publishes only the differences (ADDED, UPDATED,
and WITHDRAWN for a matter no longer listed). A restart with the same catalogue publishes
nothing. Event ids derive from the matter code, version and change, so a publication
repeated after a crash carries the same ids and readers drop it as a duplicate.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from services.routing.catalogue import Catalogue, Matter
from tongban import bus, topics
from tongban.codec import CodecError, SchemaRegistry
from tongban.config import Settings
from tongban.events import encode_event
from tongban.handling import Emit
from tongban.runtime import ServiceRuntime
from tongban.telemetry import inject_headers

log = logging.getLogger(__name__)
ADDED, UPDATED, WITHDRAWN = "ADDED", "UPDATED", "WITHDRAWN"
RETRY_SECONDS = (1, 2, 5, 10, 30, 60)


def matter_changed(matter: Matter, change: str, edition: str) -> dict[str, Any]:
    """The MatterChanged v2 body (without envelope) for a catalogue entry."""
    return {
        "matter_code": matter.code,
        "name": matter.name,
        "modes": list(matter.modes),
        "promised_working_days": matter.promised_working_days,
        "statutory_working_days": matter.statutory_working_days,
        "postal_delivery": matter.postal_delivery,
        "change": change,
        "version": matter.version,
        "catalogue_edition": edition,
        "invented": matter.invented,
        "source": matter.source,
        "department": matter.department,
        "level": matter.level,
        "legal_basis": list(matter.legal_basis),
        "subject": matter.subject,
        "place": matter.place,
        "acceptance_conditions": list(matter.acceptance_conditions),
        "fee": matter.fee,
        "result_type": matter.result_type,
        "guide": matter.guide,
        "materials": [asdict(m) for m in matter.required_materials],
        "legs": [{"step": leg.step, "working_days": leg.working_days, "place": matter.leg_place(leg)}
                 for leg in matter.legs],
    }


def changes(catalogue: Catalogue, published: Mapping[str, dict[str, Any]]) -> list[Emit]:
    """What to publish, given the latest MatterChanged body per matter code on the topic."""
    emits = []
    for matter in catalogue.all():
        last = published.get(matter.code) or {}
        listed = bool(last) and last["change"] != WITHDRAWN
        if not listed or last["version"] != matter.version:
            body = matter_changed(matter, UPDATED if listed else ADDED, catalogue.edition)
            emits.append(Emit(topics.CATALOGUE_CHANGES, topics.MATTER_CHANGED_EVENT, matter.code, body))
    for code, last in published.items():
        if catalogue.get(code) is None and last["change"] != WITHDRAWN:
            body = {**last, "change": WITHDRAWN, "catalogue_edition": catalogue.edition}
            emits.append(Emit(topics.CATALOGUE_CHANGES, topics.MATTER_CHANGED_EVENT, code, body))
    return emits


async def published_entries(settings: Settings, registry: SchemaRegistry,
                            partitions: list[TopicPartition]) -> dict[str, dict[str, Any]]:
    """The latest MatterChanged body per matter code: the compacted topic, read to its end
    by a consumer of no group (it commits nothing and must not join routing's group)."""
    consumer = AIOKafkaConsumer(group_id=None, client_id=f"tongban-{settings.service}-catalogue",
                                enable_auto_commit=False, isolation_level="read_committed",
                                **settings.kafka_client_options())
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        latest: dict[str, dict[str, Any]] = {}
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    try:
                        event_type, body = registry.decode(record.value)
                    except CodecError:
                        continue  # not ours to read; the writer's schema is on tongban.schemas
                    if event_type == topics.MATTER_CHANGED_EVENT:
                        latest[body["matter_code"]] = {k: v for k, v in body.items() if k != "envelope"}
        return latest
    finally:
        await consumer.stop()


async def publish_changes(settings: Settings, registry: SchemaRegistry, catalogue: Catalogue) -> int:
    topic = settings.topic(topics.CATALOGUE_CHANGES)
    producer = bus.make_producer(settings, client_id=f"tongban-{settings.service}-catalogue")
    await producer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(await producer.partitions_for(topic))]
        emits = changes(catalogue, await published_entries(settings, registry, partitions))
        for emit in emits:
            cause = f"{emit.key}@{emit.payload['version']}/{emit.payload['change']}"
            _, value = encode_event(registry, emit.event_type, emit.payload, cause_id=cause, correlation_id=emit.key,
                                    source_system=f"tongban-{settings.service}")
            await producer.send_and_wait(topic, key=emit.key.encode(), value=value, headers=inject_headers())
    finally:
        await producer.stop()
    return len(emits)


async def publish_catalogue(runtime: ServiceRuntime, catalogue: Catalogue) -> None:
    """Once the runtime has published its schemas and serves its partitions, publish what
    changed; a broker outage delays it, retried until it succeeds."""
    await runtime.ready.wait()
    for attempt in itertools.count():
        try:
            count = await publish_changes(runtime.settings, runtime.registry, catalogue)
        except (KafkaError, OSError) as exc:
            delay = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
            log.warning("catalogue publication failed (%s); retrying in %ss", type(exc).__name__, delay)
            await asyncio.sleep(delay)
        else:
            log.info("catalogue published: %d of %d matters changed", count, len(catalogue.all()))
            return
