"""Single-object codec, schema registry, evolution via learned writer schemas, pii."""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
import shutil
import uuid
from pathlib import Path

import fastavro
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form

from tongban.codec import (
    HEADER_SIZE,
    MAGIC,
    CodecError,
    MalformedRecord,
    SchemaRegistry,
    SchemaVersion,
    UnknownSchema,
    schema_fingerprint,
)
from tongban.events import EVENT_ID_NAMESPACE, derive_event_id

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "evolution"
COMPONENTS = {"tongban.Envelope", "tongban.application.Applicant", "tongban.application.Material"}
UTC = dt.UTC
T0 = dt.datetime(2024, 5, 6, 1, 2, 3, 456000, tzinfo=UTC)


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load()


def envelope(full_name: str, version: int = 1, **overrides) -> dict:
    env = {
        "event_id": "e1",
        "event_type": full_name,
        "schema_version": version,
        "occurred_at": T0,
        "source_system": "intake",
        "source_partner": None,
        "correlation_id": "A1",
        "causation_id": None,
    }
    env.update(overrides)
    return env


def application_received() -> dict:
    name = "tongban.application.ApplicationReceived"
    return {
        "envelope": envelope(name, SchemaRegistry.load().latest(name).version),
        "application_id": "A1",
        "matter_code": "11100000MB0143871A4000118001000",
        "channel": "PORTAL",
        "receiving_division": "310000",
        "home_division": "420100",
        "applicant": {"kind": "PERSON", "name": "张三", "id_number": "11010519491231002X", "phone": None},
        "materials": [
            {"code": "M1", "name": "身份证", "provided": True, "original_checked": True},
            {"code": "M2", "name": "户口簿", "provided": False, "original_checked": False},
        ],
        "delivery_method": "POST",
        "postal_address": "湖北省武汉市江岸区某路1号",
        "submitted_at": T0,
        "application_number": "",
        "window_id": "",
        "places": {"HOUSEHOLD": "420102"},
        "bundle_id": "",
        "commitments": [],
        "deferred_materials": {"M2": "2024-05-20"},
    }


def sample(sv: SchemaVersion) -> dict:
    """A record for any schema: every field filled, nullable ones alternately null."""
    parsed = sv.parsed
    named = parsed["__named_schemas"]
    counter = iter(range(10**6))

    def value(schema, name):
        if isinstance(schema, str) and schema in named:
            schema = named[schema]
        if isinstance(schema, list):
            branch = next(b for b in schema if b != "null")
            return None if next(counter) % 2 else value(branch, name)
        kind = schema if isinstance(schema, str) else schema["type"]
        if isinstance(schema, dict) and schema.get("logicalType") == "timestamp-millis":
            return T0 + dt.timedelta(milliseconds=next(counter))
        if kind == "record":
            return {f["name"]: value(f["type"], f["name"]) for f in schema["fields"]}
        if kind == "array":
            return [value(schema["items"], name), value(schema["items"], name)]
        if kind == "map":
            return {f"{name}-k{next(counter)}": value(schema["values"], name) for _ in range(2)}
        if kind == "enum":
            return schema["symbols"][next(counter) % len(schema["symbols"])]
        if kind in ("float", "double"):
            return next(counter) / 4  # exact in binary, so a float32 round trip keeps it
        return {"string": lambda: f"{name}-{next(counter)}-值", "int": lambda: next(counter) - 3,
                "long": lambda: -(2**40), "boolean": lambda: next(counter) % 2 == 0}[kind]()

    record = value(parsed, sv.full_name)
    if "envelope" in record:
        record["envelope"].update(event_type=sv.full_name, schema_version=sv.version)
    return record


def event_versions() -> list[SchemaVersion]:
    return [sv for sv in SchemaRegistry.load().all_versions() if sv.full_name not in COMPONENTS]


# -- framing ---------------------------------------------------------------------------


def test_avro_spec_vector_for_null_schema():
    assert MAGIC + schema_fingerprint('"null"') == bytes.fromhex("C3 01 8A 8F 25 CC E7 24 DD 63")
    assert MAGIC + schema_fingerprint("null") == bytes.fromhex("C3018A8F25CCE724DD63")


def test_unroutable_bytes_exactly(registry):
    name = "tongban.application.ApplicationUnroutable"
    record = {
        "envelope": envelope(name, occurred_at=dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
                             source_system="routing", causation_id="e0"),
        "application_id": "A1",
        "matter_code": "M7",
        "reason": "no route",
    }
    # Strings are zigzag-varint length + UTF-8; int 1 -> 02; long 1000 -> zigzag 2000
    # -> varint D0 0F; a union's branch index is a zigzag varint (null -> 00, string -> 02).
    body = (
        b"\x04e1"                                                   # event_id
        + bytes([2 * 41]) + b"tongban.application.ApplicationUnroutable"  # event_type (41 chars)
        + b"\x02"                                                   # schema_version = 1
        + b"\xd0\x0f"                                               # occurred_at = 1000 ms
        + b"\x0erouting"                                            # source_system
        + b"\x00"                                                   # source_partner = null
        + b"\x04A1"                                                 # correlation_id
        + b"\x02\x04e0"                                             # causation_id = "e0"
        + b"\x04A1" + b"\x04M7" + b"\x10no route"                   # payload fields
    )
    data = registry.encode(name, record)
    assert data[:2].hex() == "c301"
    assert data[2:10].hex() == "986676d1539f99b3"  # pinned; see schemas/released.lock
    assert data[HEADER_SIZE:] == body
    assert registry.decode(data) == (name, record)


def test_verification_failed_bytes_exactly(registry):
    name = "tongban.application.ApplicationVerificationFailed"
    record = {
        "envelope": envelope(name, occurred_at=dt.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
                             source_system="v", correlation_id="", source_partner="42"),
        "application_id": "",
        "reasons": ["x"],
        "missing_materials": [],
    }
    body = (
        b"\x04e1" + bytes([2 * 49]) + name.encode()  # event_type: 49 chars -> 0x62
        + b"\x02"          # schema_version = 1
        + b"\x01"          # occurred_at = -1 ms -> zigzag 1
        + b"\x02v"         # source_system
        + b"\x02\x0442"    # source_partner = "42"
        + b"\x00"          # correlation_id = ""
        + b"\x00"          # causation_id = null
        + b"\x00"          # application_id = ""
        + b"\x02\x02x\x00"  # reasons: block of 1 item, "x", end of array
        + b"\x00"          # missing_materials: empty array
    )
    data = registry.encode(name, record, version=1)
    assert data[HEADER_SIZE:] == body
    assert registry.decode(data, reader_name=name)[1]["reasons"] == ["x"]


@pytest.mark.parametrize("sv", event_versions(), ids=lambda sv: f"{sv.full_name}.v{sv.version}")
def test_every_event_frames_with_its_canonical_fingerprint_and_round_trips(registry, sv):
    expected = fingerprint(to_parsing_canonical_form(json.loads(sv.schema_json)), "CRC-64-AVRO")
    record = sample(sv)
    data = registry.encode(sv.full_name, record, version=sv.version)
    assert data[:HEADER_SIZE] == MAGIC + bytes.fromhex(expected)
    assert SchemaRegistry.fingerprint_of(data) == sv.fingerprint
    # An older version is read as the newest one: the fields added since take their defaults.
    newest = registry.latest(sv.full_name).parsed["fields"]
    expected = {**{f["name"]: f["default"] for f in newest if f["name"] not in record}, **record}
    assert registry.decode(data) == (sv.full_name, expected)
    assert registry.decode(data, reader_name=sv.full_name) == (sv.full_name, expected)


def test_realistic_application_received_round_trips(registry):
    record = application_received()
    _, decoded = registry.decode(registry.encode("tongban.application.ApplicationReceived", record))
    assert decoded == record
    assert decoded["submitted_at"].tzinfo is not None


def test_epoch_millis_accepted_and_decoded_as_utc_datetime(registry):
    record = application_received()
    record["envelope"]["occurred_at"] = 1_714_957_323_456
    _, decoded = registry.decode(registry.encode("tongban.application.ApplicationReceived", record))
    assert decoded["envelope"]["occurred_at"] == T0


# -- schema conventions ----------------------------------------------------------------


def test_every_event_starts_with_the_envelope_by_name_and_components_are_known(registry):
    names = {sv.full_name for sv in registry.all_versions()}
    assert names >= COMPONENTS
    for path in SCHEMAS.glob("*.avsc"):
        raw = json.loads(path.read_text(encoding="utf-8"))
        full = f"{raw['namespace']}.{raw['name']}"
        if full in COMPONENTS:
            assert all(f["name"] != "envelope" for f in raw["fields"])
            continue
        assert raw["fields"][0] == {"name": "envelope", "type": "tongban.Envelope"}, path.name
        assert raw.get("doc"), path.name


def _fields(schema):
    if isinstance(schema, dict):
        for f in schema.get("fields", []):
            yield f
            yield from _fields(f["type"])
        yield from _fields(schema.get("items"))
    elif isinstance(schema, list):
        for branch in schema:
            yield from _fields(branch)


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.avsc")), ids=lambda p: p.name)
def test_schema_style(path):
    raw = json.loads(path.read_text(encoding="utf-8"))
    for f in _fields(raw):
        assert f.get("pii", True) is True, f"{path.name}:{f['name']}: pii must be true or absent"
        t = f["type"]
        if isinstance(t, list):
            assert t[0] == "null", f["name"]
            assert len(t) == 2, f["name"]
            assert f.get("default", "missing") is None, f["name"]
        if f["name"].endswith("_at") or f["name"] in ("at", "window_start", "window_end"):
            inner = t[1] if isinstance(t, list) else t
            assert inner == {"type": "long", "logicalType": "timestamp-millis"}, f["name"]
        assert not isinstance(t, dict) or t.get("type") != "enum", "enumerations are plain strings"


def test_schema_json_is_self_contained_and_keeps_pii(registry):
    sv = registry.latest("tongban.partner.MatterAssigned")
    schema = json.loads(sv.schema_json)
    assert schema["version"] == 2
    assert schema["fields"][0]["type"]["name"] == "Envelope"  # inlined, not a reference
    fastavro.parse_schema(schema, named_schemas={})  # resolves without the other files
    assert '"pii": true' in sv.schema_json
    assert schema_fingerprint(schema) == sv.fingerprint


def test_registry_lookups(registry):
    sv = registry.latest("tongban.application.ApplicationReceived")
    assert sv.version == 2
    assert [v.version for v in registry.versions(sv.full_name)] == [1, 2]
    assert registry.versions(sv.full_name)[-1] is sv
    assert registry.by_fingerprint(sv.fingerprint) is sv
    assert registry.by_fingerprint(b"\0" * 8) is None
    assert registry.versions("no.such.Event") == []
    with pytest.raises(UnknownSchema) as info:
        registry.latest("no.such.Event")
    assert info.value.full_name == "no.such.Event"
    assert len(registry.all_versions()) == len(list(SCHEMAS.glob("*.avsc")))
    assert len({v.fingerprint for v in registry.all_versions()}) == len(registry.all_versions())


# -- encode rejects records that do not match -------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r["applicant"].update(name=31415926), "applicant.name"),
        (lambda r: r["applicant"].update(id_number=None), "applicant.id_number"),
        (lambda r: r["materials"][1].update(provided="yes-31415926"), "materials[1].provided"),
        (lambda r: r.pop("matter_code"), "matter_code"),
        (lambda r: r.update(postal_adress="31415926"), "postal_adress"),
        (lambda r: r.update(submitted_at="2024-05-06 31415926"), "submitted_at"),
        (lambda r: r.update(submitted_at=dt.datetime(2024, 5, 6)), "submitted_at"),
        (lambda r: r["envelope"].update(schema_version=True), "envelope.schema_version"),
        (lambda r: r["envelope"].update(schema_version=99), "envelope.schema_version"),
        (lambda r: r["envelope"].update(event_type="tongban.X"), "envelope.event_type"),
        (lambda r: r.update(materials={"code": "31415926"}), "materials"),
        (lambda r: r.update(applicant="31415926"), "applicant"),
    ],
)
def test_encode_rejects_mismatches_naming_the_field_not_the_value(registry, mutate, field):
    record = application_received()
    mutate(record)
    with pytest.raises(MalformedRecord) as info:
        registry.encode("tongban.application.ApplicationReceived", record)
    assert f"'{field}'" in str(info.value)
    assert "31415926" not in str(info.value)
    assert "张三" not in str(info.value)


def test_optional_fields_with_defaults_may_be_omitted(registry):
    record = application_received()
    del record["materials"][0]["original_checked"]
    del record["applicant"]["phone"]
    _, decoded = registry.decode(registry.encode("tongban.application.ApplicationReceived", record))
    assert decoded["materials"][0]["original_checked"] is False
    assert decoded["applicant"]["phone"] is None


def test_encode_unknown_name(registry):
    with pytest.raises(UnknownSchema):
        registry.encode("tongban.application.Nope", {})


# -- decode never raises anything but CodecErrors ---------------------------------------


@pytest.mark.parametrize("data", [b"", b"\xc3", b"\xc3\x01\x00", b"\x00\x01" + b"\0" * 20, None, "text", 42])
def test_decode_rejects_non_frames(registry, data):
    with pytest.raises(MalformedRecord):
        registry.decode(data)


def test_decode_unknown_fingerprint(registry):
    with pytest.raises(UnknownSchema) as info:
        registry.decode(MAGIC + bytes.fromhex("0102030405060708") + b"\x00")
    assert info.value.fingerprint == "0102030405060708"


def test_decode_rejects_trailing_bytes_and_wrong_reader(registry):
    data = registry.encode("tongban.application.ApplicationReceived", application_received())
    with pytest.raises(MalformedRecord, match="trailing"):
        registry.decode(data + b"\x00")
    with pytest.raises(MalformedRecord, match=r"expected tongban.application.ApplicationRouted"):
        registry.decode(data, reader_name="tongban.application.ApplicationRouted")


def test_every_truncation_is_malformed(registry):
    for sv in event_versions():
        data = registry.encode(sv.full_name, sample(sv), version=sv.version)
        for cut in range(len(data)):
            with pytest.raises(MalformedRecord):
                registry.decode(data[:cut])


def test_fuzz_random_bytes_and_bit_flips(registry):
    rng = random.Random(20240506)
    known = [sv.fingerprint for sv in registry.all_versions()]
    frames = [registry.encode(sv.full_name, sample(sv), version=sv.version) for sv in event_versions()]
    cases = []
    for _ in range(3000):
        size = rng.randrange(0, 200)
        cases.append(rng.randbytes(size))
        cases.append(MAGIC + rng.choice(known) + rng.randbytes(size))
        frame = bytearray(rng.choice(frames))
        for _ in range(rng.randrange(1, 4)):
            frame[rng.randrange(HEADER_SIZE, len(frame))] ^= 1 << rng.randrange(8)
        cases.append(bytes(frame))
    decoded = 0
    for data in cases:
        try:
            registry.decode(data)
            decoded += 1
        except (MalformedRecord, UnknownSchema):
            pass
    assert decoded < len(cases)


# -- evolution: old readers and new writers -------------------------------------------


@pytest.fixture
def old_and_new(tmp_path):
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    shutil.copy(FIXTURES / "compatible" / "tongban.fixture.Parcel.v1.avsc", old_dir)
    shutil.copytree(FIXTURES / "compatible", new_dir)
    return SchemaRegistry.load(old_dir), SchemaRegistry.load(new_dir)


PARCEL_V1 = {"parcel_id": "P1", "label": "licence", "recipient": "李四", "sent_at": T0}


def test_old_reader_reads_new_writer_after_learning_its_schema(old_and_new):
    old, new = old_and_new
    name = "tongban.fixture.Parcel"
    data = new.encode(name, {**PARCEL_V1, "note": "fragile", "weight_grams": 120})
    assert SchemaRegistry.fingerprint_of(data) == new.latest(name).fingerprint != old.latest(name).fingerprint
    with pytest.raises(UnknownSchema) as info:
        old.decode(data)
    assert info.value.fingerprint == new.latest(name).fingerprint.hex()

    learned = old.add_writer_schema(new.latest(name).schema_json)
    assert learned.version == 2
    assert learned.fingerprint == new.latest(name).fingerprint
    assert old.add_writer_schema(new.latest(name).schema_json) is learned  # idempotent
    assert old.add_writer_schema(old.latest(name).schema_json) is old.latest(name)
    assert old.latest(name).version == 1  # learned schemas never become the local writer
    assert old.decode(data) == (name, PARCEL_V1)  # new fields dropped by schema resolution


def test_new_reader_reads_old_writer_with_defaults(old_and_new):
    old, new = old_and_new
    data = old.encode("tongban.fixture.Parcel", PARCEL_V1)
    assert new.decode(data) == ("tongban.fixture.Parcel", {**PARCEL_V1, "note": None, "weight_grams": 0})


def test_learned_incompatible_writer_is_malformed_not_a_crash(tmp_path):
    old = SchemaRegistry.load(FIXTURES / "compatible")  # v1 + v2, reader v2 needs "label"
    bad = SchemaRegistry.load(FIXTURES / "incompatible")  # v2 dropped "label"
    data = bad.encode("tongban.fixture.Parcel", {"parcel_id": "P", "recipient": "r", "sent_at": T0, "priority": 1})
    old.add_writer_schema(bad.latest("tongban.fixture.Parcel").schema_json)
    with pytest.raises(MalformedRecord, match="cannot be read"):
        old.decode(data)


def test_unknown_name_learned_reads_with_writer_schema(registry, old_and_new):
    _, new = old_and_new
    fresh = SchemaRegistry.load()
    data = new.encode("tongban.fixture.Parcel", {**PARCEL_V1, "note": None, "weight_grams": 1})
    fresh.add_writer_schema(new.latest("tongban.fixture.Parcel").schema_json)
    assert fresh.decode(data)[1]["weight_grams"] == 1
    assert fresh.pii_paths("tongban.fixture.Parcel") == [("recipient",), ("note",)]


@pytest.mark.parametrize("text", ["{", "[]", '"string"', '{"type": "record", "name": "X", "fields": [{"name": "a"}]}',
                                  '{"type": "record", "name": "X", "fields": [{"name": "a", "type": "Nope"}]}'])
def test_add_writer_schema_rejects_bad_schemas(registry, text):
    with pytest.raises(CodecError):
        registry.add_writer_schema(text)


# -- loader ------------------------------------------------------------------------------


def _write(directory: Path, name: str, schema: dict) -> None:
    (directory / name).write_text(json.dumps(schema), encoding="utf-8")


def _rec(name: str, fields: list) -> dict:
    return {"type": "record", "name": name, "namespace": "t", "fields": fields}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"t.A.avsc": _rec("A", [])}, "file name"),
        ({"t.A.v1.avsc": _rec("B", [])}, "does not match"),
        ({"t.A.v1.avsc": _rec("A", []), "t.A.v3.avsc": _rec("A", [])}, "gaps"),
        ({"t.A.v1.avsc": _rec("A", [{"name": "x", "type": "t.Missing"}])}, "unknown type t.Missing"),
        ({"t.A.v1.avsc": {"type": "enum", "name": "A", "namespace": "t", "symbols": ["X"]}}, "named record"),
    ],
)
def test_loader_rejects_bad_directories(tmp_path, files, message):
    for name, schema in files.items():
        _write(tmp_path, name, schema)
    with pytest.raises(CodecError, match=message):
        SchemaRegistry.load(tmp_path)


def test_loader_inlines_the_latest_component_and_relative_names(tmp_path):
    _write(tmp_path, "t.Part.v1.avsc", _rec("Part", [{"name": "a", "type": "string"}]))
    _write(tmp_path, "t.Part.v2.avsc", _rec("Part", [{"name": "a", "type": "string"},
                                                     {"name": "b", "type": "int", "default": 0}]))
    _write(tmp_path, "t.Whole.v1.avsc", _rec("Whole", [{"name": "p", "type": "Part"},
                                                       {"name": "q", "type": ["null", "Part"], "default": None}]))
    reg = SchemaRegistry.load(tmp_path)
    whole = json.loads(reg.latest("t.Whole").schema_json)
    assert [f["name"] for f in whole["fields"][0]["type"]["fields"]] == ["a", "b"]
    assert whole["fields"][1]["type"] == ["null", "Part"]  # second use stays a reference
    record = {"p": {"a": "x", "b": 1}, "q": {"a": "y", "b": 2}}
    assert reg.decode(reg.encode("t.Whole", record)) == ("t.Whole", record)


# -- personal data -----------------------------------------------------------------------


def test_pii_paths_of_application_received(registry):
    assert registry.pii_paths("tongban.application.ApplicationReceived") == [
        ("applicant", "name"), ("applicant", "id_number"), ("applicant", "phone"), ("postal_address",)]


def test_pii_paths_elsewhere(registry):
    assert registry.pii_paths("tongban.partner.MatterAssigned") == [
        ("applicant", "name"), ("applicant", "id_number"), ("applicant", "phone")]
    assert registry.pii_paths("tongban.delivery.PostalDispatch") == [("recipient_name",), ("address",), ("phone",)]
    assert registry.pii_paths("tongban.feedback.HotlineWorkOrder") == [("content",)]
    assert registry.pii_paths("tongban.feedback.ServiceRating") == [("comment",)]
    for name in ("tongban.application.ApplicationRouted", "tongban.application.ApplicationUnroutable",
                 "tongban.feedback.MatterFlagged", "tongban.runtime.TimerFired"):
        assert registry.pii_paths(name) == []


def test_mask_application_received(registry):
    record = application_received()
    original = copy.deepcopy(record)
    masked = registry.mask("tongban.application.ApplicationReceived", record)
    assert record == original  # not mutated
    assert masked["applicant"] == {"kind": "PERSON", "name": "***", "id_number": "***", "phone": None}
    assert masked["postal_address"] == "***"
    assert masked["materials"] == record["materials"]
    assert masked["application_id"] == "A1"
    assert masked["envelope"] == record["envelope"]
    assert "张三" not in repr(masked)
    assert "11010519491231002X" not in repr(masked)


def test_mask_is_conservative_on_shapes_that_do_not_match(registry):
    record = application_received()
    record["applicant"] = "张三 11010519491231002X"
    record["postal_address"] = None
    masked = registry.mask("tongban.application.ApplicationReceived", record)
    assert masked["applicant"] == "***"
    assert masked["postal_address"] is None



def test_a_mapped_record_is_a_copy_with_paths_and_shares_nothing_mutable(registry):
    record = {**application_received(), "not_in_schema": {"nested": ["x"]}}
    seen: list[str] = []
    mapped = registry.map_pii_paths("tongban.application.ApplicationReceived", record,
                                    lambda path, value: seen.append(path) or f"<{path}>")
    assert seen == ["applicant.name", "applicant.id_number", "postal_address"]
    assert mapped["applicant"]["name"] == "<applicant.name>"
    mapped["materials"][0]["code"] = "changed"
    mapped["not_in_schema"]["nested"].append("y")
    mapped["envelope"]["event_id"] = "changed"
    assert record["materials"][0]["code"] != "changed"
    assert record["not_in_schema"] == {"nested": ["x"]}
    assert record["envelope"]["event_id"] != "changed"

# -- event ids ------------------------------------------------------------------------


@pytest.mark.parametrize("cause", ["TB00000000000000000001", "submit:TBX", "张三的申请", "", "a|b", "x" * 300])
@pytest.mark.parametrize("qualifier", ["", "first", "leg-2"])
def test_event_ids_are_the_uuid5_ids_every_earlier_release_derived(cause, qualifier):
    """A replay is recognised by its id: the fast derivation must give exactly the ids that
    `uuid.uuid5` gave, or events written before it would be handled again."""
    expected = str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{cause}|tongban.application.ApplicationRouted|{qualifier}"))
    assert derive_event_id(cause, "tongban.application.ApplicationRouted", qualifier) == expected
