"""Three brokers, three controllers, topics at replication 3 and min.insync.replicas 2 (the
production overlay, applied by `make cluster-test` through `tongban topics apply`): a broker
SIGKILLed mid-flow loses and duplicates nothing, its ISR shrinks and recovers; with two
brokers down a write is refused with NotEnoughReplicas and never appears; a service's runtime
commits its transactions through a leader move, each command applied and emitted once.
Everything is counted by independent read_committed readers. Run by `make cluster-test`
only (marker `cluster`; `make test` deselects it)."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, NotEnoughReplicasError, RequestTimedOutError
from confluent_kafka.admin import ConfigResource
from pymongo import AsyncMongoClient

from tests.cluster.nodes import BROKERS, Cluster, busiest, record_figures
from tests.support import KAFKA, REGISTRY
from tongban import topics
from tongban.config import load_settings
from tongban.handling import Emit, Event, Outcome, Wiring
from tongban.pii import new_key_line
from tongban.runtime import NotReady, ServiceRuntime
from tongban.runtime.archive import MongoArchive

pytestmark = pytest.mark.cluster

KEYS = 24  # record keys, so that every partition takes writes
# The raw records of the broker tests go to a topic the runtime test's service does not
# read (it would dead-letter them: they are not events).
FLOW = topics.APPLICATION_DELIVERED


async def until(condition: Callable[[], bool], within: float, what: str, watch: asyncio.Task | None = None) -> float:
    """Seconds until `condition` holds; fails at once if `watch` (the writer) failed."""
    start = time.monotonic()
    while not condition():
        if watch is not None and watch.done():
            watch.result()  # raises the writer's error
            raise AssertionError(f"{what}: the writer stopped")
        assert time.monotonic() - start < within, f"{what}: not within {within}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def read_all(topic: str) -> list:
    """Every committed record of `topic`, read to its end as it stands now."""
    consumer = AIOKafkaConsumer(**KAFKA, isolation_level="read_committed", auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
                      ] or [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records = []
        behind = list(partitions)
        while behind:
            for batch in (await consumer.getmany(*behind, timeout_ms=500)).values():
                records.extend(batch)
            behind = [tp for tp in behind if await consumer.position(tp) < end[tp]]
        return records
    finally:
        await consumer.stop()


async def test_the_topics_carry_the_production_overlay(namespace, cluster: Cluster):
    topic = namespace + FLOW
    partitions = await cluster.partitions(topic)
    assert partitions
    assert all(len(p.replicas) == 3 for p in partitions)
    assert {p.leader for p in partitions} <= set(BROKERS)
    futures = cluster.admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
    config = next(iter(futures.values())).result(timeout=30)
    assert config["min.insync.replicas"].value == "2"


async def test_a_broker_killed_mid_flow_loses_and_duplicates_nothing(namespace, cluster: Cluster):
    topic = namespace + FLOW
    victim = busiest(await cluster.partitions(topic))
    run = secrets.token_hex(4)
    acked: list[tuple[int, float]] = []
    stop = asyncio.Event()
    producer = AIOKafkaProducer(**KAFKA, acks="all", enable_idempotence=True)
    await producer.start()

    async def write() -> None:
        seq = 0
        while not stop.is_set():
            batch = []
            for _ in range(50):
                future = await producer.send(topic, key=f"k{seq % KEYS}".encode(), value=f"{run}:{seq}".encode())
                batch.append((seq, future))
                seq += 1
            for n, future in batch:
                await future
                acked.append((n, time.monotonic()))

    writer = asyncio.create_task(write())
    try:
        await until(lambda: len(acked) >= 1000, 60, "writes before the kill", writer)
        before_kill = len(acked)
        killed_at = time.monotonic()
        await cluster.kill(victim)
        shrink_s = await cluster.wait(
            lambda ps: all(victim not in p.isr and len(p.isr) == 2 and p.leader != victim for p in ps),
            60, "ISR shrunk to the two live brokers, leaders moved", topic)
        at_shrink = len(acked)
        await until(lambda: len(acked) >= at_shrink + 1000, 60, "writes with one broker down", writer)
        restart_at = time.monotonic()
        at_restart = len(acked)
        await cluster.start(victim)
        broker_ready_s = time.monotonic() - restart_at
        recover_s = await cluster.fully_replicated() + broker_ready_s
        at_recovery = len(acked)
        await until(lambda: len(acked) >= at_recovery + 500, 60, "writes after the recovery", writer)
        stop.set()
        await writer
    finally:
        stop.set()
        writer.cancel()
        await producer.stop()

    assert victim in {b for p in await cluster.partitions(topic) for b in p.isr}
    mine = Counter(r.value.decode() for r in await read_all(topic) if r.value.startswith(f"{run}:".encode()))
    sent = {f"{run}:{n}" for n, _ in acked}
    assert set(mine) == sent, f"{len(sent - set(mine))} acknowledged records missing, {len(set(mine) - sent)} unknown"
    assert [v for v, c in mine.items() if c != 1] == [], "records present more than once"
    times = [t for _, t in acked]
    record_figures("one broker killed", {
        "broker": victim, "records": len(acked), "before_kill": before_kill,
        "kill_to_restart": at_restart - before_kill, "restart_to_isr_complete": at_recovery - at_restart,
        "consumed_exactly_once": sum(mine.values()),
        "isr_shrunk_s": round(shrink_s, 1), "restart_to_broker_ready_s": round(broker_ready_s, 1),
        "restart_to_isr_complete_s": round(recover_s, 1), "down_s": round(restart_at - killed_at, 1),
        "longest_ack_gap_s": round(max(b - a for a, b in itertools.pairwise(times)), 1)})


async def test_with_two_brokers_down_a_write_is_refused_not_accepted(namespace, cluster: Cluster):
    topic = namespace + FLOW
    target = (await cluster.partitions(topic))[0]
    survivor = target.leader
    for broker in BROKERS:
        if broker != survivor:
            await cluster.kill(broker)
    shrink_s = await cluster.wait(lambda ps: ps[0].leader == survivor and ps[0].isr == (survivor,), 60,
                                  "ISR down to the survivor", topic)
    run = secrets.token_hex(4)
    # Not idempotent: an idempotent producer retries NotEnoughReplicas until the brokers are
    # back; this one gives up after its request timeout and reports the broker's last answer.
    # The survivor, just made leader of every partition, once left a first write unanswered
    # for 15 s: a timeout tells the client the write failed, never that it was stored. So:
    # write until the broker answers; it must refuse, and no attempt may be acknowledged.
    outcomes: list[tuple[bytes, str]] = []
    producer = AIOKafkaProducer(**KAFKA, acks="all", request_timeout_ms=3000)
    await producer.start()
    try:
        deadline = time.monotonic() + 90
        while not outcomes or (outcomes[-1][1] == "timed out" and time.monotonic() < deadline):
            value = f"refused-{run}-{len(outcomes)}".encode()
            try:
                await producer.send_and_wait(topic, key=b"k-refused", value=value, partition=target.partition)
                outcomes.append((value, "acknowledged"))
            except NotEnoughReplicasError:
                outcomes.append((value, "NotEnoughReplicas"))
            except RequestTimedOutError:
                outcomes.append((value, "timed out"))
    finally:
        await producer.stop()
    assert "acknowledged" not in {o for _, o in outcomes}, "a write was acknowledged with two brokers down"
    refused, answer = outcomes[-1]
    assert answer == "NotEnoughReplicas", f"the survivor never refused a write: {outcomes}"

    restart_at = time.monotonic()
    await asyncio.gather(*(cluster.start(b) for b in sorted(cluster.killed)))
    await cluster.fully_replicated()
    recover_s = time.monotonic() - restart_at
    accepted = f"accepted-{secrets.token_hex(4)}".encode()
    producer = AIOKafkaProducer(**KAFKA, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=b"k-refused", value=accepted, partition=target.partition)
    finally:
        await producer.stop()
    values = [r.value for r in await read_all(topic)]
    assert values.count(accepted) == 1, "the reader sees the partition up to a write acknowledged after it"
    assert refused not in values, "the refused write was stored"
    record_figures("two brokers down", {"survivor": survivor, "isr_down_to_one_s": round(shrink_s, 1),
                                        "attempts_timed_out_before_refused": len(outcomes) - 1,
                                        "restart_to_isr_complete_s": round(recover_s, 1)})


# ------------------------------------------------------------------------------ the runtime

async def count(event: Event, state: dict | None) -> Outcome:
    """Counts its commands and emits one event per command (the independent sink's count)."""
    body = {"application_id": event.key, "matter_code": "KSTB-MED-01", "reason": f"command {event.payload['n']}"}
    return Outcome(state={"count": (state or {}).get("count", 0) + 1},
                   emits=[Emit(topics.APPLICATION_ROUTED, topics.APPLICATION_UNROUTABLE_EVENT, event.key, body)])


WIRING = Wiring("routing", inputs=[topics.APPLICATION_RECEIVED], handlers={}, commands={"count": count})


async def applied(runtime: ServiceRuntime, keys: list[str]) -> dict[str, int]:
    counts = {}
    for key in keys:
        try:
            state = await runtime.state_of(key)
        except NotReady:  # its task is being (re)assigned
            state = None
        counts[key] = (state or {}).get("count", 0)
    return counts


async def test_a_runtime_commits_through_a_leader_move_each_command_once(namespace, cluster: Cluster, tmp_path):
    env = {**os.environ, "TONGBAN_NAMESPACE": namespace, "TONGBAN_SESSION_TIMEOUT_MS": "6000",
           "TONGBAN_STATE_DIR": str(tmp_path), "TONGBAN_STATE_STORE": "rocksdb",
           # Its commands are sealed for itself: this test service holds a key of its own.
           "TONGBAN_PII_PARTY": "routing", "TONGBAN_PII_KEYS": new_key_line()}
    settings = load_settings("routing", env)
    own = [settings.topic(topics.commands(settings.group_name)), settings.changelog_topic,
           settings.topic(topics.APPLICATION_ROUTED)]
    victim = busiest([p for t in own for p in await cluster.partitions(t)])
    keys = [f"TBCLUSTER{n}" for n in range(6)]
    submitted: dict[str, list[int]] = {k: [] for k in keys}
    retries = 0
    progress = {"applied": 0}
    stop = asyncio.Event()
    client = AsyncMongoClient(os.environ.get("TONGBAN_MONGO_URI", "mongodb://127.0.0.1:27217/"), tz_aware=True)
    runtime = ServiceRuntime(settings, REGISTRY, WIRING, MongoArchive(client[settings.database]))

    async def submit() -> None:
        nonlocal retries
        n = 0
        while not stop.is_set():
            key = keys[n % len(keys)]
            while True:
                try:
                    await runtime.submit("count", key, f"cmd-{n}", {"n": n})
                    break
                except KafkaError:  # a client's retry, same command id: the owner drops a duplicate
                    retries += 1
                    await asyncio.sleep(0.2)
            submitted[key].append(n)
            n += 1

    async def watch() -> None:
        while True:
            progress["applied"] = sum((await applied(runtime, keys)).values())
            await asyncio.sleep(0.1)

    await runtime.start()
    submitter = watcher = None
    try:
        await asyncio.wait_for(runtime.ready.wait(), 120)
        submitter, watcher = asyncio.create_task(submit()), asyncio.create_task(watch())
        await until(lambda: progress["applied"] >= 200, 120, "commands applied before the kill", submitter)
        at_kill = progress["applied"]
        await cluster.kill(victim)
        resumed_s = await until(lambda: progress["applied"] >= at_kill + 200, 180,
                                "commands applied after the leader moved", submitter)
        await cluster.start(victim)
        await cluster.fully_replicated()
        at_recovery = progress["applied"]
        await until(lambda: progress["applied"] >= at_recovery + 100, 120, "commands applied after the recovery",
                    submitter)
        stop.set()
        await submitter
        await until(lambda: progress["applied"] == sum(len(v) for v in submitted.values()), 120,
                    "every submitted command applied")
        final = await applied(runtime, keys)
    finally:
        stop.set()
        for task in (submitter, watcher):
            if task is not None:
                task.cancel()
        await runtime.stop()
        await client.close()

    assert final == {k: len(v) for k, v in submitted.items()}, "a command applied twice or not at all"
    emitted = Counter()
    event_ids = set()
    for record in await read_all(settings.topic(topics.APPLICATION_ROUTED)):
        event_type, body = REGISTRY.decode(record.value)
        if event_type == topics.APPLICATION_UNROUTABLE_EVENT and body["application_id"] in submitted:
            emitted[(body["application_id"], body["reason"])] += 1
            event_ids.add(body["envelope"]["event_id"])
    expected = {(k, f"command {n}") for k, ns in submitted.items() for n in ns}
    assert set(emitted) == expected, "an emitted event is missing or unexpected"
    assert all(c == 1 for c in emitted.values()), "an event emitted twice"
    assert len(event_ids) == len(expected), "one event id per command"
    assert await read_all(settings.dlq_topic) == [], "dead letters"
    record_figures("runtime through a leader move", {
        "broker": victim, "commands": len(expected), "client_retries": retries,
        "kill_to_200_more_applied_s": round(resumed_s, 1)})
