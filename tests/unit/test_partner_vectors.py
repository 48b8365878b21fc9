"""The partner kit's test vectors (docs/partner-kit/vectors) are what the codec writes today, and
their bytes are the Avro single-object encoding a partner's own encoder must produce."""

import io
import json
from datetime import datetime
from pathlib import Path

import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form

from tongban.codec import SchemaRegistry
from tongban.ops import render

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "partner-kit" / "vectors"
REGISTRY = SchemaRegistry.load()
RENDERED = render.vectors(REGISTRY)


def crc64_avro(data: bytes) -> bytes:
    """The Avro specification's fingerprint, written out here so the test does not trust the codec's."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def test_every_partner_facing_version_has_a_vector_and_nothing_else_is_there():
    expected = {f"{event}.v{sv.version}.{ext}" for event in render.vector_events()
                for sv in REGISTRY.versions(event) for ext in ("json", "hex", "avsc")}
    assert {"tongban.partner.MatterAssigned.v2.hex", "tongban.partner.AuthorityDecision.v1.json"} <= expected
    assert {p.name for p in VECTORS.iterdir()} == expected, "run `tongban render vectors` and commit the result"


@pytest.mark.parametrize(("event", "version", "text", "frame"), RENDERED,
                         ids=[f"{e}.v{v}" for e, v, _, _ in RENDERED])
def test_the_checked_in_vector_matches_the_codec_byte_for_byte(event, version, text, frame):
    example = (VECTORS / f"{event}.v{version}.json").read_text()
    assert example == text, "the example drifted from the schema: run `tongban render vectors`"
    stored = bytes.fromhex((VECTORS / f"{event}.v{version}.hex").read_text().strip())
    # Re-encoding the checked-in JSON gives exactly the checked-in bytes.
    assert REGISTRY.encode(event, json.loads(example), version=version) == stored
    assert stored == frame


@pytest.mark.parametrize(("event", "version"), [(e, v) for e, v, _, _ in RENDERED],
                         ids=[f"{e}.v{v}" for e, v, _, _ in RENDERED])
def test_the_bytes_are_a_plain_avro_single_object_encoding(event, version):
    """What a partner's Avro library sees: magic, the spec's fingerprint of the canonical form, the body."""
    stored = bytes.fromhex((VECTORS / f"{event}.v{version}.hex").read_text().strip())
    example = json.loads((VECTORS / f"{event}.v{version}.json").read_text())
    schema = json.loads((VECTORS / f"{event}.v{version}.avsc").read_text())
    assert schema == json.loads(next(sv for sv in REGISTRY.versions(event) if sv.version == version).schema_json)
    assert stored[:2] == b"\xc3\x01"
    assert stored[2:10] == crc64_avro(to_parsing_canonical_form(schema).encode())
    body = fastavro.schemaless_reader(io.BytesIO(stored[10:]), fastavro.parse_schema(schema), None)

    def plain(value):
        if isinstance(value, datetime):
            return int(value.timestamp() * 1000)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    assert plain(body) == example
    assert (body["envelope"]["event_type"], body["envelope"]["schema_version"]) == (event, version)


def test_personal_fields_hold_a_sealed_placeholder_never_clear_data():
    example = json.loads((VECTORS / "tongban.partner.MatterAssigned.v2.json").read_text())
    assert all(example["applicant"][f].startswith("pii:v2:") for f in ("name", "id_number", "phone"))
