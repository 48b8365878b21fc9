"""Which event types each declared topic carries, and which partner alone writes it.

The broker's ACLs say who may write a topic, not what: a partner allowed to write its own
decisions topic could put any record name there, an `ApplicationVerified` say, and a service
that dispatched by event type alone would take it as verification's. So every topic in
`infra/topics.toml` declares its `events`, and the runtime (`tongban/runtime/core.py`)
dead-letters a record whose type its topic does not carry and refuses to emit one on a topic
that does not carry it. A partner's schema on the schema topic can therefore only ever be
used to read records of the types its own topics carry.

Read once per process, on first use, from the declaration it runs with
(`tongban.paths.topics_file`: the packaged copy in an installed wheel, `infra/topics.toml` in
a checkout); the runtime asks for every record, so the answer is a dictionary lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from tongban import paths
from tongban.ops.topics import load_declared, load_document

PRINCIPAL_PREFIX = "partner-"  # a partner's or feed's Kafka user; `writer` may name one so


@dataclass(frozen=True)
class Carriage:
    """What one declared topic may carry."""

    events: frozenset[str]  # full Avro record names
    partner: str | None  # the partner or feed that alone writes it, None for Tongban's own writers


def carriage(logical_topic: str) -> Carriage | None:
    """The declaration of a topic by its name without namespace; None for a topic
    infra/topics.toml does not declare (only the broker's admin can write one: the ACLs grant
    rights on declared topics alone)."""
    return _declared().get(logical_topic)


def carries(logical_topic: str) -> frozenset[str]:
    """The event types a declared topic carries (empty for an undeclared one)."""
    found = carriage(logical_topic)
    return found.events if found is not None else frozenset()


@cache
def _declared() -> dict[str, Carriage]:
    path = paths.topics_file()
    doc = load_document(path)
    outsiders = {*doc.get("partners", {}), *doc.get("feeds", {})}

    def partner_of(writer: str) -> str | None:
        ref = writer.removeprefix(PRINCIPAL_PREFIX)
        return ref if ref in outsiders else None

    return {spec.declared_name: Carriage(frozenset(spec.events), partner_of(spec.writer))
            for spec in load_declared("", path)}
