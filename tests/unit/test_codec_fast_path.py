"""The codec's fast path: a validator generated per schema version checks only what
fastavro's writer would accept silently and leaves the rest to the writer. Every misfit is
still refused with MalformedRecord naming the first offending field, as the slow walk does."""

from __future__ import annotations

import datetime as dt
import enum
import json
import re
import types
from pathlib import Path

import pytest

from tongban.codec import HEADER_SIZE, MalformedRecord, SchemaRegistry, UnknownSchema

RECEIVED = "tongban.application.ApplicationReceived"
KINDS = "t.Kinds"
UTC = dt.UTC
T0 = dt.datetime(2024, 5, 6, 1, 2, 3, 456000, tzinfo=UTC)
DEEP_LEVELS = 25  # arrays nested deeper than one generated function may nest blocks


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load()


@pytest.fixture(scope="module")
def kinds(tmp_path_factory) -> SchemaRegistry:
    """A registry of test schemas: every primitive kind, a record that contains itself and
    arrays nested deeper than one generated function may nest."""
    directory = tmp_path_factory.mktemp("schemas")
    fields = [
        {"name": "flag", "type": "boolean"},
        {"name": "count", "type": "int"},
        {"name": "total", "type": "long"},
        {"name": "ratio", "type": "double"},
        {"name": "weight", "type": "float"},
        {"name": "blob", "type": "bytes"},
        {"name": "nothing", "type": "null"},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "scores", "type": {"type": "map", "values": "long"}},
        {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}},
        {"name": "note", "type": ["null", "string"]},
        {"name": "either", "type": ["null", "long", "string"], "default": None},
        {"name": "parent", "type": ["null", "Kinds"], "default": None},
    ]
    (directory / "t.Kinds.v1.avsc").write_text(json.dumps(
        {"type": "record", "name": "Kinds", "namespace": "t", "fields": fields}))
    deep: object = "boolean"
    for _ in range(DEEP_LEVELS):
        deep = {"type": "array", "items": deep}
    (directory / "t.Deep.v1.avsc").write_text(json.dumps(
        {"type": "record", "name": "Deep", "namespace": "t", "fields": [{"name": "cells", "type": deep}]}))
    return SchemaRegistry.load(Path(directory))


def kinds_record() -> dict:
    return {"flag": True, "count": 7, "total": -(2**40), "ratio": 0.25, "weight": 1.5,
            "blob": b"\x00\x01", "nothing": None, "at": T0, "tags": ["a", "b"],
            "scores": {"x": 1}, "color": "RED", "note": None}


def application_received(registry: SchemaRegistry) -> dict:
    return {
        "envelope": {"event_id": "e1", "event_type": RECEIVED,
                     "schema_version": registry.latest(RECEIVED).version, "occurred_at": T0,
                     "source_system": "intake", "source_partner": None, "correlation_id": "A1",
                     "causation_id": None},
        "application_id": "A1", "matter_code": "M", "channel": "PORTAL",
        "receiving_division": "310000", "home_division": "420100",
        "applicant": {"kind": "PERSON", "name": "N", "id_number": "I", "phone": None},
        "materials": [{"code": "M1", "name": "N1", "provided": True, "original_checked": True},
                      {"code": "M2", "name": "N2", "provided": False}],
        "delivery_method": "POST", "postal_address": None, "submitted_at": T0,
        "commitments": ["C1"], "places": {"HOUSEHOLD": "420102"},
    }


def refusal(registry: SchemaRegistry, name: str, record: dict) -> str:
    with pytest.raises(MalformedRecord) as info:
        registry.encode(name, record)
    return str(info.value)


def refused_field(registry: SchemaRegistry, name: str, record: dict) -> str:
    message = refusal(registry, name, record)
    named = re.search(r"field '(.*)' (?:does not match|must be)", message)
    return named[1] if named else message


# -- what fastavro's writer would accept silently is refused, the field named ----------


def test_a_str_for_a_boolean_is_refused(registry):
    record = application_received(registry)
    record["materials"][0]["provided"] = "yes"
    assert refused_field(registry, RECEIVED, record) == "materials[0].provided"


def test_an_int_for_an_optional_boolean_is_refused(registry):
    record = application_received(registry)
    record["materials"][1]["original_checked"] = 1
    assert refused_field(registry, RECEIVED, record) == "materials[1].original_checked"


def test_none_for_a_boolean_is_refused(kinds):
    assert refused_field(kinds, KINDS, {**kinds_record(), "flag": None}) == "flag"


def test_a_bool_for_an_int_is_refused(kinds):
    assert refused_field(kinds, KINDS, {**kinds_record(), "count": True}) == "count"


def test_a_float_for_an_int_is_refused(registry):
    record = application_received(registry)
    record["envelope"]["schema_version"] = 2.0
    assert refused_field(registry, RECEIVED, record) == "envelope.schema_version"


def test_an_int_out_of_the_int_range_is_refused(kinds):
    assert refused_field(kinds, KINDS, {**kinds_record(), "count": 2**31}) == "count"


def test_a_float_for_a_long_is_refused(kinds):
    assert refused_field(kinds, KINDS, {**kinds_record(), "total": 2.0}) == "total"


def test_an_int_out_of_the_long_range_is_refused(kinds):
    assert refused_field(kinds, KINDS, {**kinds_record(), "total": 2**63}) == "total"


def test_a_str_for_a_double_is_refused(kinds):
    assert refused_field(kinds, KINDS, {**kinds_record(), "ratio": "1.5"}) == "ratio"


def test_a_bool_for_a_float_is_refused(kinds):
    assert refused_field(kinds, KINDS, {**kinds_record(), "weight": True}) == "weight"


def test_a_str_for_bytes_is_refused(kinds):
    assert refused_field(kinds, KINDS, {**kinds_record(), "blob": "text"}) == "blob"


def test_a_value_for_null_is_refused(kinds):
    assert refused_field(kinds, KINDS, {**kinds_record(), "nothing": 0}) == "nothing"


def test_a_naive_datetime_is_refused(registry):
    record = application_received(registry)
    record["submitted_at"] = dt.datetime(2024, 5, 6, 1, 2, 3)
    assert refused_field(registry, RECEIVED, record) == "submitted_at"


def test_a_float_for_a_timestamp_is_refused(registry):
    record = application_received(registry)
    record["submitted_at"] = 1.5e12
    assert refused_field(registry, RECEIVED, record) == "submitted_at"


def test_a_bool_for_a_timestamp_is_refused(registry):
    record = application_received(registry)
    record["envelope"]["occurred_at"] = True
    assert refused_field(registry, RECEIVED, record) == "envelope.occurred_at"


def test_a_str_for_an_array_is_refused(registry):
    record = application_received(registry)
    record["commitments"] = "C1"
    assert refused_field(registry, RECEIVED, record) == "commitments"


def test_a_set_for_an_array_is_refused(registry):
    record = application_received(registry)
    record["commitments"] = {"C1"}
    assert refused_field(registry, RECEIVED, record) == "commitments"


def test_a_tuple_may_not_pick_a_union_branch(registry):
    record = application_received(registry)
    record["postal_address"] = ("string", "somewhere")
    assert refused_field(registry, RECEIVED, record) == "postal_address"


def test_a_missing_nullable_field_without_default_is_refused(kinds):
    record = kinds_record()
    del record["note"]
    assert refused_field(kinds, KINDS, record) == "note"


# -- what the writer refuses itself is named as before ---------------------------------


def test_an_unknown_field_in_a_nested_record_is_refused(registry):
    record = application_received(registry)
    record["applicant"]["nickname"] = "x"
    assert refused_field(registry, RECEIVED, record) == "applicant.nickname"


def test_an_unknown_field_in_an_array_item_is_refused(registry):
    record = application_received(registry)
    record["materials"][1]["colour"] = "x"
    assert refused_field(registry, RECEIVED, record) == "materials[1].colour"


def test_a_missing_required_string_is_refused(registry):
    record = application_received(registry)
    del record["applicant"]["id_number"]
    assert refused_field(registry, RECEIVED, record) == "applicant.id_number"


def test_a_non_str_for_a_string_keeps_the_whole_message(registry):
    record = application_received(registry)
    record["applicant"]["name"] = b"N"
    assert refusal(registry, RECEIVED, record) == (
        f"{RECEIVED}: field 'applicant.name' does not match the schema (expected string)")


def test_a_non_str_map_key_is_refused(registry):
    record = application_received(registry)
    record["places"] = {1: "420102"}
    assert refused_field(registry, RECEIVED, record) == "places"


def test_a_non_str_in_a_nullable_string_is_refused(registry):
    record = application_received(registry)
    record["postal_address"] = 42
    assert refused_field(registry, RECEIVED, record) == "postal_address"


def test_an_unknown_enum_symbol_is_refused(kinds):
    assert refused_field(kinds, KINDS, {**kinds_record(), "color": "BLUE"}) == "color"


def test_a_value_of_none_of_a_unions_types_is_refused(kinds):
    assert refused_field(kinds, KINDS, {**kinds_record(), "either": 1.5}) == "either"


def test_a_map_value_of_the_wrong_type_is_refused(kinds):
    assert refused_field(kinds, KINDS, {**kinds_record(), "scores": {"x": "1"}}) == "scores['x']"


def test_a_schema_error_is_named_before_a_wrong_envelope(registry):
    record = application_received(registry)
    record["envelope"]["event_type"] = "tongban.X"
    record["applicant"]["name"] = None
    assert refused_field(registry, RECEIVED, record) == "applicant.name"


def test_a_wrong_envelope_version_keeps_its_message(registry):
    record = application_received(registry)
    record["envelope"]["schema_version"] = 99
    version = registry.latest(RECEIVED).version
    assert refusal(registry, RECEIVED, record) == (
        f"{RECEIVED}: field 'envelope.schema_version' must be {version}")


def test_an_int_subclass_for_a_timestamp_is_still_refused_before_the_envelope(registry):
    record = application_received(registry)
    record["envelope"]["occurred_at"] = Level.HIGH
    record["envelope"]["schema_version"] = 99
    assert refusal(registry, RECEIVED, record) == f"{RECEIVED}: record does not match the schema"


# -- generated code: records inside themselves, deep nesting ---------------------------


def test_a_record_inside_itself_is_checked_at_every_level(kinds):
    record = {**kinds_record(), "parent": {**kinds_record(), "parent": {**kinds_record(), "flag": 1}}}
    assert refused_field(kinds, KINDS, record) == "parent.parent.flag"


def test_a_record_inside_itself_round_trips(kinds):
    record = {**kinds_record(), "parent": {**kinds_record(), "either": 3}}
    _, decoded = kinds.decode(kinds.encode(KINDS, record))
    assert decoded["parent"]["either"] == 3


def test_arrays_nested_deeper_than_one_function_are_checked_to_the_leaf(kinds):
    cells: object = ["x"]
    for _ in range(DEEP_LEVELS - 1):
        cells = [cells]
    assert refused_field(kinds, "t.Deep", {"cells": cells}) == "cells" + "[0]" * DEEP_LEVELS


# -- what was accepted stays accepted ---------------------------------------------------


class Level(enum.IntEnum):
    HIGH = 3


def test_int_subclasses_mappings_and_tuples_are_still_accepted(kinds):
    record = {**kinds_record(), "count": Level.HIGH, "tags": ("a",),
              "scores": types.MappingProxyType({"x": 1})}
    _, decoded = kinds.decode(kinds.encode(KINDS, types.MappingProxyType(record)))
    assert (decoded["count"], decoded["tags"], decoded["scores"]) == (3, ["a"], {"x": 1})


def test_epoch_numbers_are_still_accepted_for_timestamps(kinds):
    _, decoded = kinds.decode(kinds.encode(KINDS, {**kinds_record(), "at": 1_714_957_323_456_000}))
    assert decoded["at"] == T0


# -- decoding frames that are not bytes --------------------------------------------------


def test_a_bytearray_frame_decodes(registry):
    data = registry.encode(RECEIVED, application_received(registry))
    assert registry.decode(bytearray(data)) == registry.decode(data)


def test_a_memoryview_frame_with_trailing_bytes_is_refused(registry):
    data = registry.encode(RECEIVED, application_received(registry))
    with pytest.raises(MalformedRecord, match="trailing"):
        registry.decode(memoryview(data + b"\x00"))


def test_a_bytes_frame_with_an_unknown_fingerprint_is_refused(registry):
    data = registry.encode(RECEIVED, application_received(registry))
    with pytest.raises(UnknownSchema):
        registry.decode(data[:2] + bytes(8) + data[HEADER_SIZE:])

