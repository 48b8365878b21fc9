"""A store or broker outage pauses the services; it never crashes them, dead-letters work or
loses an application. Needs the local platform that `make test` runs (it stops and starts
FerretDB and Kafka through infra/scripts)."""

import asyncio
import os
import secrets
import subprocess

import pytest

from devtools.launcher import ROOT, SERVICES
from sim.samples import samples
from tests.support import Sink, submit, wait_terminal

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


@pytest.mark.parametrize("script", ["ferretdb.sh", "kafka.sh"])
async def test_an_outage_pauses_the_flow_and_it_resumes_without_loss(stack, namespace, script):
    application_id = await submit(stack, samples(secrets.token_hex(4))[1].request)
    platform(script, "stop")
    await asyncio.sleep(8)  # the services meet the outage mid-flow
    assert all(p.poll() is None for p in stack.processes.values()), "a service died in the outage"
    platform(script, "start")
    assert (await wait_terminal(stack, application_id, timeout=120)).stage == "DELIVERED"
    async with Sink(namespace, DLQS) as sink:
        seen = await sink.poll(3)
    assert seen.records == [], "an outage dead-lettered work"
