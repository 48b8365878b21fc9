"""Run every service and the partner simulator, feed sample applications, show them move:
each mode of handling (全程网办, 异地代收代办, 多地联办), a joint matter's legs as they run, and
at the end the SLA ledger's clock for each party and leg.

    python -m devtools.demo          one batch, a summary, a clean stop (exit 0 only if every
                                     sample reached its expected terminal state)
    python -m devtools.demo --live   a new batch every 30 s, live, until Ctrl-C

Broker and store must be up (`make up`); topics are applied here (idempotent).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

import grpc

from devtools.launcher import ROOT, Stack
from services.intake import intake_pb2, intake_pb2_grpc
from services.routing import ledger as sla
from services.routing.catalogue import FULLY_ONLINE, JOINT, RECEIVE_HERE_HANDLE_THERE
from sim import hotline, raters, submitters
from sim.samples import DENIED_MATTER, SUPPLEMENT_MATTER, Sample, samples
from tongban import store
from tongban.config import SERVICE_PORTS, load_settings
from tongban.grpc_tls import DEFAULT_CALLER, client_channel
from tongban.ops.topics import apply
from tongban.runtime.archive import MongoArchive
from tongban.workdays import WorkingCalendar

TIMEOUT = 90.0
NOT_CONCLUDED = "NOT CONCLUDED"
RETRY_FOR = 30.0
RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
ARCHIVE_WAIT = 15.0  # routing archives an application a moment after intake shows it concluded
MODE_LABELS = {FULLY_ONLINE: "全程网办", RECEIVE_HERE_HANDLE_THERE: "异地代收代办", JOINT: "多地联办"}
CLOCK_LABELS = {sla.RECEIPT: "收件", sla.TRANSIT: "寄递", sla.ACCEPTANCE: "受理", sla.DECISION: "办结",
                sla.DELIVERY: "送达"}


@dataclass(frozen=True)
class Result:
    sample: Sample
    application_id: str  # "" when Submit refused it
    stage: str


def say(text: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {text}", flush=True)


async def follow(stub: intake_pb2_grpc.IntakeStub, application_ids: list[str],
                 materials: dict[str, list[intake_pb2.Material]] | None = None) -> dict[str, str]:
    """Print every stage change until each application is concluded; returns the final stages.
    An application asked for a 补正 is supplemented with its `materials` (the applicant hands
    them in again)."""
    shown: dict[str, int] = {}
    shown_legs: dict[str, str] = {}
    supplemented: set[str] = set()
    final: dict[str, str] = {}
    deadline = time.monotonic() + TIMEOUT
    while len(final) < len(application_ids) and time.monotonic() < deadline:
        for application_id in application_ids:
            if application_id in final:
                continue
            try:
                progress = await stub.Track(intake_pb2.TrackRequest(application_id=application_id), timeout=10)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                    continue  # not recorded by its owner yet
                raise
            for step in progress.history[shown.get(application_id, 0):]:
                detail = f" ({step.detail})" if step.detail else ""
                party = f" by {step.party}" if step.leg and step.party else ""
                say(f"{application_id}  {step.stage:<9}{detail}{party}")
            shown[application_id] = len(progress.history)
            if progress.legs and (legs := legs_line(progress.legs)) != shown_legs.get(application_id):
                say(f"{application_id}  legs     {legs}")
                shown_legs[application_id] = legs
            if progress.stage == "SUPPLEMENT_REQUESTED" and materials and application_id not in supplemented:
                supplemented.add(application_id)
                await call(stub.SupplementMaterials, intake_pb2.SupplementRequest(
                    application_id=application_id, materials=materials[application_id]))
            if progress.terminal:
                final[application_id] = progress.stage
        await asyncio.sleep(0.5)
    return final


async def call(rpc: Any, request: Any) -> Any:
    """One intake call, retried while intake answers UNAVAILABLE (an instance that does not own
    the key yet, e.g. just after the services started or rebalanced) or RESOURCE_EXHAUSTED
    (too many calls open at once), as its API asks."""
    deadline = time.monotonic() + RETRY_FOR
    while True:
        try:
            return await rpc(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRIED or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


def legs_line(legs: Iterable[intake_pb2.Leg]) -> str:
    """A joint matter's legs as Track shows them: number, step, party and state of each."""
    return " | ".join(f"{leg.number} {leg.step} {leg.party} {leg.state}" for leg in legs)


async def run_batch(stub: intake_pb2_grpc.IntakeStub, batch_samples: list[Sample]) -> list[Result]:
    batch: list[tuple[str, Sample]] = []
    results: list[Result] = []
    for sample in batch_samples:
        try:
            reply = await call(stub.Submit, sample.request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            say(f"refused at intake: {sample.title}: {exc.details()}")
            results.append(Result(sample, "", "REJECTED_AT_INTAKE"))
            continue
        say(f"{reply.application_id}  submitted: {sample.title}")
        batch.append((reply.application_id, sample))
    final = await follow(stub, [application_id for application_id, _ in batch],
                         {application_id: list(sample.request.materials) for application_id, sample in batch})
    for application_id, sample in batch:
        stage = final.get(application_id, NOT_CONCLUDED)
        if stage == "DELIVERED":
            await call(stub.Rate, intake_pb2.RateRequest(application_id=application_id, level=1, channel="ONLINE",
                                                         rating_reference="demo"))
        results.append(Result(sample, application_id, stage))
    return results


async def routing_states(application_ids: list[str], namespace: str) -> dict[str, dict[str, Any]]:
    """Routing's final state of each application (its decision and its SLA ledger), read from
    routing's archive by id as an operator's tool reads it: routing archives an application
    when it ends, so these are the ledgers routing itself kept, not a copy recomputed here."""
    settings = load_settings("routing", {**os.environ, "TONGBAN_NAMESPACE": namespace}, local_defaults=True)
    client, db = store.connect(settings)
    archive = MongoArchive(db)
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + ARCHIVE_WAIT
    try:
        while True:
            for application_id in application_ids:
                if application_id not in found and (doc := await archive.load(application_id)) is not None:
                    found[application_id] = doc["state"]
            if len(found) == len(application_ids) or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.5)
    finally:
        await client.close()


def pad(text: str, width: int) -> str:
    """`text` padded to `width` terminal columns: a Chinese character takes two."""
    return text + " " * (width - sum(2 if ord(c) >= 0x2E80 else 1 for c in text))


def mode_of(routed: dict[str, Any] | None) -> str:
    return (routed or {}).get("decision", {}).get("mode", "")


def summary(results: list[Result], routed: dict[str, dict[str, Any]]) -> bool:
    print("\n  expected            reached             mode          sample")
    for result in results:
        mark = "ok " if result.stage == result.sample.expected else "!! "
        mode = MODE_LABELS.get(mode_of(routed.get(result.application_id)), "-")
        print(f"{mark}{result.sample.expected:<19} {result.stage:<19} {pad(mode, 13)} {result.sample.title}")
    passed = sum(result.stage == result.sample.expected for result in results)
    modes = Counter(mode_of(routed.get(result.application_id)) for result in results)
    print("\nmodes of handling: " + ", ".join(f"{label} ({mode}) {modes[mode]}" for mode, label in MODE_LABELS.items()))
    print(f"{passed} of {len(results)} samples reached their expected terminal state\n")
    return passed == len(results)


def held_to(clock: sla.Clock, calendar: WorkingCalendar) -> date | None:
    """The last day of the clock's limit as the ledger counts it while the clock runs (pauses
    for 补正 and excluded periods left out); none for a clock that never started."""
    return replace(clock, status=sla.RUNNING).deadline(calendar) if clock.starts_on else None


def role_of(clock: sla.Clock, decision: dict[str, Any]) -> str:
    if clock.leg in (sla.RECEIPT, sla.TRANSIT):
        return "receiving window"
    if clock.leg == sla.DELIVERY:
        return "serves the result"
    if decision["mode"] == JOINT and clock.leg == sla.DECISION:
        number = next(n for n, leg in enumerate(decision["legs"], start=1) if leg["step"] == clock.step)
        return f"leg {number} of {len(decision['legs'])}"
    return "deciding authority"


def clock_table(results: list[Result], routed: dict[str, dict[str, Any]]) -> None:
    """The SLA ledger of each routed application: a clock per party and leg, its limit in
    working days, the day counting started, its deadline, the day it ended and how."""
    calendar = WorkingCalendar.load()
    print("SLA ledger (routing): a clock per party and leg, limits in working days, dates in Asia/Shanghai")
    for result in results:
        state = routed.get(result.application_id) or {}
        if "ledger" not in state:
            continue  # refused at intake or unroutable: no clock ran
        decision, ledger = state["decision"], sla.Ledger.from_state(state["ledger"])
        print(f"\n{result.application_id}  {MODE_LABELS[decision['mode']]} ({decision['mode']}), "
              f"deciding authority {decision['deciding_partner']}, received {ledger.received_on}, ended {ledger.ended}")
        print(f"  {'clock':<30} {'party':<18} {'role':<18} {'limit':>5}  {'from':<10}  {'deadline':<10}  "
              f"{'ended':<10}  status")
        for clock in ledger.clocks:
            deadline = held_to(clock, calendar)
            late = " LATE" if deadline and clock.ended_on and clock.ended_on > deadline else ""
            paused = "".join(f" ({stop.kind} {stop.start}..{stop.end or ''})" for stop in clock.stops)
            print(f"  {CLOCK_LABELS[clock.leg]} {clock.name:<25} {clock.party:<18} {role_of(clock, decision):<18} "
                  f"{clock.limit + clock.extension:>5}  {clock.starts_on or '-'!s:<10}  {deadline or '-'!s:<10}  "
                  f"{clock.ended_on or '-'!s:<10}  {clock.status}{late}{paused}")
    print()


async def report(stub: intake_pb2_grpc.IntakeStub, batch_samples: list[Sample], namespace: str) -> bool:
    """Submit and follow one batch, then its summary and its SLA ledgers; whether every
    sample reached its expected terminal state."""
    results = await run_batch(stub, batch_samples)
    routed = await routing_states([r.application_id for r in results if r.application_id and r.stage != NOT_CONCLUDED],
                                  namespace)
    ok = summary(results, routed)
    clock_table(results, routed)
    return ok


async def feed(stack: Stack, live: bool) -> bool:
    """One batch, then (live) a batch every 30 s; whether every sample ended as expected."""
    # As the portal the samples name as their source system (its client certificate).
    async with client_channel(stack.grpc_target("intake"), DEFAULT_CALLER) as channel:
        stub = intake_pb2_grpc.IntakeStub(channel)
        namespace = stack.env.get("TONGBAN_NAMESPACE", "")
        ok = await report(stub, samples(f"demo-{secrets.token_hex(4)}"), namespace)
        say(f"12345: {await hotline.feed_demo()} work-order stages written by the simulated hotline")
        say(f"好差评: {await raters.feed_demo()} ratings written by the simulated hall, portal, app and website")
        for line in await submitters.feed_demo():  # applications received at partners' windows
            say(line)
        while live:
            say("live: next batch in 30 s (Ctrl-C to stop)")
            await asyncio.sleep(30)
            ok = await report(stub, samples(f"demo-{secrets.token_hex(4)}"), namespace) and ok
    return ok


async def first_exit(stack: Stack) -> str:
    """Returns as soon as any process of the stack has exited, saying which and where its log is."""
    while True:
        for name, process in stack.processes.items():
            if process.poll() is not None:
                return f"{name} exited with {process.returncode}; see {stack.log_dir / (name + '.log')}"
        await asyncio.sleep(0.2)


async def main(live: bool) -> int:
    namespace = os.environ.get("TONGBAN_NAMESPACE", "")
    await apply(None, namespace)
    stack = Stack({"TONGBAN_TRACE_FILE": str(ROOT / "var" / "demo" / "traces.jsonl")}, ROOT / "var" / "demo",
                  sim_args=("--deny-matters", DENIED_MATTER, "--supplement-matters", SUPPLEMENT_MATTER),
                  ports=dict(SERVICE_PORTS))
    say(f"starting intake, routing, verification, delivery, feedback and the partner simulator "
        f"(logs in {stack.log_dir})")
    stack.start_all()
    stack.start("feedback.windows")  # the faust app of windowed problem-matter flags
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    work: asyncio.Task[Any] = asyncio.create_task(stack.wait_healthy())  # then the feed, whose result is the verdict
    watchdog = asyncio.create_task(first_exit(stack))
    interrupted = asyncio.create_task(stopping.wait())
    try:
        for step in ("healthy", "fed"):
            await asyncio.wait([work, watchdog, interrupted], return_when=asyncio.FIRST_COMPLETED)
            if watchdog.done():
                say(f"!! {watchdog.result()}")  # a dead service is news at once, not a stuck sample
                return 1
            if interrupted.done():
                say("interrupted")
                return 130
            if step == "healthy":
                work.result()
                say("all services healthy")
                work = asyncio.create_task(feed(stack, live))
        return 0 if work.result() else 1
    finally:
        for task in (work, watchdog, interrupted):
            task.cancel()
        say("stopping services")
        stack.stop_all()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--live", action="store_true", help="keep feeding batches until Ctrl-C")
    sys.exit(asyncio.run(main(parser.parse_args().live)))
