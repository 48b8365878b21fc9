"""The runtime's processing core, free of Kafka and of any database client.

A **task** owns one partition number of all of a service's inputs (the lifecycle topics, its
command, retry and repartition topics are equally partitioned and co-assigned). It keeps the
aggregates of the keys in that partition in its local state store and handles a batch of
records as one unit:

1. every record is decoded, dispatched and handled; each step is guarded, so a record that
   cannot be handled becomes a dead letter with its reason instead of stopping the task;
2. the new state entries, the dedupe marks, the outgoing events and the dead letters are
   collected in a `Batch` (nothing is written yet);
3. finished aggregates are archived (append-only inserts) to the document store;
4. the outgoing records and the changelog records go to the broker in one transaction
   (`Transactions.commit`); the changelog carries the task's input positions too (`o:`
   entries), so the state and where to read next commit together. Only after the commit
   does the local store take the changes and the timer schedule its new timers.

A crash or outage at any point leaves nothing half done: the transaction aborts, the input
is read again, and the same event ids come out (they derive from the cause).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import pickle
import signal
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from tongban import pii_policy, topic_events
from tongban.bus import partition_for
from tongban.codec import CodecError, MalformedRecord, SchemaRegistry, UnknownSchema
from tongban.config import Settings
from tongban.events import encode_event, millis, now_utc
from tongban.handling import TIMER_FIRED, Emit, Event, Handler, Outcome, Rejected, Wiring
from tongban.pii import PiiCipher, PiiError, unsealed_fields
from tongban.runtime.state import StateStore
from tongban.runtime.timers import Schedule
from tongban.scrub import scrub
from tongban.telemetry import extract_headers, inject_headers
from tongban.telemetry import log as log_fields

log = logging.getLogger("tongban.runtime")
tracer = trace.get_tracer("tongban.runtime")

COMMAND = "tongban.runtime.Command"
# The origin a dead-lettered timer names (tongban.dlq.origin.topic): no topic, the task's schedule.
TIMER_ORIGIN = "timer"
TIMER_CARRIAGE = topic_events.Carriage(frozenset({TIMER_FIRED}), None)
ORIGIN_TOPIC_HEADER = "tongban.origin.topic"
# How often an operator has replayed a dead letter (`tongban dlq replay`): a record on the
# retry topic that was replayed more often than MAX_REPLAYS is dead-lettered again instead of
# handled, so a record that keeps failing cannot loop between the retry and dead-letter topics.
REPLAY_COUNT_HEADER = "tongban.replay.count"
MAX_REPLAYS = 5
# The broker's default record limit is 1 MiB; stay clear of it with headers and batch overhead.
MAX_RECORD_BYTES = 1_000_000
MAX_KEY_BYTES = 1024
MAX_KEPT_HEADER_BYTES = 16_384
ENTRY, DEDUPE, POSITION = b"a:", b"d:", b"o:"
EVICT = "evict:"  # the schedule's entries that take finished state out of the hot state
KEEP_FINISHED = timedelta(minutes=10)
# Evictions fire on this grid, so a task takes a minute's finished work out of the hot state
# in one transaction. Fired as each came due, a steady flow of finished applications cost a
# transaction every few milliseconds per task, ten minutes after the flow (docs/benchmarks.md).
EVICTION_ROUND_MS = 60_000
SWEEP_CHUNK = 1000  # entries scanned between two yields to the event loop
BSON_OPTIONS: CodecOptions = CodecOptions(tz_aware=True)
# Reads only an entry's top-level fields; its state, most of its bytes, stays undecoded.
HEAD_OPTIONS: CodecOptions = CodecOptions(tz_aware=True, document_class=RawBSONDocument)


# ------------------------------------------------------------------------------ errors
class HandlerFailed(Exception):
    """A handler (or a service's key function) raised; the input is dead-lettered."""


class Refused(Exception):
    """The runtime cannot carry what a handler produced (size, undeclared topic). The message
    is the dead-letter reason and names no personal data."""


class UnsealedPersonalData(MalformedRecord):
    """A record whose personal field arrived in the clear: refused, and its value is not kept
    in the dead letter (only its digest)."""


class Misplaced(MalformedRecord):
    """A record its topic may not carry: an event type the topic does not declare, or a
    partner's topic whose envelope names another partner. The broker's ACLs let a partner
    write its own topics only; this keeps it to its own record names on them."""


class TaskFenced(Exception):
    """Another instance owns this task now: this one must stop handling its partition."""


def safe_reason(exc: BaseException) -> str:
    """A dead-letter reason: our own messages as they are, otherwise only where it failed
    (an exception's text may hold personal data). Either way it is scrubbed of ID numbers and
    phone numbers: our messages may quote what a partner sent (an unknown outcome, say)."""
    if isinstance(exc, (Rejected, CodecError, Refused, PiiError)):
        return scrub(str(exc))
    cause = exc.__cause__ or exc
    frames = traceback.extract_tb(cause.__traceback__)
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return f"{type(cause).__name__}{where}"


# ------------------------------------------------------------------------------ edges
@dataclass(frozen=True)
class OutRecord:
    topic: str  # physical
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int | None = None

    @property
    def size(self) -> int:
        headers = sum(len(k.encode()) + len(v) for k, v in self.headers)
        return len(self.key or b"") + len(self.value or b"") + headers + 64


class InRecord(Protocol):
    """A consumed record (aiokafka's ConsumerRecord, or one the runtime makes); only read."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Any: ...


class Transactions(Protocol):
    """One task's way to the broker."""

    async def commit(self, records: list[OutRecord]) -> int | None:
        """Write `records` atomically; returns the changelog offset reached (the last
        changelog record's offset + 1), if any changelog record was written."""


class Archive(Protocol):
    """The system of record for finished aggregates: inserts and reads by id only."""

    async def insert(self, docs: list[dict[str, Any]]) -> None:
        """Insert each document once; an id already there is a replay and is left as it is."""

    async def load(self, doc_id: str) -> dict[str, Any] | None: ...


def archive_id(key: str, version: int) -> str:
    return key if version == 1 else f"{key}~{version}"


def pack(doc: dict[str, Any]) -> bytes:
    return bson.encode(doc)


def unpack(raw: bytes) -> dict[str, Any]:
    return bson.decode(raw, codec_options=BSON_OPTIONS)


def _eviction(entry: Entry) -> tuple[int, str]:
    """When a finished entry's state leaves the hot state, and the id of that schedule entry."""
    assert entry.finished_at is not None
    due = millis(entry.finished_at + KEEP_FINISHED)
    return -(-due // EVICTION_ROUND_MS) * EVICTION_ROUND_MS, f"{EVICT}{entry.archived}"


def _hot(entry: Entry) -> Entry:
    """What the hot state stores of `entry`. Finished work whose time in the hot state is up
    keeps only what recognises and revives it: its state is in the archive, as this version.
    A later input that changes its timers but not its state (a timer firing after the
    eviction) must not bring the state back, where no eviction would take it out again."""
    if entry.finished and entry.state is not None and entry.finished_at is not None \
            and _eviction(entry)[0] <= millis(now_utc()):
        return _marker(entry)
    return entry


def _marker(entry: Entry) -> Entry:
    """Finished work without its state: what recognises and revives it once it left the hot state."""
    return Entry(None, entry.timers, entry.trace, True, entry.archived, entry.finished_at)


def private_copy(state: Any) -> Any:
    """A copy of `state` the handler may change freely: the batch keeps the original, to
    compare with and to fall back on if the handler fails. States are plain data (what BSON
    stores), so a pickle round trip copies them exactly, three times faster than
    `copy.deepcopy`, which was a fifth of intake's CPU at saturation (docs/benchmarks.md)."""
    return pickle.loads(pickle.dumps(state, pickle.HIGHEST_PROTOCOL))


def clean_headers(headers: Any) -> list[tuple[str, bytes]]:
    """Headers as (str, bytes) pairs; a null value or a name that is not text is dropped."""
    clean = []
    for item in headers or ():
        try:
            name, value = item
        except (TypeError, ValueError):
            continue
        if isinstance(name, str) and isinstance(value, bytes | bytearray):
            clean.append((name, bytes(value)))
    return clean


def replay_count(headers: list[tuple[str, bytes]]) -> int:
    """How often the record was replayed from a dead-letter topic (0 if never); a count that
    is not a non-negative number is malformed."""
    raw = dict(headers).get(REPLAY_COUNT_HEADER)
    if raw is None:
        return 0
    try:
        count = int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise MalformedRecord(f"{REPLAY_COUNT_HEADER} is not a number") from None
    if count < 0:
        raise MalformedRecord(f"{REPLAY_COUNT_HEADER} is negative")
    return count


def crash_point(settings: Settings, point: str) -> None:
    if settings.crash_point == point:
        log_fields(log, logging.WARNING, "crash point reached: killing the process", point=point)
        os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------------------ entries
@dataclass
class Entry:
    """One aggregate in the hot state. A finished one is archived as version `archived`; it
    keeps its state here for `KEEP_FINISHED` (events that arrive after the one that finished
    it, from other topics, are common), then only what recognises and revives it."""

    state: dict[str, Any] | None = None
    timers: list[dict[str, Any]] = field(default_factory=list)
    trace: dict[str, str] = field(default_factory=dict)
    finished: bool = False
    archived: int = 0
    finished_at: datetime | None = None

    @classmethod
    def unpack(cls, raw: bytes) -> Entry:
        doc = unpack(raw)
        return cls(doc.get("state"), doc.get("timers", []), doc.get("trace", {}), doc.get("finished", False),
                   doc.get("archived", 0), doc.get("finished_at"))

    def pack(self) -> bytes:
        doc: dict[str, Any] = {"state": self.state, "timers": self.timers, "trace": self.trace,
                               "archived": self.archived}
        if self.finished:
            doc.update(finished=True, finished_at=self.finished_at)
        return pack(doc)


@dataclass
class Batch:
    """What one unit of work changes; applied to the task only after its transaction commits."""

    changes: dict[bytes, bytes | None] = field(default_factory=dict)
    entries: dict[str, Entry] = field(default_factory=dict)  # decoded, state always loaded
    outs: list[OutRecord] = field(default_factory=list)
    archive: list[dict[str, Any]] = field(default_factory=list)
    timers: list[tuple[int, str, str]] = field(default_factory=list)  # scheduled once committed


@dataclass
class Context:
    """What every task of one runtime shares."""

    settings: Settings
    registry: SchemaRegistry
    wiring: Wiring
    archive: Archive
    partitions: int
    has_topic: Callable[[str], Awaitable[bool]]
    learn_schemas: Callable[[bytes], Awaitable[None]]
    # Told the aggregate keys a commit changed, so readers waiting on them wake (no polling).
    committed: Callable[[list[str]], None] = lambda keys: None
    cipher: PiiCipher = field(init=False)

    def __post_init__(self) -> None:
        self.cipher = self.settings.pii_cipher()

    @property
    def horizon(self) -> timedelta:
        """How long a replay can still come: dedupe marks and finished markers live this long."""
        return timedelta(days=self.settings.replay_horizon_days)


# ------------------------------------------------------------------------------ the task
class Task:
    def __init__(self, ctx: Context, partition: int, store: StateStore, transactions: Transactions) -> None:
        self.ctx = ctx
        self.partition = partition
        self.store = store
        self.transactions = transactions
        self.schedule = Schedule()
        self.lock = asyncio.Lock()
        self.active = True
        # Input positions read past by batches that changed nothing (see `process`).
        self.unstored: dict[str, int] = {}

    # -------------------------------------------------------------- restore
    def restore(self, changes: dict[bytes, bytes | None], next_offset: int) -> None:
        self.store.write(changes, next_offset)

    def rebuild_schedule(self) -> None:
        self.schedule = Schedule()
        for raw_key, raw in self.store.items(ENTRY):
            entry, key = Entry.unpack(raw), raw_key[len(ENTRY):].decode()
            for timer in entry.timers:
                self.schedule.add(millis(timer["due_at"]), timer["id"], key)
            if entry.finished and entry.state is not None and entry.finished_at is not None:
                self.schedule.add(*_eviction(entry), key)

    # -------------------------------------------------------------- reads
    def position(self, topic: str) -> int | None:
        """The offset to read next in this task's partition of `topic`: committed with the
        state it led to, so a new owner resumes exactly where the state stands."""
        if topic in self.unstored:
            return self.unstored[topic]
        raw = self.store.get(POSITION + topic.encode())
        return int(raw) if raw is not None else None

    async def read(self, key: str) -> Entry | None:
        """The committed entry of `key`, with its state loaded from the archive if it was
        finished long enough ago to have left the hot state."""
        raw = self.store.get(ENTRY + key.encode())
        if raw is None:
            return None
        entry = Entry.unpack(raw)
        if entry.finished and entry.state is None:
            doc = await self.ctx.archive.load(archive_id(key, entry.archived))
            entry.state = doc["state"] if doc else None
        return entry

    # -------------------------------------------------------------- processing
    async def process(self, records: list[InRecord]) -> None:
        """Handle records of this task's partition as one transaction."""
        async with self.lock:
            if not self.active:
                return
            # A fetch that raced the take-over may have started at the group's offsets, behind
            # the positions restored with the state: what lies before those is handled already.
            start = {topic: self.position(topic) or 0 for topic in {r.topic for r in records}}
            records = [r for r in records if r.offset >= start[r.topic]]
            if not records:
                return
            batch = Batch()
            for record in records:
                await self._handle_record(batch, record)
            # Each topic's records come in offset order: its last one is the furthest.
            reached = {record.topic: record.offset + 1 for record in records}
            if not (batch.changes or batch.outs or batch.archive):
                # Only other consumers' events or duplicates: reading them again after a
                # crash changes nothing either, so they cost no transaction. The next
                # transaction stores how far reading got.
                self.unstored.update(reached)
                return
            reached, self.unstored = {**self.unstored, **reached}, {}
            for topic, offset in reached.items():
                batch.changes[POSITION + topic.encode()] = str(offset).encode()
            await self._commit(batch)

    async def fire_due(self, now_ms: int) -> int:
        """Fire every timer due by `now_ms` in one transaction; returns how many fired."""
        async with self.lock:
            if not self.active:
                return 0
            due = self.schedule.pop_due(now_ms)
            if not due:
                return 0
            batch = Batch()
            try:
                for key, timer_id in due:
                    await self._fire(batch, key, timer_id)
                await self._commit(batch)
            except BaseException:
                for key, timer_id in due:  # not fired after all: look again later
                    self.schedule.add(now_ms, timer_id, key)
                raise
            return len(due)

    async def sweep(self, now: datetime) -> int:
        """Forget dedupe marks and finished markers older than the replay horizon.

        The scan runs without the task's lock and yields every `SWEEP_CHUNK` entries, so it
        never stops the task (or the heartbeats) for long; what it found is checked again
        under the lock, since a late event may have revived a finished aggregate meanwhile."""
        limit = now - self.ctx.horizon
        candidates: list[bytes] = []
        for scanned, (raw_key, raw) in enumerate(self.store.items(b"")):
            if self._expired(raw_key, raw, limit):
                candidates.append(raw_key)
            if scanned % SWEEP_CHUNK == SWEEP_CHUNK - 1:
                await asyncio.sleep(0)
        if not candidates:
            return 0
        async with self.lock:
            if not self.active:
                return 0
            batch = Batch()
            for raw_key in candidates:
                current = self.store.get(raw_key)
                if current is not None and self._expired(raw_key, current, limit):
                    batch.changes[raw_key] = None
            if batch.changes:
                await self._commit(batch)
            return len(batch.changes)

    @staticmethod
    def _expired(raw_key: bytes, raw: bytes, limit: datetime) -> bool:
        if raw_key.startswith(DEDUPE):
            return bool(unpack(raw)["at"] < limit)
        if raw_key.startswith(ENTRY):
            # The sweep reads every entry of the task: decoding only the top-level fields costs
            # a quarter of decoding each in-flight aggregate's state. Only a finished entry is
            # stored with a `finished_at` (Entry.pack).
            head = RawBSONDocument(raw, HEAD_OPTIONS)
            finished_at = head.get("finished_at")
            return bool(finished_at and not head.get("timers") and finished_at < limit)
        return False

    async def _commit(self, batch: Batch) -> None:
        settings = self.ctx.settings
        crash_point(settings, "after_handler")
        if batch.archive:
            await self.ctx.archive.insert(batch.archive)
        changelog = [OutRecord(settings.changelog_topic, key, value, [], self.partition)
                     for key, value in batch.changes.items()]
        reached = await self.transactions.commit(batch.outs + changelog)
        self.store.write(batch.changes, reached if reached is not None else self.store.checkpoint)
        for due_ms, timer_id, key in batch.timers:
            self.schedule.add(due_ms, timer_id, key)
        if batch.entries:
            self.ctx.committed(list(batch.entries))

    # -------------------------------------------------------------- one record
    async def _handle_record(self, batch: Batch, record: InRecord) -> None:
        try:
            decoded = await self._decode(record)
        except Exception as exc:  # anything a record can make decoding raise
            batch.outs.append(self._dead_letter(record, exc))
            return
        if decoded is None:
            return  # another consumer's event on a shared topic
        event, handler, key = decoded
        if partition_for(key, self.ctx.partitions) != self.partition:
            # Not this task's aggregate (re-keyed, or written with another partitioner): hand
            # it to the owner through the repartition topic, in this same transaction.
            batch.outs.append(self._forward(record, event, key))
            return
        await self._apply(batch, event, handler, key, clean_headers(record.headers),
                          lambda exc: batch.outs.append(self._dead_letter(record, exc)))

    async def _decode(self, record: InRecord) -> tuple[Event, Handler, str] | None:
        settings = self.ctx.settings
        wiring = self.ctx.wiring
        headers = clean_headers(record.headers)
        topic = settings.logical_topic(record.topic)
        if record.topic in (settings.retry_topic, settings.repartition_topic):
            origin = dict(headers).get(ORIGIN_TOPIC_HEADER)
            if not origin:
                raise MalformedRecord(f"a record on {topic} must name its origin in {ORIGIN_TOPIC_HEADER}")
            try:
                topic = settings.logical_topic(origin.decode("utf-8"))
            except UnicodeDecodeError:
                raise MalformedRecord(f"{ORIGIN_TOPIC_HEADER} is not UTF-8") from None
        if record.topic == settings.retry_topic:
            replays = replay_count(headers)
            if replays > MAX_REPLAYS:
                raise MalformedRecord(f"replayed {replays} times; at most {MAX_REPLAYS} replays are handled")
        if record.value is None:
            raise MalformedRecord("record has no value (tombstone) where an event was expected")
        full_name, body = await self._decode_value(record.value)
        envelope = body.pop("envelope", None)
        if not isinstance(envelope, dict) or not isinstance(envelope.get("event_id"), str) \
                or not envelope["event_id"]:
            raise MalformedRecord(f"{full_name} has no envelope with an event id")
        on_commands = record.topic == settings.commands_topic
        if (full_name == COMMAND) != on_commands:
            raise MalformedRecord("commands come only on the service's own command topic, and only commands do")
        if full_name == COMMAND:
            handler = wiring.commands.get(body["command_type"])
            if handler is None:
                raise MalformedRecord(f"unknown command {body['command_type']}")
            self._check_sealed(full_name, envelope, body)
            # Sealed for this service only, bound to the command's aggregate.
            opened = self.ctx.cipher.open(body["body"], record=COMMAND, path="body", subject=body["key"])
            payload = unpack(base64.b64decode(opened))
            event = Event(envelope["event_id"], body["command_type"], body["key"], payload, envelope, "command")
            return event, handler, body["key"]
        self._check_carried(topic, full_name, envelope)
        if full_name == TIMER_FIRED:  # a dead-lettered timer replayed by an operator
            timer_handler = wiring.timers.get(body["name"])
            if timer_handler is None:
                raise MalformedRecord(f"unknown timer {body['name']}")
            payload = {"timer_id": body["timer_id"], "name": body["name"],
                       "payload": json.loads(body["payload"]) if body["payload"] else None}
            return Event(envelope["event_id"], TIMER_FIRED, body["key"], payload, envelope, topic), timer_handler, \
                body["key"]
        event_handler = wiring.handlers.get(full_name)
        if event_handler is None:
            return None
        self._check_sealed(full_name, envelope, body)
        if record.key is not None:
            try:
                record_key = record.key.decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedRecord("record key is not UTF-8") from None
        else:
            record_key = envelope.get("correlation_id") or ""
        if not record_key:
            raise MalformedRecord("record has neither a key nor a correlation id")
        event = Event(envelope["event_id"], full_name, record_key, body, envelope, topic)
        key_of = wiring.keys.get(full_name)
        if key_of is None:
            return event, event_handler, record_key
        try:
            key = key_of(event)
        except Exception as exc:
            raise HandlerFailed(f"no aggregate key for {full_name}") from exc
        return Event(event.event_id, full_name, key, body, envelope, topic), event_handler, key

    @staticmethod
    def _check_carried(topic: str, full_name: str, envelope: dict[str, Any]) -> None:
        """Dispatch is by event type, so the type must be one its (origin) topic carries: a
        partner may write its own topics, never another writer's record names there. A topic
        infra/topics.toml does not declare is not checked: no principal but the broker's admin
        may write one (the bench's hop topics)."""
        # A dead-lettered timer names the schedule as its origin, which carries its firings only.
        declared = TIMER_CARRIAGE if topic == TIMER_ORIGIN else topic_events.carriage(topic)
        if declared is None:
            return
        if full_name not in declared.events:
            raise Misplaced(f"{topic} does not carry {full_name}")
        # The sender is the partner whose topic the broker let write it; the envelope's
        # `source_partner` is only the client's claim, and one that disagrees is no record of ours.
        claimed = envelope.get("source_partner")
        if declared.partner is not None and claimed and claimed != declared.partner:
            raise Misplaced(f"the envelope names partner {claimed}, but the record came on partner "
                            f"{declared.partner}'s topic")

    def _check_sealed(self, full_name: str, envelope: dict[str, Any], body: dict[str, Any]) -> None:
        """A personal field must arrive sealed: plaintext from a writer (a partner that does
        not seal) is refused, never passed on or kept."""
        plaintext = unsealed_fields(self.ctx.registry, full_name, {"envelope": envelope, **body})
        if plaintext:
            raise UnsealedPersonalData(f"{full_name}: personal field(s) {', '.join(plaintext)} arrived unsealed")

    async def _decode_value(self, value: bytes) -> tuple[str, dict[str, Any]]:
        try:
            return self.ctx.registry.decode(value)
        except UnknownSchema:
            # A newer writer: its schema may be on the schema topic.
            await self.ctx.learn_schemas(SchemaRegistry.fingerprint_of(value))
            return self.ctx.registry.decode(value)

    async def _entry(self, batch: Batch, key: str) -> Entry:
        if key not in batch.entries:
            batch.entries[key] = await self.read(key) or Entry()
        return batch.entries[key]

    async def _apply(self, batch: Batch, event: Event, handler: Handler, key: str,
                     headers: list[tuple[str, bytes]], poison: Callable[[BaseException], None],
                     fired: str | None = None) -> None:
        """Apply one event to its aggregate exactly once, or call `poison` with the reason."""
        marks = [DEDUPE + event.event_id.encode()]
        business_id = self.ctx.wiring.business_ids.get(event.event_type)
        if business_id is not None:
            try:
                marks.append(DEDUPE + f"{event.event_type}|{business_id(event)}".encode())
            except Exception as exc:
                failure = HandlerFailed(f"no business id for {event.event_type}")
                failure.__cause__ = exc
                poison(failure)
                return
        if fired is None and any(mark in batch.changes or self.store.get(mark) is not None for mark in marks):
            return  # a replay: its facts are already in the state and on the bus
        entry = await self._entry(batch, key)  # an archive outage propagates: the batch pauses
        try:
            context = extract_headers(headers)
        except Exception:
            context = None  # a trace header we cannot read never stops a record
        with tracer.start_as_current_span(
            f"handle {event.event_type.rsplit('.', 1)[-1]}", context=context, kind=SpanKind.CONSUMER,
            attributes={"tongban.event_id": event.event_id, "tongban.topic": event.topic, "tongban.key": key,
                        **(self._messaging(event) if fired is None else {})},
        ):
            try:
                outcome = await handler(event, private_copy(entry.state))
                trace_headers = inject_headers()
                outs = [await self._encode(event, emit, trace_headers) for emit in outcome.emits]
                new = self._next_entry(entry, key, outcome, trace_headers, fired)
                packed = _hot(new).pack()
            except (Rejected, Refused, HandlerFailed) as exc:
                poison(exc)
                return
            except Exception as exc:
                failure = HandlerFailed(type(exc).__name__)
                failure.__cause__ = exc  # the reason names where it failed, never its text
                poison(failure)
                return
        if fired is None:
            for mark in marks:
                batch.changes[mark] = pack({"at": now_utc(), "key": key})
        if new.finished and new.archived > entry.archived:
            batch.timers.append((*_eviction(new), key))
            batch.archive.append({"_id": archive_id(key, new.archived), "key": key, "version": new.archived,
                                  "service": self.ctx.settings.service, "state": new.state, "trace": new.trace,
                                  "finished_at": new.finished_at})
        if new != entry:  # an input that changes nothing writes no entry
            batch.entries[key] = new
            batch.changes[ENTRY + key.encode()] = packed
            known = {t["id"] for t in entry.timers}
            batch.timers += [(millis(t["due_at"]), t["id"], key) for t in new.timers if t["id"] not in known]
        batch.outs.extend(outs)

    def _messaging(self, event: Event) -> dict[str, str]:
        """OpenTelemetry's messaging attributes of a record's span, so any tracing backend
        groups them (a timer firing reads no record and has none)."""
        return {"messaging.system": "kafka", "messaging.operation.type": "process",
                "messaging.destination.name": event.topic, "messaging.consumer.group.name": self.ctx.settings.group,
                "messaging.destination.partition.id": str(self.partition), "messaging.message.id": event.event_id}

    def _next_entry(self, entry: Entry, key: str, outcome: Outcome, trace_headers: list[tuple[str, bytes]],
                    fired: str | None) -> Entry:
        state = outcome.state if outcome.state is not None else entry.state
        replaced = set(outcome.cancel_timers) | {t.name for t in outcome.timers}
        timers = [t for t in entry.timers if t["name"] not in replaced and t["id"] != fired]
        trace_doc = {k: v.decode() for k, v in trace_headers}
        for timer in outcome.timers:
            timer_id = f"{key}:{timer.name}:{millis(timer.due_at)}"
            timers.append({"id": timer_id, "name": timer.name, "due_at": timer.due_at, "payload": timer.payload,
                           "headers": trace_doc})
        trace_of_creation = entry.trace or (trace_doc if state is not None else {})
        new = Entry(state, timers, trace_of_creation, entry.finished, entry.archived, entry.finished_at)
        # A finished aggregate stays finished unless an input changes its state (a rating
        # after delivery revives the progress view until it is archived again).
        changed = outcome.state is not None and outcome.state != entry.state
        new.finished = outcome.finished or (entry.finished and not changed)
        if new.finished and (not entry.finished or changed):
            new.archived = entry.archived + 1
            new.finished_at = now_utc()
        return new

    async def _encode(self, cause: Event, emit: Emit, trace_headers: list[tuple[str, bytes]]) -> OutRecord:
        settings = self.ctx.settings
        try:
            # Personal fields are sealed for the parties the output topic names, and only them.
            _, value = encode_event(
                self.ctx.registry, emit.event_type, emit.payload, cause_id=cause.event_id, qualifier=emit.qualifier,
                correlation_id=emit.correlation_id or cause.envelope.get("correlation_id") or cause.key,
                source_system=f"tongban-{settings.service}", source_partner=emit.source_partner or None,
                cipher=self.ctx.cipher, recipients=pii_policy.recipients(emit.topic),
            )
        except PiiError as exc:
            raise Refused(str(exc)) from None
        topic = settings.topic(emit.topic)
        if not await self.ctx.has_topic(topic):
            raise Refused(f"output topic {emit.topic} does not exist")
        declared = topic_events.carriage(emit.topic)
        if declared is not None and emit.event_type not in declared.events:
            # Readers dead-letter it (Task._check_carried): refuse it here, where the mistake is.
            raise Refused(f"{emit.topic} does not carry {emit.event_type}")
        out = OutRecord(topic, emit.key.encode(), value, list(trace_headers))
        if out.size > MAX_RECORD_BYTES:
            raise Refused(f"{emit.event_type} would be {out.size} bytes; a record may be at most {MAX_RECORD_BYTES}")
        return out

    # -------------------------------------------------------------- timers
    async def _fire(self, batch: Batch, key: str, timer_id: str) -> None:
        entry = await self._entry(batch, key)
        if timer_id.startswith(EVICT):
            # Finished work leaves the hot state: the archive has it (this very version).
            if entry.finished and entry.state is not None and timer_id == _eviction(entry)[1]:
                # Only the stored entry loses its state: the batch keeps the entry with it, so a
                # later timer of this aggregate in the same round reads the state, as it would
                # from the archive in a later round.
                batch.changes[ENTRY + key.encode()] = _marker(entry).pack()
            return
        timer = next((t for t in entry.timers if t["id"] == timer_id), None)
        if timer is None:
            return  # replaced or cancelled since it was scheduled
        payload = {"timer_id": timer_id, "name": timer["name"], "payload": timer["payload"]}
        event = Event(f"timer:{timer_id}", TIMER_FIRED, key, payload, {"correlation_id": key}, TIMER_ORIGIN)
        handler = self.ctx.wiring.timers.get(timer["name"])

        def poison(exc: BaseException) -> None:
            # The timer is dropped and its firing dead-lettered: an operator can replay it.
            batch.outs.append(self._timer_dead_letter(key, timer, exc))
            kept = [t for t in entry.timers if t["id"] != timer_id]
            dropped = Entry(entry.state, kept, entry.trace, entry.finished, entry.archived, entry.finished_at)
            batch.entries[key] = dropped
            batch.changes[ENTRY + key.encode()] = _hot(dropped).pack()

        if handler is None:
            poison(MalformedRecord(f"no handler for timer {timer['name']}"))
            return
        headers = [(k, v.encode()) for k, v in timer["headers"].items()]
        await self._apply(batch, event, handler, key, headers, poison, fired=timer_id)

    def _timer_dead_letter(self, key: str, timer: dict[str, Any], exc: BaseException) -> OutRecord:
        settings = self.ctx.settings
        body = {"timer_id": timer["id"], "name": timer["name"], "key": key, "due_at": timer["due_at"],
                "payload": json.dumps(timer["payload"], default=str) if timer["payload"] is not None else None}
        _, value = encode_event(self.ctx.registry, TIMER_FIRED, body, cause_id=f"timer:{timer['id']}",
                                correlation_id=key, source_system=f"tongban-{settings.service}")
        record = _Synthetic(settings.topic(TIMER_ORIGIN), self.partition, -1, key.encode(), value, [])
        return self._dead_letter(record, exc)

    # -------------------------------------------------------------- dead letters
    def _dead_letter(self, record: InRecord, exc: BaseException) -> OutRecord:
        return dead_letter_of(self.ctx.settings, record, exc)

    def _forward(self, record: InRecord, event: Event, key: str) -> OutRecord:
        settings = self.ctx.settings
        headers = [h for h in clean_headers(record.headers) if h[0] != ORIGIN_TOPIC_HEADER]
        headers.append((ORIGIN_TOPIC_HEADER, settings.topic(event.topic).encode()))
        return OutRecord(settings.repartition_topic, key.encode(), record.value, headers,
                         partition_for(key, self.ctx.partitions))


def dead_letter_of(settings: Settings, record: InRecord, exc: BaseException) -> OutRecord:
    """The record as it came, with its origin and reason; reduced to a digest where the
    original would not fit, so a dead letter can always be written. Tasks use it, and so
    do a service's own readers outside the runtime (intake's partner submissions)."""
    reason = safe_reason(exc)  # scrubbed
    kept = [h for h in clean_headers(record.headers) if not h[0].startswith("tongban.dlq.")]
    headers = [
        ("tongban.dlq.origin.topic", record.topic.encode()),
        ("tongban.dlq.origin.partition", str(record.partition).encode()),
        ("tongban.dlq.origin.offset", str(record.offset).encode()),
        ("tongban.dlq.group", settings.group.encode()),
        ("tongban.dlq.error.class", type(exc).__name__.encode()),
        ("tongban.dlq.error.message", reason.encode()[:2000]),
    ]
    if sum(len(k) + len(v) for k, v in kept) > MAX_KEPT_HEADER_BYTES:
        headers.append(("tongban.dlq.headers.dropped", str(len(kept)).encode()))
        kept = []
    key, value = record.key, record.value
    if key is not None and len(key) > MAX_KEY_BYTES:
        headers.append(("tongban.dlq.key.digest", _digest(key)))
        key = key[:64]
    out = OutRecord(settings.dlq_topic, key, value if value is not None else b"", kept + headers, None)
    if isinstance(exc, UnsealedPersonalData):  # personal data in the clear is not copied on
        out = OutRecord(settings.dlq_topic, key, _digest(value or b""),
                        [*kept, *headers, ("tongban.dlq.reduced", b"value held personal data in the clear")], None)
    elif out.size > MAX_RECORD_BYTES:
        out = OutRecord(settings.dlq_topic, key, _digest(value or b""),
                        [*kept, *headers, ("tongban.dlq.reduced", b"value replaced by its digest")], None)
    log_fields(log, logging.WARNING, "dead-lettered", topic=record.topic, partition=record.partition,
               offset=record.offset, error=type(exc).__name__, reason=reason)
    return out


@dataclass(frozen=True)
class _Synthetic:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def _digest(data: bytes) -> bytes:
    return f"sha256={hashlib.sha256(data).hexdigest()} size={len(data)}".encode()


def command_record(ctx: Context, command_type: str, key: str, command_id: str,
                   payload: dict[str, Any]) -> OutRecord:
    """A request as a record on the service's command topic; its whole body is sealed."""
    settings = ctx.settings
    body = {"command_type": command_type, "key": key, "body": base64.b64encode(pack(payload)).decode()}
    _, value = encode_event(ctx.registry, COMMAND, body, cause_id=command_id, correlation_id=key,
                            source_system=f"tongban-{settings.service}", cipher=ctx.cipher, event_id=command_id,
                            recipients=pii_policy.recipients(settings.logical_topic(settings.commands_topic)))
    out = OutRecord(settings.commands_topic, key.encode(), value, inject_headers(), partition_for(key, ctx.partitions))
    if out.size > MAX_RECORD_BYTES:
        raise Refused(f"the request would be {out.size} bytes; at most {MAX_RECORD_BYTES} are accepted")
    return out

