"""Dead letters: read them (decoded, masked) and replay them into their group's retry topic.

The runtime (tongban/runtime/core.py) writes a record it cannot handle to
``tongban.dlq.<group>`` with its original key, value and headers plus the
``tongban.dlq.*`` headers (origin topic, partition and offset, group, error class and
reason). A replay writes the original record to ``tongban.retry.<group>``, which the group
reads as if from the origin topic (``tongban.origin.topic``).

A replay is resumable and writes each dead letter once: the records to the retry topic and
the replay's position on the dead-letter topic commit in one Kafka transaction, the position
kept in its own consumer group ``tongban-operator-replay-<group>``. An interrupted replay
(killed, broker gone) resumes where its last transaction ended. Each replay adds one to the
record's ``tongban.replay.count``; a dead letter replayed `MAX_REPLAYS` times is not replayed
again (and the runtime refuses a record replayed more often), so a record that keeps failing
cannot loop between the two topics.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tongban import topics
from tongban.codec import SchemaRegistry
from tongban.ops.records import Decoded, consumer, decode_masked, partitions_of, read_to_end, text, timestamp
from tongban.ops.topics import kafka_client_settings
from tongban.runtime.core import MAX_REPLAYS, ORIGIN_TOPIC_HEADER, REPLAY_COUNT_HEADER

DLQ_PREFIX = "tongban.dlq."
BATCH = 200


def progress_group(namespace: str, group: str) -> str:
    """The consumer group that keeps a replay's position (an operator group, see topics.toml)."""
    return f"{namespace}tongban-operator-replay-{group}"


@dataclass(frozen=True)
class DeadLetter:
    group: str  # without the namespace, as topics.toml names it
    partition: int  # on the dead-letter topic
    offset: int
    at: datetime
    key: str | None
    origin_topic: str  # where it failed (physical name): an input, the retry or repartition topic, "timer"
    origin_partition: int
    origin_offset: int
    error_class: str
    reason: str
    replays: int
    decoded: Decoded
    value: bytes | None = field(repr=False, default=None)
    headers: tuple[tuple[str, bytes], ...] = field(repr=False, default=())

    @property
    def ref(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def replay_origin(self) -> str:
        """The topic the record came from first: a record that failed again on the retry or
        repartition topic still names it in its origin header."""
        origin = dict(self.headers).get(ORIGIN_TOPIC_HEADER)
        return text(origin) or self.origin_topic

    @property
    def reduced(self) -> bool:
        return "tongban.dlq.reduced" in dict(self.headers)

    def as_json(self, with_body: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ref": self.ref, "group": self.group, "at": self.at.isoformat(), "key": self.key,
            "origin": {"topic": self.origin_topic, "partition": self.origin_partition, "offset": self.origin_offset},
            "error_class": self.error_class, "reason": self.reason, "replays": self.replays,
            "event_type": self.decoded.event_type,
        }
        if self.decoded.problem:
            out["problem"] = self.decoded.problem
        if self.reduced:
            out["reduced"] = text(dict(self.headers)["tongban.dlq.reduced"])
        if with_body:
            out["body"] = self.decoded.body
        return out


def _number(raw: bytes | None, default: int = -1) -> int:
    try:
        return int(raw.decode()) if raw is not None else default
    except (UnicodeDecodeError, ValueError):
        return default


def parse(record: Any, group: str, registry: SchemaRegistry) -> DeadLetter:
    """One record of a dead-letter topic, decoded and masked."""
    headers = tuple((k, bytes(v)) for k, v in (record.headers or ()) if isinstance(v, bytes | bytearray))
    h = dict(headers)
    return DeadLetter(
        group=group, partition=record.partition, offset=record.offset, at=timestamp(record.timestamp),
        key=text(record.key), origin_topic=text(h.get("tongban.dlq.origin.topic")) or "?",
        origin_partition=_number(h.get("tongban.dlq.origin.partition")),
        origin_offset=_number(h.get("tongban.dlq.origin.offset")),
        error_class=text(h.get("tongban.dlq.error.class")) or "?",
        reason=text(h.get("tongban.dlq.error.message")) or "",
        replays=_number(h.get(REPLAY_COUNT_HEADER), 0), decoded=decode_masked(registry, record.value),
        value=record.value, headers=headers,
    )


# ------------------------------------------------------------------------------ choosing


@dataclass(frozen=True)
class Selection:
    """Which dead letters a replay takes: since a time, with a reason containing a text."""

    since: datetime | None = None
    reason: str | None = None
    max_replays: int = MAX_REPLAYS

    def selects(self, dl: DeadLetter) -> bool:
        if self.since is not None and dl.at < self.since:
            return False
        wanted = (self.reason or "").lower()
        return not wanted or wanted in dl.reason.lower() or wanted in dl.error_class.lower()

    def refusal(self, dl: DeadLetter, namespace: str) -> str | None:
        """Why a selected dead letter cannot be replayed, or None."""
        if dl.replays >= self.max_replays:
            return f"at the replay limit ({dl.replays} of {self.max_replays})"
        if dl.reduced or dl.value is None:
            return "the value was replaced by its digest (too large, or personal data in the clear)"
        if dl.replay_origin == namespace + topics.commands(dl.group):
            return "a request from the service's API: its caller retries it"
        return None


def replay_record(dl: DeadLetter, retry_partitions: int) -> tuple[bytes | None, bytes, list, int | None]:
    """(key, value, headers, partition) of the dead letter's replay on the retry topic: the
    original headers, its first origin and one more replay. It goes to the origin's partition
    number (the retry topic is partitioned like the inputs, so the same task handles it)."""
    kept = [(k, v) for k, v in dl.headers
            if not k.startswith("tongban.dlq.") and k not in (ORIGIN_TOPIC_HEADER, REPLAY_COUNT_HEADER)]
    headers = [*kept, (ORIGIN_TOPIC_HEADER, dl.replay_origin.encode()),
               (REPLAY_COUNT_HEADER, str(dl.replays + 1).encode())]
    partition = dl.origin_partition if 0 <= dl.origin_partition < retry_partitions else None
    assert dl.value is not None
    return (dl.key.encode() if dl.key is not None else None), dl.value, headers, partition


@dataclass
class ReplaySummary:
    group: str
    dry_run: bool
    replayed: list[DeadLetter] = field(default_factory=list)
    not_selected: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    finished: bool = False  # reached the end of the dead letters there were when it started

    def as_json(self) -> dict[str, Any]:
        return {"group": self.group, "dry_run": self.dry_run, "replayed": len(self.replayed),
                "not_selected": self.not_selected, "refused": dict(self.refused), "finished": self.finished,
                "replayed_refs": [dl.ref for dl in self.replayed]}


# ------------------------------------------------------------------------------ the broker


async def read(group: str, namespace: str, registry: SchemaRegistry, bootstrap: str | None = None
               ) -> list[DeadLetter]:
    """Every dead letter of `group` there is now, oldest first."""
    records = await read_to_end([namespace + topics.dlq(group)], bootstrap)
    return sorted((parse(r, group, registry) for r in records), key=lambda dl: (dl.at, dl.partition, dl.offset))


async def _done_up_to(client: Any, tp: Any, fetched: list, end: int) -> int:
    """The offset a replay goes on from on `tp` after handling `fetched` up to `end`: the
    consumer's position (past a transaction's commit marker, so a finished replay shows no
    lag), or the first record it left for the next run."""
    left = [r.offset for r in fetched if r.offset >= end]
    return left[0] if left else int(await client.position(tp))


async def _behind(client: Any, ends: dict[Any, int]) -> bool:
    """Whether the consumer has not yet reached `ends` on some partition."""
    return any([await client.position(tp) < end for tp, end in ends.items()])


def _tp(record: Any):
    from aiokafka import TopicPartition

    return TopicPartition(record.topic, record.partition)


async def replay(group: str, namespace: str, registry: SchemaRegistry, selection: Selection, *,
                 dry_run: bool = False, limit: int | None = None, batch: int = BATCH,
                 bootstrap: str | None = None, progress: Callable[[int, int], None] | None = None) -> ReplaySummary:
    """Replay the dead letters of `group` that `selection` takes, from where the last replay
    ended up to those there are now; at most `limit` dead letters are looked at in this run.
    `progress(done, total)` is told after each batch. A dry run writes and moves nothing."""
    from aiokafka import AIOKafkaProducer

    dlq_topic = namespace + topics.dlq(group)
    retry_topic = namespace + topics.retry(group)
    tx_group = progress_group(namespace, group)
    summary = ReplaySummary(group, dry_run)
    client = consumer(bootstrap, group_id=tx_group, auto_offset_reset="earliest")
    producer = None if dry_run else AIOKafkaProducer(
        **kafka_client_settings(bootstrap), acks="all", enable_idempotence=True, transactional_id=tx_group)
    await client.start()
    try:
        if producer is not None:
            await producer.start()
        tps = await partitions_of(dlq_topic, bootstrap)
        retry_partitions = len(await partitions_of(retry_topic, bootstrap))
        client.assign(tps)
        ends = await client.end_offsets(tps)
        starts = {tp: await client.position(tp) for tp in tps}
        total = sum(max(0, ends[tp] - starts[tp]) for tp in tps)
        committed = dict(starts)
        looked = 0
        while limit is None or looked < limit:
            if not await _behind(client, ends):
                summary.finished = True
                # Everything below the end offsets is done, a trailing commit marker included:
                # the replay's group then shows no lag.
                rest = {tp: end for tp, end in ends.items() if committed[tp] < end}
                if producer is not None and rest:
                    async with producer.transaction():
                        await producer.send_offsets_to_transaction(rest, tx_group)
                break
            room = batch if limit is None else min(batch, limit - looked)
            fetched = await client.getmany(*tps, timeout_ms=500, max_records=room)
            records = [r for rs in fetched.values() for r in rs if r.offset < ends[_tp(r)]]
            if not records:
                continue
            offsets = {tp: await _done_up_to(client, tp, rs, ends[tp]) for tp, rs in fetched.items() if rs}
            looked += len(records)
            chosen = _choose([parse(r, group, registry) for r in records], namespace, selection, summary)
            if producer is not None:
                async with producer.transaction():
                    for dl in chosen:
                        key, value, headers, partition = replay_record(dl, retry_partitions)
                        await producer.send(retry_topic, value, key=key, headers=headers, partition=partition)
                    await producer.send_offsets_to_transaction(offsets, tx_group)
                committed.update(offsets)
            summary.replayed += chosen
            if progress is not None:
                progress(looked, total)
    finally:
        await client.stop()
        if producer is not None:
            await producer.stop()
    return summary


def _choose(letters: list[DeadLetter], namespace: str, selection: Selection, summary: ReplaySummary
            ) -> list[DeadLetter]:
    chosen = []
    for dl in letters:
        if not selection.selects(dl):
            summary.not_selected += 1
        elif (why := selection.refusal(dl, namespace)) is not None:
            summary.refused[why] += 1
        else:
            chosen.append(dl)
    return chosen
