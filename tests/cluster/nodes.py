"""The local three-broker cluster as the cluster test drives it: its brokers, killed and
started through infra/scripts/cluster.sh, and its partitions as any client sees them."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = ROOT / "infra" / "scripts" / "cluster.sh"
BROKERS = (1, 2, 3)  # node b<n> of cluster.sh is broker n


@dataclass(frozen=True)
class Partition:
    topic: str
    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


class Cluster:
    """The local cluster's brokers, driven through cluster.sh, and its metadata as any
    client sees it."""

    def __init__(self) -> None:
        from tongban.ops.kafka_admin import admin_client, ops_settings

        self.admin = admin_client(ops_settings())
        self.killed: set[int] = set()

    async def kill(self, broker: int) -> None:
        self.killed.add(broker)
        await self._script("kill", f"b{broker}")

    async def start(self, broker: int) -> None:
        """Returns once the broker answers clients again."""
        await self._script("start-node", f"b{broker}")
        self.killed.discard(broker)

    async def _script(self, *args: str) -> None:
        process = await asyncio.create_subprocess_exec(str(CLUSTER_SH), *args, stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.STDOUT)
        output, _ = await process.communicate()
        assert process.returncode == 0, f"cluster.sh {' '.join(args)}: {output.decode(errors='replace')[-2000:]}"

    async def partitions(self, topic: str | None = None) -> list[Partition]:
        """Every partition of `topic`, or of the whole cluster, internal topics included."""
        from confluent_kafka import KafkaException

        try:
            metadata = await asyncio.to_thread(self.admin.list_topics, topic, timeout=10)
        except KafkaException:
            return []  # no broker answered in time: the caller asks again
        return sorted((Partition(name, p.id, p.leader, tuple(p.replicas), tuple(p.isrs))
                       for name, t in metadata.topics.items() if t.error is None
                       for p in t.partitions.values()), key=lambda p: (p.topic, p.partition))

    async def wait(self, predicate: Callable[[list[Partition]], bool], within: float, what: str,
                   topic: str | None = None) -> float:
        """Seconds until the partitions satisfy `predicate` (polled every 0.2 s)."""
        start = time.monotonic()
        while True:
            partitions = await self.partitions(topic)
            if partitions and predicate(partitions):
                return time.monotonic() - start
            assert time.monotonic() - start < within, f"{what}: not within {within}s; last seen {partitions[:6]}"
            await asyncio.sleep(0.2)

    async def fully_replicated(self, within: float = 180) -> float:
        """Seconds until every partition in the cluster has all its replicas in its ISR."""
        return await self.wait(lambda ps: all(set(p.isr) == set(p.replicas) for p in ps), within,
                               "every partition's ISR complete")


def busiest(partitions: list[Partition]) -> int:
    """The broker that leads the most of these partitions."""
    return Counter(p.leader for p in partitions).most_common(1)[0][0]


def record_figures(test: str, figures: dict) -> None:
    """Append a test's measurements to the file cluster.sh prints after the run."""
    path = os.environ.get("TONGBAN_CLUSTER_FIGURES")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"test": test, **figures}) + "\n")
