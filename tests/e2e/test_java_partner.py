"""The partner kit's Java example (docs/partner-kit/java), built with Maven, answers for Guangdong
(440000) in place of the simulator and carries an application to DELIVERED over the real broker."""

import os
import re
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from devtools.launcher import ROOT
from sim.samples import samples
from tests.support import REGISTRY, Sink, start_stack, submit, wait_terminal
from tongban.config import load_settings

pytestmark = pytest.mark.integration

PARTNER = "440000"
PROJECT = ROOT / "docs" / "partner-kit" / "java"
JAR = PROJECT / "target" / "tongban-partner.jar"
# The Java partner's result reference: 12 characters, no check character (the simulator adds one).
JAVA_REFERENCE = re.compile(rf"^EL-{PARTNER}-[0-9A-F]{{12}}$")


def build() -> Path:
    """Offline when the local Maven repository already holds the plugins and jars, else online."""
    if shutil.which("mvn") is None or shutil.which("java") is None:
        pytest.fail("the Java partner needs java and mvn on PATH")
    for offline in (["-o"], []):
        done = subprocess.run(["mvn", "-q", "-B", *offline, "package"], cwd=PROJECT, capture_output=True,
                              text=True, timeout=180)
        if done.returncode == 0:
            return JAR
    raise AssertionError(f"mvn package failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


@pytest.fixture(scope="module")
def jar():
    return build()


@pytest.fixture(scope="module")
def stack(namespace, jar):
    stack = start_stack(namespace, sim_args=("--absent-authorities", PARTNER))
    yield stack
    stack.stop_all()


@pytest.fixture
def java_partner(stack, namespace, jar):
    settings = load_settings("partner-sim")
    log = open(stack.log_dir / f"java-partner-{PARTNER}.log", "ab")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        ["java", "-jar", str(jar), "--partner", PARTNER, "--namespace", namespace,
         "--bootstrap", settings.kafka_bootstrap, "--secrets", str(settings.kafka_secrets_file)],
        cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "TONGBAN_PARTNER_PASSWORD"},
        stdout=log, stderr=subprocess.STDOUT)
    yield process
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()


async def test_the_java_partner_accepts_and_approves_and_the_application_is_delivered(stack, namespace,
                                                                                     java_partner):
    request = samples(secrets.token_hex(4))[1].request  # 公司设立登记, decided by Guangdong, licence by post
    application_id = await submit(stack, request)

    progress = await wait_terminal(stack, application_id, within=120)
    assert java_partner.poll() is None, "the Java partner exited"
    assert progress.stage == "DELIVERED", [h.stage for h in progress.history]
    assert progress.deciding_partner == PARTNER
    assert JAVA_REFERENCE.match(progress.result_reference), "the decision came from the Java partner"

    async with Sink(namespace, [f"tongban.partner.{PARTNER}.assignments", f"tongban.partner.{PARTNER}.decisions",
                                "tongban.application.delivered"]) as sink:
        seen = await sink.wait_for(lambda s: s.events("tongban.application.ApplicationDelivered", application_id))
    assigned = seen.events("tongban.partner.MatterAssigned", application_id)
    acceptances = seen.events("tongban.partner.AuthorityAcceptance", application_id)
    decisions = seen.events("tongban.partner.AuthorityDecision", application_id)
    assert (len(assigned), len(acceptances), len(decisions)) == (1, 1, 1)
    cause = assigned[0]["envelope"]["event_id"]
    for reply, outcome in ((acceptances[0], "ACCEPTED"), (decisions[0], "APPROVED")):
        envelope = reply["envelope"]
        assert (reply["outcome"], reply["assignment_id"]) == (outcome, assigned[0]["assignment_id"])
        assert (envelope["source_system"], envelope["source_partner"]) == (f"partner-{PARTNER}", PARTNER)
        assert (envelope["causation_id"], envelope["correlation_id"]) == (cause, application_id)
        assert envelope["schema_version"] == REGISTRY.latest(envelope["event_type"]).version
    # Written with Avro's BinaryMessageEncoder, keyed by the application, the trace carried back.
    replies = [r for r in seen.records if r.topic == f"{namespace}tongban.partner.{PARTNER}.decisions"]
    assert {r.key for r in replies} == {application_id.encode()}
    assert all(r.value[:2] == b"\xc3\x01" for r in replies)
    incoming = next(r for r in seen.records if r.topic.endswith(".assignments") and r.key == application_id.encode())
    traceparent = dict(incoming.headers).get("traceparent")
    assert traceparent
    assert [dict(r.headers).get("traceparent") for r in replies] == [traceparent] * 2


def test_apache_avro_in_java_encodes_every_test_vector_byte_for_byte(jar, tmp_path):
    """The vectors' bytes come from Tongban's codec (fastavro); Avro's own Java encoder agrees."""
    vectors = ROOT / "docs" / "partner-kit" / "vectors"
    count = len(list(vectors.glob("*.avsc")))
    checked = subprocess.run(["java", "-cp", str(jar), "cn.tongban.partner.VectorCheck", str(vectors)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    assert f"{count} vectors, 0 differ" in checked.stdout
    assert count >= 20

    # A vector one byte off is caught.
    tampered = tmp_path / "vectors"
    shutil.copytree(vectors, tampered)
    hex_file = tampered / "tongban.partner.AuthorityDecision.v1.hex"
    text = hex_file.read_text().strip()
    hex_file.write_text(text[:-2] + ("00" if text[-2:] != "00" else "01") + "\n")
    checked = subprocess.run(["java", "-cp", str(jar), "cn.tongban.partner.VectorCheck", str(tampered)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 1
    assert "DIFFERS tongban.partner.AuthorityDecision.v1" in checked.stdout
