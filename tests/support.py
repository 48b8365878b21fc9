"""Helpers for tests that run the real services over the real broker and store."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient

from devtools.launcher import ROOT, Stack
from services.intake import intake_pb2, intake_pb2_grpc
from sim.samples import DENIED_MATTER
from tongban.codec import CodecError, SchemaRegistry
from tongban.events import encode_event
from tongban.grpc_tls import DEFAULT_CALLER, client_channel
from tongban.ops import acls
from tongban.ops.kafka_admin import ops_settings
from tongban.ops.topics import apply, kafka_client_settings, load_declared

# The tests' own admin, producers and sinks run as the broker's `admin` (operator tools'
# identity); the services and the simulator as their own principals.
KAFKA = kafka_client_settings()
KAFKA_ACLS = ops_settings().kafka_security != "PLAINTEXT"  # an authenticating broker: ACLs per namespace
REGISTRY = SchemaRegistry.load()
MARKER = "tongban.catalogue.MatterChanged"


def new_namespace() -> str:
    namespace = f"t{secrets.token_hex(3)}-"
    asyncio.run(apply(KAFKA["bootstrap_servers"], namespace))
    if KAFKA_ACLS:
        acls.apply(namespace)  # the rights infra/topics.toml declares, on this namespace's names
    return namespace


def drop_namespace(namespace: str) -> None:
    """Delete a test run's topics and databases so the local broker and store do not grow."""

    async def drop() -> None:
        admin = AIOKafkaAdminClient(**KAFKA)
        await admin.start()
        try:
            await admin.delete_topics([t for t in await admin.list_topics() if t.startswith(namespace)])
        finally:
            await admin.close()
        await drop_databases(namespace)

    asyncio.run(drop())


async def drop_databases(namespace: str) -> None:
    """Drop the store's databases of a test namespace."""
    client = AsyncMongoClient(os.environ.get("TONGBAN_MONGO_URI", "mongodb://127.0.0.1:27217/"))
    try:
        for name in await client.list_database_names():
            if name.startswith(namespace.replace("-", "_")):
                await client.drop_database(name)
    finally:
        await client.close()
    if KAFKA_ACLS:
        acls.drop(namespace)


def start_stack(namespace: str, env: dict[str, str] | None = None, sim_args: tuple[str, ...] = (),
                only: tuple[str, ...] = ()) -> Stack:
    """The services and the simulator, or `only` those named (the test then writes what the
    others would); `env` and `sim_args` add to the defaults (e.g. a short supplement period,
    authorities that ask for a 补正)."""
    log_dir = ROOT / "var" / "test" / namespace.rstrip("-")
    stack = Stack(
        {"TONGBAN_NAMESPACE": namespace, "TONGBAN_SESSION_TIMEOUT_MS": "3000",
         "TONGBAN_TRACE_FILE": str(log_dir / "traces.jsonl"), "TONGBAN_LOG_LEVEL": "INFO", **(env or {})},
        log_dir, sim_args=("--deny-matters", DENIED_MATTER, "--carrier-ledger", str(log_dir / "carrier.jsonl"),
                           *sim_args))
    if only:
        for name in only:
            stack.start(name)
    else:
        stack.start_all()
    try:
        asyncio.run(stack.wait_healthy(tuple(n for n in only if n != "sim")) if only else stack.wait_healthy())
    except BaseException:
        stack.stop_all()
        raise
    return stack


def carrier_parcels(stack: Stack, application_id: str) -> int:
    """How many parcels the simulated carrier says it was handed for this application."""
    ledger = stack.log_dir / "carrier.jsonl"
    lines = ledger.read_text().splitlines() if ledger.exists() else []
    return sum(1 for line in lines if json.loads(line)["application_id"] == application_id)


async def settle(namespace: str, topics: list[str], key: str, sink: Sink, within: float = 60) -> Seen:
    """Write a marker record behind everything already on each topic's partition for `key`
    and wait until the sink has read every marker: whatever was written there before, the
    sink has then seen (no fixed sleep). The marker is an event no service handles: a
    `MatterChanged`, which none of these topics carries, so a service reading one of them
    dead-letters it (infra/topics.toml `events`). Only the markers on the topics written
    count, not those copies on a dead-letter topic the sink may also read."""
    marker_id = f"marker-{secrets.token_hex(4)}"
    marker = {"matter_code": marker_id, "name": "marker", "modes": [], "promised_working_days": 0,
              "statutory_working_days": 0, "postal_delivery": False, "change": "UPDATED"}
    _, value = encode_event(REGISTRY, MARKER, marker, cause_id=marker_id, correlation_id=key, source_system="test")
    for topic in topics:
        await produce(namespace, topic, key.encode(), value)

    def arrived(seen: Seen) -> bool:
        return set(topics) <= {m["_topic"] for m in seen.events(MARKER, key) if m["matter_code"] == marker_id}

    return await sink.wait_for(arrived, within)


def trace_file(stack: Stack) -> Path:
    return stack.log_dir / "traces.jsonl"


async def submit(stack: Stack, request: intake_pb2.SubmitRequest, retry_for: float = 60,
                 caller: str = DEFAULT_CALLER) -> str:
    """Submit like a real client (as `caller`, with its client certificate): retry on
    UNAVAILABLE (a crashed or restarting intake) for up to `retry_for` seconds."""
    deadline = time.monotonic() + retry_for
    while True:
        try:
            async with client_channel(stack.grpc_target("intake"), caller) as channel:
                reply = await intake_pb2_grpc.IntakeStub(channel).Submit(request, timeout=10)
                return reply.application_id
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) \
                    or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def track(stack: Stack, application_id: str, caller: str = DEFAULT_CALLER) -> intake_pb2.Progress:
    async with client_channel(stack.grpc_target("intake"), caller) as channel:
        return await intake_pb2_grpc.IntakeStub(channel).Track(
            intake_pb2.TrackRequest(application_id=application_id), timeout=10)


async def wait_terminal(stack: Stack, application_id: str, within: float = 60,
                        until=lambda progress: True, caller: str = DEFAULT_CALLER) -> intake_pb2.Progress:
    """Track until the application is concluded and `until(progress)` holds."""
    return await wait_progress(stack, application_id, lambda p: p.terminal and until(p), within, caller)


async def wait_progress(stack: Stack, application_id: str, until, within: float = 60,
                        caller: str = DEFAULT_CALLER) -> intake_pb2.Progress:
    """Track until `until(progress)` holds (e.g. a stage the application waits at)."""
    deadline = time.monotonic() + within
    while True:
        try:
            progress = await track(stack, application_id, caller)
            if until(progress):
                return progress
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"{application_id}: Track did not show what was awaited after {within}s")
        await asyncio.sleep(0.3)


@dataclass
class Seen:
    """What an independent consumer saw: records per (event type, key), by event id."""

    records: list = field(default_factory=list)
    by_type: dict = field(default_factory=lambda: defaultdict(list))

    def events(self, event_type: str, key: str | None = None) -> list[dict]:
        return [e for e in self.by_type[event_type] if key is None or e["_key"] == key]


class Sink:
    """A test's own read_committed consumer over some topics of a namespace, from the start."""

    def __init__(self, namespace: str, topics: list[str], kafka: dict | None = None) -> None:
        """`kafka`: client options for another broker than the local one (KAFKA)."""
        self.namespace = namespace
        self.consumer = AIOKafkaConsumer(
            *[namespace + t for t in topics], **(kafka or KAFKA), isolation_level="read_committed",
            auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
        self.seen = Seen()

    async def __aenter__(self) -> Sink:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def poll(self, seconds: float) -> Seen:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batch = await self.consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    self.seen.records.append(record)
                    try:
                        event_type, body = REGISTRY.decode(record.value)
                    except CodecError:
                        continue
                    body["_key"] = record.key.decode() if record.key else None
                    body["_topic"] = record.topic.removeprefix(self.namespace)
                    self.seen.by_type[event_type].append(body)
        return self.seen

    async def wait_for(self, predicate, within: float = 60) -> Seen:
        deadline = time.monotonic() + within
        while not predicate(self.seen):
            if time.monotonic() > deadline:
                raise TimeoutError("the sink did not see what was expected")
            await self.poll(0.5)
        return self.seen


async def produce(namespace: str, topic: str, key: bytes | None, value: bytes, headers=None) -> None:
    producer = AIOKafkaProducer(**KAFKA, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(namespace + topic, key=key, value=value, headers=headers or [])
    finally:
        await producer.stop()


def declared_topics() -> list[str]:
    return [spec.declared_name for spec in load_declared("")]
