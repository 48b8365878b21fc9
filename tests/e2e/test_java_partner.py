"""The partner kit's Java example (docs/partner-kit/java), built with Maven, answers for Guangdong
(440000) in place of the simulator and carries an application to DELIVERED over the real broker.

It connects as a partner does in production: SASL_SSL (SCRAM-SHA-512 over TLS), trusting the
cluster's CA. The local broker listens for SASL_PLAINTEXT by default, so this module runs its
own broker (infra/scripts/kafka.sh as instance `partner-tls`, SASL_SSL only) and the whole
stack on it."""

import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.launcher import ROOT
from sim.samples import samples
from tests.support import REGISTRY, Sink, drop_databases, start_stack, submit, wait_terminal
from tongban.config import LOCAL_KAFKA_CAFILE, load_settings
from tongban.grpc_tls import tls_dir

pytestmark = pytest.mark.integration

PARTNER = "440000"
PROJECT = ROOT / "docs" / "partner-kit" / "java"
JAR = PROJECT / "target" / "tongban-partner.jar"
# The Java partner's result reference: 12 characters, no check character (the simulator adds one).
JAVA_REFERENCE = re.compile(rf"^EL-{PARTNER}-[0-9A-F]{{12}}$")

# This module's broker: below the ephemeral port range and clear of chaos (24092) and the
# cluster (29292); clients on base+2, the SASL_SSL listener.
INSTANCE = "partner-tls"
PORT_BASE = 25092
BOOTSTRAP = f"127.0.0.1:{PORT_BASE + 2}"
TLS_ENV = {"TONGBAN_KAFKA_SECURITY": "SASL_SSL", "TONGBAN_KAFKA_BOOTSTRAP": BOOTSTRAP,
           "TONGBAN_KAFKA_CAFILE": str(LOCAL_KAFKA_CAFILE)}
BROKER_LOG = ROOT / "var" / "log" / INSTANCE / "kafka.log"
HANDSHAKE_FAILED = "(SSL handshake failed)"  # the broker's log line for a client refused in the TLS handshake


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


def kafka_sh(action: str, data_dir: Path) -> None:
    env = {**os.environ, "TONGBAN_KAFKA_INSTANCE": INSTANCE, "TONGBAN_KAFKA_PORT_BASE": str(PORT_BASE),
           "TONGBAN_KAFKA_SECURITY": "SASL_SSL", "TONGBAN_KAFKA_DATA_DIR": str(data_dir)}
    env.pop("TONGBAN_KAFKA_BOOTSTRAP", None)
    done = subprocess.run(["bash", str(ROOT / "infra" / "scripts" / "kafka.sh"), action], env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"kafka.sh {action} ({INSTANCE}):\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    """A broker whose only client listener is SASL_SSL, its certificate signed by the local CA
    (var/kafka/tls/ca.pem, made by kafka.sh); a fresh data dir for each run."""
    data_dir = tmp_path_factory.mktemp("kafka-tls")
    kafka_sh("start", data_dir)
    yield ROOT / "var" / "kafka" / INSTANCE / "server.properties"
    kafka_sh("stop", data_dir)


@pytest.fixture(scope="module")
def namespace(tls_broker):
    """Topics, ACLs and logins of a namespace on this module's broker (not the shared one)."""
    namespace = f"t{secrets.token_hex(3)}-"
    subprocess.run([sys.executable, "-m", "tongban.ops", "apply", "--namespace", namespace], cwd=ROOT, check=True,
                   env={**os.environ, **TLS_ENV}, stdout=subprocess.DEVNULL, timeout=240)
    yield namespace
    asyncio.run(drop_databases(namespace))  # the broker and its topics go with the module


@pytest.fixture(scope="module")
def kafka():
    """The test's own clients (as the broker's admin) on this module's broker, over TLS."""
    return load_settings("ops", {**os.environ, **TLS_ENV}, local_defaults=True).kafka_client_options()


@pytest.fixture(scope="module")
def stack(namespace, jar):
    stack = start_stack(namespace, env=TLS_ENV, sim_args=("--absent-authorities", PARTNER))
    yield stack
    stack.stop_all()


def partner_command(jar: Path, namespace: str, ca_file: Path) -> list[str]:
    settings = load_settings("partner-sim", {**os.environ, **TLS_ENV})
    return ["java", "-jar", str(jar), "--partner", PARTNER, "--namespace", namespace, "--bootstrap", BOOTSTRAP,
            "--secrets", str(settings.kafka_secrets_file), "--security-protocol", "SASL_SSL",
            "--ca-file", str(ca_file)]


@pytest.fixture
def java_partner(stack, namespace, jar):
    log = open(stack.log_dir / f"java-partner-{PARTNER}.log", "ab")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        partner_command(jar, namespace, LOCAL_KAFKA_CAFILE), cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "TONGBAN_PARTNER_PASSWORD"},
        stdout=log, stderr=subprocess.STDOUT)
    yield process
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()


def client_listeners(server_properties: Path) -> list[str]:
    """The listeners clients can reach, from the broker's own configuration (the controller's is
    for the broker itself)."""
    line = next(x for x in server_properties.read_text().splitlines() if x.startswith("listeners="))
    return [listener for listener in line.removeprefix("listeners=").split(",")
            if not listener.startswith("CONTROLLER:")]


def handshake_failures() -> int:
    return BROKER_LOG.read_text(errors="replace").count(HANDSHAKE_FAILED) if BROKER_LOG.exists() else 0


async def test_the_java_partner_accepts_and_approves_and_the_application_is_delivered(stack, namespace, kafka,
                                                                                     tls_broker, java_partner):
    # The broker the whole exchange runs on takes clients over TLS only.
    assert client_listeners(tls_broker) == [f"SASL_SSL://{BOOTSTRAP}"]

    request = samples(secrets.token_hex(4))[1].request  # 公司设立登记, decided by Guangdong, licence by post
    application_id = await submit(stack, request)

    progress = await wait_terminal(stack, application_id, within=120)
    assert java_partner.poll() is None, "the Java partner exited"
    assert progress.stage == "DELIVERED", [h.stage for h in progress.history]
    assert progress.deciding_partner == PARTNER
    assert JAVA_REFERENCE.match(progress.result_reference), "the decision came from the Java partner"

    async with Sink(namespace, [f"tongban.partner.{PARTNER}.assignments", f"tongban.partner.{PARTNER}.decisions",
                                "tongban.application.delivered"], kafka) as sink:
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


def test_a_java_partner_that_does_not_trust_the_cluster_ca_is_refused_in_the_tls_handshake(stack, namespace, jar):
    """TLS is really in the way: with another CA (the gRPC one) the partner cannot verify the
    broker's certificate, gives up, and the broker logs the failed handshake."""
    before = handshake_failures()
    done = subprocess.run(partner_command(jar, namespace, tls_dir(stack.env) / "ca.pem"), cwd=ROOT,
                          env={k: v for k, v in os.environ.items() if k != "TONGBAN_PARTNER_PASSWORD"},
                          capture_output=True, text=True, timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert "SslAuthenticationException" in output, output[-3000:]
    assert "schemas known" not in output, "it read tongban.schemas without a verified broker"
    deadline = time.monotonic() + 15
    while handshake_failures() <= before:
        assert time.monotonic() < deadline, f"no '{HANDSHAKE_FAILED}' in {BROKER_LOG}"
        time.sleep(0.2)


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
