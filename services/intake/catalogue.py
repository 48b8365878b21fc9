"""The catalogue as intake knows it: learned from routing's compacted
`tongban.catalogue.changes` (MatterChanged, keyed by matter code), for the formal check at
收件 (matter, subject, modes, materials). A read model only: intake keeps no copy of its own,
it reads the topic from the beginning at start and follows it. A matter it has not learned
(yet) is not checked here; routing refuses one the catalogue does not list.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from services.intake.domain import MatterForm
from tongban import bus, topics
from tongban.codec import CodecError, SchemaRegistry
from tongban.config import Settings

log = logging.getLogger(__name__)
RETRY_SECONDS = 5


def form_of(body: dict[str, Any]) -> MatterForm:
    """The formal-check part of a MatterChanged body. v1 bodies carry no materials: the
    materials are then not checked (no essential, every code may follow)."""
    materials = body.get("materials")
    if materials is None:
        return MatterForm(body.get("subject", ""), tuple(body["modes"]), frozenset(), checks_materials=False)
    return MatterForm(body.get("subject", ""), tuple(body["modes"]),
                      frozenset(m["code"] for m in materials if m["essential"]),
                      frozenset(m["code"] for m in materials if not m["essential"]),
                      frozenset(m["code"] for m in materials if m.get("commitment")))


class NotYet(Exception):
    """The topic is not there (yet): `make topics` or its ACLs have not run."""


class LearnedCatalogue:
    def __init__(self) -> None:
        self._forms: dict[str, MatterForm] = {}

    def matter(self, code: str) -> MatterForm | None:
        return self._forms.get(code)

    def learn(self, body: dict[str, Any]) -> None:
        if body.get("change") == "WITHDRAWN":
            self._forms.pop(body["matter_code"], None)
        else:
            self._forms[body["matter_code"]] = form_of(body)

    async def follow(self, settings: Settings, registry: SchemaRegistry) -> None:
        """Read the topic from the beginning, then follow it; a broker outage is retried."""
        while True:
            try:
                await self._read(settings, registry)
            except (KafkaError, OSError, NotYet) as exc:
                log.warning("catalogue: reading %s failed (%s); retrying", topics.CATALOGUE_CHANGES,
                            type(exc).__name__)
                await asyncio.sleep(RETRY_SECONDS)

    async def _read(self, settings: Settings, registry: SchemaRegistry) -> None:
        consumer = bus.make_consumer(settings, [])
        await consumer.start()
        try:
            topic = settings.topic(topics.CATALOGUE_CHANGES)
            # A consumer without a subscription keeps no metadata of the topic: ask the cluster.
            metadata = await consumer._client.fetch_all_metadata()
            partitions = [TopicPartition(topic, p) for p in sorted(metadata.partitions_for_topic(topic) or ())]
            if not partitions:
                raise NotYet(f"{topics.CATALOGUE_CHANGES} is not visible yet")
            consumer.assign(partitions)  # no group: every instance reads all of it
            await consumer.seek_to_beginning(*partitions)
            while True:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    for record in records:
                        try:
                            event_type, body = registry.decode(record.value)
                        except CodecError:
                            continue  # a newer writer's schema: routing publishes it before its records
                        if event_type == topics.MATTER_CHANGED_EVENT:
                            self.learn(body)
                if batch:
                    log.info("catalogue: %d matters known", len(self._forms))
        finally:
            await consumer.stop()
