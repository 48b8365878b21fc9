"""The shared runtime's own guarantees, in-process, over the real broker and store: a
durable timer fires exactly once, concurrent commands on one key all count and a repeated
command id counts once, a zombie's transaction is fenced, and a restarted instance restores
10,000 aggregates from the changelog, fires a timer set before the restart and leaves the
store alone while idle."""

import asyncio
import contextlib
import os
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import TopicPartition
from pymongo import AsyncMongoClient, monitoring

from tests.support import REGISTRY, Sink
from tongban.bus import partition_for
from tongban.config import load_settings
from tongban.events import now_utc
from tongban.handling import Emit, Event, Outcome, Timer, Wiring
from tongban.pii import new_key_line
from tongban.runtime import ServiceRuntime
from tongban.runtime.archive import MongoArchive
from tongban.runtime.core import OutRecord, TaskFenced
from tongban.runtime.service import KafkaTransactions

pytestmark = pytest.mark.integration

ROUTED = "tongban.application.routed"
UNROUTABLE = "tongban.application.ApplicationUnroutable"


async def count(event: Event, state: dict | None) -> Outcome:
    return Outcome(state={"count": (state or {}).get("count", 0) + 1})


async def schedule(event: Event, state: dict | None) -> Outcome:
    due = now_utc() + timedelta(seconds=event.payload["seconds"])
    return Outcome(state={"scheduled": True}, timers=[Timer("remind", due, {"n": 7})])


async def remind(event: Event, state: dict | None) -> Outcome:
    body = {"application_id": event.key, "matter_code": "KSTB-MED-01",
            "reason": f"reminder {event.payload['payload']['n']}"}
    return Outcome(state={**state, "reminded": True}, emits=[Emit(ROUTED, UNROUTABLE, event.key, body)])


async def announce(event: Event, state: dict | None) -> Outcome:
    body = {"application_id": event.key, "matter_code": "KSTB-MED-01", "reason": f"announced {event.payload['n']}"}
    return Outcome(state={"announced": (state or {}).get("announced", 0) + 1},
                   emits=[Emit(ROUTED, UNROUTABLE, event.key, body)])


WIRING = Wiring("routing", inputs=["tongban.application.received"], handlers={},
                commands={"count": count, "schedule": schedule, "announce": announce}, timers={"remind": remind})


class StoreCommands(monitoring.CommandListener):
    """Counts every command this process sends to the document store."""

    def __init__(self) -> None:
        self.sent = 0

    def started(self, event) -> None:
        self.sent += 1

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


KEY_LINE = new_key_line()


def settings_for(namespace, state_dir):
    env = {**os.environ, "TONGBAN_NAMESPACE": namespace, "TONGBAN_SESSION_TIMEOUT_MS": "3000",
           "TONGBAN_STATE_DIR": str(state_dir), "TONGBAN_STATE_STORE": "rocksdb",
           # Its commands are sealed for itself: this test service holds a key of its own.
           "TONGBAN_PII_PARTY": "routing", "TONGBAN_PII_KEYS": KEY_LINE}
    return load_settings("routing", env)


async def started(settings, archive) -> ServiceRuntime:
    runtime = ServiceRuntime(settings, REGISTRY, WIRING, archive)
    await runtime.start()
    await asyncio.wait_for(runtime.ready.wait(), 60)
    return runtime


async def wait_state(runtime, key, predicate, within=30):
    """Through the runtime's own wait (woken by the commit that touches the key, as intake's
    Submit waits for its command), so every test using it checks that wake-up as well."""
    state = await runtime.wait_for_state(key, predicate, within)
    assert predicate(state), f"{key} never reached the expected state"


@pytest.fixture
async def store_client():
    listener = StoreCommands()
    client = AsyncMongoClient(os.environ.get("TONGBAN_MONGO_URI", "mongodb://127.0.0.1:27217/"),
                              event_listeners=[listener], tz_aware=True)
    yield client, listener
    await client.close()


@pytest.fixture
async def runtime(namespace, tmp_path, store_client):
    client, _ = store_client
    settings = settings_for(namespace, tmp_path)
    runtime = await started(settings, MongoArchive(client[settings.database]))
    yield runtime
    await runtime.stop()


async def test_a_durable_timer_fires_exactly_once(runtime, namespace):
    key = "TBTIMER" + namespace.upper().strip("-")
    await runtime.submit("schedule", key, "schedule-1", {"seconds": 1})
    await wait_state(runtime, key, lambda s: s and s.get("reminded"))
    await runtime.submit("count", key, "marker-after-timer", {})  # then nothing more may follow
    await wait_state(runtime, key, lambda s: "count" in s)
    async with Sink(namespace, [ROUTED]) as sink:
        seen = await sink.wait_for(lambda s: s.events(UNROUTABLE, key), within=30)
    fired = seen.events(UNROUTABLE, key)
    assert len(fired) == 1, "exactly one record on the wire"
    assert fired[0]["reason"] == "reminder 7"
    assert fired[0]["envelope"]["causation_id"].startswith(f"timer:{key}:remind:")


async def test_concurrent_commands_on_one_key_all_count_and_a_repeated_id_counts_once(runtime):
    key = "TBCOUNT"
    await asyncio.gather(*(runtime.submit("count", key, f"c-{n}", {}) for n in range(12)))
    await wait_state(runtime, key, lambda s: s == {"count": 12})
    await runtime.submit("count", key, "c-3", {})  # a client retry of an applied command
    await runtime.submit("count", key, "c-marker", {})
    await wait_state(runtime, key, lambda s: s["count"] >= 13)
    assert await runtime.state_of(key) == {"count": 13}


async def test_a_commit_whose_answer_is_lost_emits_nothing_twice(runtime, namespace):
    """The broker takes the transaction, then the answer is lost (the broker went away during
    the commit). The batch is read again; the task must take over from the changelog first,
    or it handles the command again on its stale local state and emits a second time."""
    key = "TBLOSTANSWER" + namespace.upper().strip("-")
    task = runtime.tasks[partition_for(key, runtime.partitions)]
    real_commit, lost = task.transactions.commit, []

    async def commit_then_lose_the_answer(records):
        reached = await real_commit(records)
        if not lost and any(r.key == key.encode() and r.topic.endswith(ROUTED) for r in records):
            lost.append(reached)
            raise KafkaConnectionError("the answer to the commit was lost")
        return reached

    task.transactions.commit = commit_then_lose_the_answer  # type: ignore[method-assign]
    await runtime.submit("announce", key, "announce-1", {"n": 1})
    await runtime.submit("announce", key, "announce-2", {"n": 2})  # after it on the same partitions
    await wait_state(runtime, key, lambda s: s and s.get("announced") == 2)
    assert lost, "the commit's answer was lost once"
    async with Sink(namespace, [ROUTED]) as sink:
        # Records of one key keep their order: once the second is read, a repeat of the first would be too.
        seen = await sink.wait_for(lambda s: any(e["reason"] == "announced 2" for e in s.events(UNROUTABLE, key)))
    assert [e["reason"] for e in seen.events(UNROUTABLE, key)] == ["announced 1", "announced 2"]


async def test_a_zombie_instance_cannot_commit(namespace, tmp_path):
    """Two instances believe they own task 0: the later one's start fences the first, whose
    transaction then fails and never reaches a read_committed reader."""
    settings = settings_for(namespace, tmp_path)
    zombie, owner = KafkaTransactions(settings, 0), KafkaTransactions(settings, 0)
    await zombie.start()
    await owner.start()
    topic = settings.topic(ROUTED)
    try:
        with pytest.raises(TaskFenced):
            await zombie.commit([OutRecord(topic, b"TBZOMBIE", b"from the zombie", [], 0)])
        await owner.commit([OutRecord(topic, b"TBZOMBIE", b"from the owner", [], 0)])
    finally:
        await zombie.stop()
        await owner.stop()
    async with Sink(namespace, [ROUTED]) as sink:
        seen = await sink.wait_for(lambda s: any(r.value == b"from the owner" for r in s.records))
    assert [r.value for r in seen.records if r.key == b"TBZOMBIE"] == [b"from the owner"]


async def test_a_restarted_instance_restores_its_state_and_fires_an_earlier_timer(namespace, tmp_path, store_client):
    client, listener = store_client
    settings = settings_for(namespace, tmp_path / "first")
    archive = MongoArchive(client[settings.database])
    first = await started(settings, archive)
    try:
        keys = [f"TBRESTORE{n:05d}" for n in range(10_000)]
        for chunk in range(0, len(keys), 500):
            await asyncio.gather(*(first.submit("count", k, f"restore-{k}", {}) for k in keys[chunk:chunk + 500]))
        await first.submit("schedule", "TBRESTORETIMER", "restore-timer", {"seconds": 4})
        await wait_state(first, keys[-1], lambda s: s == {"count": 1}, within=120)
        await wait_state(first, "TBRESTORETIMER", lambda s: s == {"scheduled": True})
    finally:
        await first.stop()

    # A new instance on another machine: an empty local store, everything from the changelog.
    second = await started(settings_for(namespace, tmp_path / "second"), archive)
    try:
        assert second.restored_records >= 10_000
        for key in (keys[0], keys[4321], keys[-1]):
            assert await second.state_of(key) == {"count": 1}
        await wait_state(second, "TBRESTORETIMER", lambda s: s.get("reminded"), within=30)
        probe = listener.sent
        await client[settings.database]["archive"].find_one({"_id": "probe"})
        assert listener.sent > probe, "the listener sees this process's store commands"
        before = listener.sent
        await asyncio.sleep(3)  # idle: nothing to handle, no timer due
        assert listener.sent == before, "an idle instance queried the store"
    finally:
        await second.stop()

    # The same machine again: the local checkpoint means only what is new is replayed.
    third = await started(settings_for(namespace, tmp_path / "second"), archive)
    try:
        assert third.restored_records < 100
        assert await third.state_of(keys[9999]) == {"count": 1}
    finally:
        await third.stop()


async def group_offset(settings, tp) -> int | None:
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    await admin.start()
    try:
        meta = (await admin.list_consumer_group_offsets(settings.group)).get(tp)
    finally:
        await admin.close()
    return meta.offset if meta is not None and meta.offset >= 0 else None


async def test_a_new_instance_reads_on_from_its_state_and_the_group_offsets_are_a_copy(namespace, tmp_path,
                                                                                     store_client):
    """The input positions commit with the state, in its changelog. A new instance (an empty
    local store) resumes from them even where the group's committed offsets say otherwise,
    and copies them back to the group for lag tools."""
    client, _ = store_client
    settings = settings_for(namespace, tmp_path / "first")
    archive = MongoArchive(client[settings.database])
    key = "TBPOSITION" + namespace.upper().strip("-")
    first = await started(settings, archive)
    try:
        tp = TopicPartition(settings.commands_topic, partition_for(key, first.partitions))
        for n in range(3):
            await first.submit("count", key, f"position-{n}", {})
        await wait_state(first, key, lambda s: s == {"count": 3})
    finally:
        await first.stop()
    read_to = await group_offset(settings, tp)
    assert read_to is not None, "a stopped instance leaves its positions in the group"
    assert read_to >= 3

    rewinder = AIOKafkaConsumer(group_id=settings.group, enable_auto_commit=False, **settings.kafka_client_options())
    await rewinder.start()
    try:
        rewinder.assign([tp])
        await rewinder.commit({tp: 0})  # what kafka-consumer-groups --reset-offsets would do
    finally:
        await rewinder.stop()
    assert await group_offset(settings, tp) == 0

    second = await started(settings_for(namespace, tmp_path / "second"), archive)
    try:
        assert await second.consumer.position(tp) == read_to, "resumed from the state, not the group's offset"
        async with asyncio.timeout(30):
            while await group_offset(settings, tp) != read_to:  # noqa: ASYNC110 (the broker tells no one)
                await asyncio.sleep(0.2)
        await second.submit("count", key, "position-3", {})
        await wait_state(second, key, lambda s: s == {"count": 4})
    finally:
        await second.stop()


async def test_a_service_started_while_the_broker_is_away_waits_for_it(namespace, tmp_path, caplog):
    """A restart during a broker outage: the runtime keeps trying to connect instead of
    raising out of start (which exited the process: six exits in a chaos run)."""
    env = {**os.environ, "TONGBAN_NAMESPACE": namespace, "TONGBAN_STATE_DIR": str(tmp_path),
           "TONGBAN_KAFKA_BOOTSTRAP": "127.0.0.1:9", "TONGBAN_PII_PARTY": "routing", "TONGBAN_PII_KEYS": KEY_LINE}
    runtime = ServiceRuntime(load_settings("routing", env), REGISTRY, WIRING, archive=None)  # type: ignore[arg-type]
    caplog.set_level("WARNING", logger="tongban.runtime")
    starting = asyncio.create_task(runtime.start())

    def retries() -> int:
        return sum("broker not reachable at start" in r.getMessage() for r in caplog.records)

    try:
        async with asyncio.timeout(30):
            while retries() < 2:
                assert not starting.done(), f"start gave up: {starting.exception()!r}"
                await asyncio.sleep(0.1)
    finally:
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
