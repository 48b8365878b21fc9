"""The runtime's guarantees in milliseconds: the real core (tongban.runtime.core) over the
in-memory store, transactions and archive. The same rules run over the real broker in
tests/integration/test_runtime.py and tests/e2e."""

import base64
import hashlib
from dataclasses import dataclass
from datetime import timedelta

import pytest
from aiokafka.structs import TopicPartition
from pymongo.errors import AutoReconnect

from tongban.bus import partition_for
from tongban.codec import MalformedRecord, SchemaRegistry, UnknownSchema
from tongban.config import load_settings
from tongban.events import encode_event, millis, now_utc
from tongban.handling import TIMER_FIRED, Emit, Event, Outcome, Rejected, Timer, Wiring
from tongban.pii import new_key_line
from tongban.runtime.core import (
    DEDUPE,
    ENTRY,
    MAX_RECORD_BYTES,
    ORIGIN_TOPIC_HEADER,
    Context,
    Entry,
    Task,
    command_record,
    unpack,
)
from tongban.runtime.memory import MemoryArchive, MemoryTransactions
from tongban.runtime.state import MemoryStore

REGISTRY = SchemaRegistry.load()
NS = "tu-"
SETTINGS = load_settings("routing", {"TONGBAN_NAMESPACE": NS, "TONGBAN_PII_KEYS": new_key_line()})
INPUT = "tongban.application.received"
OUTPUT = "tongban.application.routed"
UNROUTABLE = "tongban.application.ApplicationUnroutable"
RECEIVED = "tongban.application.ApplicationReceived"
PARTITIONS = 3
KEY = "TBKEY0"
PARTITION = partition_for(KEY, PARTITIONS)


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

    def __init__(self, handlers=None, commands=None, timers=None, keys=None, known_topics=None) -> None:
        self.calls: list[Event] = []
        wiring = Wiring("routing", inputs=[INPUT], handlers=handlers or {UNROUTABLE: self.count},
                        commands=commands or {}, timers=timers or {}, keys=keys or {})
        self.archive = MemoryArchive()
        self.bus = MemoryTransactions(SETTINGS.changelog_topic)
        self.known = known_topics or {NS + OUTPUT, SETTINGS.dlq_topic, SETTINGS.repartition_topic}
        self.ctx = Context(SETTINGS, REGISTRY, wiring, self.archive, PARTITIONS, self._has_topic, self._learn)
        self.store = MemoryStore()
        self.task = Task(self.ctx, PARTITION, self.store, self.bus)
        self.offset = 0
        self.learned = 0

    async def _has_topic(self, topic: str) -> bool:
        return topic in self.known

    async def _learn(self, fingerprint: bytes) -> None:
        self.learned += 1

    async def count(self, event: Event, state: dict | None) -> Outcome:
        self.calls.append(event)
        n = (state or {}).get("n", 0) + 1
        return Outcome(state={"n": n}, emits=[Emit(OUTPUT, UNROUTABLE, event.key, unroutable(event.key, f"n={n}"))])

    def rec(self, value, key: bytes | None = KEY.encode(), topic: str = NS + INPUT, headers=(), partition=PARTITION):
        self.offset += 1
        return Rec(topic, partition, self.offset, key, value, tuple(headers))

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


# ----------------------------------------------------------------------------- exactly once
async def test_an_event_its_outputs_its_state_and_its_offset_commit_together():
    h = Harness()
    record = h.rec(received_value())
    await h.feed(record)
    assert h.bus.commits == 1
    assert len(h.outputs()) == 1
    assert h.state() == {"n": 1}
    assert h.bus.offsets == {TopicPartition(record.topic, PARTITION): record.offset + 1}
    changelog_keys = {r.key for r in h.bus.on(SETTINGS.changelog_topic)}
    assert ENTRY + KEY.encode() in changelog_keys
    assert all(r.partition == PARTITION for r in h.bus.on(SETTINGS.changelog_topic))


async def test_a_replayed_event_is_applied_once_and_emits_nothing_new():
    h = Harness()
    value = received_value()
    await h.feed(h.rec(value), h.rec(value))  # twice in one batch
    await h.feed(h.rec(value))  # and again after the commit
    assert len(h.calls) == 1
    assert len(h.outputs()) == 1
    assert h.state() == {"n": 1}


async def test_an_aborted_transaction_changes_nothing_and_the_retry_emits_the_same_event_ids():
    h = Harness()
    record = h.rec(received_value())
    h.bus.fail_next = OSError("broker gone")
    with pytest.raises(OSError):
        await h.feed(record)
    assert h.state() is None, "the local store takes nothing from an aborted transaction"
    assert h.bus.offsets == {}, "no offset is committed before the record is handled"
    await h.feed(record)
    assert h.state() == {"n": 1}
    first, = h.outputs()
    assert REGISTRY.decode(first.value)[1]["envelope"]["causation_id"] == REGISTRY.decode(record.value)[1][
        "envelope"]["event_id"]


async def test_an_archive_outage_pauses_the_batch_without_committing_anything():
    h = Harness()

    async def down(doc_id):
        raise AutoReconnect("store down")

    finished = Entry(None, [], {}, finished=True, archived=1, finished_at=now_utc())
    h.store.write({ENTRY + KEY.encode(): finished.pack()}, 0)
    h.archive.load = down
    with pytest.raises(AutoReconnect):
        await h.feed(h.rec(received_value()))
    assert h.bus.commits == 0 and h.bus.offsets == {}


async def test_dedupe_marks_expire_after_the_replay_horizon_only():
    h = Harness()
    await h.feed(h.rec(received_value(cause="old")))
    assert await h.task.sweep(now_utc()) == 0
    assert await h.task.sweep(now_utc() + h.ctx.horizon + timedelta(minutes=1)) == 1
    assert list(h.store.items(DEDUPE)) == []
    tombstones = [r for r in h.bus.on(SETTINGS.changelog_topic) if r.value is None]
    assert [r.key[:2] for r in tombstones] == [DEDUPE]


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
    assert header(dead, "tongban.dlq.group") == SETTINGS.group
    assert header(dead, "tongban.dlq.error.class") in ("MalformedRecord", "UnknownSchema")
    assert len(h.outputs()) == 1 and h.state() == {"n": 1}


async def test_an_unknown_schema_is_looked_up_on_the_schema_topic_before_it_is_dead_lettered():
    h = Harness()
    await h.feed(h.rec(POISON["unknown fingerprint"]["value"]))
    assert h.learned == 1
    assert header(h.dead_letters()[0], "tongban.dlq.error.class") == UnknownSchema.__name__


async def test_a_null_traceparent_header_is_ignored_not_fatal():
    h = Harness()
    await h.feed(h.rec(received_value(), headers=[("traceparent", None), (None, b"x"), ("ok", b"1")]))
    assert h.state() == {"n": 1} and not h.dead_letters()


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
    assert h.calls[0].topic == INPUT and h.state() == {"n": 1}


async def test_a_writer_schema_whose_envelope_has_no_event_id_is_dead_lettered():
    h = Harness()
    record = REGISTRY.encode(UNROUTABLE, {"envelope": {
        "event_id": "", "event_type": UNROUTABLE, "schema_version": 1, "occurred_at": 0, "source_system": "x",
        "source_partner": None, "correlation_id": KEY, "causation_id": "x"}, **unroutable(KEY)})
    await h.feed(h.rec(record), h.rec(received_value()))
    assert "event id" in header(h.dead_letters()[0], "tongban.dlq.error.message")
    assert h.state() == {"n": 1}


async def test_a_rejected_event_is_dead_lettered_with_the_handlers_reason():
    async def reject(event, state):
        raise Rejected("decision from a partner the work is not assigned to")

    h = Harness(handlers={UNROUTABLE: reject})
    await h.feed(h.rec(received_value()))
    dead, = h.dead_letters()
    assert header(dead, "tongban.dlq.error.class") == "Rejected"
    assert header(dead, "tongban.dlq.error.message") == "decision from a partner the work is not assigned to"
    assert h.state() is None


async def test_a_handler_bug_is_dead_lettered_without_the_exception_text():
    async def bug(event, state):
        raise ValueError("张三 110101199003077777")

    h = Harness(handlers={UNROUTABLE: bug})
    await h.feed(h.rec(received_value()))
    reason = header(h.dead_letters()[0], "tongban.dlq.error.message")
    assert reason.startswith("ValueError at test_runtime_core.py:")
    assert "张三" not in reason and "1101" not in reason
    assert header(h.dead_letters()[0], "tongban.dlq.error.class") == "HandlerFailed"


async def test_an_output_too_large_for_a_record_dead_letters_its_input():
    async def huge(event, state):
        body = unroutable(event.key, "x" * 1_100_000)
        return Outcome(state={"x": 1}, emits=[Emit(OUTPUT, UNROUTABLE, event.key, body)])

    h = Harness(handlers={UNROUTABLE: huge})
    await h.feed(h.rec(received_value()))
    assert "at most" in header(h.dead_letters()[0], "tongban.dlq.error.message")
    assert h.outputs() == [] and h.state() is None, "nothing of a refused input is kept"


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
    assert header(dead, "tongban.dlq.headers.dropped") == "1"
    assert "tongban.dlq.reduced" in dict(dead.headers)


async def test_a_failing_key_function_dead_letters_the_record():
    h = Harness(keys={UNROUTABLE: lambda event: event.payload["no such field"]})
    await h.feed(h.rec(received_value()))
    assert header(h.dead_letters()[0], "tongban.dlq.error.class") == "HandlerFailed"


# ----------------------------------------------------------------------------- ownership
async def test_an_aggregate_owned_by_another_partition_is_forwarded_to_its_owner():
    other = next(k for k in (f"TBK{n}" for n in range(100)) if partition_for(k, PARTITIONS) != PARTITION)
    h = Harness(keys={UNROUTABLE: lambda event: other})
    record = h.rec(received_value(), headers=[("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")])
    await h.feed(record)
    forwarded, = h.bus.on(SETTINGS.repartition_topic)
    assert forwarded.partition == partition_for(other, PARTITIONS)
    assert forwarded.key == other.encode() and forwarded.value == record.value
    assert header(forwarded, ORIGIN_TOPIC_HEADER) == NS + INPUT
    assert "traceparent" in dict(forwarded.headers)
    assert h.calls == []

    owner = Harness(keys={UNROUTABLE: lambda event: other})
    owner.task.partition = forwarded.partition
    await owner.feed(Rec(forwarded.topic, forwarded.partition, 1, forwarded.key, forwarded.value,
                         tuple(forwarded.headers)))
    assert owner.calls[0].topic == INPUT and owner.calls[0].key == other


# ----------------------------------------------------------------------------- finished work
async def test_finished_work_is_archived_and_leaves_only_a_marker_in_the_hot_state():
    async def finish(event, state):
        return Outcome(state={"done": event.payload["reason"]}, finished=True)

    h = Harness(handlers={UNROUTABLE: finish})
    await h.feed(h.rec(received_value()))
    assert h.archive.docs[KEY]["state"] == {"done": "r"}
    hot = unpack(h.store.get(ENTRY + KEY.encode()))
    assert hot["finished"] and "state" not in hot
    assert (await h.task.read(KEY)).state == {"done": "r"}


async def test_a_late_event_revives_finished_work_from_the_archive_and_it_is_archived_again():
    async def finish(event, state):
        seen = (state or {}).get("seen", [])
        return Outcome(state={"seen": [*seen, event.payload["reason"]]}, finished=True)

    h = Harness(handlers={UNROUTABLE: finish})
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "first"), "c1")))
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "late"), "c2")))
    assert h.archive.docs[f"{KEY}~2"]["state"] == {"seen": ["first", "late"]}
    assert h.archive.docs[KEY]["state"] == {"seen": ["first"]}, "the archive is append-only"


async def test_an_input_that_changes_nothing_writes_no_new_archive_version():
    async def same(event, state):
        return Outcome(state=state or {"done": True}, finished=True)

    h = Harness(handlers={UNROUTABLE: same})
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY), "c1")))
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY), "c2")))
    assert list(h.archive.docs) == [KEY]


async def test_finished_markers_are_forgotten_after_the_replay_horizon():
    async def finish(event, state):
        return Outcome(state={"done": True}, finished=True)

    h = Harness(handlers={UNROUTABLE: finish})
    await h.feed(h.rec(received_value()))
    await h.task.sweep(now_utc() + h.ctx.horizon + timedelta(minutes=1))
    assert h.store.get(ENTRY + KEY.encode()) is None
    assert KEY in h.archive.docs


# ----------------------------------------------------------------------------- timers
def scheduler(seconds: float, name: str = "deadline"):
    async def schedule(event, state):
        return Outcome(state={"set": True}, timers=[Timer(name, now_utc() + timedelta(seconds=seconds), {"n": 1})])

    return schedule


async def test_a_timer_fires_once_when_due_and_not_before():
    fired = []

    async def on_deadline(event, state):
        fired.append(event)
        return Outcome(state={**state, "fired": True},
                       emits=[Emit(OUTPUT, UNROUTABLE, event.key, unroutable(event.key, "late"))])

    h = Harness(handlers={UNROUTABLE: scheduler(60)}, timers={"deadline": on_deadline})
    await h.feed(h.rec(received_value()))
    now = millis(now_utc())
    assert await h.task.fire_due(now) == 0
    assert await h.task.fire_due(now + 61_000) == 1
    assert await h.task.fire_due(now + 122_000) == 0
    assert len(fired) == 1 and fired[0].event_type == TIMER_FIRED and fired[0].payload["payload"] == {"n": 1}
    assert h.state() == {"set": True, "fired": True}
    assert unpack(h.store.get(ENTRY + KEY.encode()))["timers"] == []
    assert len(h.outputs()) == 1


async def test_a_timer_of_an_aborted_batch_is_never_scheduled():
    h = Harness(handlers={UNROUTABLE: scheduler(0)}, timers={"deadline": scheduler(0)})
    h.bus.fail_next = OSError("broker gone")
    with pytest.raises(OSError):
        await h.feed(h.rec(received_value()))
    assert len(h.task.schedule) == 0


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
    assert len(fired) == 1 and fired[0].startswith(f"{KEY}:deadline:")


async def test_timers_are_rebuilt_from_the_store_after_a_restart():
    h = Harness(handlers={UNROUTABLE: scheduler(5)})
    await h.feed(h.rec(received_value()))
    restarted = Task(h.ctx, PARTITION, h.store, h.bus)
    restarted.rebuild_schedule()
    assert len(restarted.schedule) == 1
    assert restarted.schedule.next_due() == h.task.schedule.next_due()


async def test_a_failing_timer_is_dead_lettered_as_a_replayable_timer_event_and_dropped():
    async def broken(event, state):
        raise KeyError("x")

    h = Harness(handlers={UNROUTABLE: scheduler(0)}, timers={"deadline": broken})
    await h.feed(h.rec(received_value()))
    await h.task.fire_due(millis(now_utc()) + 1000)
    dead, = h.dead_letters()
    name, body = REGISTRY.decode(dead.value)
    assert name == TIMER_FIRED and body["name"] == "deadline" and body["key"] == KEY
    assert unpack(h.store.get(ENTRY + KEY.encode()))["timers"] == []
    assert await h.task.fire_due(millis(now_utc()) + 60_000) == 0, "no loop on a failing timer"


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
    assert command.partition == PARTITION
    record = h.rec(command.value, topic=SETTINGS.commands_topic, headers=command.headers)
    await h.feed(record, h.rec(command.value, topic=SETTINGS.commands_topic))  # a client retry
    assert len(applied) == 1
    assert applied[0].event_id == "submit:1" and applied[0].topic == "command"
    assert h.state() == {"name": "张三", "at": at}


async def test_a_command_is_taken_only_from_the_command_topic():
    h = Harness(commands={"intake.Submit": scheduler(1)})
    command = command_record(h.ctx, "intake.Submit", KEY, "submit:1", {})
    await h.feed(h.rec(command.value, topic=NS + INPUT))
    assert "command topic" in header(h.dead_letters()[0], "tongban.dlq.error.message")
    assert h.state() is None


async def test_a_command_too_large_for_a_record_is_refused_before_it_is_written():
    h = Harness()
    with pytest.raises(Exception, match="at most"):
        command_record(h.ctx, "intake.Submit", KEY, "submit:big", {"materials": ["m" * 100] * 20_000})
