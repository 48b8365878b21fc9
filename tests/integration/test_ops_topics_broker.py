"""`tongban topics plan|apply` and `acls plan|apply` against the real broker, in a namespace of
its own: apply twice changes nothing the second time, plan fails on drift and apply repairs
it, a partition increase on a keyed topic is refused without --force, an undeclared topic is
not deleted, lost ACLs show in the plan and apply grants them again."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from click.testing import CliRunner

from tests.support import KAFKA, KAFKA_ACLS
from tongban.ops import acls
from tongban.ops.cli import DRIFT, cli
from tongban.ops.topics import DEFAULT_FILE

pytestmark = pytest.mark.integration

RECEIVED = "tongban.application.received"
PROBE = "probe.keyed"  # outside tongban.*: the declaration of the other tests does not see it


def tongban(namespace: str, *args: str):
    result = CliRunner().invoke(cli, ["--namespace", namespace, *args], catch_exceptions=False)
    return result.exit_code, result.output


def plan_json(namespace: str, *args: str) -> tuple[int, dict]:
    code, output = tongban(namespace, "topics", "plan", "--json", *args)
    return code, json.loads(output)


def drifted_plan(namespace: str, within: float = 30) -> tuple[int, dict]:
    """The plan once it sees a change made behind the tool's back (the broker describes a
    change a moment after its controller took it)."""
    deadline = time.monotonic() + within
    code, plan = plan_json(namespace)
    while code == 0 and time.monotonic() < deadline:
        code, plan = plan_json(namespace)
    return code, plan


async def admin_call(fn):
    admin = AIOKafkaAdminClient(**KAFKA)
    await admin.start()
    try:
        return await fn(admin)
    finally:
        await admin.close()


def partitions(name: str) -> int:
    described = asyncio.run(admin_call(lambda admin: admin.describe_topics([name])))
    return len(described[0]["partitions"])


def live_config(name: str) -> dict[str, str]:
    responses = asyncio.run(admin_call(
        lambda admin: admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])))
    resource, = responses[0].to_object()["resources"]
    return {e["config_names"]: e["config_value"] for e in resource["config_entries"]}


def declaration_with_probe(tmp_path: Path, partitions: int) -> str:
    path = tmp_path / f"topics-{partitions}.toml"
    path.write_text(DEFAULT_FILE.read_text() + f'\n[[topic]]\nname = "{PROBE}"\nwriter = "intake"\n'
                    f'readers = ["routing"]\nkey = "application_id"\npartitions = {partitions}\n')
    return str(path)


def test_apply_twice_changes_nothing_the_second_time(namespace):
    code, first = tongban(namespace, "topics", "apply", "--json")
    assert code == 0, first
    code, second = tongban(namespace, "topics", "apply", "--json")
    assert (code, json.loads(second)["applied"], json.loads(second)["refusals"]) == (0, [], [])
    code, plan = plan_json(namespace)
    assert (code, plan["drift"], {t["status"] for t in plan["topics"]}) == (0, False, {"ok"})


def test_plan_fails_on_drift_naming_it_and_apply_repairs_it(namespace):
    topic = namespace + RECEIVED
    asyncio.run(admin_call(lambda admin: admin.alter_configs([ConfigResource(
        ConfigResourceType.TOPIC, topic, configs={"retention.ms": "60000", "segment.ms": "3600000"})])))

    code, plan = drifted_plan(namespace)
    assert code == DRIFT
    assert plan["drift"]
    change, = plan["changes"]
    assert (change["topic"], change["action"]) == (topic, "alter_config")
    assert "retention.ms: declared 604800000, actual 60000" in change["detail"]
    assert "segment.ms: set to 3600000 on the topic, not declared" in change["detail"]
    code, text = tongban(namespace, "topics", "plan")
    assert code == DRIFT
    assert f"alter_config    {topic}" in text

    code, applied = tongban(namespace, "topics", "apply", "--json")
    assert (code, [c["topic"] for c in json.loads(applied)["applied"]]) == (0, [topic])
    config = live_config(topic)
    assert (config["retention.ms"], config["segment.ms"]) == ("604800000", "604800000")  # segment.ms: broker default
    assert plan_json(namespace)[0] == 0
    assert json.loads(tongban(namespace, "topics", "apply", "--json")[1])["applied"] == []


def test_a_partition_increase_on_a_keyed_topic_is_refused_without_force(namespace, tmp_path):
    three, four = declaration_with_probe(tmp_path, 3), declaration_with_probe(tmp_path, 4)
    assert tongban(namespace, "topics", "apply", "--file", three)[0] == 0
    probe = namespace + PROBE

    code, plan = plan_json(namespace, "--file", four)
    refusal, = plan["refusals"]
    assert (code, plan["changes"], refusal["topic"]) == (DRIFT, [], probe)
    assert "keyed by application_id" in refusal["reason"]
    assert "--force" in refusal["reason"]
    code, text = tongban(namespace, "topics", "apply", "--file", four)
    assert code == DRIFT
    assert f"refused         {probe}: declared 4 partitions, has 3" in text
    assert partitions(probe) == 3

    code, text = tongban(namespace, "topics", "apply", "--file", four, "--force")
    assert code == 0
    assert f"add_partitions  {probe}  3 -> 4" in text
    assert partitions(probe) == 4
    assert plan_json(namespace, "--file", four)[0] == 0

    # Back to 3 is what Kafka cannot do: refused even with --force.
    code, text = tongban(namespace, "topics", "apply", "--file", three, "--force")
    assert code == DRIFT
    assert "Kafka cannot remove partitions" in text
    assert partitions(probe) == 4


def test_a_topic_no_longer_declared_is_reported_and_never_deleted(namespace):
    leftover = namespace + "tongban.leftover"
    asyncio.run(admin_call(lambda admin: admin.create_topics([NewTopic(leftover, 1, 1)])))
    try:
        code, plan = drifted_plan(namespace)
        assert code == DRIFT
        assert [r["topic"] for r in plan["refusals"]] == [leftover]
        code, text = tongban(namespace, "topics", "apply")
        assert code == DRIFT
        assert "never deletes a topic" in text
        topics = asyncio.run(admin_call(lambda admin: admin.list_topics()))
        assert leftover in topics
    finally:
        asyncio.run(admin_call(lambda admin: admin.delete_topics([leftover])))


@pytest.mark.skipif(not KAFKA_ACLS, reason="the broker does not authenticate (TONGBAN_KAFKA_SECURITY=PLAINTEXT)")
def test_acls_plan_fails_when_the_namespace_lost_its_rights_and_apply_grants_them_again(namespace):
    assert tongban(namespace, "acls", "plan")[0] == 0
    revoked = acls.drop(namespace)
    assert revoked.revoke
    code, output = tongban(namespace, "acls", "plan", "--json")
    assert code == DRIFT
    assert len(json.loads(output)["grant"]) == len(revoked.revoke)
    code, output = tongban(namespace, "acls", "apply", "--json")
    assert (code, len(json.loads(output)["grant"])) == (0, len(revoked.revoke))
    assert tongban(namespace, "acls", "plan")[0] == 0
