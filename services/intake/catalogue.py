"""The catalogue as intake knows it: learned from routing's compacted
`tongban.catalogue.changes` (MatterChanged, keyed by matter code), for the formal check at
收件 (matter, subject, modes, materials). A read model only: intake keeps no copy of its own,
it reads the topic from the beginning at start and follows it. A matter it has not learned
(yet) is not checked here; routing refuses one the catalogue does not list.
"""

from __future__ import annotations

from typing import Any

from services.intake.domain import MatterForm
from tongban.catalogue_feed import follow_matter_changes
from tongban.codec import SchemaRegistry
from tongban.config import Settings


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
        """Read the topic from the beginning, then follow it (tongban.catalogue_feed)."""
        await follow_matter_changes(settings, registry, self.learn)
