"""A writer schema read from the schema topic is learned only if it keeps FULL_TRANSITIVE
compatibility with what this reader holds for that record name."""

import json

from tongban.bus import compatible_with_local
from tongban.codec import SchemaRegistry

RECEIVED = "tongban.application.ApplicationReceived"


def received_v1(registry: SchemaRegistry) -> dict:
    return json.loads(registry.latest(RECEIVED).schema_json)


def test_a_newer_writer_with_an_optional_field_is_learned():
    registry = SchemaRegistry.load()
    v2 = received_v1(registry)
    v2["fields"].append({"name": "consultation_room", "type": ["null", "string"], "default": None})
    assert compatible_with_local(registry, json.dumps(v2))


def test_a_writer_that_drops_a_required_field_is_refused():
    registry = SchemaRegistry.load()
    broken = received_v1(registry)
    broken["fields"] = [f for f in broken["fields"] if f["name"] != "matter_code"]
    assert not compatible_with_local(registry, json.dumps(broken))


def test_a_writer_that_changes_a_fields_type_is_refused():
    registry = SchemaRegistry.load()
    broken = received_v1(registry)
    for field in broken["fields"]:
        if field["name"] == "matter_code":
            field["type"] = "long"
    assert not compatible_with_local(registry, json.dumps(broken))


def test_a_record_name_this_reader_does_not_hold_is_learned():
    registry = SchemaRegistry.load()
    rogue = {"type": "record", "name": "Unheard", "namespace": "tongban.partner",
             "fields": [{"name": "x", "type": "string"}]}
    assert compatible_with_local(registry, json.dumps(rogue))
