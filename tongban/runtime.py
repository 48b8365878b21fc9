"""The service runtime: the delivery guarantees of DESIGN §4, written once.

A handler is a plain async function `(event, state) -> Outcome`. The runtime gives it:
- **outbox**: the new state, the encoded outgoing events and the timers are one aggregate
  document, written with an optimistic version check (FerretDB v1 has single-document
  atomicity only); the stored bytes are then produced, marked sent, and only then is the
  input offset committed. A relay resends entries left unsent by a crash.
- **dedupe**: outgoing event ids derive from the causing event id and type; the ids of
  applied events are kept in the aggregate, so a replay creates no new facts.
- **durable timers**: `due_at` entries in the aggregate, fired by the instance that owns
  the key's partition, through the same path.
- **dead letters**: undecodable records, unknown schemas and rejected content go to
  `tongban.dlq.<group>` with origin and reason; `tongban.retry.<group>` feeds replays back.
- **crash points**: TONGBAN_CRASH_POINT kills the process after the store write, after
  produce or before commit, so tests can prove each window safe.
Store or broker outages pause consumption (rewind and retry); they never dead-letter.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import signal
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from bson import Binary
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from tongban import bus, store
from tongban.codec import CodecError, MalformedRecord, SchemaRegistry, UnknownSchema
from tongban.config import Settings
from tongban.events import encode_event, millis, now_utc
from tongban.telemetry import extract_headers, inject_headers
from tongban.telemetry import log as log_fields

log = logging.getLogger(__name__)
tracer = trace.get_tracer("tongban.runtime")

TIMER_FIRED = "tongban.runtime.TimerFired"
ORIGIN_TOPIC_HEADER = "tongban.origin.topic"
APPLIED_LIMIT = 1000  # ids kept per aggregate: far more than any redelivery window
RELAY_AGE = timedelta(seconds=5)  # entries younger than this are still in their writer's hands


@dataclass(frozen=True)
class Event:
    event_id: str
    event_type: str
    key: str
    payload: dict[str, Any]
    envelope: dict[str, Any]
    topic: str


@dataclass(frozen=True)
class Emit:
    """An outgoing event; `qualifier` tells apart several events of one type from one cause."""

    topic: str
    event_type: str
    key: str
    payload: dict[str, Any]
    qualifier: str = ""


@dataclass(frozen=True)
class Timer:
    """A durable deadline; setting a timer of the same name replaces it."""

    name: str
    due_at: datetime
    payload: dict[str, Any] | None = None


@dataclass
class Outcome:
    state: dict[str, Any] | None = None  # None keeps the stored state
    emits: list[Emit] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    cancel_timers: list[str] = field(default_factory=list)


class Rejected(Exception):
    """Content that breaks a rule. The message is the dead-letter reason: no personal data."""


class HandlerFailed(Exception):
    """A handler raised; the input is dead-lettered instead of crashing the consumer."""


Handler = Callable[[Event, dict[str, Any] | None], Awaitable[Outcome]]
KeyOf = Callable[[Event], str]


def _safe_reason(exc: BaseException) -> str:
    """A dead-letter reason: our own messages as they are, otherwise only where it failed."""
    if isinstance(exc, (Rejected, CodecError)):
        return str(exc)
    cause = exc.__cause__ or exc
    frames = traceback.extract_tb(cause.__traceback__)
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return f"{type(cause).__name__}{where}"


class KeyedLock:
    """One writer per aggregate key inside this process.

    FerretDB v1 evaluates the `{_id, v}` filter of an update and then writes, not atomically,
    so two concurrent version-checked writes can both succeed. Within a process this lock
    serialises them (consumer, timers, relay, gRPC commands); across instances Kafka's
    partition ownership gives each key one consumer. On MongoDB the version check alone holds.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def __call__(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class _Ownership(ConsumerRebalanceListener):
    def __init__(self, runtime: ServiceRuntime) -> None:
        self._runtime = runtime

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self._runtime.owned = set()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        primary = self._runtime.settings.topic(self._runtime.inputs[0])
        self._runtime.owned = {tp.partition for tp in assigned if tp.topic == primary}
        log_fields(log, logging.INFO, "partitions assigned", partitions=sorted(self._runtime.owned))


class ServiceRuntime:
    """Consumes `inputs`, dispatches by event type, and keeps every guarantee of DESIGN §4."""

    def __init__(
        self,
        settings: Settings,
        registry: SchemaRegistry,
        db: AsyncDatabase,
        *,
        inputs: list[str],
        handlers: dict[str, Handler],
        commands: dict[str, Handler] | None = None,
        timers: dict[str, Handler] | None = None,
        keys: dict[str, KeyOf] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.db = db
        self.inputs = inputs
        self.handlers = handlers
        self.commands = commands or {}
        self.timer_handlers = timers or {}
        self.keys = keys or {}
        self.owned: set[int] = set()
        self.partitions = 1
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self.failed = asyncio.Event()  # set when a runtime loop dies of a bug: the process must exit
        self._tasks: list[asyncio.Task] = []
        self._schemas_refreshed_at = datetime.min.replace(tzinfo=UTC)
        self._writing = KeyedLock()
        self._renewing = asyncio.Lock()
        self._producer_generation = 0
        self.cipher = settings.pii_cipher()

    @property
    def aggregates(self) -> Any:
        return self.db[store.AGGREGATES]

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        await store.ensure_indexes(self.db)
        self.producer = bus.make_producer(self.settings)
        await self.producer.start()
        await bus.publish_schemas(self.producer, self.settings, self.registry)
        self.partitions = len(await self.producer.partitions_for(self.settings.topic(self.inputs[0])))
        topics = [self.settings.topic(t) for t in self.inputs] + [self.settings.retry_topic]
        self.consumer = bus.make_consumer(self.settings, [])
        self.consumer.subscribe(topics, listener=_Ownership(self))
        await self.consumer.start()
        self._tasks = [
            asyncio.create_task(self._consume_loop(), name="consume"),
            asyncio.create_task(self._background_loop(), name="timers-and-relay"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._loop_ended)

    def _loop_ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.critical("runtime loop %s died: %s", task.get_name(), type(exc).__name__,
                         exc_info=(type(exc), exc, exc.__traceback__))
            self.failed.set()

    async def stop(self) -> None:
        """Graceful stop: finish the batch in hand, commit it, close clients."""
        self._stopping.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.consumer:
            await self.consumer.stop()
        if self.producer:
            await self.producer.stop()

    def crash_point(self, point: str) -> None:
        if self.settings.crash_point == point:
            log_fields(log, logging.WARNING, "crash point reached: killing the process", point=point)
            os.kill(os.getpid(), signal.SIGKILL)

    # ---------------------------------------------------------------- commands
    async def execute(self, command_type: str, key: str, command_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Run a command (a gRPC entry point) through the same outbox path as events.

        `command_id` makes retries of one request idempotent. Raises Rejected or HandlerFailed.
        """
        event = Event(command_id, command_type, key, payload, {"correlation_id": key}, "grpc")
        generation = self._producer_generation
        with tracer.start_as_current_span(f"command {command_type}", kind=SpanKind.SERVER):
            doc = await self._apply(event, self.commands[command_type], bus.partition_for(key, self.partitions))
            try:
                await self._flush([doc])
            except KafkaError as exc:
                await self._renew_producer_after(exc, generation)
                raise  # the caller retries; the stored entry goes out then or with the relay
        return doc["state"]

    async def _renew_producer_after(self, exc: BaseException, generation: int) -> None:
        """Replace the producer once if `exc` says the broker refuses its state."""
        if not isinstance(exc, bus.PRODUCER_STATE_ERRORS):
            return
        async with self._renewing:
            if generation == self._producer_generation:
                self.producer = await bus.renewed(self.producer, self.settings)
                self._producer_generation += 1

    async def state_of(self, key: str) -> dict[str, Any] | None:
        doc = await store.retry_transient(self.aggregates.find_one, {"_id": key}, {"state": 1})
        return doc["state"] if doc else None

    async def trace_of(self, key: str) -> dict[str, str]:
        """The trace context that created this aggregate, to keep later requests in its trace."""
        doc = await store.retry_transient(self.aggregates.find_one, {"_id": key}, {"trace": 1})
        return (doc or {}).get("trace") or {}

    # ---------------------------------------------------------------- consuming
    async def _consume_loop(self) -> None:
        assert self.consumer is not None
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                batch = await self.consumer.getmany(timeout_ms=500)
            except KafkaError:
                log.warning("fetch failed; retrying", exc_info=True)
                await asyncio.sleep(backoff)
                continue
            if not batch:
                continue
            generation = self._producer_generation
            try:
                await self._process_batch(batch)
                backoff = 0.2
            except (PyMongoError, KafkaError, OSError) as exc:
                # An outage: nothing was committed, so rewind and try the batch again.
                log_fields(log, logging.WARNING, "store or broker unavailable; pausing", error=type(exc).__name__)
                await self._renew_producer_after(exc, generation)
                bus.rewind(self.consumer, batch)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _process_batch(self, batch: dict[Any, list[ConsumerRecord]]) -> None:
        assert self.consumer is not None
        written: dict[str, dict] = {}  # the latest document per aggregate holds all its unsent entries
        for records in batch.values():
            for record in records:
                doc = await self._process_record(record)
                if doc is not None:
                    written[doc["_id"]] = doc
        await self._flush(list(written.values()))
        self.crash_point("before_commit")
        await self.consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})

    async def _process_record(self, record: ConsumerRecord) -> dict | None:
        headers = list(record.headers or ())
        topic = self.settings.logical_topic(record.topic)
        if record.topic == self.settings.retry_topic:
            # A replay names the topic the record was first consumed from.
            topic = self.settings.logical_topic(dict(headers).get(ORIGIN_TOPIC_HEADER, b"").decode()) or topic
        try:
            event = await self._decode(record, topic)
        except CodecError as exc:
            await self._dead_letter(record, exc)
            return None
        handler = self.handlers.get(event.event_type)
        if handler is None:
            return None  # another consumer's event on a shared topic
        with tracer.start_as_current_span(
            f"handle {event.event_type.rsplit('.', 1)[-1]}",
            context=extract_headers(headers),
            kind=SpanKind.CONSUMER,
            attributes={"tongban.event_id": event.event_id, "tongban.topic": topic, "tongban.key": event.key},
        ):
            try:
                key = self._key_of(event)
                return await self._apply(event, handler, record.partition, key=key)
            except (Rejected, HandlerFailed) as exc:
                await self._dead_letter(record, exc)
                return None

    def _key_of(self, event: Event) -> str:
        """The aggregate an event belongs to: its record key unless the service says otherwise."""
        if event.event_type not in self.keys:
            return event.key
        try:
            return self.keys[event.event_type](event)
        except Exception as exc:
            raise HandlerFailed(type(exc).__name__) from exc

    async def _decode(self, record: ConsumerRecord, topic: str) -> Event:
        if record.value is None:
            raise MalformedRecord("record has no value (tombstone) where an event was expected")
        try:
            full_name, body = self.registry.decode(record.value)
        except UnknownSchema:
            # A newer writer: learn its schema from the schema topic (rate-limited) and retry.
            if now_utc() - self._schemas_refreshed_at < timedelta(seconds=10):
                raise
            self._schemas_refreshed_at = now_utc()
            await bus.learn_schemas(self.settings, self.registry)
            full_name, body = self.registry.decode(record.value)
        envelope = body.pop("envelope", None)
        if not isinstance(envelope, dict):
            raise MalformedRecord(f"{full_name} has no envelope")
        key = record.key.decode("utf-8", "replace") if record.key else envelope["correlation_id"]
        return Event(envelope["event_id"], full_name, key, body, envelope, topic)

    async def _dead_letter(self, record: ConsumerRecord, exc: BaseException) -> None:
        assert self.producer is not None
        reason = _safe_reason(exc)
        headers = [h for h in (record.headers or ()) if not h[0].startswith("tongban.dlq.")] + [
            ("tongban.dlq.origin.topic", record.topic.encode()),
            ("tongban.dlq.origin.partition", str(record.partition).encode()),
            ("tongban.dlq.origin.offset", str(record.offset).encode()),
            ("tongban.dlq.group", self.settings.group.encode()),
            ("tongban.dlq.error.class", type(exc).__name__.encode()),
            ("tongban.dlq.error.message", reason.encode()),
        ]
        await self.producer.send_and_wait(self.settings.dlq_topic, value=record.value, key=record.key, headers=headers)
        log_fields(
            log, logging.WARNING, "dead-lettered", topic=record.topic, partition=record.partition,
            offset=record.offset, error=type(exc).__name__, reason=reason,
        )

    # ---------------------------------------------------------------- the outbox path
    async def _apply(self, event: Event, handler: Handler, partition: int, *, key: str | None = None,
                     fired_timer: str | None = None) -> dict[str, Any]:
        """Apply one event to its aggregate exactly once; returns the stored document."""
        key = key or event.key
        async with self._writing(key):
            return await self._apply_locked(event, handler, partition, key, fired_timer)

    async def _apply_locked(self, event: Event, handler: Handler, partition: int, key: str,
                            fired_timer: str | None) -> dict[str, Any]:
        while True:
            doc = await store.retry_transient(self.aggregates.find_one, {"_id": key})
            if doc is not None and event.event_id in doc["applied"]:
                return doc  # a replay: no new facts, but unsent entries still go out
            state = copy.deepcopy(doc["state"]) if doc else None
            try:
                outcome = await handler(event, state)
                new_doc = self._next_doc(doc, key, event, outcome, partition, fired_timer)
            except Rejected:
                raise
            except Exception as exc:
                raise HandlerFailed(type(exc).__name__) from exc
            try:
                if doc is None:
                    await store.retry_transient(self.aggregates.insert_one, new_doc)
                else:
                    expected = {"_id": key, "v": doc["v"]}
                    result = await store.retry_transient(self.aggregates.replace_one, expected, new_doc)
                    if result.matched_count == 0:
                        continue  # someone else wrote first: read again and re-decide
            except DuplicateKeyError:
                continue
            self.crash_point("after_store_write")
            return new_doc

    def _next_doc(self, doc: dict | None, key: str, event: Event, outcome: Outcome, partition: int,
                  fired_timer: str | None) -> dict[str, Any]:
        doc = doc or {"v": 0, "state": None, "applied": [], "outbox": [], "timers": []}
        replaced = set(outcome.cancel_timers) | {t.name for t in outcome.timers}
        timers = [t for t in doc["timers"] if t["name"] not in replaced and t["id"] != fired_timer]
        # Stored as a sub-document: FerretDB v1 does not store nested arrays.
        trace_headers = {k: v.decode() for k, v in inject_headers()}
        for timer in outcome.timers:
            timers.append({
                "id": f"{key}:{timer.name}:{millis(timer.due_at)}",
                "name": timer.name,
                "due_at": timer.due_at,
                "payload": timer.payload,
                "headers": trace_headers,
            })
        outbox = doc["outbox"] + [self._outbox_entry(event, emit, trace_headers) for emit in outcome.emits]
        return {
            "_id": key,
            "v": doc["v"] + 1,
            "state": outcome.state if outcome.state is not None else doc["state"],
            "applied": (doc["applied"] + [event.event_id])[-APPLIED_LIMIT:],
            "outbox": outbox,
            "pending": bool(outbox),
            "timers": timers,
            "next_due_at": min((t["due_at"] for t in timers), default=None),
            "partition": partition,
            "trace": doc.get("trace") or trace_headers,  # the trace that created the aggregate
            "updated_at": now_utc(),
        }

    def _outbox_entry(self, cause: Event, emit: Emit, headers: dict[str, str]) -> dict[str, Any]:
        event_id, value = encode_event(
            self.registry, emit.event_type, emit.payload, cause_id=cause.event_id, qualifier=emit.qualifier,
            correlation_id=cause.envelope.get("correlation_id") or cause.key,
            source_system=f"tongban-{self.settings.service}", cipher=self.cipher,
        )
        return {"id": event_id, "topic": emit.topic, "key": emit.key, "value": Binary(value), "headers": headers}

    async def _flush(self, docs: list[dict[str, Any]]) -> None:
        """Produce every unsent outbox entry of these documents, then mark them sent."""
        assert self.producer is not None
        sends = []
        for doc in docs:
            for entry in doc["outbox"]:
                sends.append(await self.producer.send(
                    self.settings.topic(entry["topic"]),
                    key=entry["key"].encode(),
                    value=bytes(entry["value"]),
                    headers=[(k, v.encode()) for k, v in entry["headers"].items()],
                ))
        if not sends:
            return
        await asyncio.gather(*sends)
        self.crash_point("after_produce")
        for doc in docs:
            if doc["outbox"]:
                await self._mark_sent(doc["_id"], {entry["id"] for entry in doc["outbox"]})

    async def _mark_sent(self, key: str, sent: set[str]) -> None:
        async with self._writing(key):
            await self._mark_sent_locked(key, sent)

    async def _mark_sent_locked(self, key: str, sent: set[str]) -> None:
        while True:
            doc = await store.retry_transient(self.aggregates.find_one, {"_id": key})
            remaining = [e for e in doc["outbox"] if e["id"] not in sent]
            if len(remaining) == len(doc["outbox"]):
                return
            result = await store.retry_transient(
                self.aggregates.update_one,
                {"_id": key, "v": doc["v"]},
                {"$set": {"outbox": remaining, "pending": bool(remaining), "v": doc["v"] + 1}},
            )
            if result.matched_count:
                return

    # ---------------------------------------------------------------- timers and relay
    async def _background_loop(self) -> None:
        while not self._stopping.is_set():
            generation = self._producer_generation
            try:
                if self.owned:
                    await self._fire_due_timers()
                    await self._relay_unsent()
            except (PyMongoError, KafkaError, OSError) as exc:
                log_fields(log, logging.WARNING, "timers/relay paused", error=type(exc).__name__)
                await self._renew_producer_after(exc, generation)
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=1.0)
            except TimeoutError:
                pass

    async def _fire_due_timers(self) -> None:
        now = now_utc()
        cursor = self.aggregates.find(
            {"next_due_at": {"$lte": now}, "partition": {"$in": sorted(self.owned)}}, limit=100
        )
        for doc in await cursor.to_list():
            for timer in doc["timers"]:
                if timer["due_at"] > now:
                    continue
                handler = self.timer_handlers.get(timer["name"])
                event = Event(f"timer:{timer['id']}", TIMER_FIRED, doc["_id"], {
                    "timer_id": timer["id"], "name": timer["name"], "payload": timer["payload"],
                }, {"correlation_id": doc["_id"]}, "timer")
                headers = [(k, v.encode()) for k, v in timer["headers"].items()]
                with tracer.start_as_current_span(f"timer {timer['name']}", context=extract_headers(headers)):
                    if handler is None:
                        handler = _drop_unknown_timer
                    try:
                        written = await self._apply(event, handler, doc["partition"], fired_timer=timer["id"])
                    except (Rejected, HandlerFailed) as exc:
                        log_fields(log, logging.ERROR, "timer handler failed; timer kept",
                                   timer=timer["name"], key=doc["_id"], reason=_safe_reason(exc))
                        continue
                    await self._flush([written])

    async def _relay_unsent(self) -> None:
        """Resend outbox entries a crashed writer left behind."""
        cursor = self.aggregates.find({
            "pending": True, "updated_at": {"$lte": now_utc() - RELAY_AGE}, "partition": {"$in": sorted(self.owned)},
        }, limit=100)
        docs = await cursor.to_list()
        if docs:
            log_fields(log, logging.INFO, "relaying unsent outbox entries", aggregates=len(docs))
            await self._flush(docs)


async def _drop_unknown_timer(event: Event, state: dict | None) -> Outcome:
    log_fields(log, logging.ERROR, "no handler for timer; dropped", timer=event.payload["name"])
    return Outcome()
