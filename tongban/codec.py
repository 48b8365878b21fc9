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
from typing import Any, NamedTuple, NoReturn, cast

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


# True: fits; False: does not fit the schema; None: fits it, but the envelope is wrong.
Validator = Callable[[Any], bool | None]


class _Writer(NamedTuple):
    version: SchemaVersion
    fits: Validator
    header: bytes  # MAGIC and the fingerprint


class _Reader(NamedTuple):
    full_name: str
    writer_schema: dict[str, Any]
    reader_schema: dict[str, Any] | None  # None when it is the writer's
    writer: SchemaVersion
    reader: SchemaVersion  # the newest local version of the name, else the writer


def _is_event(parsed: dict[str, Any]) -> bool:
    return bool(parsed["fields"]) and parsed["fields"][0]["name"] == "envelope"


def _refuse(full_name: str, sv: SchemaVersion, record: Any, error: Exception | None, *,
            envelope: bool = False) -> NoReturn:
    """Raise MalformedRecord for a record that ``fits`` refused (``envelope``: only for its
    envelope) or the writer refused (``error``). The slow walk names the first offending
    field; it runs first even when ``fits`` blamed the envelope, because ``fits`` leaves
    strings and missing or unknown fields to the writer, which has not run then."""
    parsed = sv.parsed
    try:
        _check(parsed, record, "", parsed["__named_schemas"])
    except _Mismatch as exc:
        where = f"field '{exc.path}'" if exc.path else "record"
        raise MalformedRecord(f"{full_name}: {where} does not match the schema "
                              f"(expected {exc.expected})") from None
    if error is not None:
        raise MalformedRecord(f"{full_name}: record does not encode ({type(error).__name__})") from None
    if envelope:
        if record["envelope"]["event_type"] != full_name:
            raise MalformedRecord(f"{full_name}: field 'envelope.event_type' must be {full_name}")
        raise MalformedRecord(f"{full_name}: field 'envelope.schema_version' must be {sv.version}")
    raise MalformedRecord(f"{full_name}: record does not match the schema")


class SchemaRegistry:
    """Released schema versions from ``schemas/`` plus writer schemas learned at runtime."""

    def __init__(self) -> None:
        self._local: dict[str, list[SchemaVersion]] = {}
        self._learned: dict[str, list[SchemaVersion]] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        self._pii: dict[str, list[tuple[str, ...]]] = {}
        self._pii_walkers: dict[str, _PiiWalker] = {}  # compiled per type, for its newest schema
        # Per-call lookups done once: by full name (latest) or (full name, version).
        self._writers: dict[str | tuple[str, int], _Writer] = {}
        self._readers: dict[bytes, _Reader] = {}  # by frame header (magic and fingerprint)

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
        self._writers.clear()  # a new version can change the latest writer and any reader
        self._readers.clear()
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
        writer = self._writers.get(full_name if version is None else (full_name, version))
        if writer is None:
            writer = self._writer(full_name, version)
        sv, fits, header = writer
        fit = fits(record)
        if not fit:
            _refuse(full_name, sv, record, None, envelope=fit is None)
        buffer = io.BytesIO()
        buffer.write(header)
        try:
            # The writer refuses unknown and missing fields (fits leaves them to it); no
            # tuple may pick a union branch by name, which _check would refuse.
            fastavro.schemaless_writer(buffer, sv.parsed, record, strict_allow_default=True,
                                       disable_tuple_notation=True)
        except Exception as exc:
            _refuse(full_name, sv, record, exc)
        return buffer.getvalue()

    def _writer(self, full_name: str, version: int | None) -> _Writer:
        sv = self.latest(full_name) if version is None else self._local_version(full_name, version)
        parsed = sv.parsed
        fits = _compile(parsed, parsed["__named_schemas"], sv if _is_event(parsed) else None)
        writer = _Writer(sv, fits, MAGIC + sv.fingerprint)
        self._writers[full_name if version is None else (full_name, version)] = writer
        return writer

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
        # The common case in one lookup, by the whole header; anything else (not bytes, no
        # magic, too short, unknown fingerprint) goes through fingerprint_of, which says why.
        known = self._readers.get(data[:HEADER_SIZE]) if type(data) is bytes else None
        if known is None:
            known = self._reader(self.fingerprint_of(data))
        name, writer_schema, reader_schema, writer, reader = known
        if reader_name and reader_name != name:
            raise MalformedRecord(f"event is {name}, expected {reader_name}")
        buffer = io.BytesIO(data)
        buffer.seek(HEADER_SIZE)
        try:
            record = fastavro.schemaless_reader(buffer, writer_schema, reader_schema)
        except fastavro.read.SchemaResolutionError:
            raise MalformedRecord(f"{name}: writer v{writer.version} ({writer.fingerprint_hex}) "
                                  f"cannot be read as v{reader.version}") from None
        except Exception as exc:  # garbage bodies raise EOFError, IndexError, ValueError, ...
            raise MalformedRecord(f"{name}: body does not decode ({type(exc).__name__})") from None
        if buffer.tell() != len(data):
            raise MalformedRecord(f"{name}: trailing bytes after the body")
        if not isinstance(record, dict):
            raise MalformedRecord(f"{name}: body is not a record")
        return name, record

    def _reader(self, fp: bytes) -> _Reader:
        header = MAGIC + fp
        known = self._readers.get(header)
        if known is not None:
            return known
        writer = self._by_fingerprint.get(fp)
        if writer is None:
            raise UnknownSchema(f"unknown writer fingerprint {fp.hex()}", fingerprint=fp.hex())
        local = self._local.get(writer.full_name)
        reader = local[-1] if local else writer
        known = self._readers[header] = _Reader(
            writer.full_name, writer.parsed,
            None if reader.fingerprint == writer.fingerprint else reader.parsed, writer, reader)
        return known

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


_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
# Blocks nested in one generated function; deeper values get a function of their own
# (CPython refuses more than 20 nested loops and try blocks).
_MAX_DEPTH = 12


def _compile(schema: Any, named: Mapping[str, Any], event: SchemaVersion | None = None) -> Validator:
    """A function that says whether a datum fits ``schema`` in all that fastavro's writer,
    with the options encode gives it, would accept silently: booleans, numbers and their
    ranges, aware timestamps, the kind of records, arrays and maps. The writer refuses the
    rest itself: a non-str for a string (also in ``["null", "string"]``), unknown and
    missing fields, non-str map keys. The two together refuse what ``_check`` refuses.
    For an ``event`` (its schema version) the envelope must name that type and version, or
    the function returns None (when all else fits).

    Generated as Python source once per schema version, nested records, arrays, maps and
    ``["null", T]`` unions inlined: one call per record, not one per nested value."""
    return _ValidatorSource(named).build(schema, event)


class _ValidatorSource:
    """The source of a ``_compile`` validator: functions ``fN(d)`` returning a bool."""

    def __init__(self, named: Mapping[str, Any]) -> None:
        self.named = named
        self.namespace: dict[str, Any] = {"Mapping": Mapping, "datetime": dt.datetime}
        self.functions: list[list[str]] = []
        self.recursive: dict[str, str] = {}  # record name -> the function checking it
        self.variables = 0

    def build(self, schema: Any, event: SchemaVersion | None) -> Validator:
        envelope = [] if event is None else [
            "v0 = d['envelope']",
            f"if v0['event_type'] != {event.full_name!r} or v0['schema_version'] != {event.version!r}:",
            "    return None"]
        entry = self.function(schema, set(), envelope)
        exec("\n".join(line for function in self.functions for line in function), self.namespace)
        return cast(Validator, self.namespace[entry])

    def function(self, schema: Any, active: set[str], after: list[str] | None = None) -> str:
        """Define ``fN(d)`` checking ``schema``, then the lines ``after`` (the entry point's
        envelope test, so only other functions may check a record that contains itself)."""
        name = f"f{len(self.functions)}"
        lines = [f"def {name}(d):"]
        self.functions.append(lines)  # reserved first: the body may define more functions
        if after is None and isinstance(schema, dict) and schema.get("type") in ("record", "error"):
            self.recursive.setdefault(schema["name"], name)
        body = [*self.checks(schema, "d", active, 1), *(after or [])]
        # A missing required field raises KeyError: refused, as the writer would.
        lines += ["    try:", *_indent(body, 2), "    except KeyError:", "        return False",
                  "    return True"] if body else ["    return True"]
        return name

    def variable(self) -> str:
        self.variables += 1
        return f"v{self.variables}"

    def call(self, function: str, var: str) -> list[str]:
        return [f"if not {function}({var}):", "    return False"]

    def checks(self, schema: Any, var: str, active: set[str], depth: int) -> list[str]:
        """Lines that ``return False`` when the local ``var`` does not fit ``schema``; none
        when the writer refuses every misfit itself. ``depth``: blocks around them."""
        node, kind = _kind(schema, self.named)
        if kind in ("record", "error", "array", "map", "union") and depth >= _MAX_DEPTH:
            return self.call(self.function(node, set()), var)
        if kind in ("record", "error"):
            return self.record(node, var, active, depth)
        if kind in ("array", "map"):
            return self.container(node, kind, var, active, depth)
        if kind == "union":
            branches = [b for b in node if b != "null"]
            if len(branches) != 1:
                return self.slowly(node, var)
            inner = self.checks(branches[0], var, active, depth + 1)
            if "null" not in node or not inner:
                return inner
            return [f"if {var} is not None:", *_indent(inner)]
        logical = node.get("logicalType") if isinstance(node, dict) else None
        if logical in ("timestamp-millis", "timestamp-micros"):
            low, high = _INT_RANGE["long"]
            test = (f"not ((type({var}) is int and {low} <= {var} <= {high}) or "
                    f"(isinstance({var}, datetime) and {var}.tzinfo is not None))")
        elif logical is not None:
            return self.slowly(node, var)
        elif kind in _INT_RANGE:
            low, high = _INT_RANGE[kind]
            test = (f"(type({var}) is not int and (type({var}) is bool or not isinstance({var}, int))) "
                    f"or not {low} <= {var} <= {high}")
        elif kind == "string":
            return []  # the writer raises TypeError for anything but a str
        elif kind == "null":
            test = f"{var} is not None"  # the writer writes nothing, whatever the datum
        elif kind == "boolean":
            test = f"type({var}) is not bool"
        elif kind == "bytes":
            test = f"not isinstance({var}, (bytes, bytearray))"
        elif kind in ("float", "double"):
            test = f"type({var}) is not float and (type({var}) is bool or not isinstance({var}, (int, float)))"
        else:
            return self.slowly(node, var)  # enums and fixed: _check's rules, rare in events
        return [f"if {test}:", "    return False"]

    def record(self, node: dict[str, Any], var: str, active: set[str], depth: int) -> list[str]:
        name = node["name"]
        if name in active:  # it contains itself: call the function that checks it
            if name not in self.recursive:
                self.function(node, set())
            return self.call(self.recursive[name], var)
        active = active | {name}
        lines = [f"if type({var}) is not dict and not isinstance({var}, Mapping):", "    return False"]
        for f in node["fields"]:
            value = self.variable()
            key = repr(f["name"])
            if "default" not in f:
                inner = self.checks(f["type"], value, active, depth)
                if inner:
                    lines += [f"{value} = {var}[{key}]", *inner]
            else:
                inner = self.checks(f["type"], value, active, depth + 1)
                if inner:
                    lines += [f"if {key} in {var}:", f"    {value} = {var}[{key}]", *_indent(inner)]
        return lines

    def container(self, node: dict[str, Any], kind: str, var: str, active: set[str],
                  depth: int) -> list[str]:
        if kind == "array":
            lines = [f"if type({var}) is not list and not isinstance({var}, (list, tuple)):",
                     "    return False"]
            element, items = node["items"], var
        else:
            lines = [f"if type({var}) is not dict and not isinstance({var}, Mapping):", "    return False"]
            element, items = node["values"], f"{var}.values()"
        item = self.variable()
        inner = self.checks(element, item, active, depth + 1)
        return [*lines, f"for {item} in {items}:", *_indent(inner)] if inner else lines

    def slowly(self, node: Any, var: str) -> list[str]:
        named = self.named
        constant = f"c{len(self.namespace)}"
        self.namespace[constant] = lambda datum: _fits_slowly(node, datum, named)
        return self.call(constant, var)


def _indent(lines: list[str], levels: int = 1) -> list[str]:
    return ["    " * levels + line for line in lines]


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
