"""FULL_TRANSITIVE schema compatibility and the released-schema lock.

Compatibility uses the ``avro`` package's ReaderWriterCompatibilityChecker. That checker
ignores logical types (``long`` vs ``timestamp-millis`` vs ``timestamp-micros`` all pass),
so ``check_pair`` adds a check that a field keeps its logical type.

``schemas/released.lock`` lists every released file as ``<file> <fingerprint hex>
<sha256 hex>``. The fingerprint covers the self-contained schema (components inlined);
the sha256 covers the file's bytes, because docs and ``pii`` marks are not part of the
fingerprint and must not change silently either.

    python -m tongban.schema_compat [--schemas DIR]        # exit 1 on incompatibilities
    python -m tongban.schema_compat --update-lock          # append new files to the lock
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import avro.errors
import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from tongban.codec import DEFAULT_DIRECTORY, CodecError, SchemaRegistry

__all__ = [
    "check_directory",
    "check_full_transitive",
    "check_pair",
    "lock_entries",
    "lock_problems",
    "main",
    "read_lock",
    "update_lock",
]

LOCK_NAME = "released.lock"


def _parse(schema_json: str, role: str) -> avro.schema.Schema:
    try:
        return avro.schema.parse(schema_json)
    except (avro.errors.AvroException, ValueError) as exc:
        raise ValueError(f"{role} schema does not parse: {exc}") from None


def _leaves(schema: avro.schema.Schema, path: tuple[str, ...],
            out: dict[tuple[tuple[str, ...], str], object], active: frozenset[str]) -> None:
    """Map (field path, underlying type) -> logicalType for every leaf; unions transparent."""
    kind = schema.type
    if kind == "union":
        for branch in schema.schemas:  # type: ignore[attr-defined]
            _leaves(branch, path, out, active)
    elif kind in ("record", "error"):
        name = schema.fullname  # type: ignore[attr-defined]
        if name in active:
            return
        for f in schema.fields:  # type: ignore[attr-defined]
            _leaves(f.type, (*path, f.name), out, active | {name})
    elif kind == "array":
        _leaves(schema.items, (*path, "[]"), out, active)  # type: ignore[attr-defined]
    elif kind == "map":
        _leaves(schema.values, (*path, "{}"), out, active)  # type: ignore[attr-defined]
    else:
        out[(path, kind)] = schema.get_prop("logicalType")


def check_pair(reader_json: str, writer_json: str) -> list[str]:
    """Problems when a reader with ``reader_json`` reads data written with ``writer_json``."""
    try:
        reader = _parse(reader_json, "reader")
        writer = _parse(writer_json, "writer")
    except ValueError as exc:
        return [str(exc)]
    problems = []
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    if result.compatibility is not SchemaCompatibilityType.compatible:
        kinds = ", ".join(sorted({i.value for i in result.incompatibilities}))
        locations = sorted(result.locations - {"/"}) or ["/"]  # "/" is avro's merge seed
        problems.append(f"{kinds} at {', '.join(locations)}: "
                        f"{'; '.join(sorted(result.messages))}")
    reader_leaves: dict = {}
    writer_leaves: dict = {}
    _leaves(reader, (), reader_leaves, frozenset())
    _leaves(writer, (), writer_leaves, frozenset())
    for key in sorted(reader_leaves.keys() & writer_leaves.keys()):
        if reader_leaves[key] != writer_leaves[key]:
            problems.append(f"logical type of {'.'.join(key[0]) or '/'} differs: reader "
                            f"{reader_leaves[key] or 'none'}, writer {writer_leaves[key] or 'none'}")
    return problems


def check_full_transitive(versions_json: Sequence[str]) -> list[str]:
    """Every pair of versions (given oldest first) read both ways; problems name vN/vM."""
    problems: list[str] = []
    for i, older in enumerate(versions_json):
        for j in range(i + 1, len(versions_json)):
            newer = versions_json[j]
            for reader, writer, label in ((newer, older, f"v{j + 1} reading v{i + 1}"),
                                          (older, newer, f"v{i + 1} reading v{j + 1}")):
                problems.extend(f"{label}: {p}" for p in check_pair(reader, writer))
    return problems


def check_directory(directory: Path | None = None) -> list[str]:
    """FULL_TRANSITIVE problems of every schema family in ``directory`` (default schemas/)."""
    registry = SchemaRegistry.load(directory)
    families: dict[str, list[str]] = {}
    for sv in registry.all_versions():
        families.setdefault(sv.full_name, []).append(sv.schema_json)
    return [f"{name} {problem}" for name, versions in sorted(families.items())
            for problem in check_full_transitive(versions)]


# -- released.lock ----------------------------------------------------------------------


def _directory(directory: Path | None) -> Path:
    return Path(directory) if directory is not None else DEFAULT_DIRECTORY


def lock_entries(directory: Path | None = None) -> dict[str, tuple[str, str]]:
    """Current ``file -> (fingerprint hex, sha256 hex)`` of every schema file."""
    directory = _directory(directory)
    registry = SchemaRegistry.load(directory)
    entries = {}
    for sv in registry.all_versions():
        file = f"{sv.full_name}.v{sv.version}.avsc"
        sha = hashlib.sha256((directory / file).read_bytes()).hexdigest()
        entries[file] = (sv.fingerprint.hex(), sha)
    return entries


def read_lock(path: Path) -> dict[str, tuple[str, str]]:
    """Parse a lock file; blank lines and ``#`` comments are ignored."""
    entries: dict[str, tuple[str, str]] = {}
    if not path.exists():
        return entries
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f"{path.name}:{number}: expected '<file> <fingerprint> <sha256>'")
        entries[parts[0]] = (parts[1], parts[2])
    return entries


def lock_problems(directory: Path | None = None) -> list[str]:
    """Released files that changed or disappeared, and files missing from the lock."""
    directory = _directory(directory)
    locked = read_lock(directory / LOCK_NAME)
    current = lock_entries(directory)
    problems = []
    for file, (fingerprint, sha) in sorted(locked.items()):
        if file not in current:
            problems.append(f"{file}: released file is missing")
        elif current[file][0] != fingerprint:
            problems.append(f"{file}: fingerprint changed from {fingerprint} to {current[file][0]}"
                            " (released versions are immutable; add a new version)")
        elif current[file][1] != sha:
            problems.append(f"{file}: file content changed (docs or pii marks?); "
                            "released versions are immutable")
    for file in sorted(current.keys() - locked.keys()):
        problems.append(f"{file}: not in {LOCK_NAME}; run python -m tongban.schema_compat "
                        "--update-lock when releasing it")
    return problems


def update_lock(directory: Path | None = None) -> list[str]:
    """Append files not yet in the lock; refuses (ValueError) if a locked file changed."""
    directory = _directory(directory)
    path = directory / LOCK_NAME
    locked = read_lock(path)
    current = lock_entries(directory)
    changed = [f for f in locked if f not in current or current[f] != locked[f]]
    if changed:
        raise ValueError(f"released files changed or missing: {', '.join(sorted(changed))}")
    added = sorted(current.keys() - locked.keys())
    if added:
        text = path.read_text(encoding="utf-8") if path.exists() else (
            "# Released schema files: <file> <CRC-64-AVRO fingerprint hex> <sha256 of the file>.\n"
            "# Append-only; written by python -m tongban.schema_compat --update-lock.\n")
        if text and not text.endswith("\n"):
            text += "\n"
        text += "".join(f"{f} {current[f][0]} {current[f][1]}\n" for f in added)
        path.write_text(text, encoding="utf-8")
    return added


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tongban.schema_compat",
                                     description="Check FULL_TRANSITIVE compatibility of schemas/.")
    parser.add_argument("--schemas", type=Path, default=None, help="schema directory")
    parser.add_argument("--update-lock", action="store_true",
                        help=f"append new schema files to {LOCK_NAME}")
    args = parser.parse_args(argv)
    try:
        problems = check_directory(args.schemas)
    except CodecError as exc:
        print(f"cannot load schemas: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} compatibility problem(s)", file=sys.stderr)
        return 1
    if args.update_lock:
        try:
            added = update_lock(args.schemas)
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        for file in added:
            print(f"locked {file}")
    print("schemas compatible (FULL_TRANSITIVE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
