"""The partner kit's AsyncAPI document: generated from infra/topics.toml and schemas/ (no
drift), valid AsyncAPI 3.0 (the official JSON schema, tests/fixtures/asyncapi/SOURCE.md), and
it says exactly what each partner principal may read and write, with the released schemas."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from tongban import topics as names
from tongban.codec import SchemaRegistry
from tongban.ops import acls, render
from tongban.ops.principals import declared

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "docs" / "partner-kit"
SCHEMA = ROOT / "tests" / "fixtures" / "asyncapi" / "asyncapi-3.0.0.json"
# The topic names tongban/topics.py's "# on ..." notes use for topics a partner or feed reads or writes.
PARTNER_FACING = ("partner_assignments", "partner_decisions", "POSTAL_DISPATCHES", "POSTAL_RECEIPTS",
                  "WALLET_ENTRIES", "WALLET_RECEIPTS", "POSTAL_ORIGINALS", "FEEDBACK_WORKORDERS", "assignments",
                  "partner_submissions", "partner_acknowledgements", "APPLICATION_ROUTED")


@pytest.fixture(scope="module")
def document() -> dict:
    return yaml.safe_load((KIT / "asyncapi.yaml").read_text())


@pytest.fixture(scope="module")
def validator() -> jsonschema.Validator:
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def test_checked_in_document_is_what_the_declarations_render():
    assert (KIT / "asyncapi.yaml").read_text() == render.render_asyncapi(), \
        "run: tongban render asyncapi --out docs/partner-kit/asyncapi.yaml"


def test_document_is_valid_asyncapi_3(document: dict, validator: jsonschema.Validator):
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(document)]
    assert errors == []


def test_the_asyncapi_schema_rejects_a_wrong_field(document: dict, validator: jsonschema.Validator):
    broken = copy.deepcopy(document)
    operation = next(iter(broken["operations"].values()))
    operation["action"] = "publish"  # AsyncAPI 2's verb: 3.0 says send or receive
    assert list(validator.iter_errors(broken))
    broken = copy.deepcopy(document)
    next(iter(broken["channels"].values()))["topic"] = "x"  # not a channel field
    assert list(validator.iter_errors(broken))


def test_operations_are_each_partners_topic_rights(document: dict):
    granted = acls.generate("")
    rights = set()
    for principal in declared():
        if principal.kind in ("partner", "feed"):
            rights |= {(principal.name, "send" if a.operation == "WRITE" else "receive", a.name)
                       for a in acls.for_principal(granted, principal.name)
                       if a.resource_type == "TOPIC" and a.name != names.SCHEMAS}
    channels = document["channels"]
    described = {(op["x-principal"], op["action"], channels[op["channel"]["$ref"].split("/")[-1]]["address"])
                 for op in document["operations"].values()}
    assert described == rights
    assert ("partner-420000", "receive", names.partner_assignments("420000")) in described
    assert ("partner-420000", "send", names.partner_decisions("420000")) in described
    assert ("partner-12345", "send", names.FEEDBACK_WORKORDERS) in described


def test_every_channel_carries_the_latest_released_schemas(document: dict):
    registry = SchemaRegistry.load()
    components = document["components"]
    for channel in document["channels"].values():
        assert channel["messages"], channel["address"]
        for ref in channel["messages"].values():
            message = components["messages"][ref["$ref"].split("/")[-1]]
            payload = components["schemas"][message["payload"]["$ref"].split("/")[-1]]
            latest = registry.latest(message["title"])
            assert payload["schema"] == json.loads(latest.schema_json)
            assert payload["schemaFormat"].startswith("application/vnd.apache.avro+json")


def test_partner_events_follow_the_notes_in_topics_py():
    source = (ROOT / "tongban" / "topics.py").read_text()
    noted = {full for full, note in re.findall(r'^[A-Z_]+_EVENT = "([^"]+)"\s*#\s*on ([^\n]*)$', source, re.MULTILINE)
             if any(token in note for token in PARTNER_FACING)}
    listed = {e for events in render.PARTNER_EVENTS.values() for e in events} - {names.SERVICE_RATING_EVENT}
    assert listed == noted


def test_the_guide_covers_what_a_partner_needs():
    guide = (KIT / "README.md").read_text()
    for needed in ("SCRAM-SHA-512", "asyncapi.yaml", "tongban.schemas", "event_id", "traceparent",
                   "tongban.partner.<id>.assignments", "tongban.partner.<id>.decisions", "dead letter"):
        assert needed in guide, needed
