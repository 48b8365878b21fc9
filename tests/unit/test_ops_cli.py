"""The `tongban` command without a broker: help everywhere, schemas, declared topics, exit codes."""

from __future__ import annotations

import json
import shutil

import click
import pytest
from click.testing import CliRunner

from tongban.codec import SchemaRegistry
from tongban.ops import lag
from tongban.ops.cli import DRIFT, FAILED, cli
from tongban.ops.topics import ROOT, load_declared

SCHEMAS = ROOT / "schemas"
UNROUTABLE = "tongban.application.ApplicationUnroutable"


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


@pytest.mark.parametrize("path", [(), *commands(cli)], ids=lambda p: " ".join(p) or "tongban")
def test_every_command_has_help(path):
    result = invoke(*path, "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.output
    assert len(result.output.splitlines()) > 3


READS = [("topics", "plan"), ("topics", "apply"), ("topics", "list"), ("acls", "plan"), ("acls", "apply"),
         ("quotas", "plan"), ("quotas", "apply"), ("users", "list"), ("lag",), ("dlq", "list"), ("dlq", "show"),
         ("dlq", "replay"), ("schemas", "check"), ("schemas", "list"), ("schemas", "show"), ("tail",), ("stuck",),
         ("app",), ("top",), ("review", "list"), ("manual", "list"), ("retention", "plan"), ("retention", "purge")]


def test_every_read_offers_json():
    for path in READS:
        command: click.Command = cli
        for name in path:
            assert isinstance(command, click.Group)
            command = command.commands[name]
        assert "--json" in {opt for p in command.params for opt in getattr(p, "opts", ())}, path
    assert {p for p in commands(cli) if p not in READS} == \
        {("topics",), ("acls",), ("quotas",), ("users",), ("users", "create"), ("users", "rotate"), ("dlq",),
         ("schemas",), ("metrics",),
         ("topics", "render"), ("render",), ("render", "k8s"), ("render", "compose"), ("render", "asyncapi"),
         ("render", "vectors"),
         ("review",), ("review", "reroute"), ("review", "reject"),
         ("manual",), ("manual", "resolve"), ("retention",)}  # groups, writes that print
    # what they did, the scrape endpoint, generators that write files


@pytest.fixture
def schemas(tmp_path):
    directory = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, directory)
    return directory


def test_schemas_check_passes_on_the_released_schemas(schemas):
    result = invoke("schemas", "check", "--schemas", str(schemas), "--json")
    assert (result.exit_code, json.loads(result.output)) == (0, {"problems": []})


def test_an_incompatible_change_fails_schemas_check_naming_the_field(schemas):
    v1 = json.loads((schemas / f"{UNROUTABLE}.v1.avsc").read_text())
    v2 = {**v1, "fields": [*v1["fields"], {"name": "retry_after_days", "type": "int"}]}  # no default
    (schemas / f"{UNROUTABLE}.v2.avsc").write_text(json.dumps(v2))
    result = invoke("schemas", "check", "--schemas", str(schemas))
    assert result.exit_code == DRIFT
    broken, = [line for line in result.output.splitlines() if line.startswith(f"{UNROUTABLE} v")]
    # The field and the rule it breaks: v2 cannot read what v1 wrote (no default to fill it with).
    assert broken == f"{UNROUTABLE} v2 reading v1: reader_field_missing_default_value at /fields/4: retry_after_days"
    assert f"{UNROUTABLE}.v2.avsc: not in released.lock" in result.output


def test_a_released_schema_edited_in_place_fails_schemas_check(schemas):
    path = schemas / f"{UNROUTABLE}.v1.avsc"
    path.write_text(path.read_text().replace("Why no route exists", "Why there is no route"))
    result = invoke("schemas", "check", "--schemas", str(schemas), "--json")
    assert result.exit_code == DRIFT
    assert json.loads(result.output)["problems"] == [f"{UNROUTABLE}.v1.avsc: file content changed (docs or pii "
                                                     "marks?); released versions are immutable"]


def test_schemas_show_by_name_and_by_fingerprint_agree():
    latest = SchemaRegistry.load().latest(UNROUTABLE)
    by_name = json.loads(invoke("schemas", "show", UNROUTABLE, "--json").output)
    by_fingerprint = json.loads(invoke("schemas", "show", latest.fingerprint_hex, "--json").output)
    assert by_name == by_fingerprint
    assert (by_name["fingerprint"], by_name["schema"]["name"]) == (latest.fingerprint_hex, "ApplicationUnroutable")
    assert invoke("schemas", "show", "tongban.Nothing").exit_code == FAILED


def test_schemas_list_names_the_personal_fields():
    rows = json.loads(invoke("schemas", "list", "--json").output)
    received = [r for r in rows if r["name"] == "tongban.application.ApplicationReceived"]
    assert received
    assert {"applicant.name", "applicant.id_number"} <= set(received[-1]["pii"])


def test_topics_list_is_the_declaration_under_the_namespace():
    rows = json.loads(invoke("--namespace", "x-", "topics", "list", "--json").output)
    assert [r["topic"] for r in rows] == [s.name for s in load_declared("x-")]
    production = json.loads(invoke("topics", "list", "--overlay", "production", "--json").output)
    assert {r["replication_factor"] for r in production} == {3}


def test_an_undeclared_topic_or_group_is_a_failure_not_a_crash():
    assert invoke("tail", "tongban.nowhere").exit_code == FAILED
    assert invoke("dlq", "replay", "tongban-nobody", "--dry-run").exit_code == FAILED


def test_lag_totals_per_group_and_topic():
    rows = [lag.PartitionLag("g", "a", 0, 5, 9), lag.PartitionLag("g", "a", 1, 9, 9),
            lag.PartitionLag("g", "b", 0, 7, 3), lag.PartitionLag("h", "a", 0, 0, 2),
            lag.PartitionLag("h", "a", 1, None, 10, 4)]
    # A committed offset past the end is no lag; no commit yet counts from the partition's start.
    assert [r.lag for r in rows] == [4, 0, 0, 2, 6]
    assert lag.totals(rows) == {"g": {"a": 4, "b": 0, "*": 4}, "h": {"a": 8, "*": 8}}
    assert lag.in_namespace("t1-tongban-routing", "t1-")
    assert not lag.in_namespace("t2-tongban-routing", "t1-")
    assert lag.in_namespace("tongban-routing", "")
    assert not lag.in_namespace("t1-tongban-routing", "")
