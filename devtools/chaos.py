"""`make chaos` (`python -m devtools.chaos --applications 10000`): the reliability proof.

The whole system runs with two instances of every service in its consumer group, the
data-sharing providers and the partner simulator (authorities, carrier, wallet, windows),
in a fresh namespace on a broker and store of the run's own (a second local broker,
instance `chaos`, and a FerretDB on its own port), so restarting them disturbs no other
work on the machine. Applications are submitted through intake's gRPC API, spread over
both intake instances, by the bench's closed loop (devtools.bench.pipeline). Meanwhile a
seeded schedule:

- SIGKILLs service instances at random moments and starts them again;
- stops an instance and starts it with one of the runtime's crash points
  (TONGBAN_CRASH_POINT), so it kills itself there, and starts it again;
- freezes an instance (SIGSTOP) longer than its session, so its partitions move while it
  still believes it owns them, then lets it go on (a zombie that must be fenced);
- freezes or kills the partner simulator (authorities and carrier) and freezes a
  data-sharing provider for a while;
- restarts the broker once and stops the store for at least 10 seconds once;
- writes hostile records (framing, envelope, size, headers, encoding, retries, commands)
  to every input topic and hostile requests to intake's gRPC API; rates applications
  (好差评) so feedback's counting crosses the same faults.

At the end it checks at independent sinks, never from the services' own word: its own
read_committed consumer of every topic (exactly one terminal event per application, no
event id twice, no second delivery, each rating counted once, each hostile record in the
dead-letter topic of every group that reads its topic, with a reason), the carrier's own
ledger (one physical parcel per application at most), the consumer groups' committed
offsets (no lag) and the processes (none exited except those killed on purpose). It
writes var/chaos/latest.json and exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from devtools.bench.pipeline import (
    APP,
    REJECTIONS,
    ClosedLoop,
    GroupLag,
    Submitter,
    Tracker,
    open_channel,
    stop_quietly,
)
from devtools.launcher import ROOT, SERVICES, Stack, instance
from tongban import grpc_tls

OUT = ROOT / "var" / "chaos"
SCRIPTS = ROOT / "infra" / "scripts"
KAFKA_INSTANCE = "chaos"
KAFKA_PORT_BASE = 24092  # below the ephemeral range, so no client connection holds the port
STORE_PORT = 27317
SESSION_TIMEOUT_MS = 6000
RATING_SHARE = 20  # one rating (好差评) per this many applications
TERMINAL = {APP + "ApplicationDelivered", *REJECTIONS}
ONCE_PER_APPLICATION = [APP + "ApplicationReceived", APP + "ApplicationRouted", APP + "ApplicationVerified",
                        APP + "ApplicationAccepted", APP + "ApplicationDecided", APP + "ApplicationDelivered"]
# Written at least once, where a repeat is the same fact by design: the simulator's answers,
# and routing's catalogue, published at start with fixed event ids on a compacted topic keyed
# by matter (two routing instances starting together both publish; readers keep the latest).
AT_LEAST_ONCE = (".decisions", ".receipts", ".originals", "tongban.catalogue.changes")


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] chaos: {text}", file=sys.stderr, flush=True)


async def _answer(calls: list[Callable[[], Awaitable[object]]]) -> str:
    """The status a hostile request gets: ACCEPTED or its refusal's code. UNAVAILABLE means ask
    again (not this instance's key, its partitions moving, or the owner's verdict late): each
    instance in turn for a while, as a client would."""
    answer = "UNAVAILABLE"
    for call in calls * 20:
        try:
            await call()
            return "ACCEPTED"
        except grpc.aio.AioRpcError as exc:
            answer = exc.code().name
        if answer != "UNAVAILABLE":
            return answer
        await asyncio.sleep(0.25)
    return answer


@dataclass
class Options:
    applications: int = 10_000
    seed: int = 16
    inflight: int = 128
    broker_restart: bool = True
    store_outage: bool = True
    store_outage_s: float = 12.0
    pause_between: tuple[float, float] = (1.0, 3.0)  # seconds between two chaos actions
    deadline_s: float = 3600.0
    keep_platform: bool = False  # leave the run's broker running afterwards (the store always stops)


# ------------------------------------------------------------------------------ platform


class Platform:
    """The run's own broker (infra/scripts/kafka.sh as instance `chaos`) and FerretDB."""

    def __init__(self, directory: Path) -> None:
        self.kafka_env = {**os.environ, "TONGBAN_KAFKA_INSTANCE": KAFKA_INSTANCE,
                          "TONGBAN_KAFKA_PORT_BASE": str(KAFKA_PORT_BASE)}
        self.kafka_env.pop("TONGBAN_KAFKA_BOOTSTRAP", None)
        self.store_dir = directory / "ferretdb"
        self.store: subprocess.Popen | None = None
        self.bootstrap = f"127.0.0.1:{KAFKA_PORT_BASE}"
        self.mongo_uri = f"mongodb://127.0.0.1:{STORE_PORT}/"

    def env(self) -> dict[str, str]:
        return {"TONGBAN_KAFKA_BOOTSTRAP": self.bootstrap, "TONGBAN_MONGO_URI": self.mongo_uri}

    def kafka(self, action: str) -> None:
        subprocess.run(["bash", str(SCRIPTS / "kafka.sh"), action], env=self.kafka_env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=240)

    def start_store(self) -> None:
        if port_open(STORE_PORT):  # else the outage would stop our process while another one serves
            raise RuntimeError(f"something already listens on 127.0.0.1:{STORE_PORT}")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        (self.store_dir / "state").mkdir(exist_ok=True)
        log = open(self.store_dir / "ferretdb.log", "ab")  # noqa: SIM115 - the process keeps it
        self.store = subprocess.Popen(
            [str(ROOT / "var" / "bin" / "ferretdb"), "--handler=sqlite", f"--sqlite-url=file:{self.store_dir}/",
             f"--state-dir={self.store_dir / 'state'}", f"--listen-addr=127.0.0.1:{STORE_PORT}",
             "--debug-addr=-", "--telemetry=disable", "--log-level=warn", "--log-format=text"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while not port_open(STORE_PORT):
            if self.store.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"FerretDB did not start; see {self.store_dir / 'ferretdb.log'}")
            time.sleep(0.2)

    def stop_store(self) -> None:
        if self.store is not None and self.store.poll() is None:
            self.store.terminate()
            try:
                self.store.wait(15)
            except subprocess.TimeoutExpired:
                self.store.kill()
                self.store.wait()
        self.store = None

    def start(self) -> None:
        self.kafka("start")
        # principals declared after this broker's data dir was formatted get their SCRAM logins
        subprocess.run([sys.executable, "-m", "tongban.ops", "principals", "apply"], cwd=ROOT, check=True,
                       env={**os.environ, **self.env()}, stdout=subprocess.DEVNULL, timeout=120)
        self.start_store()


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ------------------------------------------------------------------------------ hostile input


@dataclass
class Hostile:
    kind: str
    topic: str  # logical
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def garbage(size: int = 64) -> bytes:
    return b"\x00not an event\x00" + secrets.token_bytes(size)


def hostile_records(service_inputs: dict[str, list[str]], rnd: random.Random) -> list[Hostile]:
    """One round: every kind once, on an input topic chosen at random (retry and command
    kinds on a service's own retry and command topics)."""
    from tongban import topics
    from tongban.codec import MAGIC, SchemaRegistry, schema_fingerprint
    from tongban.runtime.core import ORIGIN_TOPIC_HEADER, REPLAY_COUNT_HEADER

    registry = SchemaRegistry.load()
    inputs = sorted({t for ts in service_inputs.values() for t in ts})
    service = rnd.choice(sorted(service_inputs))
    group = f"tongban-{service}"
    received_fp = registry.latest(topics.APPLICATION_RECEIVED_EVENT).fingerprint
    marker = encode_marker(registry)
    _, _, marker_body = marker.partition(MAGIC)

    def pick() -> str:
        return rnd.choice(inputs)

    retry = topics.retry(group)
    good_origin = service_inputs[service][0].encode()
    kinds = [
        Hostile("garbage", pick(), b"TBHOSTILE", garbage()),
        Hostile("empty value", pick(), b"TBHOSTILE", b""),
        Hostile("magic only", pick(), b"TBHOSTILE", MAGIC),
        Hostile("truncated body", pick(), b"TBHOSTILE", MAGIC + received_fp + b"\x02"),
        Hostile("unknown fingerprint", pick(), b"TBHOSTILE", MAGIC + secrets.token_bytes(8) + b"\x02\x04"),
        Hostile("body of another schema", pick(), b"TBHOSTILE", MAGIC + received_fp + marker_body[8:]),
        Hostile("fingerprint of a schema text", pick(), b"TBHOSTILE",
                MAGIC + schema_fingerprint('"string"') + b"\x06abc"),
        Hostile("tombstone", pick(), b"TBHOSTILE", None),
        Hostile("garbage with a null key", pick(), None, garbage()),
        Hostile("key not UTF-8", pick(), b"\xff\xfe\xfd", garbage()),
        Hostile("oversized key", pick(), b"K" * 4096, garbage()),
        Hostile("oversized value", pick(), b"TBHOSTILE", garbage(900_000)),
        Hostile("null traceparent", pick(), b"TBHOSTILE", garbage(), [("traceparent", None)]),  # type: ignore[list-item]
        Hostile("traceparent not UTF-8", pick(), b"TBHOSTILE", garbage(), [("traceparent", b"\xff\xfe")]),
        Hostile("bad traceparent", pick(), b"TBHOSTILE", garbage(), [("traceparent", b"00-zz-zz-01")]),
        Hostile("headers over 16 KiB", pick(), b"TBHOSTILE", garbage(),
                [(f"x-junk-{n}", secrets.token_bytes(1024)) for n in range(20)]),
        Hostile("header name not UTF-8-safe", pick(), b"TBHOSTILE", garbage(), [("\u0000\u202e", b"x")]),
        Hostile("retry without origin", retry, b"TBHOSTILE", marker),
        Hostile("retry with a null origin", retry, b"TBHOSTILE", marker,
                [(ORIGIN_TOPIC_HEADER, None)]),  # type: ignore[list-item]
        Hostile("retry origin not UTF-8", retry, b"TBHOSTILE", marker, [(ORIGIN_TOPIC_HEADER, b"\xff")]),
        Hostile("retry count not a number", retry, b"TBHOSTILE", marker,
                [(ORIGIN_TOPIC_HEADER, good_origin), (REPLAY_COUNT_HEADER, b"many")]),
        Hostile("retry count negative", retry, b"TBHOSTILE", marker,
                [(ORIGIN_TOPIC_HEADER, good_origin), (REPLAY_COUNT_HEADER, b"-1")]),
        Hostile("replayed too often", retry, b"TBHOSTILE", marker,
                [(ORIGIN_TOPIC_HEADER, good_origin), (REPLAY_COUNT_HEADER, b"99")]),
        Hostile("garbage on a retry topic", retry, b"TBHOSTILE", garbage(),
                [(ORIGIN_TOPIC_HEADER, good_origin), (REPLAY_COUNT_HEADER, b"1")]),
        Hostile("garbage on a command topic", topics.commands(group), b"TBHOSTILE", garbage()),
        Hostile("an event on a command topic", topics.commands(group), b"TBHOSTILE", marker),
    ]
    return kinds


def encode_marker(registry: Any) -> bytes:
    """A well-formed event no service handles: the body other kinds borrow."""
    from tongban import topics
    from tongban.events import encode_event

    body = {"matter_code": "CHAOS", "name": "chaos", "modes": [], "promised_working_days": 0,
            "statutory_working_days": 0, "postal_delivery": False, "change": "UPDATED"}
    _, value = encode_event(registry, topics.MATTER_CHANGED_EVENT, body, cause_id=secrets.token_hex(8),
                            correlation_id="TBHOSTILE", source_system="chaos")
    return value


# ------------------------------------------------------------------------------ the run


class Chaos:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.rnd = random.Random(options.seed)
        self.namespace = f"c{secrets.token_hex(3)}-"
        self.dir = OUT / self.namespace.rstrip("-")
        self.platform = Platform(OUT / "platform")
        self.down: set[str] = set()  # processes stopped or killed on purpose, not yet back
        self.counts: Counter[str] = Counter()
        self.crashes: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []  # the schedule as it ran
        self.hostile: list[tuple[Hostile, int, int]] = []  # with the partition and offset written
        self.grpc_bad: Counter[str] = Counter()  # hostile gRPC requests by the answer they got
        self.ratings: list[str] = []
        self.started = self.flow_started = time.monotonic()
        self.result: dict[str, Any] = {"namespace": self.namespace, "seed": options.seed,
                                       "applications": options.applications, "logs": str(self.dir / "logs")}

    def note(self, what: str, **detail: Any) -> None:
        self.events.append({"t": round(time.monotonic() - self.started, 1), "what": what, **detail})
        say(f"{what} {' '.join(f'{k}={v}' for k, v in detail.items())}")

    # ---------------------------------------------------------------- set-up
    async def run(self) -> dict[str, Any]:
        from services.delivery import handlers as delivery
        from services.feedback import handlers as feedback
        from services.intake import handlers as intake
        from services.routing import handlers as routing
        from services.verification import handlers as verification
        from sim.samples import DENIED_MATTER
        from tongban.ops import acls
        from tongban.ops.topics import apply
        from tongban.partners import authorities

        self.inputs = {"intake": intake.INPUTS, "routing": routing.INPUTS, "verification": verification.INPUTS,
                       "delivery": delivery.inputs(authorities()), "feedback": feedback.INPUTS}
        self.platform.start()
        os.environ.update(self.platform.env())  # this process's own clients (bench helpers read it)
        try:
            await apply(None, self.namespace)
            await asyncio.to_thread(acls.apply, self.namespace)
            self.stack = Stack({**self.platform.env(), "TONGBAN_NAMESPACE": self.namespace,
                                "TONGBAN_STATE_DIR": str(self.dir / "state"),
                                "TONGBAN_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS)},
                               self.dir / "logs", sim_args=("--deny-matters", DENIED_MATTER, "--carrier-ledger",
                                                            str(self.dir / "carrier.jsonl")))
            self.services = [*SERVICES, *(self.stack.add_instance(s, 2) for s in SERVICES)]
            # The windows call both delivery instances (each answers with the owner's verdict) and
            # keep their open pick-ups in a journal, so a killed simulator carries on with them.
            deliveries = ",".join(self.stack.grpc_target(name) for name in ("delivery", instance("delivery", 2)))
            self.stack.sim_args = (*self.stack.sim_args, "--delivery", deliveries,
                                   "--window-journal", str(self.dir / "windows.jsonl"))
            self.stack.start_all()
            for name in self.services[len(SERVICES):]:
                self.stack.start(name)
            await self.stack.wait_healthy(tuple(self.services), timeout=180)
            self.note("stack healthy", processes=len(self.stack.processes))
            await self._flow()
        finally:
            self.result["wall_s"] = round(time.monotonic() - self.started, 1)
            with contextlib.suppress(Exception):
                self.stack.stop_all()
            if self.result.get("passed"):  # a failed run's topics and databases stay for a look
                from devtools.bench.common import drop_namespace

                with contextlib.suppress(Exception):
                    await drop_namespace(self.namespace, databases=True)
            self.platform.stop_store()
            if not self.options.keep_platform:
                self.platform.kafka("stop")
        return self.result

    async def _flow(self) -> None:
        from sim.samples import samples

        options = self.options
        tracker = self.tracker = Tracker(self.namespace)
        await tracker.start()
        caller = samples("chaos")[0].request.source_system
        channels = [await open_channel(self.stack.grpc_target(name), caller)
                    for name in ("intake", instance("intake", 2))]
        submitter = Submitter(channels[0], tracker, channels[1], retry_for=300.0)
        loop = ClosedLoop(submitter, options.inflight)
        spawned = itertools.count(1)  # `until` is asked once before each new application
        loop.start(until=lambda: next(spawned) > options.applications)
        monitor = asyncio.create_task(self._monitor())
        deadline = self.started + options.deadline_s
        try:
            await self._schedule(tracker, submitter, deadline)
            await loop.stop()
            self.note("all submitted", submitted=submitter.count, errors=dict(submitter.errors))
            await self._restore_everything()
            drained = await tracker.wait_drained(max(1.0, deadline - time.monotonic()))
            self.result["flow_s"] = round(time.monotonic() - self.flow_started, 1)
            self.note("drained" if drained else "NOT drained", terminal=tracker.terminal, open=tracker.open())
            lag = await self._wait_lag(deadline)
        finally:
            monitor.cancel()
            await loop.stop()
            loop.cancel()
            await asyncio.sleep(0.5)  # the cancelled calls let go of the channels
            await submitter.close()
            await tracker.stop()
        self.result["submit_errors"] = dict(submitter.errors)
        self.result["lag"] = lag
        await self._verify(tracker, submitter)

    # ---------------------------------------------------------------- the schedule
    async def _schedule(self, tracker: Tracker, submitter: Submitter, deadline: float) -> None:
        options = self.options
        n = options.applications
        broker_at = 0.35 * n if options.broker_restart else None
        store_at = 0.65 * n if options.store_outage else None
        actions = [self._kill, self._kill, self._kill, self._crash_point, self._crash_point, self._pause,
                   self._partner_outage, self._provider_outage, self._hostile, self._rate]
        # every kind of fault once (in a seeded order), then seeded random choices
        first = self.rnd.sample(actions, len(actions))
        await self._hostile()
        await self._grpc_hostile(submitter)
        await self._rate()
        self.flow_started = time.monotonic()
        reported = time.monotonic()
        while time.monotonic() < deadline:
            done = submitter.count >= n
            if done and not tracker.open():  # everything finished before the outages' moment came
                broker_at = broker_at and 0
                store_at = store_at and 0
            if time.monotonic() - reported > 15:
                reported = time.monotonic()
                self.note("progress", submitted=submitter.count, terminal=tracker.terminal, open=tracker.open())
            if broker_at is not None and tracker.terminal >= broker_at:
                broker_at = None
                await self._broker_restart()
            elif store_at is not None and tracker.terminal >= store_at:
                store_at = None
                await self._store_outage()
            elif done and not tracker.open() and broker_at is None and store_at is None:
                break
            elif tracker.open() or not done:  # faults while applications are in flight
                await (first.pop() if first else self.rnd.choice(actions))()
            await asyncio.sleep(self.rnd.uniform(*options.pause_between))
        await self._hostile()  # a last round, read by the services after every fault

    def _service_instance(self) -> str:
        return self.rnd.choice(self.services)

    async def _kill(self) -> None:
        name = self._service_instance()
        process = self.stack.processes.get(name)
        if process is None or process.poll() is not None:
            return
        self.down.add(name)
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.counts["kills"] += 1
        self.note("SIGKILL", process=name)
        await asyncio.sleep(self.rnd.uniform(0.5, 4.0))
        self._start(name)

    async def _crash_point(self) -> None:
        from tongban.config import CRASH_POINTS

        name = self._service_instance()
        point = self.rnd.choice(CRASH_POINTS)
        self.down.add(name)
        self.stack.stop(name)
        extra = {"TONGBAN_CRASH_POINT": point}
        if point == "during_restore":  # an empty local store: the whole changelog partition is replayed
            extra["TONGBAN_STATE_DIR"] = str(self.dir / "state" / f"fresh-{secrets.token_hex(3)}")
        process = self.stack.start(name, extra)
        reached = False
        for _ in range(int(45 / 0.2)):
            if process.poll() is not None:
                reached = process.returncode == -signal.SIGKILL
                break
            await asyncio.sleep(0.2)
        if not reached:
            self.stack.stop(name)  # nothing reached that point in time (an instance without traffic)
        self.counts["crash_points" if reached else "crash_points_not_reached"] += 1
        self.counts["kills"] += reached
        self.note("crash point", process=name, point=point, reached=reached)
        self._start(name)

    async def _pause(self) -> None:
        """Frozen longer than its session: its partitions move; woken, it must be fenced."""
        name = self._service_instance()
        process = self.stack.processes.get(name)
        if process is None or process.poll() is not None:
            return
        frozen = SESSION_TIMEOUT_MS / 1000 * self.rnd.uniform(1.5, 2.5)
        process.send_signal(signal.SIGSTOP)
        self.note("SIGSTOP", process=name, seconds=round(frozen, 1))
        await asyncio.sleep(frozen)
        process.send_signal(signal.SIGCONT)
        self.counts["pauses"] += 1

    async def _partner_outage(self) -> None:
        """The authorities and the carrier (one simulator process) fail for a while: frozen,
        or killed and started again."""
        process = self.stack.processes["sim"]
        if self.rnd.random() < 0.5:
            seconds = self.rnd.uniform(5, 12)
            process.send_signal(signal.SIGSTOP)
            self.note("partners frozen", seconds=round(seconds, 1))
            await asyncio.sleep(seconds)
            process.send_signal(signal.SIGCONT)
        else:
            self.down.add("sim")
            process.send_signal(signal.SIGKILL)
            process.wait()
            self.note("partners killed")
            await asyncio.sleep(self.rnd.uniform(1, 5))
            self._start("sim")
        self.counts["partner_outages"] += 1

    async def _provider_outage(self) -> None:
        from tongban.sharing.endpoints import PROVIDERS

        name = self.rnd.choice(PROVIDERS)
        seconds = self.rnd.uniform(5, 12)
        self.stack.processes[name].send_signal(signal.SIGSTOP)
        self.note("provider frozen", provider=name, seconds=round(seconds, 1))
        await asyncio.sleep(seconds)
        self.stack.processes[name].send_signal(signal.SIGCONT)
        self.counts["provider_outages"] += 1

    async def _broker_restart(self) -> None:
        # every instance up first: one started while the broker is away exits (it cannot
        # bootstrap), which is a start-up refusal, not the crash this run looks for
        await self.stack.wait_healthy(tuple(self.services), timeout=180)
        self.note("broker stopping")
        await asyncio.to_thread(self.platform.kafka, "stop")
        await asyncio.sleep(self.rnd.uniform(3, 8))
        await asyncio.to_thread(self.platform.kafka, "start")
        await self.tracker.reconnect()
        self.counts["broker_restarts"] += 1
        self.note("broker started")

    async def _store_outage(self) -> None:
        await self.stack.wait_healthy(tuple(self.services), timeout=180)
        self.note("store stopping", seconds=self.options.store_outage_s)
        self.platform.stop_store()
        # the outage itself: the scenario asks for the store to stay away this long
        await asyncio.sleep(self.options.store_outage_s)
        await asyncio.to_thread(self.platform.start_store)
        self.counts["store_outages"] += 1
        self.note("store started")

    def _start(self, name: str) -> None:
        self.stack.start(name)
        self.down.discard(name)

    async def _monitor(self) -> None:
        """A process that exits without being killed on purpose is a crash: noted, restarted."""
        while True:
            for name, process in list(self.stack.processes.items()):
                if name not in self.down and process.poll() is not None:
                    self.crashes.append({"process": name, "code": process.returncode,
                                         "t": round(time.monotonic() - self.started, 1)})
                    self.note("CRASH", process=name, code=process.returncode)
                    self.stack.start(name)
            await asyncio.sleep(0.5)

    async def _restore_everything(self) -> None:
        for process in list(self.stack.processes.values()):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
        for name in [*self.services, "sim"]:
            if name not in self.stack.processes:
                self._start(name)
        await self.stack.wait_healthy(tuple(self.services), timeout=180)

    async def _wait_lag(self, deadline: float) -> dict[str, int]:
        lag = GroupLag(self.namespace, SERVICES)
        await lag.start()
        try:
            while True:
                measured = await unread(lag)
                if not any(measured.values()) or time.monotonic() > deadline:
                    return measured
                await asyncio.sleep(0.5)
        finally:
            await lag.stop()

    # ---------------------------------------------------------------- bad input and ratings
    async def _hostile(self) -> None:
        from devtools.bench.common import kafka_options

        records = hostile_records(self.inputs, self.rnd)
        producer = AIOKafkaProducer(**kafka_options(), acks="all", max_request_size=2_000_000)
        await producer.start()
        try:
            for h in records:
                meta = await producer.send_and_wait(self.namespace + h.topic, key=h.key, value=h.value,
                                                    headers=h.headers)
                self.hostile.append((h, meta.partition, meta.offset))
        finally:
            await producer.stop()
        self.note("hostile records", kinds=len(records))

    async def _grpc_hostile(self, submitter: Submitter) -> None:
        """Requests intake must refuse with a clear status, not take or crash on."""
        from services.intake import intake_pb2, intake_pb2_grpc
        from sim.samples import samples

        stubs = [intake_pb2_grpc.IntakeStub(channel) for channel in submitter.channels]
        refused = [s.request for s in samples(f"chaos-{self.namespace}") if s.expected == "REJECTED_AT_INTAKE"]
        oversized = intake_pb2.SubmitRequest()
        oversized.CopyFrom(submitter.templates[0])
        oversized.client_reference = f"chaos-oversized-{self.namespace}"
        oversized.applicant.name = "名" * 300_000
        calls = [("submit", r) for r in [*refused, intake_pb2.SubmitRequest(), oversized]]
        calls += [("track", intake_pb2.TrackRequest(application_id="TB-NO-SUCH-APPLICATION")),
                  ("track", intake_pb2.TrackRequest(application_id=""))]
        for method, request in calls:
            self.grpc_bad[await _answer([functools.partial(stub.Submit if method == "submit" else stub.Track,
                                                           request, timeout=30) for stub in stubs])] += 1
        await self._window_hostile()
        self.note("hostile gRPC requests", answers=dict(self.grpc_bad))

    async def _window_hostile(self) -> None:
        """Window acts delivery must refuse on either instance, with the owner's code wherever
        the file lives: an application that does not exist (NOT_FOUND), an empty id."""
        from services.delivery import delivery_pb2, delivery_pb2_grpc
        from sim.carrier import WINDOW_CALLER

        window = "HN-430103-KSTB-01"  # one the Changsha window system speaks for
        acts = [delivery_pb2.WindowAct(application_id=f"TB-NO-SUCH-{self.namespace}{n}", window_id=window)
                for n in range(4)] + [delivery_pb2.WindowAct(application_id="", window_id=window)]
        for name in ("delivery", instance("delivery", 2)):
            async with grpc_tls.client_channel(self.stack.grpc_target(name), WINDOW_CALLER) as channel:
                stub = delivery_pb2_grpc.DeliveryStub(channel)
                for act in acts:
                    self.grpc_bad[await _answer([functools.partial(stub.ConfirmPickUp, act, timeout=30)])] += 1

    async def _rate(self) -> None:
        """好差评 ratings, each for an application of its own, written as the ratings topic
        carries them: feedback must count each exactly once across the faults."""
        from devtools.bench.common import kafka_options
        from tongban import topics
        from tongban.codec import SchemaRegistry
        from tongban.events import encode_event, now_utc

        registry = SchemaRegistry.load()
        producer = AIOKafkaProducer(**kafka_options(), acks="all", enable_idempotence=True)
        await producer.start()
        try:
            for _ in range(max(1, self.options.applications // RATING_SHARE // 10)):
                number = len(self.ratings)
                application_id = f"TBCHAOS{self.namespace.upper().strip('-')}{number:05d}"
                rating_id = f"chaos-{self.namespace}{number}"
                rating = {"rating_id": rating_id, "application_id": application_id, "matter_code": "KSTB-MED-01",
                          "division_code": "430102", "party": "420000", "level": self.rnd.randint(1, 5),
                          "channel": "ONLINE", "comment": None, "rated_at": now_utc()}
                _, value = encode_event(registry, topics.SERVICE_RATING_EVENT, rating, cause_id=rating_id,
                                        correlation_id=application_id, source_system="chaos")
                await producer.send_and_wait(self.namespace + topics.FEEDBACK_RATINGS, key=application_id.encode(),
                                             value=value)
                self.ratings.append(rating_id)
        finally:
            await producer.stop()
        self.note("ratings", written=len(self.ratings))

    # ---------------------------------------------------------------- the checks
    async def _verify(self, tracker: Tracker, submitter: Submitter) -> None:
        from tongban.codec import CodecError, SchemaRegistry

        registry = SchemaRegistry.load()
        records = await read_everything(self.namespace)
        terminal: Counter[str] = Counter()
        once: Counter[tuple[str, str]] = Counter()
        ids: Counter[str] = Counter()
        kind_of: dict[str, str] = {}  # event id -> "topic EventType"
        facts: Counter[str] = Counter()
        dead_letters: dict[tuple[str, str, int, int], str] = {}
        for record in records:
            topic = record.topic.removeprefix(self.namespace)
            if topic.startswith("tongban.dlq."):
                headers = {k: v for k, v in record.headers}
                origin = (topic.removeprefix("tongban.dlq."),
                          headers.get("tongban.dlq.origin.topic", b"").decode(errors="replace"),
                          int(headers.get("tongban.dlq.origin.partition", b"-1")),
                          int(headers.get("tongban.dlq.origin.offset", b"-1")))
                dead_letters[origin] = headers.get("tongban.dlq.error.message", b"").decode(errors="replace")
                continue
            try:
                event_type, body = registry.decode(record.value)
            except (CodecError, TypeError):
                continue
            event_id = body.get("envelope", {}).get("event_id")
            if event_id and not topic.endswith(AT_LEAST_ONCE):
                ids[event_id] += 1
                kind_of[event_id] = f"{topic} {event_type.rsplit('.', 1)[-1]}"
            application_id = body.get("application_id")
            if event_type in TERMINAL and application_id:
                terminal[application_id] += 1
            if event_type in ONCE_PER_APPLICATION and application_id:
                once[(event_type, application_id)] += 1
            if event_type == "tongban.feedback.SupervisionFact" and body.get("kind") == "RATING":
                facts[body["fact_id"]] += 1
        submitted = list(tracker.apps)  # every application a client sent (a failed Submit is in submit_errors)
        parcels = carrier_parcels(self.dir / "carrier.jsonl")
        window_acts = window_outcomes(self.dir / "windows.jsonl")
        hostile_missing = []
        for h, partition, offset in self.hostile:
            physical = self.namespace + h.topic
            readers = [s for s, inputs in self.inputs.items() if h.topic in inputs] \
                or [h.topic.rsplit(".", 1)[-1].removeprefix("tongban-")]
            for service in readers:
                reason = dead_letters.get((f"tongban-{service}", physical, partition, offset))
                if not reason:
                    hostile_missing.append({"kind": h.kind, "topic": h.topic, "group": f"tongban-{service}",
                                            "found": reason is not None})
        grpc_clear = sum(v for k, v in self.grpc_bad.items() if k in ("INVALID_ARGUMENT", "NOT_FOUND",
                                                                         "FAILED_PRECONDITION"))
        lost = [a for a in submitted if terminal[a] == 0]
        result = self.result
        result.update({
            "applications": self.options.applications,
            "submitted": len(submitted),
            "terminal": sum(1 for a in submitted if terminal[a] >= 1),
            "outcomes": dict(tracker.outcomes),
            "lost": len(lost),
            "lost_sample": lost[:10],
            "more_than_one_terminal": sum(1 for a in submitted if terminal[a] > 1),
            "duplicate_events": sum(1 for n in ids.values() if n > 1),
            # where they are, so a failed run names the topic and event type to look at
            "duplicate_events_by_kind": dict(Counter(kind_of[i] for i, n in ids.items() if n > 1)),
            "duplicate_lifecycle": sum(1 for n in once.values() if n > 1),
            "duplicate_deliveries": sum(1 for a in submitted if once[(APP + "ApplicationDelivered", a)] > 1)
            + sum(1 for n in parcels.values() if n > 1),
            "carrier_parcels": sum(parcels.values()),
            # the windows' own journal: results picked up, and acts delivery refused for good
            "window_pickups": window_acts["OK"],
            "window_refusals": sum(n for outcome, n in window_acts.items() if outcome != "OK"),
            "ratings": len(self.ratings),
            "ratings_counted": sum(1 for r in self.ratings if facts[r] >= 1),
            "duplicate_counts": sum(1 for r in self.ratings if facts[r] > 1),
            "kills": self.counts["kills"],
            "crash_points": self.counts["crash_points"],
            "crash_points_not_reached": self.counts["crash_points_not_reached"],
            "pauses": self.counts["pauses"],
            "partner_outages": self.counts["partner_outages"],
            "provider_outages": self.counts["provider_outages"],
            "broker_restarts": self.counts["broker_restarts"],
            "store_outages": self.counts["store_outages"],
            # + intake's gRPC kinds (refused samples, empty, oversized, Track) and delivery's
            # window acts (an unknown application, an empty id)
            "bad_input_kinds": len({h.kind for h, _, _ in self.hostile}) + 6,
            "bad_inputs_tried": len(self.hostile) + sum(self.grpc_bad.values()),
            "bad_inputs_handled": len(self.hostile) - len({(m["kind"], m["topic"]) for m in hostile_missing})
            + grpc_clear,
            "bad_inputs_unhandled": hostile_missing[:20],
            "grpc_answers": dict(self.grpc_bad),
            "crashes": len(self.crashes),
            "crash_list": self.crashes,
            "schedule": self.events,
        })
        result["apps_per_s"] = round(result["terminal"] / max(1.0, result.get("flow_s", 0.0)), 1)
        failures = []
        if result["lost"] or result["terminal"] < self.options.applications:
            failures.append("applications without a terminal state")
        for key in ("more_than_one_terminal", "duplicate_events", "duplicate_lifecycle", "duplicate_deliveries",
                    "duplicate_counts", "window_refusals", "crashes"):
            if result[key]:
                failures.append(key)
        if result["ratings_counted"] < len(self.ratings):
            failures.append("ratings not counted")
        if hostile_missing or grpc_clear < sum(self.grpc_bad.values()):
            failures.append("bad input without a dead letter or a clear error")
        if any(self.result["lag"].values()):
            failures.append("consumer lag left")
        result["failures"] = failures
        result["passed"] = not failures


async def unread(lag: GroupLag) -> dict[str, int]:
    """Records each group has not yet consumed: what a read_committed reader gets between its
    committed offset and the end. (Offsets alone overstate it: a transaction aborted by a
    kill leaves records and a marker no reader ever gets, so nothing commits past them.)"""
    from devtools.bench.common import kafka_options

    out: dict[str, int] = {}
    for service, group in lag.groups.items():
        committed = await lag.admin.list_consumer_group_offsets(group)
        ends = await lag.consumer.end_offsets(list(committed)) if committed else {}
        out[service] = 0
        for tp, meta in committed.items():
            if meta.offset < 0 or ends[tp] - meta.offset <= 1:
                continue
            reader = AIOKafkaConsumer(**kafka_options(), group_id=None, enable_auto_commit=False,
                                      isolation_level="read_committed")
            await reader.start()
            try:
                reader.assign([tp])
                reader.seek(tp, meta.offset)
                while await reader.position(tp) < ends[tp]:
                    out[service] += sum(len(r) for r in (await reader.getmany(tp, timeout_ms=500)).values())
            finally:
                await stop_quietly(reader)
    return out


def window_outcomes(journal: Path) -> Counter[str]:
    """How the simulated windows' acts ended, by outcome (their own journal, sim/carrier.py)."""
    outcomes: Counter[str] = Counter()
    if journal.exists():
        for line in journal.read_text().splitlines():
            entry = json.loads(line)
            if "outcome" in entry:
                outcomes[entry["outcome"]] += 1
    return outcomes


def carrier_parcels(ledger: Path) -> Counter[str]:
    """Parcels the carrier physically dispatched, per application (its own ledger)."""
    parcels: Counter[str] = Counter()
    if ledger.exists():
        for line in ledger.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("physical", True):
                parcels[f"{entry['application_id']}|{entry.get('purpose')}|{entry.get('attempt')}"] += 1
    return parcels


async def read_everything(namespace: str) -> list[Any]:
    """Every committed record of the namespace's event and dead-letter topics (not the
    runtime's own changelog, command, retry and repartition topics), up to their ends."""
    from aiokafka.admin import AIOKafkaAdminClient

    from devtools.bench.common import kafka_options

    internal = (".changelog.", ".commands.", ".retry.", ".repartition.", "tongban.schemas")
    admin = AIOKafkaAdminClient(**kafka_options(), request_timeout_ms=30000)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(namespace) and not any(i in t for i in internal)]
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    partitions = [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]
    consumer = AIOKafkaConsumer(**kafka_options(), group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", max_poll_records=5000)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        out: list[Any] = []
        left = {tp for tp in partitions if ends[tp] > 0}
        while left:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend(records)
            for tp in list(left):
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
        return out
    finally:
        await stop_quietly(consumer)


def summary(result: dict[str, Any]) -> str:
    keys = ["applications", "terminal", "lost", "more_than_one_terminal", "duplicate_events", "duplicate_deliveries",
            "duplicate_counts", "ratings", "ratings_counted", "window_pickups", "window_refusals", "kills",
            "crash_points", "pauses", "partner_outages",
            "provider_outages", "broker_restarts", "store_outages", "bad_input_kinds", "bad_inputs_tried",
            "bad_inputs_handled", "crashes", "lag", "wall_s", "flow_s", "apps_per_s", "passed", "failures"]
    return "\n".join(f"  {k}: {result.get(k)}" for k in keys)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--applications", type=int, default=Options.applications)
    parser.add_argument("--seed", type=int, default=Options.seed)
    parser.add_argument("--inflight", type=int, default=Options.inflight)
    parser.add_argument("--no-broker-restart", action="store_true")
    parser.add_argument("--no-store-outage", action="store_true")
    parser.add_argument("--deadline", type=float, default=Options.deadline_s, help="seconds the run may take")
    parser.add_argument("--keep-platform", action="store_true", help="leave the run's broker running")
    parser.add_argument("--out", type=Path, default=OUT / "latest.json")
    args = parser.parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # its reconnect noise while the broker is away
    options = Options(applications=args.applications, seed=args.seed, inflight=args.inflight,
                      broker_restart=not args.no_broker_restart, store_outage=not args.no_store_outage,
                      deadline_s=args.deadline, keep_platform=args.keep_platform)
    chaos = Chaos(options)
    result = asyncio.run(chaos.run())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str, ensure_ascii=False))
    say(f"{'PASSED' if result.get('passed') else 'FAILED'}; {args.out}\n{summary(result)}")
    if result.get("passed"):
        shutil.rmtree(chaos.dir / "state", ignore_errors=True)
    return 0 if result.get("passed") else 1


if __name__ == "__main__":
    sys.exit(main())
