"""A store or broker outage pauses the services; it never crashes them, dead-letters work or
loses an application. Needs the local platform that `make test` runs (it stops and starts
FerretDB and Kafka through infra/scripts)."""

import asyncio
import os
import secrets
import signal
import subprocess

import grpc
import pytest

from devtools.launcher import ROOT, SERVICES
from sim.samples import samples
from tests.support import Sink, settle, submit, track, wait_terminal

pytestmark = pytest.mark.integration

SCRIPTS = ROOT / "infra" / "scripts"
DLQS = [f"tongban.dlq.tongban-{s}" for s in SERVICES]


def platform(script: str, action: str) -> None:
    subprocess.run(["bash", str(SCRIPTS / script), action], check=True, capture_output=True, timeout=180)


def external_platform() -> bool:
    kafka = os.environ.get("TONGBAN_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    mongo = os.environ.get("TONGBAN_MONGO_URI", "mongodb://127.0.0.1:27217/")
    return kafka not in ("127.0.0.1:19092", "127.0.0.1:19094") or "127.0.0.1:27217" not in mongo


@pytest.fixture(autouse=True)
def local_platform():
    if external_platform():
        pytest.skip("the broker or store is external: outages are only staged on the local platform")
    if subprocess.run(["bash", str(SCRIPTS / "platform.sh"), "status"], capture_output=True,
                      text=True).stdout.count("running") < 2:
        pytest.fail("these tests stop and start the local broker and store: run them through `make test`")
    yield
    platform("ferretdb.sh", "start")
    platform("kafka.sh", "start")


def pauses(stack) -> int:
    """How many times the services have logged that an outage paused them."""
    return sum(log.read_text(encoding="utf-8").count("unavailable; pausing")
               for log in stack.log_dir.glob("*.log"))


def broker_lost(stack) -> dict[str, int]:
    """Per service, how many times its Kafka client has logged that it lost the broker."""
    return {s: (stack.log_dir / f"{s}.log").read_text(encoding="utf-8").count("Unable connect to node")
            for s in SERVICES}


async def wait_until(condition, within: float = 90) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "the condition never held"
        await asyncio.sleep(0.2)


async def assert_no_dead_letters(namespace, application_id) -> None:
    async with Sink(namespace, DLQS) as sink:
        seen = await settle(namespace, DLQS, application_id, sink)
    assert [r for r in seen.records if b"marker" not in r.value] == [], "an outage dead-lettered work"


async def test_a_store_outage_pauses_the_flow_and_it_resumes_without_loss(stack, namespace):
    """The store goes down first, then an application arrives: its flow must meet the outage
    (finished work is archived before it is committed) and pause, not fail."""
    paused_before = pauses(stack)
    platform("ferretdb.sh", "stop")
    application_id = await submit(stack, samples(secrets.token_hex(4))[1].request)
    await wait_until(lambda: asyncio.sleep(0, pauses(stack) > paused_before))
    progress = await track(stack, application_id)
    assert not progress.terminal, "the application concluded although the store was down"
    assert all(p.poll() is None for p in stack.processes.values()), "a service died in the outage"
    platform("ferretdb.sh", "start")
    assert (await wait_terminal(stack, application_id, within=120)).stage == "DELIVERED"
    await assert_no_dead_letters(namespace, application_id)


async def test_a_broker_outage_pauses_the_flow_and_it_resumes_without_loss(stack, namespace):
    """The authority is held (its process stopped) so the application waits, assigned, when the
    broker goes down: the rest of its flow has to cross the outage."""
    stack.processes["sim"].send_signal(signal.SIGSTOP)
    try:
        application_id = await submit(stack, samples(secrets.token_hex(4))[1].request)

        async def assigned() -> bool:
            try:
                return (await track(stack, application_id)).stage == "VERIFIED"
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:  # not recorded by intake yet
                    raise
                return False

        await wait_until(assigned)
        lost_before = broker_lost(stack)
        platform("kafka.sh", "stop")
        assert not (await track(stack, application_id)).terminal
        # every service meets the outage (its client loses the broker) while the work waits
        await wait_until(lambda: asyncio.sleep(0, all(n > lost_before[s] for s, n in broker_lost(stack).items())))
        assert all(p.poll() is None for p in stack.processes.values()), "a service died in the outage"
    finally:
        stack.processes["sim"].send_signal(signal.SIGCONT)
    platform("kafka.sh", "start")
    assert all(p.poll() is None for p in stack.processes.values()), "a service died in the outage"
    assert (await wait_terminal(stack, application_id, within=120)).stage == "DELIVERED"
    await assert_no_dead_letters(namespace, application_id)
