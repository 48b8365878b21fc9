"""The runtime's guarantees in milliseconds: the real core (tongban.runtime.core) over the
in-memory store, transactions and archive. The same rules run over the real broker in
tests/integration/test_runtime.py and tests/e2e."""

import asyncio
import base64
import dataclasses
import hashlib
import io
import json
import logging
import os
import signal
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import fastavro
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pymongo.errors import AutoReconnect

import tongban.runtime.core as core
from tests.pii_parties import KEYS, cipher
from tongban.bus import partition_for
from tongban.codec import MAGIC, MalformedRecord, SchemaRegistry, UnknownSchema
from tongban.config import Settings, load_settings
from tongban.events import derive_event_id, encode_event, millis, now_utc
from tongban.handling import TIMER_FIRED, Emit, Event, Outcome, Rejected, Timer, Wiring
from tongban.pii import V2, Keyring, PiiError, new_key_line
from tongban.runtime.core import (
    DEDUPE,
    ENTRY,
    EVICTION_ROUND_MS,
    KEEP_FINISHED,
    MAX_KEPT_HEADER_BYTES,
    MAX_KEY_BYTES,
    MAX_RECORD_BYTES,
    ORIGIN_TOPIC_HEADER,
    POSITION,
    Context,
    Entry,
    Refused,
    Task,
    command_record,
    safe_reason,
    unpack,
)
from tongban.runtime.memory import MemoryArchive, MemoryTransactions
from tongban.runtime.state import MemoryStore

REGISTRY = SchemaRegistry.load()
NS = "tu-"
# A service with commands holds a key of its own: its requests are sealed for itself.
SETTINGS = load_settings("routing", {"TONGBAN_NAMESPACE": NS, "TONGBAN_PII_KEYS": new_key_line(),
                                    "TONGBAN_PII_PARTY": "routing"})
# The stand-in input is an ApplicationUnroutable, so it comes on the topic that carries it
# (infra/topics.toml `events`: the runtime dead-letters a type its topic does not carry).
INPUT = "tongban.application.routed"
OUTPUT = "tongban.application.routed"
RECEIVED_TOPIC = "tongban.application.received"
UNROUTABLE = "tongban.application.ApplicationUnroutable"
RECEIVED = "tongban.application.ApplicationReceived"
PARTITIONS = 3
KEY = "TBKEY0"
PARTITION = partition_for(KEY, PARTITIONS)
NEIGHBOUR = next(k for k in (f"TBK{n}" for n in range(100)) if partition_for(k, PARTITIONS) == PARTITION and k != KEY)
ELSEWHERE = next(k for k in (f"TBK{n}" for n in range(100)) if partition_for(k, PARTITIONS) != PARTITION)
# A producer's W3C trace context, as another service would put it in the record headers.
TRACE_ID, PARENT_SPAN_ID = "ab" * 16, "cd" * 8
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple = ()


def unroutable(key: str, reason: str = "r") -> dict:
    return {"application_id": key, "matter_code": "KSTB-MED-01", "reason": reason}


def value_of(event_type: str, body: dict, cause: str, key: str = KEY) -> bytes:
    return encode_event(REGISTRY, event_type, body, cause_id=cause, correlation_id=key, source_system="test")[1]


def received_value(key: str = KEY, cause: str = "c1") -> bytes:
    """An ApplicationUnroutable standing in for any input event: small and without personal data."""
    return value_of(UNROUTABLE, unroutable(key), cause, key)


class Harness:
    """One task of a service whose handlers count events and can be told to misbehave."""

    def __init__(self, handlers=None, commands=None, timers=None, keys=None, known_topics=None,
                 registry=REGISTRY, settings=SETTINGS) -> None:
        self.calls: list[Event] = []
        wiring = Wiring("routing", inputs=[INPUT], handlers=handlers or {UNROUTABLE: self.count},
                        commands=commands or {}, timers=timers or {}, keys=keys or {})
        self.archive = MemoryArchive()
        self.bus = MemoryTransactions(settings.changelog_topic)
        self.known = known_topics or {NS + OUTPUT, settings.dlq_topic, settings.repartition_topic}
        self.woken: list[str] = []  # the keys readers were told about, commit by commit
        self.ctx = Context(settings, registry, wiring, self.archive, PARTITIONS, self._has_topic, self._learn,
                           self.woken.extend)
        self.store = MemoryStore()
        self.task = Task(self.ctx, PARTITION, self.store, self.bus)
        self.offset = 0
        self.learned: list[bytes] = []

    async def _has_topic(self, topic: str) -> bool:
        return topic in self.known

    async def _learn(self, fingerprint: bytes) -> None:
        self.learned.append(fingerprint)

    async def count(self, event: Event, state: dict | None) -> Outcome:
        self.calls.append(event)
        n = (state or {}).get("n", 0) + 1
        return Outcome(state={"n": n}, emits=[Emit(OUTPUT, UNROUTABLE, event.key, unroutable(event.key, f"n={n}"))])

    def rec(self, value, key: bytes | None = KEY.encode(), topic: str = NS + INPUT, headers=(), partition=PARTITION):
        self.offset += 1
        return Rec(topic, partition, self.offset, key, value, tuple(headers))

    def rec_of(self, key: str, cause: str):
        """An input for aggregate `key`, keyed by it."""
        return self.rec(received_value(key, cause), key=key.encode())

    async def feed(self, *records) -> None:
        await self.task.process(list(records))

    def dead_letters(self) -> list:
        return self.bus.on(SETTINGS.dlq_topic)

    def outputs(self) -> list:
        return self.bus.on(NS + OUTPUT)

    def state(self, key: str = KEY):
        raw = self.store.get(ENTRY + key.encode())
        return unpack(raw).get("state") if raw else None


def header(record, name: str) -> str:
    return dict(record.headers)[name].decode()


def envelope_of(value: bytes) -> dict:
    return REGISTRY.decode(value)[1]["envelope"]


def entry(h: Harness, key: str = KEY) -> dict:
    return unpack(h.store.get(ENTRY + key.encode()))


class CrashPointReachedError(Exception):
    pass


@pytest.fixture(autouse=True)
def kills(monkeypatch):
    """A crash point kills the process with SIGKILL (the e2e crash tests rely on it); here
    `os.kill` records the call and raises instead, so a crash point reached by mistake fails
    the test rather than killing pytest."""
    calls = []

    def kill(pid, sig):
        calls.append((pid, sig))
        raise CrashPointReachedError(pid, sig)

    monkeypatch.setattr(os, "kill", kill)
    return calls


@pytest.fixture
def spans(monkeypatch):
    """The runtime's tracer, recording into memory (services export to a file or a collector)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(core, "tracer", provider.get_tracer("tongban.runtime"))
    return exporter


def traceparent_of(span) -> str:
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-01"


# ----------------------------------------------------------------------------- exactly once
async def test_readers_waiting_on_a_key_are_told_after_its_commit_and_not_after_an_abort():
    h = Harness()
    h.bus.fail_next = ConnectionError("broker away")
    with pytest.raises(ConnectionError):
        await h.feed(h.rec(received_value()))
    assert h.woken == [], "nothing committed: a reader woken now would read the old state"
    await h.feed(h.rec(received_value(cause="c2")))
    assert h.woken == [KEY]
    assert h.state() == {"n": 1}


async def test_an_event_its_outputs_its_state_and_its_input_position_commit_together():
    h = Harness()
    record = h.rec(received_value())
    await h.feed(record)
    assert h.bus.commits == 1
    assert len(h.outputs()) == 1
    assert h.state() == {"n": 1}
    changelog = {r.key: r.value for r in h.bus.on(SETTINGS.changelog_topic)}
    assert ENTRY + KEY.encode() in changelog
    assert changelog[POSITION + record.topic.encode()] == str(record.offset + 1).encode()
    assert all(r.partition == PARTITION for r in h.bus.on(SETTINGS.changelog_topic))
    assert h.task.position(record.topic) == record.offset + 1


async def test_a_new_owner_reads_on_from_the_position_its_restored_state_holds():
    h = Harness()
    first, second = h.rec(received_value(cause="c1")), h.rec(received_value(cause="c2"))
    await h.feed(first)
    await h.feed(second)
    changelog = h.bus.on(SETTINGS.changelog_topic)
    owner = Task(h.ctx, PARTITION, MemoryStore(), h.bus)
    assert owner.position(first.topic) is None, "nothing restored yet: the group's offset applies"
    owner.restore({r.key: r.value for r in changelog}, len(changelog))
    assert owner.position(first.topic) == second.offset + 1
    assert owner.position(NS + RECEIVED_TOPIC) is None, "an input never read has no position"


async def test_an_input_without_a_position_is_handled_from_its_first_record():
    h = Harness()
    first = Rec(NS + INPUT, PARTITION, 0, KEY.encode(), received_value())
    await h.feed(first)
    assert len(h.calls) == 1
    assert h.task.position(first.topic) == 1


async def test_records_before_the_restored_position_are_not_handled_again():
    """A fetch that raced a take-over can start at the group's offsets, behind the state; the
    position, not only the dedupe marks (swept after the replay horizon), keeps them out."""
    h = Harness()
    first, second = h.rec(received_value(cause="c1")), h.rec(received_value(cause="c2"))
    await h.feed(first, second)
    assert await h.task.sweep(now_utc() + h.ctx.horizon + timedelta(minutes=1)) == 2
    changelog = h.bus.on(SETTINGS.changelog_topic)
    owner = Task(h.ctx, PARTITION, MemoryStore(), MemoryTransactions(SETTINGS.changelog_topic))
    owner.restore({r.key: r.value for r in changelog}, len(changelog))
    third = h.rec(received_value(cause="c3"))
    await owner.process([first, second, third])
    assert len(h.calls) == 3, "only the record after the position reached the handler"
    assert owner.transactions.commits == 1
    assert (await owner.read(KEY)).state == {"n": 3}


async def test_a_batch_with_no_effect_costs_no_transaction_and_the_next_one_stores_its_position():
    h = Harness()
    value = received_value(cause="c1")
    await h.feed(h.rec(value))
    duplicate = h.rec(value)
    await h.feed(duplicate)
    assert h.bus.commits == 1, "a duplicate changes nothing, so reading it again after a crash could not either"
    assert h.task.position(duplicate.topic) == duplicate.offset + 1, "lag tools see it read"
    assert h.store.get(POSITION + duplicate.topic.encode()) == str(duplicate.offset).encode()
    # the same event again, replayed from the dead-letter topic through the retry topic
    elsewhere = h.rec(value, topic=SETTINGS.retry_topic, headers=[(ORIGIN_TOPIC_HEADER, (NS + INPUT).encode())])
    await h.feed(elsewhere)
    assert h.bus.commits == 1
    later = h.rec(received_value(cause="c3"))
    await h.feed(later)
    assert h.bus.commits == 2
    assert h.store.get(POSITION + later.topic.encode()) == str(later.offset + 1).encode()
    assert h.store.get(POSITION + elsewhere.topic.encode()) == str(elsewhere.offset + 1).encode()


async def test_each_batch_is_one_transaction_and_a_task_with_nothing_to_do_commits_nothing():
    h = Harness()
    await h.feed(h.rec(received_value(cause="c1")), h.rec_of(NEIGHBOUR, "c2"))
    await h.feed(h.rec(received_value(cause="c3")))
    assert h.bus.commits == 2
    assert await h.task.fire_due(millis(now_utc()) + 3_600_000) == 0
    assert await h.task.sweep(now_utc()) == 0
    assert h.bus.commits == 2, "an idle task writes nothing to the broker"


async def test_the_store_checkpoint_is_the_changelog_offset_its_last_commit_reached():
    """A restart replays the changelog from the checkpoint only, so it must be exactly where
    the committed changelog records end; a batch that writes none leaves it where it was."""
    h = Harness()
    await h.feed(h.rec(received_value(cause="c1")))
    # the entry, its dedupe mark and the input position
    assert h.store.checkpoint == len(h.bus.on(SETTINGS.changelog_topic)) == 3
    await h.feed(h.rec(b"not avro"))  # a dead letter and the position
    assert h.store.checkpoint == len(h.bus.on(SETTINGS.changelog_topic)) == 4
    assert await h.task.fire_due(millis(now_utc())) == 0  # writes nothing at all
    assert h.store.checkpoint == 4
    await h.feed(h.rec(received_value(cause="c2")), h.rec_of(NEIGHBOUR, "c3"))
    assert h.store.checkpoint == len(h.bus.on(SETTINGS.changelog_topic)) == 9


async def test_a_new_owner_restores_the_changelog_and_carries_on_where_the_old_one_stopped():
    h = Harness()
    await h.feed(h.rec(received_value(cause="c1")))
    changelog = h.bus.on(SETTINGS.changelog_topic)
    store = MemoryStore()
    owner = Task(h.ctx, PARTITION, store, h.bus)
    owner.restore({r.key: r.value for r in changelog}, len(changelog))
    assert store.checkpoint == len(changelog)
    assert (await owner.read(KEY)).state == {"n": 1}
    await owner.process([h.rec(received_value(cause="c1")), h.rec(received_value(cause="c2"))])
    assert len(h.calls) == 2, "the replay of c1 is recognised by the restored dedupe mark"
    assert (await owner.read(KEY)).state == {"n": 2}


async def test_a_replayed_event_is_applied_once_and_emits_nothing_new():
    h = Harness()
    value = received_value()
    await h.feed(h.rec(value), h.rec(value))  # twice in one batch
    await h.feed(h.rec(value))  # and again after the commit
    assert len(h.calls) == 1
    assert len(h.outputs()) == 1
    assert h.state() == {"n": 1}


async def test_events_for_one_aggregate_in_one_batch_each_see_the_state_the_previous_one_left():
    h = Harness()
    await h.feed(h.rec(received_value(cause="c1")), h.rec(received_value(cause="c2")))
    assert h.state() == {"n": 2}
    assert [REGISTRY.decode(o.value)[1]["reason"] for o in h.outputs()] == ["n=1", "n=2"]


async def test_a_failed_handlers_changes_to_its_state_are_not_seen_by_the_next_record():
    async def collect(event, state):
        items = (state or {"items": []})["items"]
        items.append(event.payload["reason"])  # changes the state it was given, in place
        if event.payload["reason"] == "bad":
            raise Rejected("bad item")
        return Outcome(state={"items": items})

    h = Harness(handlers={UNROUTABLE: collect})
    await h.feed(*(h.rec(value_of(UNROUTABLE, unroutable(KEY, reason), f"c-{reason}"))
                   for reason in ("first", "bad", "last")))
    assert h.state() == {"items": ["first", "last"]}
    assert len(h.dead_letters()) == 1


async def test_an_aborted_transaction_changes_nothing_and_the_retry_emits_the_same_event_ids():
    h = Harness()
    record = h.rec(received_value())
    h.bus.fail_next = OSError("broker gone")
    with pytest.raises(OSError, match="broker gone"):
        await h.feed(record)
    assert h.state() is None, "the local store takes nothing from an aborted transaction"
    assert h.task.position(record.topic) is None, "no position is committed before the record is handled"
    await h.feed(record)
    assert h.state() == {"n": 1}
    first, = h.outputs()
    assert envelope_of(first.value)["causation_id"] == envelope_of(record.value)["event_id"]


async def test_an_archive_outage_pauses_the_batch_without_committing_anything():
    h = Harness()

    async def down(doc_id):
        raise AutoReconnect("store down")

    finished = Entry(None, [], {}, finished=True, archived=1, finished_at=now_utc())
    h.store.write({ENTRY + KEY.encode(): finished.pack()}, 0)
    h.archive.load = down
    with pytest.raises(AutoReconnect):
        await h.feed(h.rec(received_value()))
    assert h.bus.commits == 0
    assert h.task.position(NS + INPUT) is None


async def test_a_dedupe_mark_says_when_and_for_which_aggregate_and_expires_after_the_replay_horizon_only():
    h = Harness()
    record = h.rec(received_value(cause="old"))
    await h.feed(record)
    mark = unpack(h.store.get(DEDUPE + envelope_of(record.value)["event_id"].encode()))
    assert set(mark) == {"at", "key"}
    assert mark["key"] == KEY
    assert await h.task.sweep(mark["at"] + h.ctx.horizon) == 0, "kept up to the horizon itself"
    assert await h.task.sweep(mark["at"] + h.ctx.horizon + timedelta(milliseconds=1)) == 1
    assert list(h.store.items(DEDUPE)) == []
    tombstones = [r for r in h.bus.on(SETTINGS.changelog_topic) if r.value is None]
    assert [r.key[:2] for r in tombstones] == [DEDUPE]


async def test_a_stopped_task_handles_fires_and_sweeps_nothing():
    """A fenced task (another instance owns the partition now) must not commit anything more."""
    h = Harness(handlers={UNROUTABLE: scheduler(0)}, timers={"deadline": scheduler(0)})
    await h.feed(h.rec(received_value(cause="c1")))
    h.task.active = False
    await h.feed(h.rec(received_value(cause="c2")))
    assert await h.task.fire_due(millis(now_utc()) + 60_000) == 0
    assert await h.task.sweep(now_utc() + h.ctx.horizon + timedelta(days=1)) == 0
    assert h.bus.commits == 1


# ----------------------------------------------------------------------------- poison never stops a task
POISON = {
    "garbage": dict(value=b"not avro"),
    "tombstone with a null key": dict(value=None, key=None),
    "unknown fingerprint": dict(value=bytes.fromhex("c301") + b"\x13\x37" * 4 + b"\x02"),
}


@pytest.mark.parametrize("case", POISON)
async def test_poison_is_dead_lettered_with_its_origin_and_valid_records_in_the_batch_still_flow(case):
    h = Harness()
    poison = h.rec(**POISON[case])
    await h.feed(poison, h.rec(received_value()))
    dead, = h.dead_letters()
    assert header(dead, "tongban.dlq.origin.offset") == str(poison.offset)
    assert header(dead, "tongban.dlq.origin.topic") == NS + INPUT
    assert header(dead, "tongban.dlq.origin.partition") == str(PARTITION)
    assert header(dead, "tongban.dlq.group") == SETTINGS.group
    assert header(dead, "tongban.dlq.error.class") in ("MalformedRecord", "UnknownSchema")
    assert dead.key == poison.key, "the original key, so an operator can replay it as it came"
    assert dead.value == (poison.value if poison.value is not None else b"")
    assert len(h.outputs()) == 1
    assert h.state() == {"n": 1}


async def test_a_tombstone_is_dead_lettered_saying_it_has_no_value():
    h = Harness()
    await h.feed(h.rec(None))
    assert header(h.dead_letters()[0], "tongban.dlq.error.message") == \
        "record has no value (tombstone) where an event was expected"


async def test_an_unknown_schema_is_looked_up_on_the_schema_topic_before_it_is_dead_lettered():
    h = Harness()
    value = POISON["unknown fingerprint"]["value"]
    await h.feed(h.rec(value))
    assert h.learned == [SchemaRegistry.fingerprint_of(value)]
    assert header(h.dead_letters()[0], "tongban.dlq.error.class") == UnknownSchema.__name__


async def test_a_null_traceparent_header_is_ignored_not_fatal():
    h = Harness()
    await h.feed(h.rec(received_value(), headers=[("traceparent", None), (None, b"x"), ("ok", b"1")]))
    assert h.state() == {"n": 1}
    assert not h.dead_letters()


async def test_a_header_that_is_not_a_name_and_value_is_dropped_and_the_headers_after_it_are_kept():
    h = Harness()
    await h.feed(h.rec(b"not avro", headers=[("broken",), 42, ("kept", b"1")]))
    dead, = h.dead_letters()
    assert [(k, v) for k, v in dead.headers if not k.startswith("tongban.dlq.")] == [("kept", b"1")]


@pytest.mark.parametrize("origin", [None, b"\xff\xfe", b""])
async def test_a_retry_record_without_a_readable_origin_is_dead_lettered(origin):
    h = Harness()
    await h.feed(h.rec(received_value(), topic=SETTINGS.retry_topic, headers=[(ORIGIN_TOPIC_HEADER, origin)]))
    dead, = h.dead_letters()
    assert header(dead, "tongban.dlq.error.class") == MalformedRecord.__name__
    assert ORIGIN_TOPIC_HEADER in header(dead, "tongban.dlq.error.message")


async def test_a_retry_record_is_handled_as_if_read_from_its_origin():
    h = Harness()
    await h.feed(h.rec(received_value(), topic=SETTINGS.retry_topic,
                       headers=[(ORIGIN_TOPIC_HEADER, (NS + INPUT).encode())]))
    assert h.calls[0].topic == INPUT
    assert h.state() == {"n": 1}


async def test_a_writer_schema_whose_envelope_has_no_event_id_is_dead_lettered():
    h = Harness()
    record = REGISTRY.encode(UNROUTABLE, {"envelope": {
        "event_id": "", "event_type": UNROUTABLE, "schema_version": 1, "occurred_at": 0, "source_system": "x",
        "source_partner": None, "correlation_id": KEY, "causation_id": "x"}, **unroutable(KEY)})
    await h.feed(h.rec(record), h.rec(received_value()))
    assert "event id" in header(h.dead_letters()[0], "tongban.dlq.error.message")
    assert h.state() == {"n": 1}


async def test_a_writer_schema_without_an_envelope_is_dead_lettered_as_malformed():
    registry = SchemaRegistry.load()
    stray = registry.add_writer_schema(json.dumps({"type": "record", "name": "Stray", "namespace": "tongban.test",
                                                   "fields": [{"name": "note", "type": "string"}]}))
    frame = io.BytesIO(MAGIC + stray.fingerprint)
    frame.seek(0, io.SEEK_END)
    fastavro.schemaless_writer(frame, stray.parsed, {"note": "n"})
    h = Harness(registry=registry)
    await h.feed(h.rec(frame.getvalue()), h.rec(received_value()))
    dead, = h.dead_letters()
    assert header(dead, "tongban.dlq.error.class") == "MalformedRecord"
    assert header(dead, "tongban.dlq.error.message") == "tongban.test.Stray has no envelope with an event id"
    assert h.state() == {"n": 1}


async def test_a_record_without_a_key_is_handled_under_its_correlation_id():
    h = Harness()
    await h.feed(h.rec(received_value(), key=None))
    assert [e.key for e in h.calls] == [KEY]
    assert h.state() == {"n": 1}


async def test_the_record_key_and_not_the_correlation_id_names_the_aggregate():
    h = Harness()
    value = encode_event(REGISTRY, UNROUTABLE, unroutable(KEY), cause_id="c1", correlation_id=ELSEWHERE,
                         source_system="test")[1]
    await h.feed(h.rec(value))
    assert [e.key for e in h.calls] == [KEY]
    assert h.state() == {"n": 1}


async def test_a_record_with_neither_a_key_nor_a_correlation_id_is_dead_lettered():
    h = Harness()
    value = encode_event(REGISTRY, UNROUTABLE, unroutable(KEY), cause_id="c1", correlation_id="",
                         source_system="test")[1]
    await h.feed(h.rec(value, key=None))
    assert header(h.dead_letters()[0], "tongban.dlq.error.message") == \
        "record has neither a key nor a correlation id"
    assert h.calls == []


async def test_a_record_key_that_is_not_utf8_is_dead_lettered():
    h = Harness()
    await h.feed(h.rec(received_value(), key=b"\xff\xfeTB"))
    dead, = h.dead_letters()
    assert header(dead, "tongban.dlq.error.message") == "record key is not UTF-8"
    assert dead.key == b"\xff\xfeTB"


async def test_a_rejected_event_is_dead_lettered_with_the_handlers_reason():
    async def reject(event, state):
        raise Rejected("decision from a partner the work is not assigned to")

    h = Harness(handlers={UNROUTABLE: reject})
    await h.feed(h.rec(received_value()))
    dead, = h.dead_letters()
    assert header(dead, "tongban.dlq.error.class") == "Rejected"
    assert header(dead, "tongban.dlq.error.message") == "decision from a partner the work is not assigned to"
    assert h.state() is None


async def test_a_reason_is_cut_to_2000_bytes():
    async def verbose(event, state):
        raise Rejected("r" * 3000)

    h = Harness(handlers={UNROUTABLE: verbose})
    await h.feed(h.rec(received_value()))
    assert header(h.dead_letters()[0], "tongban.dlq.error.message") == "r" * 2000


def _fails_deep_inside():
    raise ValueError("张三 110101199003077777")


async def test_a_handler_bug_is_dead_lettered_without_the_exception_text_naming_the_line_that_raised():
    async def bug(event, state):
        _fails_deep_inside()

    h = Harness(handlers={UNROUTABLE: bug})
    await h.feed(h.rec(received_value()))
    reason = header(h.dead_letters()[0], "tongban.dlq.error.message")
    assert reason == f"ValueError at test_runtime_core.py:{_fails_deep_inside.__code__.co_firstlineno + 1}"
    assert header(h.dead_letters()[0], "tongban.dlq.error.class") == "HandlerFailed"


async def test_an_error_raised_inside_a_library_is_located_in_the_library_without_its_text():
    async def parses(event, state):
        return Outcome(state={"id": str(uuid.UUID(event.payload["reason"]))})

    h = Harness(handlers={UNROUTABLE: parses})
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "张三 110101199003077777"), "c1")))
    reason = header(h.dead_letters()[0], "tongban.dlq.error.message")
    assert reason.startswith("ValueError at uuid.py:"), "the library's line, not the handler's"
    assert "张三" not in reason
    assert "1101" not in reason


def test_a_reason_is_our_own_message_or_else_only_the_class_and_where_it_was_raised():
    assert safe_reason(Rejected("no such partner")) == "no such partner"
    assert safe_reason(Refused("output topic x does not exist")) == "output topic x does not exist"
    assert safe_reason(MalformedRecord("bad magic")) == "bad magic"
    assert safe_reason(OSError("张三")) == "OSError", "never raised: no place to name"


async def test_an_output_too_large_for_a_record_dead_letters_its_input():
    async def huge(event, state):
        body = unroutable(event.key, "x" * 1_100_000)
        return Outcome(state={"x": 1}, emits=[Emit(OUTPUT, UNROUTABLE, event.key, body)])

    h = Harness(handlers={UNROUTABLE: huge})
    await h.feed(h.rec(received_value()))
    assert "at most" in header(h.dead_letters()[0], "tongban.dlq.error.message")
    assert h.outputs() == [], "nothing of a refused input is sent"
    assert h.state() is None, "nothing of a refused input is kept"


async def test_an_output_of_exactly_the_record_limit_is_sent_and_one_byte_more_is_refused():
    size = {"reason": 999_000}

    async def sized(event, state):
        body = unroutable(event.key, "x" * size["reason"])
        return Outcome(state={"x": 1}, emits=[Emit(OUTPUT, UNROUTABLE, event.key, body)])

    async def run() -> Harness:
        h = Harness(handlers={UNROUTABLE: sized})
        await h.feed(h.rec(received_value()))
        return h

    size["reason"] += MAX_RECORD_BYTES - (await run()).outputs()[0].size
    fits = await run()
    assert fits.outputs()[0].size == MAX_RECORD_BYTES
    assert fits.dead_letters() == []
    size["reason"] += 1
    over = await run()
    assert over.outputs() == []
    assert header(over.dead_letters()[0], "tongban.dlq.error.message") == \
        f"{UNROUTABLE} would be {MAX_RECORD_BYTES + 1} bytes; a record may be at most {MAX_RECORD_BYTES}"


async def test_an_output_to_an_undeclared_topic_dead_letters_its_input():
    async def astray(event, state):
        return Outcome(emits=[Emit("tongban.partner.999999.assignments", UNROUTABLE, event.key, unroutable(KEY))])

    h = Harness(handlers={UNROUTABLE: astray})
    await h.feed(h.rec(received_value()))
    assert "999999" in header(h.dead_letters()[0], "tongban.dlq.error.message")


async def test_a_dead_letter_too_large_to_write_is_reduced_to_a_digest():
    h = Harness()
    big = b"\x00" * (MAX_RECORD_BYTES - 100)
    await h.feed(h.rec(big, headers=[("h", b"v" * 20_000)]))
    dead, = h.dead_letters()
    assert dead.size <= MAX_RECORD_BYTES
    assert dead.value == f"sha256={hashlib.sha256(big).hexdigest()} size={len(big)}".encode()
    assert dead.key == KEY.encode()
    assert header(dead, "tongban.dlq.headers.dropped") == "1"
    assert header(dead, "tongban.dlq.reduced") == "value replaced by its digest"


async def test_a_dead_letter_of_exactly_the_record_limit_keeps_its_value():
    async def dead_letter_of(length: int):
        h = Harness()
        await h.feed(h.rec(b"\x00" * length))
        return h.dead_letters()[0]

    length = 1000 + MAX_RECORD_BYTES - (await dead_letter_of(1000)).size
    fits = await dead_letter_of(length)
    assert fits.size == MAX_RECORD_BYTES
    assert fits.value == b"\x00" * length
    over = await dead_letter_of(length + 1)
    assert over.value.startswith(b"sha256=")


async def test_original_headers_up_to_16_kib_are_kept_in_a_dead_letter_and_more_are_dropped():
    h = Harness()
    at_limit = ("h", b"v" * (MAX_KEPT_HEADER_BYTES - 1))
    await h.feed(h.rec(b"not avro", headers=[at_limit]))
    assert at_limit in h.dead_letters()[0].headers
    over = Harness()
    await over.feed(over.rec(b"not avro", headers=[("h", b"v" * MAX_KEPT_HEADER_BYTES)]))
    dead, = over.dead_letters()
    assert header(dead, "tongban.dlq.headers.dropped") == "1"
    assert "h" not in dict(dead.headers)


async def test_a_key_over_1_kib_is_cut_in_its_dead_letter_and_named_by_its_digest():
    h = Harness()
    whole, long = b"k" * MAX_KEY_BYTES, b"k" * (MAX_KEY_BYTES + 1)
    await h.feed(h.rec(b"not avro", key=whole), h.rec(b"not avro", key=long))
    kept, cut = h.dead_letters()
    assert kept.key == whole
    assert "tongban.dlq.key.digest" not in dict(kept.headers)
    assert cut.key == long[:64]
    assert header(cut, "tongban.dlq.key.digest") == f"sha256={hashlib.sha256(long).hexdigest()} size={len(long)}"


async def test_a_dead_letter_replayed_and_failing_again_carries_only_its_latest_failure():
    h = Harness()
    earlier = [("tongban.dlq.origin.offset", b"7"), ("tongban.dlq.error.message", b"an older reason"),
               ("traceparent", TRACEPARENT.encode())]
    poison = h.rec(b"not avro", headers=earlier)
    await h.feed(poison)
    dead, = h.dead_letters()
    names = [name for name, _ in dead.headers]
    assert names.count("tongban.dlq.origin.offset") == 1
    assert names.count("tongban.dlq.error.message") == 1
    assert header(dead, "tongban.dlq.origin.offset") == str(poison.offset)
    assert ("traceparent", TRACEPARENT.encode()) in dead.headers


async def test_every_dead_letter_is_logged_with_where_it_came_from_and_why_but_not_its_content(caplog):
    caplog.set_level(logging.WARNING, logger="tongban.runtime")
    h = Harness()
    poison = h.rec(b"\x00\x00 applicant " + "张三".encode())
    await h.feed(poison)
    logged, = [r for r in caplog.records if r.getMessage() == "dead-lettered"]
    assert logged.levelno == logging.WARNING
    assert logged.fields == {"topic": NS + INPUT, "partition": PARTITION, "offset": poison.offset,
                             "error": "MalformedRecord", "reason": "bad magic: not Avro single-object encoding"}


async def test_a_failing_key_function_dead_letters_the_record():
    h = Harness(keys={UNROUTABLE: lambda event: event.payload["no such field"]})
    await h.feed(h.rec(received_value()))
    assert header(h.dead_letters()[0], "tongban.dlq.error.class") == "HandlerFailed"


# ----------------------------------------------------------------------------- outputs
async def test_an_output_has_its_emits_key_its_causes_correlation_id_and_names_its_cause():
    async def notify(event, state):
        return Outcome(state={"x": 1}, emits=[Emit(OUTPUT, UNROUTABLE, ELSEWHERE, unroutable(ELSEWHERE))])

    h = Harness(handlers={UNROUTABLE: notify})
    value = encode_event(REGISTRY, UNROUTABLE, unroutable(KEY), cause_id="c1", correlation_id="CASE-7",
                         source_system="test")[1]
    await h.feed(h.rec(value))
    out, = h.outputs()
    assert out.key == ELSEWHERE.encode()
    envelope = envelope_of(out.value)
    assert envelope["correlation_id"] == "CASE-7"
    assert envelope["causation_id"] == envelope_of(value)["event_id"]
    assert envelope["source_system"] == "tongban-routing"


async def test_several_events_of_one_type_from_one_cause_are_told_apart_by_their_qualifier():
    async def fan_out(event, state):
        return Outcome(state={"x": 1}, emits=[Emit(OUTPUT, UNROUTABLE, event.key, unroutable(event.key, q), qualifier=q)
                                              for q in ("first", "second")])

    h = Harness(handlers={UNROUTABLE: fan_out})
    value = received_value()
    await h.feed(h.rec(value))
    cause = envelope_of(value)["event_id"]
    assert [envelope_of(o.value)["event_id"] for o in h.outputs()] == \
        [derive_event_id(cause, UNROUTABLE, "first"), derive_event_id(cause, UNROUTABLE, "second")]


def application(key: str = KEY, name: str = "张三") -> dict:
    return {"application_id": key, "matter_code": "KSTB-MKT-01", "channel": "WINDOW",
            "receiving_division": "430103", "home_division": "440300",
            "applicant": {"kind": "PERSON", "name": name, "id_number": "110101199003077777", "phone": None},
            "materials": [], "delivery_method": "POST", "postal_address": "长沙市天心区",
            "submitted_at": datetime(2026, 1, 5, tzinfo=UTC)}


def as_intake() -> Settings:
    """Settings of a process that seals for verification and delivery, as intake does."""
    keyring = Keyring.of("intake", KEYS["intake"], seals_for={p: KEYS[p] for p in ("verification", "delivery")})
    return dataclasses.replace(SETTINGS, pii_keys=keyring)


async def test_personal_data_in_an_output_is_sealed_for_the_parties_its_topic_names():
    async def publish(event, state):
        return Outcome(state={"x": 1}, emits=[Emit(RECEIVED_TOPIC, RECEIVED, event.key, application())])

    h = Harness(handlers={UNROUTABLE: publish}, settings=as_intake(), known_topics={NS + RECEIVED_TOPIC})
    await h.feed(h.rec(received_value()))
    out, = h.bus.on(NS + RECEIVED_TOPIC)
    assert "张三".encode() not in out.value
    assert b"110101199003077777" not in out.value
    applicant = REGISTRY.decode(out.value)[1]["applicant"]
    assert applicant["name"].startswith(V2)
    where = {"record": RECEIVED, "path": "applicant.name", "subject": KEY}
    assert cipher("verification").open(applicant["name"], **where) == "张三"
    assert cipher("delivery").open(applicant["name"], **where) == "张三"
    for other in ("intake", "420000", "ems"):
        with pytest.raises(PiiError, match="sealed for verification, delivery"):
            cipher(other).open(applicant["name"], **where)


async def test_personal_data_for_a_topic_that_names_no_recipients_is_refused_not_sent():
    async def leak(event, state):
        return Outcome(state={"x": 1}, emits=[Emit(OUTPUT, RECEIVED, event.key, application())])

    h = Harness(handlers={UNROUTABLE: leak}, settings=as_intake())
    await h.feed(h.rec(received_value()))
    assert h.outputs() == []
    reason = header(h.dead_letters()[0], "tongban.dlq.error.message")
    assert "applicant.name" in reason
    assert "unsealed" in reason
    assert "张三" not in reason


async def test_a_service_without_a_key_cannot_send_personal_data():
    async def publish(event, state):
        return Outcome(state={"x": 1}, emits=[Emit(RECEIVED_TOPIC, RECEIVED, event.key, application())])

    keyless = dataclasses.replace(SETTINGS, pii_keys=Keyring())
    h = Harness(handlers={UNROUTABLE: publish}, settings=keyless, known_topics={NS + RECEIVED_TOPIC})
    await h.feed(h.rec(received_value()))
    assert h.bus.on(NS + RECEIVED_TOPIC) == []
    assert "holds no key" in header(h.dead_letters()[0], "tongban.dlq.error.message")


async def test_personal_data_arriving_in_the_clear_is_dead_lettered_not_handled():
    h = Harness()
    h = Harness(handlers={RECEIVED: h.count})
    plain = REGISTRY.encode(RECEIVED, {"envelope": {
        "event_id": "e1", "event_type": RECEIVED, "schema_version": REGISTRY.latest(RECEIVED).version,
        "occurred_at": now_utc(), "source_system": "x",
        "source_partner": None, "correlation_id": KEY, "causation_id": None}, **application()})
    await h.feed(h.rec(plain, topic=NS + RECEIVED_TOPIC))
    assert h.calls == []
    reason = header(h.dead_letters()[0], "tongban.dlq.error.message")
    assert reason == (f"{RECEIVED}: personal field(s) applicant.name, applicant.id_number, postal_address "
                      "arrived unsealed")
    dead = h.dead_letters()[0]
    assert "张三".encode() not in dead.value
    assert dead.value == f"sha256={hashlib.sha256(plain).hexdigest()} size={len(plain)}".encode()
    assert dead.key == KEY.encode(), "the original key, so an operator can find the application"
    assert header(dead, "tongban.dlq.reduced") == "value held personal data in the clear"


async def test_a_command_sealed_for_another_aggregate_does_not_open_there():
    applied = []

    async def submit(event, state):
        applied.append(event)
        return Outcome(state={"x": 1})

    h = Harness(commands={"intake.Submit": submit})
    sealed = REGISTRY.decode(command_record(h.ctx, "intake.Submit", NEIGHBOUR, "submit:n", {"name": "张三"}).value)[1]
    forged = REGISTRY.encode(core.COMMAND, {**sealed, "key": KEY, "envelope": {**sealed["envelope"],
                                                                              "correlation_id": KEY}})
    await h.feed(h.rec(forged, topic=SETTINGS.commands_topic))
    assert applied == []
    assert "another field or application" in header(h.dead_letters()[0], "tongban.dlq.error.message")


# ----------------------------------------------------------------------------- ownership
async def test_an_aggregate_owned_by_another_partition_is_forwarded_to_its_owner():
    other = ELSEWHERE
    h = Harness(keys={UNROUTABLE: lambda event: other})
    record = h.rec(received_value(), headers=[("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")])
    await h.feed(record)
    forwarded, = h.bus.on(SETTINGS.repartition_topic)
    assert forwarded.partition == partition_for(other, PARTITIONS)
    assert forwarded.key == other.encode()
    assert forwarded.value == record.value
    assert header(forwarded, ORIGIN_TOPIC_HEADER) == NS + INPUT
    assert "traceparent" in dict(forwarded.headers)
    assert h.calls == []

    owner = Harness(keys={UNROUTABLE: lambda event: other})
    owner.task.partition = forwarded.partition
    await owner.feed(Rec(forwarded.topic, forwarded.partition, 1, forwarded.key, forwarded.value,
                         tuple(forwarded.headers)))
    assert owner.calls[0].topic == INPUT
    assert owner.calls[0].key == other


async def test_a_forwarded_replay_names_its_origin_once():
    h = Harness(keys={UNROUTABLE: lambda event: ELSEWHERE})
    await h.feed(h.rec(received_value(), topic=SETTINGS.retry_topic,
                       headers=[(ORIGIN_TOPIC_HEADER, (NS + INPUT).encode())]))
    forwarded, = h.bus.on(SETTINGS.repartition_topic)
    assert [v for k, v in forwarded.headers if k == ORIGIN_TOPIC_HEADER] == [(NS + INPUT).encode()]


async def test_a_key_function_names_the_aggregate_from_the_event_which_its_handler_then_gets_whole():
    matter = "KSTB-MED-01"
    h = Harness(keys={UNROUTABLE: lambda event: event.payload["matter_code"]})
    h.task.partition = partition_for(matter, PARTITIONS)
    value = value_of(UNROUTABLE, unroutable(KEY, "why"), "c1")
    await h.feed(h.rec(value, partition=h.task.partition))
    event, = h.calls
    assert event.key == matter
    assert event.payload == unroutable(KEY, "why")
    assert event.envelope == envelope_of(value)
    assert event.event_id == envelope_of(value)["event_id"]
    assert h.state(matter) == {"n": 1}


# ----------------------------------------------------------------------------- finished work
async def finish(event, state):
    return Outcome(state={"done": event.payload["reason"]}, finished=True)


async def finish_seen(event, state):
    """Every reason seen, finished at each."""
    return Outcome(state={"seen": [*(state or {}).get("seen", []), event.payload["reason"]]}, finished=True)


async def progress(event, state):
    """Every reason seen, finished at each but a rating (which revives finished work)."""
    seen = [*(state or {}).get("seen", []), event.payload["reason"]]
    return Outcome(state={"seen": seen}, finished=event.payload["reason"] != "rating")


async def test_finished_work_is_archived_and_leaves_only_a_marker_in_the_hot_state():
    h = Harness(handlers={UNROUTABLE: finish})
    await h.feed(h.rec(received_value()))
    assert h.archive.docs[KEY]["state"] == {"done": "r"}
    hot = unpack(h.store.get(ENTRY + KEY.encode()))
    assert hot["finished"]
    assert hot["state"] == {"done": "r"}, "kept a while for late events from other topics"
    loads = h.archive.loads
    assert (await h.task.read(KEY)).state == {"done": "r"}
    assert h.archive.loads == loads, "a recently finished aggregate is read without the archive"
    assert await h.task.fire_due(millis(now_utc() + KEEP_FINISHED) + EVICTION_ROUND_MS) == 1
    hot = unpack(h.store.get(ENTRY + KEY.encode()))
    assert hot["finished"]
    assert hot["state"] is None, "then it leaves the hot state"
    assert (await h.task.read(KEY)).state == {"done": "r"}
    assert h.archive.loads == loads + 1


async def test_finished_work_leaves_the_hot_state_in_minute_rounds_one_transaction_a_round(monkeypatch):
    grid = -(-millis(now_utc()) // EVICTION_ROUND_MS) * EVICTION_ROUND_MS  # a point of the grid
    first = datetime.fromtimestamp(grid / 1000, UTC) - KEEP_FINISHED + timedelta(seconds=1)
    h = Harness(handlers={UNROUTABLE: finish})
    monkeypatch.setattr(core, "now_utc", lambda: first)
    await h.feed(h.rec(received_value(cause="c1")))
    monkeypatch.setattr(core, "now_utc", lambda: first + timedelta(seconds=30))
    await h.feed(h.rec_of(NEIGHBOUR, "c2"))
    assert h.task.schedule.next_due() == grid + EVICTION_ROUND_MS, "the next grid point after its time is up"
    commits = h.bus.commits
    assert await h.task.fire_due(grid + 1000) == 0, "not one by one as each one's time is up"
    assert await h.task.fire_due(grid + EVICTION_ROUND_MS) == 2
    assert h.bus.commits == commits + 1, "one transaction for the whole round"
    assert entry(h)["state"] is None


async def test_an_aggregate_revived_by_a_late_event_keeps_its_state_when_its_old_eviction_falls_due():
    h = Harness(handlers={UNROUTABLE: progress})
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "delivered"), "c1")))
    due = h.task.schedule.next_due()
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "rating"), "c2")))  # unfinished again
    await h.task.fire_due(due)
    assert h.state() == {"seen": ["delivered", "rating"]}, "unfinished work never leaves the hot state"


async def test_a_second_finish_is_not_evicted_by_the_first_ones_round(monkeypatch):
    first = now_utc()
    h = Harness(handlers={UNROUTABLE: finish_seen})
    monkeypatch.setattr(core, "now_utc", lambda: first)
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "a"), "c1")))
    due = h.task.schedule.next_due()
    monkeypatch.setattr(core, "now_utc", lambda: first + timedelta(minutes=2))
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "b"), "c2")))  # finished again, as version 2
    await h.task.fire_due(due)
    assert entry(h)["state"] == {"seen": ["a", "b"]}, "version 2 keeps its own ten minutes"


async def test_evicted_work_keeps_its_trace_and_finish_time_in_the_hot_state(spans):
    h = Harness(handlers={UNROUTABLE: finish})
    await h.feed(h.rec(received_value(), headers=[("traceparent", TRACEPARENT.encode())]))
    kept = entry(h)
    await h.task.fire_due(millis(now_utc() + KEEP_FINISHED) + EVICTION_ROUND_MS)
    marker = entry(h)
    assert marker["state"] is None
    assert marker["trace"] == kept["trace"] != {}, "later requests still join the application's trace"
    assert marker["finished_at"] == kept["finished_at"], "the sweep forgets the marker by it"


async def test_a_restarted_task_still_evicts_finished_work_it_had_not_evicted():
    h = Harness(handlers={UNROUTABLE: finish})
    await h.feed(h.rec(received_value()))
    restarted = Task(h.ctx, PARTITION, h.store, h.bus)
    restarted.rebuild_schedule()
    assert await restarted.fire_due(millis(now_utc() + KEEP_FINISHED) + EVICTION_ROUND_MS) == 1
    assert unpack(h.store.get(ENTRY + KEY.encode()))["state"] is None


async def test_an_archived_document_names_its_aggregate_version_service_trace_and_finish_time(spans):
    h = Harness(handlers={UNROUTABLE: finish})
    before = now_utc()
    await h.feed(h.rec(received_value(), headers=[("traceparent", TRACEPARENT.encode())]))
    span, = spans.get_finished_spans()
    doc = h.archive.docs[KEY]
    assert set(doc) == {"_id", "key", "version", "service", "state", "trace", "finished_at"}
    assert (doc["_id"], doc["key"], doc["version"], doc["service"]) == (KEY, KEY, 1, "routing")
    assert doc["trace"] == {"traceparent": traceparent_of(span)}
    assert before <= doc["finished_at"] <= now_utc()


async def test_a_late_event_revives_finished_work_from_the_archive_and_it_is_archived_again():
    h = Harness(handlers={UNROUTABLE: finish_seen})
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "first"), "c1")))
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "late"), "c2")))
    assert h.archive.docs[f"{KEY}~2"]["state"] == {"seen": ["first", "late"]}
    assert h.archive.docs[KEY]["state"] == {"seen": ["first"]}, "the archive is append-only"


async def test_a_late_event_that_changes_finished_work_without_finishing_it_keeps_it_hot_until_it_finishes_again():
    h = Harness(handlers={UNROUTABLE: progress})
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "delivered"), "c1")))
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "rating"), "c2")))
    assert h.state() == {"seen": ["delivered", "rating"]}
    assert not entry(h).get("finished")
    assert list(h.archive.docs) == [KEY]
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "closed"), "c3")))
    assert h.archive.docs[f"{KEY}~2"]["state"] == {"seen": ["delivered", "rating", "closed"]}
    assert entry(h)["finished"]
    assert entry(h)["archived"] == 2


async def test_finished_work_is_loaded_from_the_archive_once_per_batch():
    h = Harness(handlers={UNROUTABLE: finish_seen})
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "a"), "c1")))
    await h.task.fire_due(millis(now_utc() + KEEP_FINISHED) + EVICTION_ROUND_MS)  # it has left the hot state
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "b"), "c2")),
                 h.rec(value_of(UNROUTABLE, unroutable(KEY, "c"), "c3")))
    assert h.archive.loads == 1, "the second late event finds the first one's state in the batch"
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "d"), "c4")))
    assert h.archive.loads == 1, "finished again, its state is hot again for a while"
    assert h.archive.docs[f"{KEY}~3"]["state"] == {"seen": ["a", "b", "c"]}


async def test_an_input_that_changes_nothing_on_finished_work_writes_nothing_and_keeps_its_finish_time():
    async def same(event, state):
        return Outcome(state=state or {"done": True}, finished=True)

    h = Harness(handlers={UNROUTABLE: same})
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY), "c1")))
    marker = h.store.get(ENTRY + KEY.encode())
    inserted = []
    insert = h.archive.insert

    async def counted(docs):
        inserted.append(docs)
        await insert(docs)

    h.archive.insert = counted
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY), "c2")))
    assert inserted == []
    assert list(h.archive.docs) == [KEY]
    assert h.store.get(ENTRY + KEY.encode()) == marker


async def test_an_input_that_leaves_unfinished_work_unchanged_does_not_finish_it():
    async def nothing(event, state):
        return Outcome()

    h = Harness()
    await h.feed(h.rec(received_value(cause="c1")))
    h.ctx.wiring.handlers[UNROUTABLE] = nothing
    await h.feed(h.rec(received_value(cause="c2")))
    assert h.archive.docs == {}
    assert h.state() == {"n": 1}


async def test_finished_markers_are_forgotten_after_the_replay_horizon():
    h = Harness(handlers={UNROUTABLE: finish})
    await h.feed(h.rec(received_value()))
    await h.task.sweep(now_utc() + h.ctx.horizon + timedelta(minutes=1))
    assert h.store.get(ENTRY + KEY.encode()) is None
    assert KEY in h.archive.docs


async def test_a_finished_marker_is_kept_up_to_the_horizon_itself():
    h = Harness(handlers={UNROUTABLE: finish})
    await h.feed(h.rec(received_value()))
    finished_at = entry(h)["finished_at"]
    await h.task.sweep(now_utc())
    await h.task.sweep(finished_at + h.ctx.horizon)
    assert h.store.get(ENTRY + KEY.encode()) is not None
    await h.task.sweep(finished_at + h.ctx.horizon + timedelta(milliseconds=1))
    assert h.store.get(ENTRY + KEY.encode()) is None


async def test_unfinished_work_and_finished_work_with_a_pending_timer_are_never_swept():
    async def finish_with_reminder(event, state):
        return Outcome(state={"done": True}, finished=True, timers=[Timer("reminder", now_utc() + timedelta(days=400))])

    h = Harness(handlers={UNROUTABLE: finish_with_reminder})
    await h.feed(h.rec(received_value()))
    h.ctx.wiring.handlers[UNROUTABLE] = h.count
    await h.feed(h.rec_of(NEIGHBOUR, "c2"))
    await h.task.sweep(now_utc() + h.ctx.horizon + timedelta(days=1))
    assert entry(h)["finished"]
    assert len(entry(h)["timers"]) == 1
    assert h.state(NEIGHBOUR) == {"n": 1}


# ----------------------------------------------------------------------------- timers
NO_PAYLOAD = object()


def scheduler(seconds: float, name: str = "deadline", payload=NO_PAYLOAD):
    async def schedule(event, state):
        return Outcome(state={"set": True}, timers=[Timer(name, now_utc() + timedelta(seconds=seconds),
                                                          {"n": 1} if payload is NO_PAYLOAD else payload)])

    return schedule


def recorder(fired: list):
    async def record(event, state):
        fired.append(event)
        return Outcome(state={**(state or {}), event.payload["name"]: "fired"})

    return record


async def test_a_timer_fires_once_when_due_and_not_before():
    fired = []

    async def on_deadline(event, state):
        fired.append(event)
        return Outcome(state={**state, "fired": True},
                       emits=[Emit(OUTPUT, UNROUTABLE, event.key, unroutable(event.key, "late"))])

    h = Harness(handlers={UNROUTABLE: scheduler(60)}, timers={"deadline": on_deadline})
    await h.feed(h.rec(received_value()))
    timer_id = entry(h)["timers"][0]["id"]
    now = millis(now_utc())
    assert await h.task.fire_due(now) == 0
    assert await h.task.fire_due(now + 61_000) == 1
    assert await h.task.fire_due(now + 122_000) == 0
    event, = fired
    assert (event.event_id, event.event_type, event.key, event.topic) == \
        (f"timer:{timer_id}", TIMER_FIRED, KEY, "timer")
    assert event.payload == {"timer_id": timer_id, "name": "deadline", "payload": {"n": 1}}
    assert event.envelope == {"correlation_id": KEY}
    assert h.state() == {"set": True, "fired": True}
    assert entry(h)["timers"] == []
    out, = h.outputs()
    assert envelope_of(out.value)["correlation_id"] == KEY
    assert envelope_of(out.value)["causation_id"] == f"timer:{timer_id}"


async def test_a_timer_of_an_aborted_batch_is_never_scheduled():
    h = Harness(handlers={UNROUTABLE: scheduler(0)}, timers={"deadline": scheduler(0)})
    h.bus.fail_next = OSError("broker gone")
    with pytest.raises(OSError, match="broker gone"):
        await h.feed(h.rec(received_value()))
    assert len(h.task.schedule) == 0


async def test_timers_firing_in_an_aborted_transaction_fire_on_the_next_look():
    fired = []
    h = Harness(handlers={UNROUTABLE: scheduler(0)}, timers={"deadline": recorder(fired)})
    await h.feed(h.rec(received_value()))
    timer_id = entry(h)["timers"][0]["id"]
    now = millis(now_utc()) + 1000
    h.bus.fail_next = OSError("broker gone")
    with pytest.raises(OSError, match="broker gone"):
        await h.task.fire_due(now)
    assert h.state() == {"set": True}
    assert h.task.schedule.next_due() == now
    assert await h.task.fire_due(now) == 1
    assert [(e.key, e.payload["timer_id"]) for e in fired] == [(KEY, timer_id)] * 2
    assert h.state() == {"set": True, "deadline": "fired"}


async def test_a_replaced_timer_fires_only_in_its_latest_form():
    fired = []

    async def on_deadline(event, state):
        fired.append(event.payload["timer_id"])
        return Outcome()

    h = Harness(handlers={UNROUTABLE: scheduler(10)}, timers={"deadline": on_deadline})
    await h.feed(h.rec(received_value(cause="a")))
    h.ctx.wiring.handlers[UNROUTABLE] = scheduler(20)
    await h.feed(h.rec(received_value(cause="b")))
    await h.task.fire_due(millis(now_utc()) + 30_000)
    assert len(fired) == 1
    assert fired[0].startswith(f"{KEY}:deadline:")


async def test_setting_one_timer_keeps_the_aggregates_other_timers():
    fired = []

    async def set_named(event, state):
        name = event.payload["reason"]
        return Outcome(state={**(state or {}), name: "set"}, timers=[Timer(name, now_utc() + timedelta(seconds=5))])

    h = Harness(handlers={UNROUTABLE: set_named}, timers={"reminder": recorder(fired), "deadline": recorder(fired)})
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "reminder"), "c1")))
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "deadline"), "c2")))
    assert await h.task.fire_due(millis(now_utc()) + 10_000) == 2
    assert sorted(e.payload["name"] for e in fired) == ["deadline", "reminder"]


async def test_timers_set_by_several_aggregates_in_one_batch_are_all_scheduled():
    h = Harness(handlers={UNROUTABLE: scheduler(5)})
    await h.feed(h.rec(received_value(cause="c1")), h.rec_of(NEIGHBOUR, "c2"))
    assert len(h.task.schedule) == 2


async def test_timers_are_rebuilt_from_the_store_after_a_restart():
    fired = []
    h = Harness(handlers={UNROUTABLE: scheduler(5)}, timers={"deadline": recorder(fired)})
    await h.feed(h.rec(received_value()))
    timer_id = entry(h)["timers"][0]["id"]
    restarted = Task(h.ctx, PARTITION, h.store, h.bus)
    restarted.rebuild_schedule()
    assert len(restarted.schedule) == 1
    assert restarted.schedule.next_due() == h.task.schedule.next_due()
    assert await restarted.fire_due(millis(now_utc()) + 10_000) == 1
    assert [(e.key, e.payload["timer_id"]) for e in fired] == [(KEY, timer_id)]


async def test_a_failing_timer_is_dead_lettered_as_a_replayable_timer_event_and_dropped():
    async def broken(event, state):
        raise KeyError("x")

    h = Harness(handlers={UNROUTABLE: scheduler(0)}, timers={"deadline": broken})
    await h.feed(h.rec(received_value()))
    timer_id = entry(h)["timers"][0]["id"]
    await h.task.fire_due(millis(now_utc()) + 1000)
    dead, = h.dead_letters()
    name, body = REGISTRY.decode(dead.value)
    assert name == TIMER_FIRED
    assert body["name"] == "deadline"
    assert body["key"] == KEY
    assert body["timer_id"] == timer_id
    assert body["envelope"]["causation_id"] == f"timer:{timer_id}"
    assert dead.key == KEY.encode()
    assert header(dead, "tongban.dlq.origin.topic") == NS + "timer"
    assert header(dead, "tongban.dlq.origin.partition") == str(PARTITION)
    assert header(dead, "tongban.dlq.origin.offset") == "-1"
    assert entry(h)["timers"] == []
    assert await h.task.fire_due(millis(now_utc()) + 60_000) == 0, "no loop on a failing timer"


async def test_a_timer_whose_handler_is_gone_is_dead_lettered_and_dropped():
    h = Harness(handlers={UNROUTABLE: scheduler(0)}, timers={})
    await h.feed(h.rec(received_value()))
    await h.task.fire_due(millis(now_utc()) + 1000)
    dead, = h.dead_letters()
    assert header(dead, "tongban.dlq.error.class") == "MalformedRecord"
    assert header(dead, "tongban.dlq.error.message") == "no handler for timer deadline"
    assert entry(h)["timers"] == []
    assert h.state() == {"set": True}


async def test_a_failing_timer_on_finished_work_leaves_it_finished_as_it_was():
    async def finish_with_reminder(event, state):
        return Outcome(state={"done": True}, finished=True, timers=[Timer("reminder", now_utc())])

    async def broken(event, state):
        raise KeyError("x")

    h = Harness(handlers={UNROUTABLE: finish_with_reminder}, timers={"reminder": broken})
    await h.feed(h.rec(received_value(), headers=[("traceparent", TRACEPARENT.encode())]))
    before = entry(h)
    await h.task.fire_due(millis(now_utc()) + 1000)
    assert len(h.dead_letters()) == 1
    assert entry(h) == {**before, "timers": []}
    assert (await h.task.read(KEY)).state == {"done": True}


async def test_when_two_timers_of_one_aggregate_fall_due_together_and_the_first_fails_the_second_still_fires():
    fired = []

    async def set_both(event, state):
        now = now_utc()
        return Outcome(state={"set": True}, timers=[Timer("first", now), Timer("second", now + timedelta(seconds=1))])

    async def broken(event, state):
        raise KeyError("x")

    h = Harness(handlers={UNROUTABLE: set_both}, timers={"first": broken, "second": recorder(fired)})
    await h.feed(h.rec(received_value()))
    assert await h.task.fire_due(millis(now_utc()) + 5000) == 2
    assert [e.payload["name"] for e in fired] == ["second"]
    assert len(h.dead_letters()) == 1
    assert h.state() == {"set": True, "second": "fired"}
    assert entry(h)["timers"] == []


@pytest.mark.parametrize(("payload", "replayed"), [
    ({"n": 1}, {"n": 1}),
    (None, None),
    ({"at": datetime(2026, 1, 5, 9, 30, tzinfo=UTC)}, {"at": "2026-01-05 09:30:00+00:00"}),
], ids=["payload", "no payload", "a date in the payload"])
async def test_a_dead_lettered_timer_replayed_through_the_retry_topic_fires_its_handler_once_more(payload, replayed):
    async def broken(event, state):
        raise KeyError("x")

    h = Harness(handlers={UNROUTABLE: scheduler(0, payload=payload)}, timers={"deadline": broken})
    await h.feed(h.rec(received_value()))
    timer_id = entry(h)["timers"][0]["id"]
    await h.task.fire_due(millis(now_utc()) + 1000)
    dead, = h.dead_letters()

    fired = []
    h.ctx.wiring.timers["deadline"] = recorder(fired)  # the operator fixed the handler and replays
    replay = [(ORIGIN_TOPIC_HEADER, header(dead, "tongban.dlq.origin.topic").encode())]
    await h.feed(h.rec(dead.value, key=dead.key, topic=SETTINGS.retry_topic, headers=replay))
    await h.feed(h.rec(dead.value, key=dead.key, topic=SETTINGS.retry_topic, headers=replay))
    event, = fired
    envelope = envelope_of(dead.value)
    assert (event.event_id, event.event_type, event.key, event.topic) == \
        (envelope["event_id"], TIMER_FIRED, KEY, "timer")
    assert event.payload == {"timer_id": timer_id, "name": "deadline", "payload": replayed}
    assert event.envelope == envelope
    assert h.state() == {"set": True, "deadline": "fired"}


async def test_a_replayed_timer_that_no_handler_knows_is_dead_lettered_again():
    async def broken(event, state):
        raise KeyError("x")

    h = Harness(handlers={UNROUTABLE: scheduler(0)}, timers={"deadline": broken})
    await h.feed(h.rec(received_value()))
    await h.task.fire_due(millis(now_utc()) + 1000)
    dead, = h.dead_letters()
    del h.ctx.wiring.timers["deadline"]
    await h.feed(h.rec(dead.value, key=dead.key, topic=SETTINGS.retry_topic,
                       headers=[(ORIGIN_TOPIC_HEADER, header(dead, "tongban.dlq.origin.topic").encode())]))
    again = h.dead_letters()[1]
    assert header(again, "tongban.dlq.error.message") == "unknown timer deadline"
    assert header(again, "tongban.dlq.origin.topic") == SETTINGS.retry_topic


# ----------------------------------------------------------------------------- commands
async def test_a_command_is_sealed_on_the_bus_and_applied_once_by_the_owner():
    applied = []

    async def submit(event, state):
        applied.append(event)
        return Outcome(state={"name": event.payload["name"], "at": event.payload["at"]})

    h = Harness(commands={"intake.Submit": submit})
    at = now_utc().replace(microsecond=0)
    command = command_record(h.ctx, "intake.Submit", KEY, "submit:1", {"name": "张三", "at": at})
    assert "张三".encode() not in command.value
    assert base64.b64encode("张三".encode()) not in command.value
    name, body = REGISTRY.decode(command.value)
    assert name == core.COMMAND
    assert body["body"].startswith(V2), "the whole request is sealed"
    assert body["envelope"]["event_id"] == body["envelope"]["causation_id"] == "submit:1"
    assert (command.topic, command.key, command.partition) == (SETTINGS.commands_topic, KEY.encode(), PARTITION)
    record = h.rec(command.value, topic=SETTINGS.commands_topic, headers=command.headers)
    await h.feed(record, h.rec(command.value, topic=SETTINGS.commands_topic))  # a client retry
    assert len(applied) == 1
    assert applied[0].event_id == "submit:1"
    assert applied[0].topic == "command"
    assert (applied[0].event_type, applied[0].key) == ("intake.Submit", KEY)
    assert applied[0].envelope == body["envelope"]
    assert h.state() == {"name": "张三", "at": at}


async def test_a_command_is_taken_only_from_the_command_topic_and_the_command_topic_takes_only_commands():
    h = Harness(commands={"intake.Submit": scheduler(1)})
    command = command_record(h.ctx, "intake.Submit", KEY, "submit:1", {})
    await h.feed(h.rec(command.value, topic=NS + INPUT), h.rec(received_value(), topic=SETTINGS.commands_topic))
    assert [header(d, "tongban.dlq.error.message") for d in h.dead_letters()] == \
        ["commands come only on the service's own command topic, and only commands do"] * 2
    assert h.state() is None


async def test_an_unknown_command_is_dead_lettered():
    h = Harness(commands={"intake.Submit": scheduler(1)})
    command = command_record(h.ctx, "intake.Withdraw", KEY, "withdraw:1", {})
    await h.feed(h.rec(command.value, topic=SETTINGS.commands_topic))
    assert header(h.dead_letters()[0], "tongban.dlq.error.message") == "unknown command intake.Withdraw"


async def test_a_command_too_large_for_a_record_is_refused_before_it_is_written():
    h = Harness()
    with pytest.raises(Exception, match="at most"):
        command_record(h.ctx, "intake.Submit", KEY, "submit:big", {"materials": ["m" * 100] * 20_000})


def test_a_command_of_exactly_the_record_limit_is_accepted_and_a_larger_one_refused():
    """The sealed body grows in steps of 5 or 6 bytes, a longer key shifts the record by 4 and
    a longer command id by 2, so some key, id and body reach the limit exactly; the search
    keeps the test independent of the encoding's details."""
    h = Harness()

    def size(key: str, length: int, command_id: str = "submit:1") -> int:
        try:
            return command_record(h.ctx, "intake.Submit", key, command_id, {"m": "x" * length}).size
        except Refused as refused:
            return int(str(refused).split(" bytes")[0].rsplit(" ", 1)[1])

    low, high = 0, MAX_RECORD_BYTES
    while low < high:  # the longest body that fits, for the first key
        middle = (low + high + 1) // 2
        low, high = (middle, high) if size(KEY, middle) <= MAX_RECORD_BYTES else (low, middle - 1)
    for key in (KEY + "1" * n for n in range(12)):
        for command_id in ("submit:1", "submit:12"):
            for length in range(low - 32, low + 8):
                if size(key, length, command_id) == MAX_RECORD_BYTES:
                    assert command_record(h.ctx, "intake.Submit", key, command_id, {"m": "x" * length})
                    with pytest.raises(Refused, match=f"at most {MAX_RECORD_BYTES} are accepted"):
                        command_record(h.ctx, "intake.Submit", key, command_id, {"m": "x" * (length + 8)})
                    return
    pytest.fail("no key and body reach the limit exactly")


# ----------------------------------------------------------------------------- telemetry
async def test_a_record_is_handled_in_a_consumer_span_that_continues_the_producers_trace(spans):
    h = Harness()
    record = h.rec(received_value(cause="c1"), headers=[("traceparent", TRACEPARENT.encode())])
    await h.feed(record)
    span, = spans.get_finished_spans()
    assert span.name == "handle ApplicationUnroutable"
    assert span.kind == SpanKind.CONSUMER
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert f"{span.parent.span_id:016x}" == PARENT_SPAN_ID
    event_id = envelope_of(record.value)["event_id"]
    assert dict(span.attributes) == {"tongban.event_id": event_id, "tongban.topic": INPUT, "tongban.key": KEY,
                                     "messaging.system": "kafka", "messaging.operation.type": "process",
                                     "messaging.destination.name": INPUT,
                                     "messaging.consumer.group.name": SETTINGS.group,
                                     "messaging.destination.partition.id": str(PARTITION),
                                     "messaging.message.id": event_id}
    out, = h.outputs()
    assert header(out, "traceparent") == traceparent_of(span), "outputs carry the handler's context"


async def test_an_aggregate_remembers_the_trace_that_created_it(spans):
    """`trace_of` (reads from the API) keeps later requests in the application's trace."""
    h = Harness()
    await h.feed(h.rec(received_value(cause="c1"), headers=[("traceparent", TRACEPARENT.encode())]))
    another_trace = f"00-{'12' * 16}-{'34' * 8}-01"
    await h.feed(h.rec(received_value(cause="c2"), headers=[("traceparent", another_trace.encode())]))
    created, later = spans.get_finished_spans()
    assert (await h.task.read(KEY)).trace == {"traceparent": traceparent_of(created)}
    assert header(h.outputs()[1], "traceparent") == traceparent_of(later)


async def test_an_input_that_leaves_no_state_leaves_no_trace(spans):
    async def note(event, state):
        return Outcome(timers=[Timer("reminder", now_utc() + timedelta(days=1))])

    h = Harness(handlers={UNROUTABLE: note})
    await h.feed(h.rec(received_value(), headers=[("traceparent", TRACEPARENT.encode())]))
    assert entry(h)["state"] is None
    assert entry(h)["trace"] == {}


async def test_a_timer_fires_in_the_trace_of_the_event_that_set_it(spans):
    h = Harness(handlers={UNROUTABLE: scheduler(0)}, timers={"deadline": recorder([])})
    await h.feed(h.rec(received_value(), headers=[("traceparent", TRACEPARENT.encode())]))
    timer_id = entry(h)["timers"][0]["id"]
    await h.task.fire_due(millis(now_utc()) + 1000)
    setting, firing = spans.get_finished_spans()
    assert firing.name == "handle TimerFired"
    assert firing.context.trace_id == setting.context.trace_id
    assert firing.parent.span_id == setting.context.span_id
    assert dict(firing.attributes) == {"tongban.event_id": f"timer:{timer_id}", "tongban.topic": "timer",
                                       "tongban.key": KEY}


async def test_a_command_span_is_named_after_the_command_whatever_its_name(spans):
    async def submit(event, state):
        return Outcome(state={"submitted": True})

    h = Harness(commands={"Submit": submit})
    command = command_record(h.ctx, "Submit", KEY, "submit:1", {})
    await h.feed(h.rec(command.value, topic=SETTINGS.commands_topic))
    span, = spans.get_finished_spans()
    assert span.name == "handle Submit"
    assert dict(span.attributes)["tongban.topic"] == "command"
    assert h.state() == {"submitted": True}


async def test_a_trace_context_that_cannot_be_read_never_stops_a_record(spans, monkeypatch):
    def unreadable(headers):
        raise ValueError("malformed tracestate")

    monkeypatch.setattr(core, "extract_headers", unreadable)
    h = Harness()
    await h.feed(h.rec(received_value(), headers=[("traceparent", TRACEPARENT.encode())]))
    assert h.state() == {"n": 1}
    assert h.dead_letters() == []
    span, = spans.get_finished_spans()
    assert span.parent is None, "the record starts a trace of its own"


# ----------------------------------------------------------------------------- crash points
async def test_the_after_handler_crash_point_kills_the_process_before_anything_is_archived_or_committed(kills, caplog):
    caplog.set_level(logging.WARNING, logger="tongban.runtime")
    h = Harness(handlers={UNROUTABLE: finish}, settings=dataclasses.replace(SETTINGS, crash_point="after_handler"))
    with pytest.raises(CrashPointReachedError):
        await h.feed(h.rec(received_value()))
    assert kills == [(os.getpid(), signal.SIGKILL)]
    assert h.archive.docs == {}
    assert h.bus.commits == 0
    assert h.store.get(ENTRY + KEY.encode()) is None
    logged, = [r for r in caplog.records if r.getMessage() == "crash point reached: killing the process"]
    assert logged.levelno == logging.WARNING
    assert logged.fields == {"point": "after_handler"}


async def test_a_crash_point_set_for_another_step_does_not_stop_the_core(kills):
    h = Harness(settings=dataclasses.replace(SETTINGS, crash_point="after_produce"))
    await h.feed(h.rec(received_value()))
    assert kills == []
    assert h.state() == {"n": 1}


async def test_a_business_fact_resent_under_a_new_event_id_is_applied_once():
    h = Harness()
    h.ctx.wiring.business_ids[UNROUTABLE] = lambda event: event.payload["reason"]
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "rating-7"), "first-send")))
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "rating-7"), "resent-by-the-partner")))
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "rating-8"), "another-fact")))
    assert [e.payload["reason"] for e in h.calls] == ["rating-7", "rating-8"]
    assert h.state() == {"n": 2}


async def test_an_event_without_its_business_id_is_dead_lettered():
    h = Harness()
    h.ctx.wiring.business_ids[UNROUTABLE] = lambda event: event.payload["no such field"]
    await h.feed(h.rec(received_value()))
    assert header(h.dead_letters()[0], "tongban.dlq.error.class") == "HandlerFailed"
    assert header(h.dead_letters()[0], "tongban.dlq.error.message").startswith("KeyError at test_runtime_core.py:"), \
        "the reason names where the business id could not be read"
    assert h.state() is None


async def test_a_finished_aggregate_revived_while_the_sweep_scans_is_kept(monkeypatch):
    monkeypatch.setattr("tongban.runtime.core.SWEEP_CHUNK", 1)  # the scan yields after every entry

    async def finish_or_revive(event, state):
        return Outcome(state={"seen": event.payload["reason"]}, finished=event.payload["reason"] == "done")

    h = Harness(handlers={UNROUTABLE: finish_or_revive})
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "done"), "c1")))
    later = now_utc() + h.ctx.horizon + timedelta(minutes=1)
    scan = h.task.sweep(later)
    revived = h.task.process([h.rec(value_of(UNROUTABLE, unroutable(KEY, "late"), "c2"))])
    await asyncio.gather(scan, revived)  # the scan yields; the late event lands in between
    assert h.state() == {"seen": "late"}, "the sweep forgot an aggregate a late event had revived"
