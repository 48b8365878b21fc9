"""Avro single-object codec and schema registry for Tongban events.

Framing (Avro spec, "Single-object encoding"): ``C3 01``, the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, the binary body.

Schemas live in ``schemas/<namespace>.<Name>.v<N>.avsc``. A file may reference a
record defined in another file (a *component*, e.g. ``tongban.Envelope``) by its full
name; the loader inlines the latest version of that component so every version has a
self-contained schema and hence a fingerprint. Every file is parsed once, at load.

Error messages never contain field values, so they are safe to log.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import fastavro
import fastavro.validation
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from tongban import paths

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "MASK",
    "CodecError",
    "MalformedRecord",
    "SchemaRegistry",
    "SchemaVersion",
    "UnknownSchema",
    "schema_fingerprint",
]

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
MASK = "***"
DEFAULT_DIRECTORY = paths.schemas_dir()

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
_TIMESTAMPS = frozenset({"timestamp-millis", "timestamp-micros", "local-timestamp-millis",
                         "local-timestamp-micros"})
_FILE_NAME = re.compile(r"^(?P<name>(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*)\.v(?P<version>[1-9]\d*)\.avsc$",
                        re.ASCII)


class CodecError(Exception):
    """Base error of the codec; the message never contains personal data."""


class MalformedRecord(CodecError):
    """Bytes that are not a valid frame or body, or a record that does not match its schema."""


class UnknownSchema(CodecError):
    """No schema known for a fingerprint (``.fingerprint``, hex) or a full name (``.full_name``)."""

    def __init__(self, message: str, *, fingerprint: str | None = None,
                 full_name: str | None = None) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint
        self.full_name = full_name


@dataclass(frozen=True)
class SchemaVersion:
    """One released (or learned) version of a schema.

    ``schema_json`` is self-contained (components inlined, ``pii`` marks kept) and carries
    a top-level ``"version"`` property; ``version`` is 0 for a learned schema without it.
    """

    full_name: str
    version: int
    fingerprint: bytes
    schema_json: str = field(repr=False)
    parsed: dict[str, Any] = field(repr=False, compare=False)

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex()


def schema_fingerprint(schema: str | dict | list) -> bytes:
    """CRC-64-AVRO fingerprint (8 bytes, as framed) of a schema's Parsing Canonical Form."""
    if isinstance(schema, str):
        stripped = schema.strip()
        schema = json.loads(stripped) if stripped[:1] in ('"', "{", "[") else stripped
    return bytes.fromhex(_fastavro_fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


class _Mismatch(Exception):
    def __init__(self, path: str, expected: str) -> None:
        super().__init__(path)
        self.path = path
        self.expected = expected


class SchemaRegistry:
    """Released schema versions from ``schemas/`` plus writer schemas learned at runtime."""

    def __init__(self) -> None:
        self._local: dict[str, list[SchemaVersion]] = {}
        self._learned: dict[str, list[SchemaVersion]] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        self._pii: dict[str, list[tuple[str, ...]]] = {}
        self._pii_walkers: dict[str, _PiiWalker] = {}  # compiled per type, for its newest schema
        self._validators: dict[bytes, Validator] = {}  # compiled per schema version

    # -- loading -----------------------------------------------------------------------

    @classmethod
    def load(cls, directory: Path | None = None) -> SchemaRegistry:
        """Load every ``*.avsc`` in ``directory`` (default: the repository's ``schemas/``)."""
        directory = Path(directory) if directory is not None else DEFAULT_DIRECTORY
        raw: dict[str, dict[int, dict]] = {}
        for path in sorted(directory.glob("*.avsc")):
            match = _FILE_NAME.match(path.name)
            if match is None:
                raise CodecError(f"{path.name}: file name is not <namespace>.<Name>.v<N>.avsc")
            try:
                schema = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise CodecError(f"{path.name}: not valid JSON ({exc})") from None
            if not isinstance(schema, dict) or schema.get("type") != "record" \
                    or not isinstance(schema.get("name"), str):
                raise CodecError(f"{path.name}: top level must be a named record")
            if _full_name(schema, "") != match["name"]:
                raise CodecError(f"{path.name}: record full name {_full_name(schema, '')!r} "
                                 "does not match the file name")
            raw.setdefault(match["name"], {})[int(match["version"])] = schema
        for name, by_version in raw.items():
            if sorted(by_version) != list(range(1, len(by_version) + 1)):
                raise CodecError(f"{name}: versions must run 1..N without gaps, "
                                 f"found {sorted(by_version)}")

        latest_raw = {name: by_version[max(by_version)] for name, by_version in raw.items()}
        registry = cls()
        for name in sorted(raw):
            for version in sorted(raw[name]):
                try:
                    inlined = _inline(raw[name][version], latest_raw)
                except CodecError as exc:
                    raise CodecError(f"{name}.v{version}: {exc}") from None
                inlined["version"] = version
                registry._add(inlined, json.dumps(inlined, ensure_ascii=False), version, local=True)
        return registry

    def _add(self, schema: dict, schema_json: str, version: int, *, local: bool) -> SchemaVersion:
        name = _full_name(schema, "")
        try:
            parsed = fastavro.parse_schema(copy.deepcopy(schema), named_schemas={})
            fp = schema_fingerprint(schema)
        except Exception as exc:  # fastavro raises several types for bad schemas
            raise CodecError(f"{name}.v{version}: invalid schema ({exc})") from None
        # A record schema parses to a dict; fastavro's annotation covers every schema form.
        sv = SchemaVersion(name, version, fp, schema_json, cast(dict[str, Any], parsed))
        target = self._local if local else self._learned
        target.setdefault(name, []).append(sv)
        target[name].sort(key=lambda v: v.version)
        current = self._by_fingerprint.get(fp)
        # Doc-only versions share a fingerprint; keep the newest local one.
        if current is None or (local and current.version <= version):
            self._by_fingerprint[fp] = sv
        self._pii.pop(name, None)
        self._pii_walkers.pop(name, None)
        return sv

    def add_writer_schema(self, schema_json: str) -> SchemaVersion:
        """Learn a writer's self-contained schema (from ``tongban.schemas``); idempotent."""
        try:
            schema = json.loads(schema_json)
        except (TypeError, ValueError):
            raise CodecError("writer schema is not valid JSON") from None
        if not isinstance(schema, dict) or schema.get("type") != "record" \
                or not isinstance(schema.get("name"), str):
            raise CodecError("writer schema must be a named record")
        try:
            fp = schema_fingerprint(schema)
        except Exception as exc:
            raise CodecError(f"writer schema rejected ({exc})") from None
        known = self._by_fingerprint.get(fp)
        if known is not None:
            return known
        version = schema.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            version = 0
        return self._add(schema, schema_json, version, local=False)

    # -- lookup ------------------------------------------------------------------------

    def latest(self, full_name: str) -> SchemaVersion:
        """The newest local version of ``full_name``."""
        versions = self._local.get(full_name)
        if not versions:
            raise UnknownSchema(f"no local schema named {full_name}", full_name=full_name)
        return versions[-1]

    def _local_version(self, full_name: str, version: int) -> SchemaVersion:
        for sv in self._local.get(full_name, ()):
            if sv.version == version:
                return sv
        raise UnknownSchema(f"no local schema {full_name} v{version}", full_name=full_name)

    def versions(self, full_name: str) -> list[SchemaVersion]:
        """Local versions of ``full_name``, oldest first (empty if unknown)."""
        return list(self._local.get(full_name, ()))

    def by_fingerprint(self, fingerprint: bytes) -> SchemaVersion | None:
        """The version (local or learned) with this 8-byte fingerprint."""
        return self._by_fingerprint.get(bytes(fingerprint))

    def all_versions(self) -> list[SchemaVersion]:
        """Every local version, by full name then version (learned schemas excluded)."""
        return [sv for name in sorted(self._local) for sv in self._local[name]]

    # -- encoding ----------------------------------------------------------------------

    def encode(self, full_name: str, record: dict, *, version: int | None = None) -> bytes:
        """Frame ``record`` with the latest local version of ``full_name`` (or ``version``,
        as a writer that has not moved to the newest schema yet would).

        Raises MalformedRecord naming the first offending field. For events (records whose
        first field is ``envelope``) ``envelope.event_type`` must be ``full_name`` and
        ``envelope.schema_version`` the version used.
        """
        sv = self.latest(full_name) if version is None else self._local_version(full_name, version)
        parsed = sv.parsed
        named = parsed["__named_schemas"]
        fits = self._validators.get(sv.fingerprint)
        if fits is None:
            fits = self._validators[sv.fingerprint] = _compile(parsed, named, {})
        if not fits(record):
            # The slow walk, only to name the first offending field.
            try:
                _check(parsed, record, "", named)
            except _Mismatch as exc:
                where = f"field '{exc.path}'" if exc.path else "record"
                raise MalformedRecord(f"{full_name}: {where} does not match the schema "
                                      f"(expected {exc.expected})") from None
            raise MalformedRecord(f"{full_name}: record does not match the schema")
        if parsed["fields"] and parsed["fields"][0]["name"] == "envelope":
            envelope = record["envelope"]
            if envelope["event_type"] != full_name:
                raise MalformedRecord(f"{full_name}: field 'envelope.event_type' must be {full_name}")
            if envelope["schema_version"] != sv.version:
                raise MalformedRecord(f"{full_name}: field 'envelope.schema_version' must be "
                                      f"{sv.version}")
        buffer = io.BytesIO()
        buffer.write(MAGIC)
        buffer.write(sv.fingerprint)
        try:
            fastavro.schemaless_writer(buffer, parsed, record)
        except Exception as exc:
            raise MalformedRecord(f"{full_name}: record does not encode "
                                  f"({type(exc).__name__})") from None
        return buffer.getvalue()

    # -- decoding ----------------------------------------------------------------------

    @staticmethod
    def fingerprint_of(data: bytes) -> bytes:
        """The writer fingerprint in a frame's header; MalformedRecord if there is no header."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MalformedRecord(f"expected bytes, got {type(data).__name__}")
        if len(data) < HEADER_SIZE:
            raise MalformedRecord(f"frame shorter than the {HEADER_SIZE}-byte header")
        if bytes(data[:2]) != MAGIC:
            raise MalformedRecord("bad magic: not Avro single-object encoding")
        return bytes(data[2:HEADER_SIZE])

    def decode(self, data: bytes, reader_name: str | None = None) -> tuple[str, dict]:
        """Decode a frame, resolving the writer schema to the latest local reader.

        ``reader_name`` asserts the expected full name. Returns ``(full_name, record)``;
        timestamps come back as aware UTC datetimes.
        """
        fp = self.fingerprint_of(data)
        writer = self._by_fingerprint.get(fp)
        if writer is None:
            raise UnknownSchema(f"unknown writer fingerprint {fp.hex()}", fingerprint=fp.hex())
        name = reader_name or writer.full_name
        if name != writer.full_name:
            raise MalformedRecord(f"event is {writer.full_name}, expected {name}")
        local = self._local.get(name)
        reader = local[-1] if local else writer
        buffer = io.BytesIO(bytes(data[HEADER_SIZE:]))
        try:
            record = fastavro.schemaless_reader(
                buffer, writer.parsed,
                None if reader.fingerprint == writer.fingerprint else reader.parsed)
        except fastavro.read.SchemaResolutionError:
            raise MalformedRecord(f"{name}: writer v{writer.version} ({writer.fingerprint_hex}) "
                                  f"cannot be read as v{reader.version}") from None
        except Exception as exc:  # garbage bodies raise EOFError, IndexError, ValueError, ...
            raise MalformedRecord(f"{name}: body does not decode ({type(exc).__name__})") from None
        if buffer.tell() != len(data) - HEADER_SIZE:
            raise MalformedRecord(f"{name}: trailing bytes after the body")
        if not isinstance(record, dict):
            raise MalformedRecord(f"{name}: body is not a record")
        return name, record

    # -- personal data -----------------------------------------------------------------

    def _pii_schema(self, full_name: str) -> dict:
        versions = self._local.get(full_name) or self._learned.get(full_name)
        if not versions:
            raise UnknownSchema(f"no schema named {full_name}", full_name=full_name)
        return versions[-1].parsed

    def pii_paths(self, full_name: str) -> list[tuple[str, ...]]:
        """Paths of fields marked ``"pii": true``; arrays, maps and unions are transparent."""
        if full_name not in self._pii:
            parsed = self._pii_schema(full_name)
            out: list[tuple[str, ...]] = []
            _collect_pii(parsed, (), parsed["__named_schemas"], out, set())
            self._pii[full_name] = out
        return list(self._pii[full_name])

    def mask(self, full_name: str, record: dict) -> dict:
        """A copy of ``record`` with every pii value replaced by ``"***"`` (None stays None).

        Values whose shape does not match the schema are masked whole if they could hold pii.
        """
        return self.map_pii(full_name, record, lambda _: MASK)

    def map_pii(self, full_name: str, record: dict, change: Callable[[Any], Any]) -> dict:
        """A copy of ``record`` with ``change`` applied to every non-null pii value
        (``mask`` hides them)."""
        return self.map_pii_paths(full_name, record, lambda _path, value: change(value))

    def map_pii_paths(self, full_name: str, record: dict, change: Callable[[str, Any], Any]) -> dict:
        """Like ``map_pii``, ``change`` also getting each value's path: fields joined by
        ``.``, array items ``[i]``, map values ``[key]`` (``applicant.name``,
        ``materials[0].name``). ``tongban.pii`` seals and opens values bound to their path."""
        if not self.pii_paths_cached(full_name):
            return record  # nothing personal in this type: no walk, no copy (the hot path)
        walker = self._pii_walkers.get(full_name)
        if walker is None:
            parsed = self._pii_schema(full_name)
            walker = self._pii_walkers[full_name] = _compile_pii(parsed, parsed["__named_schemas"], {})
        return cast(dict, walker(record, change, ""))

    def pii_paths_cached(self, full_name: str) -> list[tuple[str, ...]]:
        """`pii_paths` without the defensive copy, for the per-record path."""
        if full_name not in self._pii:
            self.pii_paths(full_name)
        return self._pii[full_name]


# -- schema helpers ---------------------------------------------------------------------


def schema_full_name(schema_json: str) -> str:
    """The full name of a record schema in JSON; CodecError if it is not one."""
    try:
        schema = json.loads(schema_json)
        return _full_name(schema, "")
    except (TypeError, ValueError, KeyError, AttributeError):
        raise CodecError("writer schema is not a named record in JSON") from None


def _full_name(schema: dict, namespace: str) -> str:
    name = schema["name"]
    if "." in name:
        return name
    ns = schema.get("namespace", namespace)
    return f"{ns}.{name}" if ns else name


def _resolve(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _inline(schema: dict, components: Mapping[str, dict]) -> dict:
    """Copy of ``schema`` with references to other files' records replaced by definitions."""
    defined: set[str] = set()

    def walk(node: Any, namespace: str) -> Any:
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return node
            full = _resolve(node, namespace)
            if full in defined:
                return node
            if full not in components:
                raise CodecError(f"unknown type {full}")
            return walk(components[full], namespace)
        if isinstance(node, list):
            return [walk(branch, namespace) for branch in node]
        if not isinstance(node, dict):
            raise CodecError(f"unexpected schema node {type(node).__name__}")
        kind = node.get("type")
        out = dict(node)
        if kind in _NAMED:
            full = _full_name(node, namespace)
            if full in defined:
                raise CodecError(f"type {full} defined twice")
            defined.add(full)
            if kind in ("record", "error"):
                inner = full.rpartition(".")[0]
                out["fields"] = [{**f, "type": walk(f["type"], inner)} for f in node["fields"]]
        elif kind == "array":
            out["items"] = walk(node["items"], namespace)
        elif kind == "map":
            out["values"] = walk(node["values"], namespace)
        elif isinstance(kind, (dict, list)) or (isinstance(kind, str) and kind not in _PRIMITIVES):
            out["type"] = walk(kind, namespace)
        return out

    return walk(schema, "")


def _kind(schema: Any, named: Mapping[str, Any]) -> tuple[Any, str]:
    """Dereference a parsed schema node: returns (node, type name)."""
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return schema, schema
        schema = named[schema]
    if isinstance(schema, list):
        return schema, "union"
    kind = schema["type"]
    if isinstance(kind, (dict, list)) or (isinstance(kind, str) and kind not in _PRIMITIVES
                                          and kind not in _NAMED | {"array", "map"}):
        return _kind(kind, named)
    return schema, kind


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _check(schema: Any, datum: Any, path: str, named: Mapping[str, Any]) -> None:
    """Raise _Mismatch at the first place ``datum`` does not fit ``schema`` (parsed form)."""
    node, kind = _kind(schema, named)
    if kind == "union":
        if datum is None and "null" in node:
            return
        branches = [b for b in node if b != "null"]
        if len(branches) == 1:
            _check(branches[0], datum, path, named)
            return
        for branch in branches:
            try:
                _check(branch, datum, path, named)
                return
            except _Mismatch:
                continue
        raise _Mismatch(path, "a value of one of the union's types")
    if kind in ("record", "error"):
        if not isinstance(datum, Mapping):
            raise _Mismatch(path, f"record {node['name']}")
        fields = {f["name"]: f for f in node["fields"]}
        for key in datum:
            if key not in fields:
                raise _Mismatch(_join(path, str(key)), "no such field in the schema")
        for name, f in fields.items():
            if name not in datum:
                if "default" in f:
                    continue
                raise _Mismatch(_join(path, name), "a value; the field is required")
            _check(f["type"], datum[name], _join(path, name), named)
        return
    if kind == "array":
        if not isinstance(datum, (list, tuple)):
            raise _Mismatch(path, "array")
        for i, item in enumerate(datum):
            _check(node["items"], item, f"{path}[{i}]", named)
        return
    if kind == "map":
        if not isinstance(datum, Mapping) or not all(isinstance(k, str) for k in datum):
            raise _Mismatch(path, "map with string keys")
        for key, value in datum.items():
            _check(node["values"], value, f"{path}[{key!r}]", named)
        return
    logical = node.get("logicalType") if isinstance(node, dict) else None
    if logical in _TIMESTAMPS and isinstance(datum, dt.datetime) and datum.tzinfo is None \
            and not logical.startswith("local-"):
        raise _Mismatch(path, f"{logical} as an aware (UTC) datetime or epoch number")
    if not fastavro.validation.validate(datum, node, raise_errors=False):
        raise _Mismatch(path, logical or kind)


Validator = Callable[[Any], bool]
_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


def _compile(schema: Any, named: Mapping[str, Any], compiled: dict[str, Validator]) -> Validator:
    """A function that says whether a datum fits ``schema``: the same rules as ``_check``
    (no unknown fields, aware timestamps, fastavro's ranges), decided once per schema instead
    of per datum, so encoding a valid record costs little more than writing it."""
    if isinstance(schema, str) and schema not in _PRIMITIVES:
        if schema not in compiled:  # a named type, maybe recursive: bind lazily
            compiled[schema] = lambda datum: compiled[schema + "#"](datum)
            compiled[schema + "#"] = _compile(named[schema], named, compiled)
        return compiled[schema]
    node, kind = _kind(schema, named)
    if kind == "union":
        branches = [_compile(b, named, compiled) for b in node]
        if len(branches) == 2:  # the common ["null", T]: no generator per datum
            first, second = branches
            return lambda datum: first(datum) or second(datum)
        return lambda datum: any(fits(datum) for fits in branches)
    if kind in ("record", "error"):
        # Per field: the Python type a plain string or boolean must have (checked inline),
        # or the compiled check. Calls cost as much as the checks themselves here.
        fields = [(f["name"], _PLAIN_TYPES.get(_plain_kind(f["type"]) or ""),
                   _compile(f["type"], named, compiled), "default" in f) for f in node["fields"]]
        names = frozenset(name for name, _, _, _ in fields)

        def record(datum: Any) -> bool:
            # `type(...) is dict` first: an ABC isinstance check costs more than the record.
            if (type(datum) is not dict and not isinstance(datum, Mapping)) or not names.issuperset(datum):
                return False
            for name, plain, fits, has_default in fields:
                if name in datum:
                    value = datum[name]
                    if plain is not None:
                        if type(value) is not plain and not isinstance(value, plain):
                            return False
                    elif not fits(value):
                        return False
                elif not has_default:
                    return False
            return True

        return record
    if kind == "array":
        items = _compile(node["items"], named, compiled)

        # all(map(...)): no generator frame per item
        return lambda datum: isinstance(datum, (list, tuple)) and all(map(items, datum))
    if kind == "map":
        values = _compile(node["values"], named, compiled)
        return lambda datum: isinstance(datum, Mapping) and all(
            isinstance(k, str) and values(v) for k, v in datum.items())
    logical = node.get("logicalType") if isinstance(node, dict) else None
    if logical in ("timestamp-millis", "timestamp-micros"):
        low, high = _INT_RANGE["long"]
        return lambda datum: (isinstance(datum, dt.datetime) and datum.tzinfo is not None) or (
            type(datum) is int and low <= datum <= high)
    if logical is None and kind in _INT_RANGE:
        low, high = _INT_RANGE[kind]
        return lambda datum: isinstance(datum, int) and not isinstance(datum, bool) and low <= datum <= high
    simple: dict[str, Validator] = {
        "null": lambda datum: datum is None,
        "boolean": lambda datum: isinstance(datum, bool),
        "string": lambda datum: isinstance(datum, str),
        "bytes": lambda datum: isinstance(datum, (bytes, bytearray)),
        "float": lambda datum: isinstance(datum, (int, float)) and not isinstance(datum, bool),
        "double": lambda datum: isinstance(datum, (int, float)) and not isinstance(datum, bool),
    }
    if logical is None and kind in simple:
        return simple[kind]
    # enums, fixed and other logical types: fastavro's own check, and _check's timestamp rule
    return lambda datum: _fits_slowly(node, datum, named)


_PLAIN_TYPES: dict[str, type] = {"string": str, "boolean": bool}


def _plain_kind(schema: Any) -> str | None:
    """``string`` or ``boolean`` when ``schema`` is just that type, else None."""
    if isinstance(schema, dict):
        if schema.get("logicalType") is not None:
            return None
        schema = schema.get("type")
    return schema if isinstance(schema, str) and schema in _PLAIN_TYPES else None


def _fits_slowly(node: Any, datum: Any, named: Mapping[str, Any]) -> bool:
    try:
        _check(node, datum, "", named)
    except _Mismatch:
        return False
    return True


def _collect_pii(schema: Any, path: tuple[str, ...], named: Mapping[str, Any],
                 out: list[tuple[str, ...]], active: set[str]) -> None:
    node, kind = _kind(schema, named)
    if kind == "union":
        for branch in node:
            _collect_pii(branch, path, named, out, active)
    elif kind == "array":
        _collect_pii(node["items"], path, named, out, active)
    elif kind == "map":
        _collect_pii(node["values"], path, named, out, active)
    elif kind in ("record", "error") and node["name"] not in active:
        active = active | {node["name"]}
        for f in node["fields"]:
            child = (*path, f["name"])
            if f.get("pii") is True:
                if child not in out:
                    out.append(child)
            else:
                _collect_pii(f["type"], child, named, out, active)


def _has_pii(schema: Any, named: Mapping[str, Any]) -> bool:
    found: list[tuple[str, ...]] = []
    _collect_pii(schema, (), named, found, set())
    return bool(found)


_PiiWalker = Callable[[Any, Callable[[str, Any], Any], str], Any]


def _copy_plain(datum: Any) -> Any:
    """A copy of decoded Avro data: containers rebuilt, everything else immutable and shared."""
    if isinstance(datum, dict):
        return {key: _copy_plain(value) for key, value in datum.items()}
    if isinstance(datum, list):
        return [_copy_plain(item) for item in datum]
    return datum


def _compile_pii(schema: Any, named: Mapping[str, Any], compiled: dict[str, _PiiWalker]) -> _PiiWalker:
    """A function giving a copy of a datum of `schema` with ``change(path, value)`` applied to
    every non-null pii value. It walks only the parts that can hold pii and copies the rest
    whole: once per type, not per record, the schema is read. Values whose shape does not
    match the schema are masked whole if they could hold pii."""
    node, kind = _kind(schema, named)
    if not _has_pii(node, named):
        return lambda datum, _change, _path: _copy_plain(datum)
    name = node.get("name") if isinstance(node, dict) else None
    if name is not None and name in compiled:
        return compiled[name]
    if kind == "union":
        branches = [b for b in node if b != "null"]
        if len(branches) == 1:
            return _compile_pii(branches[0], named, compiled)
        return lambda datum, _change, _path: None if datum is None else MASK
    if kind in ("record", "error"):
        fields: dict[str, _PiiWalker | None] = {}  # None: the field itself is personal

        def record(datum: Any, change: Callable[[str, Any], Any], path: str) -> Any:
            if datum is None:
                return None
            if not isinstance(datum, Mapping):
                return MASK
            out = {}
            for key, value in datum.items():
                if key not in fields:
                    out[key] = copy.deepcopy(value)  # not in the schema: nothing to walk
                elif value is None:
                    out[key] = None
                else:
                    walker = fields[key]
                    child = f"{path}.{key}" if path else key
                    out[key] = change(child, value) if walker is None else walker(value, change, child)
            return out

        compiled[node["name"]] = record  # before the fields: a record may contain itself
        for f in node["fields"]:
            fields[f["name"]] = None if f.get("pii") is True else _compile_pii(f["type"], named, compiled)
        return record
    if kind == "array":
        items = _compile_pii(node["items"], named, compiled)

        def array(datum: Any, change: Callable[[str, Any], Any], path: str) -> Any:
            if datum is None:
                return None
            if not isinstance(datum, (list, tuple)):
                return MASK
            return [items(item, change, f"{path}[{i}]") for i, item in enumerate(datum)]
        return array
    values = _compile_pii(node["values"], named, compiled)  # a map: the last kind that can hold pii

    def mapping(datum: Any, change: Callable[[str, Any], Any], path: str) -> Any:
        if datum is None:
            return None
        if not isinstance(datum, Mapping):
            return MASK
        return {key: values(value, change, f"{path}[{key}]") for key, value in datum.items()}
    return mapping
