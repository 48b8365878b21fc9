"""In-memory versions of the runtime's edges, for millisecond tests of the core and for
benchmarks of the runtime alone. Services always run on Kafka and the document store."""

from __future__ import annotations

from typing import Any

from tongban.runtime.core import OutRecord


class MemoryTransactions:
    """A broker that commits whole transactions: `records` holds what a read_committed reader
    would see. `fail_next` makes the next commit raise, as an outage or a fencing would, with
    nothing of it kept."""

    def __init__(self, changelog_topic: str) -> None:
        self.changelog_topic = changelog_topic
        self.records: list[OutRecord] = []
        self.commits = 0
        self.fail_next: BaseException | None = None
        self._changelog_offset = 0

    async def commit(self, records: list[OutRecord]) -> int | None:
        if self.fail_next is not None:
            failure, self.fail_next = self.fail_next, None
            raise failure
        self.records += records
        self.commits += 1
        changelog = sum(1 for r in records if r.topic == self.changelog_topic)
        self._changelog_offset += changelog
        return self._changelog_offset if changelog else None

    def on(self, topic: str) -> list[OutRecord]:
        return [r for r in self.records if r.topic == topic]


class MemoryArchive:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.loads = 0

    async def insert(self, docs: list[dict[str, Any]]) -> None:
        for doc in docs:
            self.docs.setdefault(doc["_id"], doc)

    async def load(self, doc_id: str) -> dict[str, Any] | None:
        self.loads += 1
        return self.docs.get(doc_id)
