"""Run every service and the partner simulator, feed sample applications, show them move.

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
from datetime import datetime

import grpc

from devtools.launcher import ROOT, Stack
from services.intake import intake_pb2, intake_pb2_grpc
from sim import hotline, raters, submitters
from sim.samples import DENIED_MATTER, SUPPLEMENT_MATTER, Sample, samples
from tongban.config import SERVICE_PORTS
from tongban.grpc_tls import DEFAULT_CALLER, client_channel
from tongban.ops.topics import apply

TIMEOUT = 90.0


def say(text: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {text}", flush=True)


async def follow(stub: intake_pb2_grpc.IntakeStub, application_ids: list[str],
                 materials: dict[str, list[intake_pb2.Material]] | None = None) -> dict[str, str]:
    """Print every stage change until each application is concluded; returns the final stages.
    An application asked for a 补正 is supplemented with its `materials` (the applicant hands
    them in again)."""
    shown: dict[str, int] = {}
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
                say(f"{application_id}  {step.stage:<9}{detail}")
            shown[application_id] = len(progress.history)
            if progress.stage == "SUPPLEMENT_REQUESTED" and materials and application_id not in supplemented:
                supplemented.add(application_id)
                await stub.SupplementMaterials(intake_pb2.SupplementRequest(
                    application_id=application_id, materials=materials[application_id]), timeout=10)
            if progress.terminal:
                final[application_id] = progress.stage
        await asyncio.sleep(0.5)
    return final


async def run_batch(stub: intake_pb2_grpc.IntakeStub) -> list[tuple[Sample, str]]:
    batch: list[tuple[str, Sample]] = []
    results: list[tuple[Sample, str]] = []
    for sample in samples(f"demo-{secrets.token_hex(4)}"):
        try:
            reply = await stub.Submit(sample.request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            say(f"refused at intake: {sample.title}: {exc.details()}")
            results.append((sample, "REJECTED_AT_INTAKE"))
            continue
        say(f"{reply.application_id}  submitted: {sample.title}")
        batch.append((reply.application_id, sample))
    final = await follow(stub, [application_id for application_id, _ in batch],
                         {application_id: list(sample.request.materials) for application_id, sample in batch})
    for application_id, sample in batch:
        stage = final.get(application_id, "NOT CONCLUDED")
        if stage == "DELIVERED":
            await stub.Rate(intake_pb2.RateRequest(application_id=application_id, level=1, channel="ONLINE",
                                                   rating_reference="demo"), timeout=10)
        results.append((sample, stage))
    return results


def summary(results: list[tuple[Sample, str]]) -> bool:
    print("\n  expected            reached             sample")
    for sample, stage in results:
        mark = "ok " if stage == sample.expected else "!! "
        print(f"{mark}{sample.expected:<19} {stage:<19} {sample.title}")
    passed = sum(stage == sample.expected for sample, stage in results)
    print(f"\n{passed} of {len(results)} samples reached their expected terminal state\n")
    return passed == len(results)


async def feed(stack: Stack, live: bool) -> bool:
    """One batch, then (live) a batch every 30 s; whether every sample ended as expected."""
    # As the portal the samples name as their source system (its client certificate).
    async with client_channel(stack.grpc_target("intake"), DEFAULT_CALLER) as channel:
        stub = intake_pb2_grpc.IntakeStub(channel)
        ok = summary(await run_batch(stub))
        say(f"12345: {await hotline.feed_demo()} work-order stages written by the simulated hotline")
        say(f"好差评: {await raters.feed_demo()} ratings written by the simulated hall, portal, app and website")
        for line in await submitters.feed_demo():  # applications received at partners' windows
            say(line)
        while live:
            say("live: next batch in 30 s (Ctrl-C to stop)")
            await asyncio.sleep(30)
            ok = summary(await run_batch(stub)) and ok
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
    work = asyncio.create_task(stack.wait_healthy())
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
