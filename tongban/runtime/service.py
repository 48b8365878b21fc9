"""ServiceRuntime: the core's tasks on a real Kafka cluster.

- One consumer in the service's group reads its inputs and its own command, retry and
  repartition topics (`read_committed`, range assignment so partition p of every input
  lands on the same instance: that is task p).
- Each task has its own transactional producer, transactional id `<group>-<p>`. Starting
  it fences any older owner of the task (a zombie after a rebalance or a pause) and aborts
  its open transaction, so only one instance can ever commit for a partition; aiokafka
  passes no consumer-group metadata with the offsets, so this is the fencing that holds.
- On assignment a task first fences, then restores its state store from the changelog,
  from the local checkpoint on; the timer schedule is rebuilt from the restored entries, and
  the consumer seeks to the input positions the state holds (committed with it, in the
  same transactions). The group's committed offsets are a copy of them, refreshed every
  second, for lag tools.
- Store or broker outages pause the task (its batch is aborted and read again); nothing
  else does. A loop that dies of a bug sets `failed` and the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import IllegalOperation, IllegalStateError, KafkaError, ProducerFenced
from pymongo.errors import PyMongoError

from tongban import bus
from tongban.bus import partition_for
from tongban.codec import SchemaRegistry
from tongban.config import Settings
from tongban.events import millis, now_utc
from tongban.handling import Wiring
from tongban.runtime.core import (
    ENTRY,
    Archive,
    Context,
    Entry,
    InRecord,
    OutRecord,
    Task,
    TaskFenced,
    archive_id,
    command_record,
    crash_point,
)
from tongban.runtime.state import StateStore, discard, open_store
from tongban.telemetry import RUNTIME as MEASURES
from tongban.telemetry import log as log_fields

log = logging.getLogger("tongban.runtime")
T = TypeVar("T")

# What pauses a task (its batch is read again later). IllegalOperation is aiokafka's word for
# a transaction its producer lost track of; the task's producer is renewed on any failure.
OUTAGES = (PyMongoError, KafkaError, OSError, IllegalOperation)
SWEEP_EVERY_S = 3600.0
MAX_TIMER_WAIT_S = 30.0
SHARE_POSITIONS_EVERY_S = 1.0


class NotReady(Exception):
    """The task owning this key is not served by this instance right now; try again."""


class KafkaTransactions:
    """One task's transactional producer."""

    def __init__(self, settings: Settings, partition: int) -> None:
        self.settings = settings
        self.transactional_id = f"{settings.group}-{partition}"
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        producer = bus.make_producer(self.settings, transactional_id=self.transactional_id)
        await producer.start()  # InitProducerId: fences older owners, aborts their open transaction
        self.producer = producer

    async def stop(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            try:
                await producer.stop()
            except Exception:  # it may be broken already; closing is best effort
                log.debug("closing a task producer failed", exc_info=True)

    async def commit(self, records: list[OutRecord]) -> int | None:
        if self.producer is None:
            await self.start()
        producer = self.producer
        assert producer is not None
        try:
            await producer.begin_transaction()
            futures = [await producer.send(r.topic, value=r.value, key=r.key, partition=r.partition, headers=r.headers)
                       for r in records]
            written = await asyncio.gather(*futures)
            crash_point(self.settings, "after_produce")
            await producer.commit_transaction()
        except ProducerFenced as exc:
            MEASURES.aborted(exc)
            await self.stop()
            raise TaskFenced(self.transactional_id) from exc
        except BaseException as exc:
            MEASURES.aborted(exc)
            # The transaction is lost either way; a fresh producer aborts it and starts clean.
            await self.stop()
            raise
        MEASURES.committed(((r.topic, r.headers) for r in records), self.settings.dlq_topic,
                           self.settings.logical_topic)
        changelog = self.settings.changelog_topic
        reached = [meta.offset for record, meta in zip(records, written, strict=True) if record.topic == changelog]
        return max(reached) + 1 if reached else None


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, runtime: ServiceRuntime) -> None:
        self._runtime = runtime

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._runtime.suspend_tasks()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._runtime.resume_tasks({tp.partition for tp in assigned})


class ServiceRuntime:
    """Consumes a service's inputs and keeps every guarantee of DESIGN §4 around its handlers."""

    def __init__(self, settings: Settings, registry: SchemaRegistry, wiring: Wiring, archive: Archive) -> None:
        self.settings = settings
        self.registry = registry
        self.wiring = wiring
        self.archive = archive
        self.tasks: dict[int, Task] = {}
        self.partitions = 0
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.failed = asyncio.Event()  # set when a runtime loop dies of a bug: the process must exit
        self.ready = asyncio.Event()  # set once partitions are assigned and restored
        self.restored_records = 0  # changelog records replayed by restores, since start
        self._ctx: Context | None = None
        self._stopping = asyncio.Event()
        self._timer_wake = asyncio.Event()
        self._loops: list[asyncio.Task] = []
        self._known_topics: set[str] = set()
        self._topics_refreshed = 0.0
        self._schemas_refreshed = -60.0
        self._fingerprints_tried: dict[bytes, float] = {}
        self._renewing = asyncio.Lock()
        self._lifecycle = asyncio.Lock()  # rebalances and the stop change the tasks one at a time
        self._lag_measured = 0.0
        self._waiting: dict[str, set[asyncio.Event]] = {}  # readers waiting for a key's next commit
        self._inputs: list[str] = []  # every topic the consumer reads (task p owns partition p of each)
        self._shared: dict[TopicPartition, int] = {}  # positions last copied to the group's offsets

    @property
    def ctx(self) -> Context:
        assert self._ctx is not None, "the runtime has not started"
        return self._ctx

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Connect and subscribe. A broker away at start (a restart during an outage) is waited
        for, not a reason to exit; a missing topic is (a deployment error)."""
        delay = 0.5
        while True:
            try:
                await self._start()
                return
            except OUTAGES as exc:
                log_fields(log, logging.WARNING, "broker not reachable at start; retrying", error=type(exc).__name__,
                           seconds=delay)
                for client in (self.consumer, self.producer):
                    if client is not None:
                        with contextlib.suppress(Exception):  # half started: closing is best effort
                            await client.stop()
                self.consumer = self.producer = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _start(self) -> None:
        self.producer = bus.make_producer(self.settings)
        await self.producer.start()
        await bus.publish_schemas(self.producer, self.settings, self.registry)
        self._inputs = [self.settings.topic(t) for t in self.wiring.inputs] + [
            self.settings.commands_topic, self.settings.retry_topic, self.settings.repartition_topic]
        self.partitions = await self._equal_partitions([*self._inputs, self.settings.changelog_topic])
        if not await self._has_topic(self.settings.dlq_topic):
            # Without it no dead letter could be written and a poison record would stop the task.
            raise RuntimeError(f"topic {self.settings.dlq_topic} does not exist: run make topics")
        self._ctx = Context(self.settings, self.registry, self.wiring, self.archive, self.partitions,
                            self._has_topic, self._learn_schemas, self._committed)
        self.consumer = bus.make_consumer(self.settings, [])
        self.consumer.subscribe(self._inputs, listener=_Rebalance(self))
        await self.consumer.start()
        self._loops = [asyncio.create_task(self._consume_loop(), name="consume"),
                       asyncio.create_task(self._timer_loop(), name="timers"),
                       asyncio.create_task(self._positions_loop(), name="positions")]
        for loop in self._loops:
            loop.add_done_callback(self._loop_ended)

    def _loop_ended(self, loop: asyncio.Task) -> None:
        if not loop.cancelled() and loop.exception() is not None:
            exc = loop.exception()
            assert exc is not None
            log.critical("runtime loop %s died: %s", loop.get_name(), type(exc).__name__,
                         exc_info=(type(exc), exc, exc.__traceback__))
            self.failed.set()

    async def stop(self) -> None:
        """Graceful stop: finish the batch in hand, commit it, close everything."""
        self._stopping.set()
        self._timer_wake.set()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self.consumer:
            await self.share_positions()  # nothing is handled any more: lag tools see the end
        await self.suspend_tasks()
        if self.consumer:
            await self.consumer.stop()  # no rebalance can touch the tasks after this
        async with self._lifecycle:
            for task in self.tasks.values():
                task.store.close()
            self.tasks.clear()
        if self.producer:
            await self.producer.stop()

    async def _equal_partitions(self, topics: list[str]) -> int:
        """Task p owns partition p of every input, so all of them must be partitioned alike."""
        assert self.producer is not None
        metadata = await self.producer.client.fetch_all_metadata()
        counts = {}
        for topic in topics:
            partitions = metadata.partitions_for_topic(topic)
            if not partitions:
                raise RuntimeError(f"topic {topic} does not exist: declare it in infra/topics.toml and run make topics")
            counts[topic] = len(partitions)
        if len(set(counts.values())) != 1:
            raise RuntimeError(f"inputs of {self.settings.group} must have equal partition counts: {counts}")
        return next(iter(counts.values()))

    # ---------------------------------------------------------------- tasks
    def _store_dir(self, partition: int) -> Path:
        return self.settings.state_dir / self.settings.group / f"p{partition}"

    def _open_store(self, partition: int) -> StateStore:
        return open_store(self.settings.state_store, self._store_dir(partition))

    async def suspend_tasks(self) -> None:
        """Stop handling every task (a rebalance or a stop); their stores stay for a quick resume."""
        async with self._lifecycle:
            for task in self.tasks.values():
                async with task.lock:  # lets the batch in hand finish and commit
                    task.active = False
                    assert isinstance(task.transactions, KafkaTransactions)
                    await task.transactions.stop()

    async def resume_tasks(self, partitions: set[int]) -> None:
        async with self._lifecycle:
            if self._stopping.is_set():
                return
            for partition in set(self.tasks) - partitions:
                self.tasks.pop(partition).store.close()
            for partition in sorted(partitions):
                task = self.tasks.get(partition)
                if task is None:
                    task = Task(self.ctx, partition, self._open_store(partition),
                                KafkaTransactions(self.settings, partition))
                    self.tasks[partition] = task
                async with task.lock:
                    await self._take_over(task)
            log_fields(log, logging.INFO, "tasks assigned", partitions=sorted(partitions))
            self.ready.set()
            self._timer_wake.set()

    async def _take_over(self, task: Task) -> None:
        """Fence the task's previous owner first, so nobody commits behind the restore."""
        assert isinstance(task.transactions, KafkaTransactions)
        delay = 0.2
        while not self._stopping.is_set():
            try:
                await task.transactions.start()
                await self._restore(task)
                self._resume_reading(task)
                task.active = True
                return
            except OUTAGES as exc:
                log_fields(log, logging.WARNING, "restore paused", partition=task.partition, error=type(exc).__name__)
                await task.transactions.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _restore(self, task: Task) -> None:
        started = time.monotonic()
        tp = TopicPartition(self.settings.changelog_topic, task.partition)
        consumer = AIOKafkaConsumer(enable_auto_commit=False, isolation_level="read_committed",
                                    **self.settings.kafka_client_options())
        await consumer.start()
        restored = 0
        try:
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            if task.store.checkpoint > end:
                # The local copy belongs to another life of the topic (its data was reset).
                task.store.close()
                discard(self._store_dir(task.partition))
                task.store = self._open_store(task.partition)
            consumer.seek(tp, task.store.checkpoint)
            idle = 0
            while await consumer.position(tp) < end and idle < 5:
                records = (await consumer.getmany(tp, timeout_ms=500, max_records=10_000)).get(tp, [])
                idle = 0 if records else idle + 1
                if records:
                    task.restore({r.key: r.value for r in records}, records[-1].offset + 1)
                    restored += len(records)
                    crash_point(self.settings, "during_restore")
        finally:
            await consumer.stop()
        task.rebuild_schedule()
        self.restored_records += restored
        log_fields(log, logging.INFO, "state restored", partition=task.partition, records=restored,
                   timers=len(task.schedule), seconds=round(time.monotonic() - started, 3))

    def _resume_reading(self, task: Task) -> None:
        """Read each input from where the task's state stands. An input with no position in
        the state yet (a new task, or state from before positions were kept in it) starts
        at the group's committed offset, as the consumer does by itself."""
        assert self.consumer is not None
        task.unstored.clear()
        assigned = self.consumer.assignment()
        for topic in self._inputs:
            tp = TopicPartition(topic, task.partition)
            self._shared.pop(tp, None)  # the new owner copies its positions to the group again
            position = task.position(topic)
            if position is not None and tp in assigned:
                self.consumer.seek(tp, position)

    async def _positions_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), SHARE_POSITIONS_EVERY_S)
            await self.share_positions()

    async def share_positions(self) -> None:
        """Copy the tasks' input positions to the group's committed offsets, where lag tools
        (`tongban lag`, kafka-consumer-groups) look. Only a copy: a task resumes from the
        positions in its state, so a copy that is late or fails costs a stale lag figure,
        nothing else. Resetting the group's offsets therefore moves nothing (docs/runtime.md)."""
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        offsets: dict[TopicPartition, int] = {}
        for task in list(self.tasks.values()):
            if not task.active:
                continue
            for topic in self._inputs:
                tp = TopicPartition(topic, task.partition)
                position = task.position(topic)
                if position is not None and tp in assigned and self._shared.get(tp) != position:
                    offsets[tp] = position
        if not offsets:
            return
        try:
            # A commit waits out a coordinator that is away; the next round tries again.
            await asyncio.wait_for(self.consumer.commit(offsets), 10.0)
        except (KafkaError, TimeoutError) as exc:
            log_fields(log, logging.DEBUG, "positions not copied to the group", error=type(exc).__name__)
            return
        self._shared.update(offsets)

    # ---------------------------------------------------------------- consuming
    async def _consume_loop(self) -> None:
        assert self.consumer is not None
        while not self._stopping.is_set():
            try:
                batch = await self.consumer.getmany(timeout_ms=500, max_records=500)
            except KafkaError:
                log.warning("fetch failed; retrying", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            by_partition: dict[int, list[InRecord]] = {}
            for tp, records in batch.items():
                by_partition.setdefault(tp.partition, []).extend(records)
            await asyncio.gather(*(self._process(p, records) for p, records in by_partition.items()))
            await self._measure_lag()

    async def _process(self, partition: int, records: list[InRecord]) -> None:
        task = self.tasks.get(partition)
        topics = [self.settings.logical_topic(r.topic) for r in records]
        if task is None or not task.active:
            MEASURES.count_records(topics, "skipped")
            self._rewind(records)
            return
        try:
            await task.process(records)
            MEASURES.count_records(topics, "committed")
        except TaskFenced:
            MEASURES.count_records(topics, "fenced")
            log_fields(log, logging.WARNING, "task fenced by a newer owner", partition=partition)
            task.active = False
            self._rewind(records)
        except OUTAGES as exc:
            MEASURES.count_records(topics, "aborted")
            # Read the batch again once the store or broker is back, on the state as committed.
            log_fields(log, logging.WARNING, "store or broker unavailable; pausing", partition=partition,
                       error=type(exc).__name__)
            self._rewind(records)
            await asyncio.sleep(1.0)
            await self._resync(task)
        self._timer_wake.set()

    async def _resync(self, task: Task) -> None:
        """Take the task over again after work that failed. A commit whose answer was lost
        (the broker went away during it) may have committed all the same: a new producer for
        the task's transactional id completes or aborts it, and the restore reads the changelog
        it wrote, if it did, so the batch read again finds its dedupe marks and emits nothing
        twice. Without this a lost answer became duplicates (a 10,000 chaos run: 179)."""
        async with self._lifecycle:
            if self.tasks.get(task.partition) is not task or not task.active:
                return  # revoked or fenced meanwhile: its next owner restores it
            async with task.lock:
                task.active = False
                assert isinstance(task.transactions, KafkaTransactions)
                await task.transactions.stop()
                await self._take_over(task)

    async def _measure_lag(self) -> None:
        """Records not read yet on each assigned partition, for the metrics endpoint; at most
        once a second (position and the last stable offset are known locally: no request)."""
        if time.monotonic() - self._lag_measured < 1.0:
            return
        self._lag_measured = time.monotonic()
        assert self.consumer is not None
        lags = {}
        for tp in self.consumer.assignment():
            # Known once a fetch for it answered (then so is the position); a partition
            # revoked meanwhile is left out.
            with contextlib.suppress(IllegalStateError, AssertionError):
                end = self.consumer.last_stable_offset(tp)
                if end is not None and end >= 0:
                    lags[(self.settings.logical_topic(tp.topic), tp.partition)] = max(
                        0, end - await self.consumer.position(tp))
        MEASURES.set_lag(lags)

    def _rewind(self, records: list[InRecord]) -> None:
        assert self.consumer is not None
        first: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            first[tp] = min(first.get(tp, record.offset), record.offset)
        assigned = self.consumer.assignment()
        for tp, offset in first.items():
            if tp in assigned:
                self.consumer.seek(tp, offset)

    # ---------------------------------------------------------------- timers
    async def _timer_loop(self) -> None:
        next_sweep = time.monotonic() + 60.0
        while not self._stopping.is_set():
            self._timer_wake.clear()
            now = millis(now_utc())
            for task in list(self.tasks.values()):
                due = task.schedule.next_due()
                if task.active and due is not None and due <= now:
                    await self._guarded(task, task.fire_due(now))
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + SWEEP_EVERY_S
                for task in list(self.tasks.values()):
                    await self._guarded(task, task.sweep(now_utc()))
            dues = [d for t in self.tasks.values() if t.active and (d := t.schedule.next_due()) is not None]
            wait = min([MAX_TIMER_WAIT_S, *((d - millis(now_utc())) / 1000 for d in dues)])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_wake.wait(), timeout=max(wait, 0.01))

    async def _guarded(self, task: Task, work: Any) -> None:
        try:
            await work
        except TaskFenced:
            task.active = False
        except OUTAGES as exc:
            log_fields(log, logging.WARNING, "timers paused", partition=task.partition, error=type(exc).__name__)
            await asyncio.sleep(1.0)
            await self._resync(task)

    # ---------------------------------------------------------------- edges for handlers
    async def _has_topic(self, topic: str) -> bool:
        if topic in self._known_topics:
            return True
        if time.monotonic() - self._topics_refreshed > 10.0:
            assert self.producer is not None
            metadata = await self.producer.client.fetch_all_metadata()
            self._known_topics = set(metadata.topics())
            self._topics_refreshed = time.monotonic()
        return topic in self._known_topics

    async def _learn_schemas(self, fingerprint: bytes) -> None:
        """Read the schema topic for a writer schema not known yet. Rate-limited, so a flood
        of records with one unknown fingerprint reads the topic once in 10 s, and a flood of
        different ones at most once a second."""
        now = time.monotonic()
        if now - self._schemas_refreshed < 1.0 or now - self._fingerprints_tried.get(fingerprint, -60.0) < 10.0:
            return
        self._schemas_refreshed = now
        if len(self._fingerprints_tried) > 10_000:
            self._fingerprints_tried.clear()
        self._fingerprints_tried[fingerprint] = now
        await bus.learn_schemas(self.settings, self.registry)

    # ---------------------------------------------------------------- commands and reads
    async def submit(self, command_type: str, key: str, command_id: str, payload: dict[str, Any]) -> None:
        """Write a request to the command topic; the owner of `key` applies it. A retry with
        the same `command_id` is a duplicate the owner drops. Raises Refused if too large."""
        record = command_record(self.ctx, command_type, key, command_id, payload)
        producer = self.producer
        assert producer is not None
        try:
            await producer.send_and_wait(record.topic, value=record.value, key=record.key,
                                         partition=record.partition, headers=record.headers)
        except bus.PRODUCER_STATE_ERRORS:
            async with self._renewing:
                if self.producer is producer:
                    self.producer = await bus.renewed(producer, self.settings)
            raise

    async def state_of(self, key: str) -> dict[str, Any] | None:
        entry = await self._read(key)
        return entry.state if entry else None

    async def wait_for_state(self, key: str, done: Callable[[dict[str, Any] | None], bool],
                             within: float) -> dict[str, Any] | None:
        """The state of `key` once `done(state)` holds, or None after `within` seconds. Woken
        by the commits that touch the key, not by polling: a caller waiting for its command to
        be applied costs nothing while it waits."""
        deadline = time.monotonic() + within
        while True:
            woken = asyncio.Event()
            self._waiting.setdefault(key, set()).add(woken)  # before the read: no commit is missed
            try:
                state = await self.state_of(key)
                if done(state):
                    return state
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), remaining)
            finally:
                waiting = self._waiting.get(key)
                if waiting is not None:
                    waiting.discard(woken)
                    if not waiting:
                        del self._waiting[key]

    def _committed(self, keys: list[str]) -> None:
        for key in keys:
            for woken in self._waiting.get(key, ()):
                woken.set()

    async def trace_of(self, key: str) -> dict[str, str]:
        """The trace context that created this aggregate, to keep later requests in its trace."""
        entry = await self._read(key)
        return entry.trace if entry else {}

    async def owned_states(self, pick: Callable[[str, dict[str, Any]], T | None],
                           contains: bytes = b"") -> tuple[list[int], list[T]]:
        """The partitions this instance serves now, and what `pick(key, state)` makes of each
        unfinished aggregate in them: from the local stores alone (no archive query), for
        listings across aggregates such as an operator's queue. Taken between rebalances (no
        restore half done) and without an await (no store written or closed under the scan).
        Only entries whose stored bytes hold `contains` are decoded: decoding every entry is
        what such a scan costs (about 16 µs an entry)."""
        async with self._lifecycle:
            partitions = sorted(p for p, task in self.tasks.items() if task.active)
            picked = []
            for partition in partitions:
                for raw_key, raw in self.tasks[partition].store.items(ENTRY):
                    if contains not in raw:
                        continue
                    entry = Entry.unpack(raw)
                    if not entry.finished and entry.state is not None:
                        found = pick(raw_key[len(ENTRY):].decode(), entry.state)
                        if found is not None:
                            picked.append(found)
        return partitions, picked

    async def _read(self, key: str) -> Entry | None:
        """Reads never race the owner: the committed entry, or the archive for finished work."""
        task = self.tasks.get(partition_for(key, self.partitions)) if self.partitions else None
        if task is not None and task.active:
            return await task.read(key)
        latest = None
        version = 1
        while (doc := await self.archive.load(archive_id(key, version))) is not None:
            latest, version = doc, version + 1
        if latest is None:
            raise NotReady("this instance does not serve that key right now; retry")
        return Entry(latest["state"], [], latest.get("trace") or {}, True, latest["version"], latest["finished_at"])
