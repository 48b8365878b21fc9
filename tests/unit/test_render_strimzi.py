"""`tongban topics render --format strimzi`: KafkaTopic and KafkaUser resources that Strimzi's
own CRD schemas accept (tests/fixtures/strimzi, see SOURCE.md there), holding exactly the
declared topics, the ACLs `tongban acls` grants and the declared quotas."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from tongban.ops import acls, quotas, render
from tongban.ops.cli import cli
from tongban.ops.principals import declared
from tongban.ops.topics import load_declared

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "strimzi"
DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def strict(schema: Any) -> Any:
    """The CRD's schema as the API server applies it with strict field validation: an object
    with declared properties takes no others (unless it says it keeps unknown fields)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
        if out.get("type") == "object" and "properties" in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def validator(kind: str) -> jsonschema.Validator:
    crd = next(d for p in FIXTURES.glob("*.yaml") for d in yaml.safe_load_all(p.read_text())
               if d and d["spec"]["names"]["kind"] == kind)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == render.STRIMZI_API.split("/")[1]]
    schema = strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # metadata is the API server's, checked below
    return jsonschema.Draft4Validator(schema)


@pytest.fixture(scope="module")
def resources() -> list[dict]:
    return render.strimzi_resources("production")


def test_every_resource_validates_against_strimzis_crd(resources: list[dict]):
    validators = {kind: validator(kind) for kind in ("KafkaTopic", "KafkaUser")}
    for resource in resources:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validators[resource["kind"]].iter_errors(resource)]
        assert errors == [], resource["metadata"]["name"]
        assert resource["apiVersion"] == "kafka.strimzi.io/v1"
        assert DNS_1123_SUBDOMAIN.match(resource["metadata"]["name"])
        assert len(resource["metadata"]["name"]) <= 253
        assert resource["metadata"]["labels"]["strimzi.io/cluster"] == render.STRIMZI_CLUSTER


@pytest.mark.parametrize(("kind", "path", "bad"), [
    ("KafkaTopic", ("spec",), {"partition": 3}),  # a mistyped field
    ("KafkaTopic", ("spec", "replicas"), "3"),
    ("KafkaUser", ("spec", "authentication", "type"), "scram-sha-256"),
    ("KafkaUser", ("spec", "quotas"), {"producerByteRates": 1}),
])
def test_the_crd_schema_rejects_a_wrong_field(resources: list[dict], kind: str, path: tuple[str, ...], bad: Any):
    resource = copy.deepcopy(next(r for r in resources
                                  if r["kind"] == kind and (kind == "KafkaTopic" or "quotas" in r["spec"])))
    node = resource
    for key in path[:-1]:
        node = node[key]
    if isinstance(bad, dict):
        node[path[-1]].update(bad)
    else:
        node[path[-1]] = bad
    assert list(validator(kind).iter_errors(resource))


def test_topics_are_the_declared_ones_with_the_overlay(resources: list[dict]):
    topics = {r["spec"]["topicName"]: r["spec"] for r in resources if r["kind"] == "KafkaTopic"}
    declared_topics = load_declared("", overlay="production")
    assert set(topics) == {s.name for s in declared_topics}
    for spec in declared_topics:
        assert topics[spec.name]["partitions"] == spec.partitions
        assert topics[spec.name]["replicas"] == spec.replication_factor == 3
        assert topics[spec.name]["config"] == dict(spec.config)


def test_users_carry_scram_the_generated_acls_and_the_quotas(resources: list[dict]):
    users = {r["metadata"]["name"]: r["spec"] for r in resources if r["kind"] == "KafkaUser"}
    assert set(users) == {p.name for p in declared()} - {"admin"}
    wanted = acls.generate("")
    limits = quotas.generate()
    back = {v: k for k, v in render._RESOURCES.items()}
    for name, spec in users.items():
        assert spec["authentication"] == {"type": "scram-sha-512"}
        granted = {acls.Acl(f"User:{name}", back[rule["resource"]["type"]],
                            "PREFIXED" if rule["resource"]["patternType"] == "prefix" else "LITERAL",
                            rule["resource"]["name"], op.upper(), rule["type"].upper(), rule["host"])
                   for rule in spec["authorization"]["acls"] for op in rule["operations"]}
        assert granted == set(acls.for_principal(wanted, name))
        assert granted, name
        expected = {render._QUOTAS[k]: int(v) for k, v in limits.get(name, {}).items()}
        assert spec.get("quotas", {}) == expected
    assert users["partner-420000"]["quotas"]["producerByteRate"] == 1048576


def test_the_command_prints_the_same_resources():
    ran = CliRunner().invoke(cli, ["--namespace", "", "topics", "render", "--format", "strimzi",
                                   "--overlay", "production"])
    assert ran.exit_code == 0, ran.output
    assert list(yaml.safe_load_all(ran.output)) == render.strimzi_resources("production")
