"""Applications end to end on the three-broker cluster (issue 15). The five services, the
data-sharing providers and the partner simulator (devtools.launcher.Stack) run in a namespace
of their own, declared with the production overlay (replication 3, min.insync.replicas 2);
the bench's closed loop (devtools.bench.pipeline) submits applications through intake's gRPC
Submit; the broker leading most partitions of the lifecycle topics is SIGKILLed mid-flow and
started again while applications keep flowing. Everything is counted at sinks the services do
not write through: devtools.chaos's read_committed reader of every event and dead-letter
topic (one terminal state per application, DELIVERED; no event id twice; each lifecycle event
once per application; nothing dead-lettered), the carrier's ledger and the windows' journal,
the consumer groups' committed offsets (nothing left unread) and the processes (none exited).
Run by `make cluster-test` only (marker `cluster`; `make test` deselects it)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from devtools.bench.common import PARTITIONS, summary_ms
from devtools.bench.pipeline import APP, ClosedLoop, GroupLag, Submitter, Tracker, open_channel, stage_latencies
from devtools.chaos import (
    AT_LEAST_ONCE,
    ONCE_PER_APPLICATION,
    TERMINAL,
    carrier_parcels,
    read_everything,
    unread,
    window_outcomes,
)
from devtools.launcher import ROOT, SERVICES, Stack
from tests.cluster.nodes import Cluster, Partition, busiest, record_figures
from tests.support import REGISTRY, drop_namespace
from tongban.codec import CodecError
from tongban.ops import acls
from tongban.ops.topics import apply

pytestmark = pytest.mark.cluster

# Sized for this machine (two cores under six JVMs and eleven Python processes): at least this
# many applications, and more while the killed broker restarts (the loop goes on until then).
APPLICATIONS = 300
OPEN = 16  # applications in flight at once: a few hundred over the kill and the restart
WITHIN = 300.0  # seconds any phase of the flow may take


@dataclass
class System:
    namespace: str
    stack: Stack
    start_s: float


@pytest.fixture
async def system(namespace, tmp_path):
    """The whole system in a namespace of its own (the failover tests write raw records into
    the run's namespace, which the services would read), declared as cluster.sh declares the
    run's; stopped and dropped afterwards, pass or fail, so a restarted broker does not
    recover its partitions in the next run."""
    own = f"{namespace.rstrip('-')}p-"
    log_dir = ROOT / "var" / "test" / own.rstrip("-")
    stack = Stack({"TONGBAN_NAMESPACE": own, "TONGBAN_STATE_DIR": str(tmp_path / "state"),
                   "TONGBAN_SESSION_TIMEOUT_MS": "6000"}, log_dir,
                  sim_args=("--carrier-ledger", str(log_dir / "carrier.jsonl"),
                            "--window-journal", str(log_dir / "windows.jsonl")))
    started = time.monotonic()
    try:
        await apply(None, own, overlay="production")
        await asyncio.to_thread(acls.apply, own)
        stack.start_all()
        await stack.wait_healthy(timeout=240)
        yield System(own, stack, time.monotonic() - started)
    finally:
        stack.stop_all()
        await asyncio.to_thread(drop_namespace, own)


def exited(stack: Stack) -> dict[str, int]:
    return {name: code for name, p in stack.processes.items() if (code := p.poll()) is not None}


async def flowing(condition: Callable[[], bool], what: str, stack: Stack) -> float:
    """Seconds until `condition` holds; fails at once if any process of the system exited."""
    start = time.monotonic()
    while not condition():
        assert not exited(stack), f"{what}: processes exited {exited(stack)}; logs in {stack.log_dir}"
        assert time.monotonic() - start < WITHIN, f"{what}: not within {WITHIN:.0f}s"
        await asyncio.sleep(0.1)
    return time.monotonic() - start


def moved_away(victim: int, partitions: list[Partition], expected: int) -> bool:
    """Every partition led elsewhere, its ISR down to the two live brokers."""
    return len(partitions) == expected and all(
        victim not in p.isr and len(p.isr) == 2 and p.leader != victim for p in partitions)


@dataclass
class Tally:
    """What the namespace's topics hold, read back after the flow."""

    terminal: dict[str, list[str]] = field(default_factory=dict)  # application -> its terminal event types
    lifecycle: Counter[tuple[str, str]] = field(default_factory=Counter)  # (event type, application)
    ids: Counter[str] = field(default_factory=Counter)
    kind_of: dict[str, str] = field(default_factory=dict)  # event id -> "topic EventType"
    dead_letters: Counter[str] = field(default_factory=Counter)  # "group ErrorClass: reason"
    events: int = 0
    undecodable: int = 0


def tally(records: list[Any], namespace: str) -> Tally:
    out = Tally()
    for record in records:
        topic = record.topic.removeprefix(namespace)
        if topic.startswith("tongban.dlq."):
            headers = dict(record.headers)
            out.dead_letters[f"{topic.removeprefix('tongban.dlq.')} "
                             f"{headers.get('tongban.dlq.error.class', b'').decode(errors='replace')}: "
                             f"{headers.get('tongban.dlq.error.message', b'').decode(errors='replace')}"] += 1
            continue
        try:
            event_type, body = REGISTRY.decode(record.value)
        except (CodecError, TypeError):
            out.undecodable += 1
            continue
        out.events += 1
        event_id = body.get("envelope", {}).get("event_id")
        if event_id and not topic.endswith(AT_LEAST_ONCE):
            out.ids[event_id] += 1
            out.kind_of[event_id] = f"{topic} {event_type.rsplit('.', 1)[-1]}"
        application_id = body.get("application_id")
        if not application_id:
            continue
        denied = event_type == APP + "ApplicationDecided" and body.get("outcome") != "APPROVED"
        if event_type in TERMINAL or denied:
            out.terminal.setdefault(application_id, []).append(event_type)
        if event_type in ONCE_PER_APPLICATION:
            out.lifecycle[(event_type, application_id)] += 1
    return out


async def test_applications_flow_end_to_end_through_a_broker_kill(cluster: Cluster, system: System):
    namespace, stack = system.namespace, system.stack
    tracker = Tracker(namespace)
    lifecycle = set(tracker.topics)

    def of_lifecycle(partitions: list[Partition]) -> list[Partition]:
        return [p for p in partitions if p.topic in lifecycle]

    before = of_lifecycle(await cluster.partitions())
    assert len(before) == len(lifecycle) * PARTITIONS, "the lifecycle topics are declared"
    assert all(len(p.replicas) == 3 for p in before), "the production overlay: three replicas"
    victim = busiest(before)
    recovered = asyncio.Event()
    lag = GroupLag(namespace, SERVICES)
    await lag.start()
    await tracker.start()
    submitter = Submitter(await open_channel(stack.grpc_target("intake"), Submitter.source_system()), tracker,
                          retry_for=WITHIN)
    loop = ClosedLoop(submitter, OPEN)
    try:
        started = time.monotonic()
        loop.start(until=lambda: recovered.is_set() and submitter.count >= APPLICATIONS)
        await flowing(lambda: tracker.terminal >= APPLICATIONS // 3, "applications before the kill", stack)
        at_kill = tracker.terminal
        killed_at = time.monotonic()
        await cluster.kill(victim)
        shrink_s = await cluster.wait(lambda ps: moved_away(victim, of_lifecycle(ps), len(before)), 60,
                                      "lifecycle leaders moved, ISRs down to the two live brokers")
        await flowing(lambda: tracker.terminal >= at_kill + APPLICATIONS // 3, "applications with a broker down",
                      stack)
        restart_at = time.monotonic()
        at_restart = tracker.terminal
        await cluster.start(victim)
        ready_s = time.monotonic() - restart_at
        isr_s = ready_s + await cluster.fully_replicated()
        at_recovery = tracker.terminal
        recovered.set()
        await flowing(lambda: submitter.count >= APPLICATIONS, "applications submitted", stack)
        await loop.stop()
        await flowing(lambda: not tracker.open(), "every application terminal (the tracker)", stack)
        flow_s = time.monotonic() - started
        lag_started = time.monotonic()
        while any((left := await unread(lag)).values()):
            assert time.monotonic() - lag_started < WITHIN, f"records left unread: {left}"
            await asyncio.sleep(0.5)
        caught_up_s = time.monotonic() - lag_started
    finally:
        await loop.stop()
        loop.cancel()
        await submitter.close()
        await tracker.stop()
        await lag.stop()

    assert exited(stack) == {}, f"processes exited; logs in {stack.log_dir}"
    assert submitter.errors == {}, "a Submit failed for good"
    submitted = list(tracker.apps)
    found = tally(await read_everything(namespace), namespace)
    assert not [a for a in submitted if a not in found.terminal], "applications without a terminal state"
    assert not [a for a in submitted if len(found.terminal[a]) > 1], "applications with more than one terminal state"
    assert Counter(found.terminal[a][0] for a in submitted) == {APP + "ApplicationDelivered": len(submitted)}, \
        "every sample submitted is one that ends delivered"
    twice = Counter(found.kind_of[i] for i, n in found.ids.items() if n > 1)
    assert not twice, f"event ids on the wire more than once: {dict(twice)}"
    assert not [k for k, n in found.lifecycle.items() if n > 1], "a lifecycle event twice for one application"
    assert not found.dead_letters, f"dead letters: {dict(found.dead_letters)}"
    parcels = carrier_parcels(stack.log_dir / "carrier.jsonl")
    assert parcels, "the carrier's ledger holds the parcels of the samples sent by post"
    assert all(n == 1 for n in parcels.values()), "one physical parcel per dispatch (carrier's ledger)"
    windows = window_outcomes(stack.log_dir / "windows.jsonl")
    assert set(windows) == {"OK"}, f"window acts refused: {dict(windows)}"

    times = sorted(tracker.terminal_times)
    apps = list(tracker.apps.values())
    record_figures("applications end to end", {
        "broker": victim, "applications": len(submitted), "delivered": len(submitted),
        "declared_and_healthy_s": round(system.start_s, 1), "flow_s": round(flow_s, 1),
        "apps_per_s": round(len(submitted) / flow_s, 1),
        "killed_at_s": round(killed_at - started, 1), "terminal_before_kill": at_kill,
        "terminal_while_down": at_restart - at_kill, "terminal_while_restarting": at_recovery - at_restart,
        "terminal_after_recovery": len(submitted) - at_recovery,
        "isr_shrunk_s": round(shrink_s, 1), "down_s": round(restart_at - killed_at, 1),
        "restart_to_broker_ready_s": round(ready_s, 1), "restart_to_isr_complete_s": round(isr_s, 1),
        "longest_gap_between_terminal_events_s": round(max(b - a for a, b in itertools.pairwise(times)), 1),
        "submit_to_terminal": summary_ms([a.terminal_at - a.submitted for a in apps if a.terminal_at is not None]),
        # where the time goes: each stage's median, from the events' occurred_at
        "stage_p50_ms": {stage: s["p50_ms"] for stage, s in stage_latencies(apps).items()},
        "groups_caught_up_s": round(caught_up_s, 1), "events_read": found.events,
        "undecodable_records": found.undecodable, "carrier_parcels": sum(parcels.values()),
        "window_pickups": windows["OK"]})
