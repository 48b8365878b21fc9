"""Declared Kafka topics: plan and apply `infra/topics.toml`.

    python -m tongban.ops.topics plan  [--namespace PREFIX] [--bootstrap HOST:PORT]
    python -m tongban.ops.topics apply [--namespace PREFIX] [--bootstrap HOST:PORT]
    python -m tongban.ops.topics list  [--namespace PREFIX]

`apply` creates missing topics with their declared partitions, replication factor and
configs. Existing topics are never deleted, shrunk or altered: differences in partition
count or config are reported (by `plan` and by `apply`) for an operator to decide on.

The namespace (``--namespace`` or ``TONGBAN_NAMESPACE``) is prefixed to every topic name,
so one broker can hold several isolated runs (tests use ``t<random>-``).

Importable API (used by the test suite)::

    specs = load_declared("t1a2b-")                    # -> list[TopicSpec]
    created = await apply("127.0.0.1:19092", "t1a2b-")  # -> names created now
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tongban.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FILE = ROOT / "infra" / "topics.toml"

TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class TopicSpec:
    """One declared topic, with the namespace already applied to ``name``."""

    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)
    writer: str = ""
    key: str = ""
    declared_name: str = ""  # the name without namespace
    readers: tuple[str, ...] = ()  # who may consume it (input of the ACLs, tongban.ops.acls)


@dataclass(frozen=True)
class TopicDiff:
    """What `plan` found for one declared topic."""

    spec: TopicSpec
    action: str  # "create", "ok" or "differs"
    differences: tuple[str, ...] = ()


# --------------------------------------------------------------------------- declaration


def _str_config(raw: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (raw or {}).items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        out[str(k)] = str(v)
    return out


def _spec(entry: Mapping[str, Any], defaults: Mapping[str, Any], namespace: str, subst: Mapping[str, str]) -> TopicSpec:
    def fill(text: str) -> str:
        for k, v in subst.items():
            text = text.replace("{" + k + "}", v)
        return text

    name = fill(str(entry["name"]))
    if "{" in name:
        raise ValueError(f"unexpanded placeholder in topic name {name!r}")
    config = _str_config(defaults.get("config"))
    config.update(_str_config(entry.get("config")))
    return TopicSpec(
        name=namespace + name,
        partitions=int(entry.get("partitions", defaults.get("partitions", 3))),
        replication_factor=int(entry.get("replication_factor", defaults.get("replication_factor", 1))),
        config=config,
        writer=fill(str(entry.get("writer", ""))),
        key=str(entry.get("key", "")),
        declared_name=name,
        readers=tuple(fill(str(r)) for r in entry.get("readers", ())),
    )


def load_document(path: str | Path | None = None) -> dict[str, Any]:
    """The declaration file as parsed TOML (partners, feeds, groups, quotas, templates)."""
    with open(path or DEFAULT_FILE, "rb") as fh:
        return tomllib.load(fh)


def load_declared(namespace: str | None = None, path: str | Path | None = None) -> list[TopicSpec]:
    """Read the declared topics, expanding partner and group templates.

    ``namespace`` defaults to ``TONGBAN_NAMESPACE`` (empty when unset)."""
    if namespace is None:
        namespace = os.environ.get("TONGBAN_NAMESPACE", "")
    doc = load_document(path)
    defaults = doc.get("defaults", {})
    partners = list(doc.get("partners", {}))
    groups = list(doc.get("groups", {}))

    specs: list[TopicSpec] = []
    for entry in doc.get("topic", []):
        specs.append(_spec(entry, defaults, namespace, {}))
    for entry in doc.get("partner_stream", []):
        ids = entry.get("partners", "*")
        ids = partners if ids == "*" else list(ids)
        ids = [pid for pid in ids if pid not in entry.get("exclude", ())]
        unknown = set(ids) - set(partners)
        if unknown:
            raise ValueError(f"{entry['name']}: partners {sorted(unknown)} are not in [partners]")
        for pid in ids:
            specs.append(_spec(entry, defaults, namespace, {"partner": pid}))
    for entry in doc.get("group_stream", []):
        for group in groups:
            specs.append(_spec(entry, defaults, namespace, {"group": group}))

    seen: set[str] = set()
    for s in specs:
        if s.name in seen:
            raise ValueError(f"topic {s.name} is declared twice")
        seen.add(s.name)
        if s.partitions < 1 or s.replication_factor < 1:
            raise ValueError(f"topic {s.name}: partitions and replication_factor must be >= 1")
    return specs


# --------------------------------------------------------------------------- connection


def kafka_client_settings(bootstrap: str | None = None) -> dict[str, Any]:
    """aiokafka client keyword arguments from the TONGBAN_KAFKA_* environment (see
    tongban.config): an operator tool runs as the broker's `admin` unless told otherwise."""
    options = load_settings("ops", local_defaults=True).kafka_client_options()
    return {**options, "bootstrap_servers": bootstrap or options["bootstrap_servers"]}


def _admin(bootstrap: str | None):
    from aiokafka.admin import AIOKafkaAdminClient

    return AIOKafkaAdminClient(
        client_id="tongban-ops-topics", request_timeout_ms=30000, **kafka_client_settings(bootstrap)
    )


# --------------------------------------------------------------------------- plan / apply


async def _describe(admin, names: list[str]) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    """Partition counts and configs of those of ``names`` that exist."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    existing = set(await admin.list_topics())
    present = [n for n in names if n in existing]
    partitions: dict[str, int] = {}
    configs: dict[str, dict[str, str]] = {}
    if not present:
        return partitions, configs
    for t in await admin.describe_topics(present):
        if t["error_code"] == 0:
            partitions[t["topic"]] = len(t["partitions"])
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in present])
    for resp in responses:
        for res in resp.to_object()["resources"]:
            if res["error_code"] == 0:
                configs[res["resource_name"]] = {e["config_names"]: e["config_value"] for e in res["config_entries"]}
    return partitions, configs


def _compare(
    specs: Iterable[TopicSpec], partitions: dict[str, int], configs: dict[str, dict[str, str]]
) -> list[TopicDiff]:
    out: list[TopicDiff] = []
    for s in specs:
        if s.name not in partitions:
            out.append(TopicDiff(s, "create"))
            continue
        diffs: list[str] = []
        if partitions[s.name] != s.partitions:
            diffs.append(f"partitions: declared {s.partitions}, actual {partitions[s.name]}")
        actual = configs.get(s.name, {})
        for k, v in sorted(s.config.items()):
            if actual.get(k) != v:
                diffs.append(f"{k}: declared {v}, actual {actual.get(k)}")
        out.append(TopicDiff(s, "differs" if diffs else "ok", tuple(diffs)))
    return out


async def plan(
    bootstrap: str | None = None, namespace: str | None = None, path: str | Path | None = None
) -> list[TopicDiff]:
    """Compare the declaration with the cluster; changes nothing."""
    specs = load_declared(namespace, path)
    admin = _admin(bootstrap)
    await admin.start()
    try:
        partitions, configs = await _describe(admin, [s.name for s in specs])
    finally:
        await admin.close()
    return _compare(specs, partitions, configs)


async def _wait_for_leaders(admin, names: list[str], within: float) -> None:
    deadline = time.monotonic() + within
    pending = list(names)
    while pending:
        described = await admin.describe_topics(pending)
        ready = {
            t["topic"]
            for t in described
            if t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
        }
        pending = [n for n in pending if n not in ready]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics without leaders after {within}s: {pending}")
        await asyncio.sleep(0.2)


async def apply(
    bootstrap: str | None = None,
    namespace: str | None = None,
    path: str | Path | None = None,
    *,
    report=None,
) -> list[str]:
    """Create the declared topics that are missing; return the names created now.

    Never deletes or alters existing topics; ``report`` (a callable taking one line) is
    told about differences of existing topics. Safe to run concurrently: a topic created
    by someone else in the meantime counts as existing. Returns after every declared
    topic has a leader for each partition."""
    from aiokafka.admin import NewTopic

    specs = load_declared(namespace, path)
    admin = _admin(bootstrap)
    await admin.start()
    created: list[str] = []
    try:
        partitions, configs = await _describe(admin, [s.name for s in specs])
        diffs = _compare(specs, partitions, configs)
        missing = [d.spec for d in diffs if d.action == "create"]
        for d in diffs:
            if d.action == "differs" and report is not None:
                report(f"differs {d.spec.name}: " + "; ".join(d.differences))
        if missing:
            resp = await admin.create_topics(
                [NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.config)) for s in missing],
                timeout_ms=30000,
            )
            errors = []
            for err in resp.to_object()["topic_errors"]:
                if err["error_code"] == 0:
                    created.append(err["topic"])
                elif err["error_code"] != TOPIC_ALREADY_EXISTS:
                    errors.append(f"{err['topic']}: error {err['error_code']} {err['error_message']}")
            if errors:
                raise RuntimeError("could not create topics: " + "; ".join(errors))
        await _wait_for_leaders(admin, [s.name for s in specs], within=30)
    finally:
        await admin.close()
    created.sort(key=[s.name for s in specs].index)
    return created


# --------------------------------------------------------------------------- CLI


def _describe_spec(s: TopicSpec) -> str:
    cfg = " ".join(f"{k}={v}" for k, v in sorted(s.config.items()))
    return f"partitions={s.partitions} rf={s.replication_factor} {cfg} key={s.key} writer={s.writer}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tongban.ops.topics", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["plan", "apply", "list"])
    parser.add_argument("--namespace", default=None, help="prefix for every topic name (default: $TONGBAN_NAMESPACE)")
    parser.add_argument("--bootstrap", default=None, help="default: $TONGBAN_KAFKA_BOOTSTRAP or the local broker")
    parser.add_argument("--file", default=None, help=f"declaration file (default: {DEFAULT_FILE.relative_to(ROOT)})")
    args = parser.parse_args(argv)

    if args.command == "list":
        for s in load_declared(args.namespace, args.file):
            print(f"{s.name}  {_describe_spec(s)}")
        return 0

    if args.command == "plan":
        diffs = asyncio.run(plan(args.bootstrap, args.namespace, args.file))
        for d in diffs:
            if d.action == "create":
                print(f"create   {d.spec.name}  {_describe_spec(d.spec)}")
            elif d.action == "differs":
                print(f"differs  {d.spec.name}  " + "; ".join(d.differences))
            else:
                print(f"ok       {d.spec.name}")
        counts = {a: sum(1 for d in diffs if d.action == a) for a in ("create", "differs", "ok")}
        print(
            f"plan: {counts['create']} to create, {counts['differs']} differ (not changed by apply), {counts['ok']} ok"
        )
        return 0

    created = asyncio.run(apply(args.bootstrap, args.namespace, args.file, report=print))
    for name in created:
        print(f"created  {name}")
    total = len(load_declared(args.namespace, args.file))
    print(f"apply: {len(created)} created, {total - len(created)} already present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
