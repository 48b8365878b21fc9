"""Consumer lag per group, topic and partition: how far each group's committed position is
behind the last committed record (read_committed end offset) of each partition it reads.

A group that commits in transactions (every Tongban service) commits the offset after its
last record, while the end offset also counts the transaction's commit marker: a group that
has read everything shows a lag of at most 1 per partition written in transactions.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from tongban.ops.records import consumer, partitions_of
from tongban.ops.topics import _admin

# The groups of a namespace: services (`tongban-<service>`, replays `tongban-operator-*`) and
# partners and feeds (`partner-<id>`).
GROUP_PREFIXES = ("tongban-", "partner-")


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group has not committed on this partition (it counts from the start)
    end: int
    start: int = 0  # the partition's first offset still kept

    @property
    def lag(self) -> int:
        return max(0, self.end - (self.start if self.committed is None else self.committed))

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "lag": self.lag}


def in_namespace(group: str, namespace: str) -> bool:
    return any(group.startswith(namespace + prefix) for prefix in GROUP_PREFIXES)


def totals(rows: list[PartitionLag]) -> dict[str, dict[str, int]]:
    """Lag per group and, under each group, per topic ("*" is the group's total)."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        out[row.group][row.topic] += row.lag
        out[row.group]["*"] += row.lag
    return {g: dict(t) for g, t in out.items()}


async def measure(namespace: str, groups: list[str] | None = None, bootstrap: str | None = None
                  ) -> list[PartitionLag]:
    """The lag of every partition for which the namespace's groups (or just `groups`, full
    names) have committed an offset."""
    admin = _admin(bootstrap)
    await admin.start()
    try:
        if groups is None:
            groups = sorted(g for g, *_ in await admin.list_consumer_groups() if in_namespace(g, namespace))
        committed = {g: await admin.list_consumer_group_offsets(g) for g in groups}
    finally:
        await admin.close()
    # Every partition of each topic a group has committed on: one it has not committed on yet
    # is behind by all it holds.
    read = {tp.topic for offsets in committed.values() for tp, meta in offsets.items() if meta.offset >= 0}
    partitions = {topic: await partitions_of(topic, bootstrap) for topic in sorted(read)}
    tps = [tp for topic_partitions in partitions.values() for tp in topic_partitions]
    if not tps:
        return []
    client = consumer(bootstrap, group_id=None)
    await client.start()
    try:
        starts = await client.beginning_offsets(tps)
        ends = await client.end_offsets(tps)
    finally:
        await client.stop()
    rows = []
    for group, offsets in committed.items():
        done = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        for topic in sorted({tp.topic for tp in done}):
            rows += [PartitionLag(group, topic, tp.partition, done.get(tp), ends[tp], starts[tp])
                     for tp in partitions[topic]]
    return sorted(rows, key=lambda r: (r.group, r.topic, r.partition))
