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
import tomllib
from pathlib import Path
from typing import Any

from services.verification.domain import RequiredMaterial
from tongban.catalogue_feed import follow_matter_changes
from tongban.codec import SchemaRegistry
from tongban.config import Settings

ROUTING_CATALOGUE = Path(__file__).resolve().parents[1] / "routing" / "catalogue.toml"
WITHDRAWN = "WITHDRAWN"


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
        """Read the topic from its start and keep reading (tongban.catalogue_feed)."""
        await follow_matter_changes(settings, registry, self.apply)

    def start_following(self, settings: Settings, registry: SchemaRegistry) -> asyncio.Task:
        return asyncio.get_running_loop().create_task(self.follow(settings, registry), name="follow-catalogue")
