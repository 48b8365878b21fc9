"""Issue 8's Kafka items that no other test drove through the operator's own command or the
readers' own schema path, on the real broker with SCRAM logins and the authorizer on:

- `python -m tongban.ops apply` (topics, principals, ACLs, quotas together) on a namespace it
  has never seen, then again: the second run changes nothing;
- a right no longer declared stops working for the client once `acls apply` revoked it (not
  only gone from the plan);
- the controller listener takes no client but the broker's admin: no anonymous client, no
  partner by SCRAM or by PLAIN with its own secret;
- `principals rotate` gives a principal a new secret: the new one logs in, the old one no
  longer does, the secrets file holds the new one;
- a partner writes the schema topic as itself, and a reader learns its compatible schema but
  refuses one that breaks FULL_TRANSITIVE with what the reader holds for that record name.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
    ScramMechanism,
    UserScramCredentialDeletion,
)

from tests.support import KAFKA, KAFKA_ACLS, drop_namespace
from tongban import bus, topics
from tongban.codec import SchemaRegistry, schema_fingerprint
from tongban.config import ROOT, load_settings, read_kafka_secrets
from tongban.ops import acls, principals
from tongban.ops.kafka_admin import admin_client, ops_settings
from tongban.ops.topics import DEFAULT_FILE

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not KAFKA_ACLS, reason="the broker does not authenticate (TONGBAN_KAFKA_SECURITY=PLAINTEXT)"),
]

PARTNER, OTHER = "partner-420000", "360000"


def ops(*args: str, env: dict[str, str] | None = None) -> str:
    """Run the operator's command as an operator would, from the repository root."""
    done = subprocess.run([sys.executable, "-m", "tongban.ops", *args], cwd=ROOT, env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def summary(output: str) -> dict[str, str]:
    """The last line each part prints: `topics: …`, `principals: …`, `acls in <ns>: …`, `quotas: …`."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^(topics|principals|acls|quotas)\b[^:]*: (.*)$",
                                                         output, re.MULTILINE)}


def client_options(principal: str) -> dict:
    return ops_settings().as_principal(principal).kafka_client_options()


async def read_one(principal: str, topic: str, group: str) -> int:
    consumer = AIOKafkaConsumer(topic, **client_options(principal), group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=False, request_timeout_ms=15000)
    try:
        await consumer.start()
        seen = 0
        for _ in range(60):  # up to ~30 s for the assignment and the first record
            batch = await consumer.getmany(timeout_ms=500)
            seen += sum(len(records) for records in batch.values())
            if seen:
                break
        return seen
    finally:
        await consumer.stop()


async def logs_in(settings_options: dict) -> bool:
    client = AIOKafkaAdminClient(**settings_options, request_timeout_ms=10000)
    try:
        await client.start()
        return True
    except KafkaError:
        return False
    finally:
        await client.close()


# ------------------------------------------------------------------------------ apply, twice


def test_the_operators_apply_on_a_new_namespace_does_everything_once_and_nothing_the_second_time():
    namespace = f"t{secrets.token_hex(3)}-"
    try:
        first = summary(ops("apply", "--namespace", namespace))
        second = summary(ops("apply", "--namespace", namespace))
    finally:
        drop_namespace(namespace)
    assert set(first) == set(second) == {"topics", "principals", "acls", "quotas"}, (first, second)
    assert not first["topics"].startswith("0 applied"), first  # the namespace was new: it had work to do
    assert not first["acls"].startswith("0 granted"), first
    assert second["topics"].startswith("0 applied, 0 refused"), second
    assert second["principals"].startswith("0 changed"), second
    assert re.match(r"0 granted, 0 revoked, \d+ unchanged, 0 foreign$", second["acls"]), second
    assert second["quotas"] == "0 changed", second


# ------------------------------------------------------------------------------ revocation


async def test_a_right_no_longer_declared_stops_working_for_the_client_once_apply_revoked_it(namespace):
    theirs = f"{namespace}tongban.partner.{OTHER}.assignments"
    producer = AIOKafkaProducer(**KAFKA, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(theirs, b"assignment", key=b"TBREVOKE")
    finally:
        await producer.stop()
    # A grant made behind the tool's back, with the admin client directly: not declared.
    stray = AclBinding(ResourceType.TOPIC, theirs, ResourcePatternType.LITERAL, f"User:{PARTNER}", "*",
                       AclOperation.READ, AclPermissionType.ALLOW)
    admin = admin_client()
    for future in admin.create_acls([stray]).values():
        future.result()
    granted = acls.Acl(f"User:{PARTNER}", "TOPIC", "LITERAL", theirs, "READ")
    acls._settle(admin, lambda now: granted in now)  # KRaft applies an ACL a moment after the controller took it
    group = f"{namespace}{PARTNER}"
    assert await read_one(PARTNER, theirs, group) == 1, "the stray grant did not take effect: nothing to revoke"

    output = ops("acls", "apply", "--namespace", namespace)
    assert f"revoke   ALLOW User:{PARTNER} READ TOPIC literal {theirs}" in output, output
    assert summary(output)["acls"].startswith("0 granted, 1 revoked"), output
    with pytest.raises(TopicAuthorizationFailedError):
        await read_one(PARTNER, theirs, group)


# ------------------------------------------------------------------------------ the controller listener


def controller_address() -> str:
    """The controller listener, from the local broker's own configuration."""
    line = next(x for x in (ROOT / "var" / "kafka" / "server.properties").read_text().splitlines()
                if x.startswith("listeners="))
    return next(x for x in line.removeprefix("listeners=").split(",") if x.startswith("CONTROLLER://")
                ).removeprefix("CONTROLLER://")


async def test_the_controller_listener_takes_no_client_but_the_brokers_admin(caplog):
    controller = controller_address()
    partner = {**client_options(PARTNER), "bootstrap_servers": controller}
    attempts = [({"bootstrap_servers": controller}, None),  # no credentials at all
                (partner, "UnsupportedSaslMechanismError"),  # a partner's SCRAM login: PLAIN only there
                ({**partner, "sasl_mechanism": "PLAIN"}, "Invalid username or password")]  # its secret, as PLAIN
    for options, refusal in attempts:
        caplog.clear()
        assert not await logs_in(options), f"logged in to the controller with {options.get('sasl_mechanism')}"
        if refusal:  # the broker answered the login and refused it (not merely unreachable)
            assert refusal in caplog.text, caplog.text


# ------------------------------------------------------------------------------ secret rotation


async def test_rotating_a_principals_secret_refuses_the_old_one_and_the_new_one_logs_in(tmp_path):
    # A throwaway feed, declared in a copy of the declaration, with its secret in a copy of
    # the secrets file: the running services' principals and the real file stay as they are.
    feed = f"audit-rotation-{secrets.token_hex(3)}"
    name = f"partner-{feed}"
    declaration = tmp_path / "topics.toml"
    declaration.write_text(DEFAULT_FILE.read_text().replace(
        "[feeds]\n", f'[feeds]\n"{feed}" = "a feed that exists only for this test"\n', 1))
    real_file = ops_settings().kafka_secrets_file
    before = real_file.read_bytes()
    secrets_file = tmp_path / "principals.secrets"
    shutil.copyfile(real_file, secrets_file)
    os.chmod(secrets_file, 0o600)
    settings = replace(ops_settings(), kafka_secrets_file=secrets_file)
    env = {**os.environ, "TONGBAN_KAFKA_SECRETS_FILE": str(secrets_file)}
    created = False
    try:
        created = principals.create([name], settings, declaration) == [name]
        assert created
        old = read_kafka_secrets(secrets_file)[name]
        as_old = replace(settings, sasl_username=name, sasl_password=old).kafka_client_options()
        assert await logs_in(as_old)

        output = ops("--file", str(declaration), "principals", "rotate", name, env=env)
        assert f"rotated  {name}" in output, output

        new = read_kafka_secrets(secrets_file)[name]
        assert new != old
        assert await logs_in(replace(settings, sasl_username=name, sasl_password=new).kafka_client_options())
        assert not await logs_in(as_old), "the old secret still logs in after the rotation"
        assert real_file.read_bytes() == before, "rotating in another secrets file touched the real one"
    finally:
        if created:  # a Tongban-named user left on the broker would show in every principals plan
            admin = admin_client()
            for future in admin.alter_user_scram_credentials(
                    [UserScramCredentialDeletion(name, ScramMechanism.SCRAM_SHA_512)]).values():
                future.result()


# ------------------------------------------------------------------------------ the schema topic


def decision_schema(registry: SchemaRegistry) -> dict:
    return json.loads(registry.latest(topics.AUTHORITY_DECISION_EVENT).schema_json)


async def test_a_reader_learns_a_partners_compatible_schema_and_refuses_one_that_breaks_full_transitive(namespace):
    held = SchemaRegistry.load()
    newer = decision_schema(held)
    newer["fields"].append({"name": "audit_note", "type": ["null", "string"], "default": None})
    broken = decision_schema(held)
    required = next(f["name"] for f in broken["fields"]
                    if f["name"] != "envelope" and "default" not in f and f["type"] == "string")
    broken["fields"] = [f for f in broken["fields"] if f["name"] != required]

    # The partner publishes both as itself: the ACLs let every writer write the schema topic.
    producer = AIOKafkaProducer(**client_options(PARTNER), acks="all")
    await producer.start()
    try:
        for schema in (broken, newer):
            text = json.dumps(schema)
            await producer.send_and_wait(namespace + topics.SCHEMAS, key=schema_fingerprint(text).hex().encode(),
                                         value=text.encode())
    finally:
        await producer.stop()

    # Delivery reads the partner's decisions: it learns from the topic as its own principal.
    reader = load_settings("delivery", {**os.environ, "TONGBAN_NAMESPACE": namespace})
    assert reader.sasl_username == "tongban-delivery"
    registry = SchemaRegistry.load()
    assert await bus.learn_schemas(reader, registry) == 1
    assert registry.by_fingerprint(schema_fingerprint(json.dumps(newer))) is not None
    assert registry.by_fingerprint(schema_fingerprint(json.dumps(broken))) is None, \
        f"a writer schema without the required field {required} was learned"
