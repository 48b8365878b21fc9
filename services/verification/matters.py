"""Each matter's required materials, as the catalogue publishes them.

The source is `tongban.catalogue.changes` (compacted, keyed by matter code: its latest
MatterChanged per matter is the current entry; v2 carries the materials and their flags).
Every matter is needed by every partition's applications, so the view is the whole topic,
followed by one group-less consumer per process rather than by the partitioned runtime.
Until the topic has been read, routing's catalogue file stands in (read as data: services
do not import each other's code, tests/unit/test_layers.py).
"""

from __future__ import annotations

import asyncio
import logging
import tomllib
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from services.verification.domain import RequiredMaterial
from tongban import telemetry, topics
from tongban.codec import CodecError, SchemaRegistry
from tongban.config import Settings

log = logging.getLogger(__name__)
ROUTING_CATALOGUE = Path(__file__).resolve().parents[1] / "routing" / "catalogue.toml"
WITHDRAWN = "WITHDRAWN"
RETRY_SECONDS = 5


def load(path: Path = ROUTING_CATALOGUE) -> dict[str, tuple[RequiredMaterial, ...]]:
    """The fallback: routing's catalogue file (code, name, essential of each material)."""
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    return {m["code"]: tuple(RequiredMaterial(r["code"], r["name"], r["essential"])
                             for r in m.get("required_materials", []))
            for m in raw.get("matter", [])}


class MatterView(dict[str, tuple[RequiredMaterial, ...]]):
    """matter code -> required materials, kept current from the catalogue topic."""

    def apply(self, change: dict[str, Any]) -> None:
        """One MatterChanged: a withdrawn matter is gone; a v1 record (no materials) leaves
        what is known of the matter as it is."""
        if change["change"] == WITHDRAWN:
            self.pop(change["matter_code"], None)
        elif change.get("materials"):
            self[change["matter_code"]] = tuple(
                RequiredMaterial(m["code"], m["name"], m["essential"], m["commitment"]) for m in change["materials"])

    async def follow(self, settings: Settings, registry: SchemaRegistry) -> None:
        """Read the topic from its start and keep reading; a broker outage is waited out."""
        while True:
            consumer = AIOKafkaConsumer(settings.topic(topics.CATALOGUE_CHANGES), group_id=None,
                                        enable_auto_commit=False, isolation_level="read_committed",
                                        auto_offset_reset="earliest", **settings.kafka_client_options())
            try:
                await consumer.start()
                async for record in consumer:
                    self._read(registry, record.value, record.offset)
            except KafkaError as exc:
                telemetry.log(log, logging.WARNING, "catalogue not readable; retrying", error=type(exc).__name__)
            finally:
                await consumer.stop()
            await asyncio.sleep(RETRY_SECONDS)

    def _read(self, registry: SchemaRegistry, value: bytes, offset: int) -> None:
        try:
            event_type, body = registry.decode(value)
        except CodecError:
            telemetry.log(log, logging.WARNING, "unreadable catalogue record", offset=offset)
            return
        if event_type == topics.MATTER_CHANGED_EVENT:
            self.apply(body)

    def start_following(self, settings: Settings, registry: SchemaRegistry) -> asyncio.Task:
        return asyncio.get_running_loop().create_task(self.follow(settings, registry), name="follow-catalogue")
