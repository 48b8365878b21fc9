"""The five-hop chains: plain aiokafka, faust-streaming agents and the Tongban runtime.

Every chain reads `bench.hop0` and writes `bench.hop5` through five consume-and-produce
hops in a fresh namespace (3 partitions per topic). Each hop is its own OS process, as
services are (`--inprocess` runs the five hops as tasks of the bench process instead; that
is how the profiles are taken). The bench process feeds the chain and counts what arrives:

1. warm-up: 60 records go through first, so the clock starts once every hop has joined its
   group, owns its partitions and (runtime) has its transactional producers ready;
2. measurement: N pre-encoded records (tongban.application.ApplicationUnroutable, ~190 B,
   distinct keys) are produced to hop0 by one producer as fast as it can; the figure is
   N / (first copy of the last key read committed at hop5 - first send): the time to take
   N records through all five hops, end to end. The feeder and the counting consumer run
   in the bench process, the same for every kind of chain;
3. latency (chains in their own processes): then `TRICKLE` records, one at a time at
   `TRICKLE_PER_S`, each sent and acknowledged before the next: the time from its send to
   its arrival at hop5 is one record's way through five idle hops, the floor under every
   hop of the pipeline's latency.

The raw and faust hops forward the bytes unchanged; the runtime decodes each record, calls
a no-op handler and encodes the emitted event with a new envelope, in transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from devtools.bench.common import (
    CHAIN_EVENT,
    HOPS,
    OUT,
    PARTITIONS,
    ROOT,
    Topic,
    create_topics,
    drop_namespace,
    hop_topic,
    kafka_identity_env,
    kafka_options,
    new_prefix,
    runtime_topics,
    say,
)

WARMUP = 60
TRICKLE = 100
TRICKLE_PER_S = 20.0
KINDS = ("raw", "faust", "runtime")


def encoded_records(n: int, tag: str) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: the same small event, framed by the shared codec, distinct keys."""
    from tongban.codec import SchemaRegistry
    from tongban.events import encode_event

    registry = SchemaRegistry.load()
    out = []
    for i in range(n):
        key = f"{tag}-{i:08d}"
        _, value = encode_event(registry, CHAIN_EVENT,
                                {"application_id": key, "matter_code": "KSTB-XXX-99",
                                 "reason": "matter not in the catalogue"},
                                cause_id=f"bench:{key}", correlation_id=key, source_system="bench")
        out.append((key.encode(), value))
    return out


# ------------------------------------------------------------------------------- hops


async def raw_hop(prefix: str, index: int, stop: asyncio.Event) -> None:
    """Consume hop index-1, produce every record unchanged to hop index (acks=all,
    idempotent), commit the offsets after the sends are acknowledged: at least once."""
    options = kafka_options()
    consumer = AIOKafkaConsumer(
        hop_topic(prefix, index - 1), **options, group_id=f"{prefix}bench-raw-hop{index}",
        auto_offset_reset="earliest", enable_auto_commit=False, isolation_level="read_committed")
    producer = AIOKafkaProducer(**options, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    out = hop_topic(prefix, index)
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            if not batch:
                continue
            sent = [await producer.send(out, record.value, key=record.key)
                    for records in batch.values() for record in records]
            await asyncio.gather(*sent)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def runtime_missing() -> str | None:
    """Why the runtime chain cannot run yet, or None when the runtime v2 API is there."""
    try:
        import inspect

        from tongban.handling import Emit, Outcome, Wiring  # noqa: F401
        from tongban.runtime import ServiceRuntime
    except Exception as exc:
        return f"tongban.runtime v2 is not importable yet ({type(exc).__name__}: {exc})"
    try:
        parameters = inspect.signature(ServiceRuntime).parameters
    except (TypeError, ValueError):
        return None
    if "archive" not in parameters:
        return "tongban.runtime.ServiceRuntime has no `archive` parameter yet (still the v1 runtime)"
    return None


async def runtime_hop(prefix: str, index: int, stop: asyncio.Event) -> None:
    """Service `bench<index>` on the runtime: a no-op handler re-emitting each event to the
    next hop, in-memory state, no archive, exactly once through transactions."""
    from tongban.codec import SchemaRegistry
    from tongban.config import load_settings
    from tongban.handling import Emit, Event, Outcome, Wiring
    from tongban.runtime import ServiceRuntime

    settings = load_settings(f"bench{index}", {**os.environ, **kafka_identity_env(), "TONGBAN_NAMESPACE": prefix,
                                                "TONGBAN_STATE_STORE": "memory", "TONGBAN_LOG_LEVEL": "WARNING"})
    out = f"bench.hop{index}"

    async def forward(event: Event, state: dict[str, Any] | None) -> Outcome:
        return Outcome(emits=[Emit(out, event.event_type, event.key, event.payload)])

    wiring = Wiring(f"bench{index}", inputs=[f"bench.hop{index - 1}"], handlers={CHAIN_EVENT: forward})
    runtime = ServiceRuntime(settings, SchemaRegistry.load(), wiring, archive=None)  # type: ignore[arg-type]
    await runtime.start()
    try:
        await stop.wait()
    finally:
        await runtime.stop()


HOP_MAINS: dict[str, Callable[[str, int, asyncio.Event], Coroutine[Any, Any, None]]] = {
    "raw": raw_hop, "runtime": runtime_hop}


# ------------------------------------------------------------------------------- sink


class Sink:
    """Reads hop5 from the beginning (read committed) and notes when each key first arrives."""

    def __init__(self, prefix: str) -> None:
        self.topic = hop_topic(prefix, HOPS)
        self.consumer = AIOKafkaConsumer(**kafka_options(), group_id=None, enable_auto_commit=False,
                                         isolation_level="read_committed", auto_offset_reset="earliest")
        self.first_seen: dict[bytes, float] = {}
        self.records = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        partitions = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
        self.consumer.assign(partitions)
        await self.consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    self.records += 1
                    if record.key is not None:
                        self.first_seen.setdefault(record.key, now)

    def count(self, tag: bytes) -> int:
        return sum(1 for key in self.first_seen if key.startswith(tag))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(Exception, asyncio.CancelledError):  # a fetch backing off may fail here
            await self.consumer.stop()


# ------------------------------------------------------------------------------- chain


class Hops:
    """The five hops, as subprocesses (`python -m devtools.bench.hop KIND PREFIX I`) or as
    tasks in this process."""

    def __init__(self, kind: str, prefix: str, inprocess: bool, log_dir: Path) -> None:
        self.kind = kind
        self.prefix = prefix
        self.inprocess = inprocess
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.stop_event = asyncio.Event()

    def start(self) -> None:
        if self.inprocess:
            main = HOP_MAINS[self.kind]
            self.tasks = [asyncio.create_task(main(self.prefix, i, self.stop_event)) for i in range(1, HOPS + 1)]
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        module = "devtools.bench.faust_hop" if self.kind == "faust" else "devtools.bench.hop"
        for i in range(1, HOPS + 1):
            with open(self.log_dir / f"{self.kind}-hop{i}.log", "wb") as log:
                args = [sys.executable, "-m", module, self.kind, self.prefix, str(i)]
                self.processes.append(subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                                       env={**os.environ, "PYTHONPATH": str(ROOT)}))

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def check(self) -> None:
        for i, process in enumerate(self.processes, start=1):
            if process.poll() is not None:
                raise RuntimeError(f"{self.kind} hop {i} exited with {process.returncode}; "
                                   f"see {self.log_dir / f'{self.kind}-hop{i}.log'}")
        for task in self.tasks:
            if task.done() and task.exception() is not None:
                raise RuntimeError(f"{self.kind} hop failed: {task.exception()!r}")

    async def stop(self) -> None:
        self.stop_event.set()
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=30)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _produce(records: list[tuple[bytes, bytes]], topic: str) -> None:
    producer = AIOKafkaProducer(**kafka_options(), acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _trickle(sink: Sink, hops: Hops, topic: str, limit_s: float) -> dict[str, Any]:
    """Latency through five idle hops: records sent one at a time, far apart."""
    producer = AIOKafkaProducer(**kafka_options(), acks="all", enable_idempotence=True)
    await producer.start()
    sent: dict[bytes, float] = {}
    try:
        for key, value in encoded_records(TRICKLE, "t"):
            sent[key] = time.perf_counter()
            await producer.send_and_wait(topic, value, key=key)
            await asyncio.sleep(1 / TRICKLE_PER_S)
    finally:
        await producer.stop()
    await _wait_for(sink, hops, b"t-", TRICKLE, limit_s, "trickle")
    latencies = sorted((sink.first_seen[key] - at) * 1000 for key, at in sent.items())
    return {"records": TRICKLE, "per_s": TRICKLE_PER_S,
            "p50_ms": round(latencies[len(latencies) // 2], 1),
            "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1)}


async def _wait_for(sink: Sink, hops: Hops, tag: bytes, n: int, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while sink.count(tag) < n:
        hops.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {sink.count(tag)} of {n} records reached hop5 in {limit_s:.0f}s")
        await asyncio.sleep(0.05)


async def run_chain(kind: str, n: int, *, inprocess: bool = False, limit_s: float = 180.0,
                    profile: cProfile.Profile | None = None) -> dict[str, Any]:
    """Run one chain over N records; returns its figures. `profile` (in-process chains) is
    enabled for the measurement only."""
    prefix = new_prefix()
    topics = [Topic(hop_topic(prefix, i)) for i in range(HOPS + 1)]
    if kind == "runtime":
        topics += runtime_topics(prefix, [f"bench{i}" for i in range(1, HOPS + 1)])
    await create_topics(topics)
    warm, measured = encoded_records(WARMUP, "w"), encoded_records(n, "m")
    sink = Sink(prefix)
    hops = Hops(kind, prefix, inprocess, OUT / "logs" / prefix.rstrip("-"))
    started = time.perf_counter()
    try:
        await sink.start()
        hops.start()
        await _produce(warm, hop_topic(prefix, 0))
        await _wait_for(sink, hops, b"w-", WARMUP, limit_s, f"{kind} chain warm-up")
        ready_s = time.perf_counter() - started
        if profile is not None:
            profile.enable()
        t0 = time.perf_counter()
        await _produce(measured, hop_topic(prefix, 0))
        produced_s = time.perf_counter() - t0
        try:
            await _wait_for(sink, hops, b"m-", n, limit_s, f"{kind} chain")
        finally:
            if profile is not None:
                profile.disable()
        elapsed = max(t for key, t in sink.first_seen.items() if key.startswith(b"m-")) - t0
        trickle = None if inprocess else await _trickle(sink, hops, hop_topic(prefix, 0), limit_s)
        return {"msgs_per_s": round(n / elapsed), "records": n, "seconds": round(elapsed, 2), "trickle": trickle,
                "feed_s": round(produced_s, 2), "startup_s": round(ready_s, 1),
                "duplicates": sink.records - len(sink.first_seen), "hops": HOPS, "partitions": PARTITIONS,
                "layout": "all hops in the bench process" if inprocess else "one process per hop"}
    finally:
        await hops.stop()
        await sink.stop()
        await drop_namespace(prefix)
        for leftover in (OUT / "faust").glob(f"{prefix}*"):
            shutil.rmtree(leftover, ignore_errors=True)
        say(f"{kind} chain done ({time.perf_counter() - started:.0f}s)")
