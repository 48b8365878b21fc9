"""Declared Kafka topics: plan and apply `infra/topics.toml` (with an environment overlay).

    python -m tongban.ops.topics plan  [--namespace PREFIX] [--bootstrap HOST:PORT] [--overlay NAME|FILE]
    python -m tongban.ops.topics apply [--namespace PREFIX] [--bootstrap HOST:PORT] [--overlay NAME|FILE] [--force]
    python -m tongban.ops.topics list  [--namespace PREFIX] [--overlay NAME|FILE]

`apply` creates missing topics, sets every declared config on existing ones (and removes
configs set on a topic that the declaration does not name) and adds declared partitions.
It refuses, saying why, what would break or what Kafka cannot do: deleting a topic that is
no longer declared, adding partitions to a keyed topic without ``--force`` (the key's
partition changes, so its records lose their order), removing partitions, and changing the
replication factor (a reassignment). `tongban topics plan` exits 1 when anything differs.

The namespace (``--namespace`` or ``TONGBAN_NAMESPACE``) is prefixed to every topic name,
so one broker can hold several isolated runs (tests use ``t<random>-``). An overlay
(``infra/overlays/<name>.toml``) replaces defaults and single topics' settings for one
environment (production: replication 3, min.insync.replicas 2).

Importable API (used by the test suite)::

    specs = load_declared("t1a2b-")                    # -> list[TopicSpec]
    created = await apply("127.0.0.1:19092", "t1a2b-")  # -> names created now
    result = await reconcile(None, "t1a2b-", dry_run=True)  # -> TopicPlan (changes, refusals)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tongban import paths
from tongban.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FILE = paths.topics_file()
OVERLAYS = paths.overlays_dir()

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
    events: tuple[str, ...] = ()  # the event types it carries (tongban.topic_events: the runtime refuses others)


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
        events=tuple(str(e) for e in entry.get("events", ())),
    )


def load_document(path: str | Path | None = None) -> dict[str, Any]:
    """The declaration file as parsed TOML (partners, feeds, groups, quotas, templates)."""
    with open(path or DEFAULT_FILE, "rb") as fh:
        return tomllib.load(fh)


def overlay_path(overlay: str | Path) -> Path:
    """An overlay named by environment (``production`` -> infra/overlays/production.toml) or by path."""
    named = OVERLAYS / f"{overlay}.toml"
    return named if named.exists() else Path(overlay)


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override``'s keys replaced; ``config`` tables merged key by key."""
    merged = {**base, **override}
    if "config" in base or "config" in override:
        merged["config"] = {**base.get("config", {}), **override.get("config", {})}
    return merged


def load_declared(namespace: str | None = None, path: str | Path | None = None,
                  overlay: str | Path | None = None) -> list[TopicSpec]:
    """Read the declared topics, expanding partner and group templates.

    ``namespace`` defaults to ``TONGBAN_NAMESPACE`` (empty when unset). ``overlay`` (a name
    under infra/overlays or a file) replaces ``[defaults]`` values and, under
    ``[topic."<declared name>"]``, one expanded topic's partitions, replication or configs."""
    if namespace is None:
        namespace = os.environ.get("TONGBAN_NAMESPACE", "")
    doc = load_document(path)
    layer: dict[str, Any] = load_document(overlay_path(overlay)) if overlay is not None else {}
    defaults = _merge(doc.get("defaults", {}), layer.get("defaults", {}))
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

    per_topic: Mapping[str, Mapping[str, Any]] = layer.get("topic", {})
    unknown_overrides = set(per_topic) - {s.declared_name for s in specs}
    if unknown_overrides:
        raise ValueError(f"overlay names topics that are not declared: {sorted(unknown_overrides)}")
    specs = [_overridden(s, per_topic[s.declared_name]) if s.declared_name in per_topic else s for s in specs]

    seen: set[str] = set()
    for s in specs:
        if s.name in seen:
            raise ValueError(f"topic {s.name} is declared twice")
        seen.add(s.name)
        if s.partitions < 1 or s.replication_factor < 1:
            raise ValueError(f"topic {s.name}: partitions and replication_factor must be >= 1")
    return specs


def _overridden(spec: TopicSpec, override: Mapping[str, Any]) -> TopicSpec:
    return replace(spec, partitions=int(override.get("partitions", spec.partitions)),
                   replication_factor=int(override.get("replication_factor", spec.replication_factor)),
                   config={**spec.config, **_str_config(override.get("config"))})


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


# --------------------------------------------------------------------------- plan (pure)

DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs' config_source of a value set on the topic itself


@dataclass(frozen=True)
class LiveTopic:
    """A topic as the cluster describes it."""

    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)
    overrides: frozenset[str] = frozenset()  # configs set on the topic (not broker defaults)


@dataclass(frozen=True)
class Change:
    """Something `apply` does: ``create``, ``alter_config`` (the topic's configs become exactly
    the declared ones) or ``add_partitions``."""

    topic: str
    action: str
    detail: str


@dataclass(frozen=True)
class Refusal:
    """A difference `apply` leaves alone, and why."""

    topic: str
    reason: str


@dataclass
class TopicPlan:
    diffs: list[TopicDiff]
    changes: list[Change]
    refusals: list[Refusal]
    applied: list[Change] = field(default_factory=list)

    @property
    def drift(self) -> bool:
        """The cluster is not as declared (CI gates on this)."""
        return bool(self.changes or self.refusals)

    @property
    def created(self) -> list[str]:
        return [c.topic for c in self.applied if c.action == "create"]

    def as_json(self) -> dict[str, Any]:
        return {
            "drift": self.drift,
            "changes": [vars(c) for c in self.changes],
            "refusals": [vars(r) for r in self.refusals],
            "applied": [vars(c) for c in self.applied],
            "topics": [{"topic": d.spec.name, "status": d.action, "differences": list(d.differences)}
                       for d in self.diffs],
        }


def _config_differences(spec: TopicSpec, live: LiveTopic) -> list[str]:
    found = [f"{k}: declared {v}, actual {live.config.get(k)}"
             for k, v in sorted(spec.config.items()) if live.config.get(k) != v]
    found += [f"{k}: set to {live.config.get(k)} on the topic, not declared"
              for k in sorted(live.overrides - spec.config.keys())]
    return found


def compare(specs: Iterable[TopicSpec], live: Mapping[str, LiveTopic], undeclared: Iterable[str] = (),
            force: bool = False) -> TopicPlan:
    """What `apply` would change and what it refuses, from the declaration and the cluster."""
    diffs: list[TopicDiff] = []
    changes: list[Change] = []
    refusals: list[Refusal] = []
    for s in specs:
        topic = live.get(s.name)
        if topic is None:
            diffs.append(TopicDiff(s, "create"))
            changes.append(Change(s.name, "create", _describe_spec(s)))
            continue
        differences = _config_differences(s, topic)
        if differences:
            changes.append(Change(s.name, "alter_config", "; ".join(differences)))
        if s.partitions != topic.partitions:
            differences.insert(0, f"partitions: declared {s.partitions}, actual {topic.partitions}")
        if s.partitions < topic.partitions:
            refusals.append(Refusal(s.name, f"declared {s.partitions} partitions, has {topic.partitions}: "
                                            "Kafka cannot remove partitions (make a new topic and move the readers)"))
        elif s.partitions > topic.partitions and s.key and not force:
            refusals.append(Refusal(s.name, f"declared {s.partitions} partitions, has {topic.partitions}: the topic "
                                            f"is keyed by {s.key}, and more partitions send keys to other partitions, "
                                            "breaking their order; apply --force to add them anyway"))
        elif s.partitions > topic.partitions:
            changes.append(Change(s.name, "add_partitions", f"{topic.partitions} -> {s.partitions}"))
        if s.replication_factor != topic.replication_factor:
            differences.append(f"replication_factor: declared {s.replication_factor}, "
                               f"actual {topic.replication_factor}")
            refusals.append(Refusal(s.name, f"declared replication {s.replication_factor}, has "
                                            f"{topic.replication_factor}: that takes a partition reassignment "
                                            "(kafka-reassign-partitions), which apply does not do"))
        diffs.append(TopicDiff(s, "differs" if differences else "ok", tuple(differences)))
    for name in sorted(undeclared):
        refusals.append(Refusal(name, "not declared: apply never deletes a topic (delete it by hand once "
                                      "nothing reads or writes it)"))
    return TopicPlan(diffs, changes, refusals)


# --------------------------------------------------------------------------- the cluster


async def describe_live(admin, names: list[str], namespace: str) -> tuple[dict[str, LiveTopic], list[str]]:
    """The declared topics that exist, and the namespace's topics that are not declared
    (``tongban.*`` topics under the namespace prefix)."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    existing = set(await admin.list_topics())
    wanted = set(names)
    undeclared = sorted(t for t in existing - wanted if t.startswith(namespace + "tongban."))
    present = [n for n in names if n in existing]
    live: dict[str, LiveTopic] = {}
    if not present:
        return live, undeclared
    shapes: dict[str, tuple[int, int]] = {}
    for t in await admin.describe_topics(present):
        if t["error_code"] == 0 and t["partitions"]:
            shapes[t["topic"]] = (len(t["partitions"]), len(t["partitions"][0]["replicas"]))
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in present])
    for resp in responses:
        for res in resp.to_object()["resources"]:
            name = res["resource_name"]
            if res["error_code"] != 0 or name not in shapes:
                continue
            entries = res["config_entries"]
            live[name] = LiveTopic(
                *shapes[name], {e["config_names"]: e["config_value"] for e in entries},
                frozenset(e["config_names"] for e in entries if e.get("config_source") == DYNAMIC_TOPIC_CONFIG))
    return live, undeclared


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


async def _wait_until_described(admin, specs: list[TopicSpec], namespace: str, force: bool, within: float) -> None:
    """Until the broker describes what was applied (metadata and configs reach it a moment
    after the controller took them), so a plan right after an apply finds nothing to do."""
    deadline = time.monotonic() + within
    while True:
        live, undeclared = await describe_live(admin, [s.name for s in specs], namespace)
        pending = compare(specs, live, undeclared, force).changes
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"applied, but not yet described after {within}s: {[c.topic for c in pending]}")
        await asyncio.sleep(0.2)


def _errors(response, key: str) -> list[str]:
    return [f"{e.get('topic') or e.get('resource_name')}: error {e['error_code']} {e.get('error_message')}"
            for e in response.to_object()[key] if e["error_code"] not in (0, TOPIC_ALREADY_EXISTS)]


async def _execute(admin, specs: dict[str, TopicSpec], changes: list[Change]) -> list[Change]:
    from aiokafka.admin import NewPartitions, NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    errors: list[str] = []
    create = [specs[c.topic] for c in changes if c.action == "create"]
    if create:
        resp = await admin.create_topics(
            [NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.config)) for s in create],
            timeout_ms=30000)
        errors += _errors(resp, "topic_errors")  # one created meanwhile by someone else counts as created
    alter = [specs[c.topic] for c in changes if c.action == "alter_config"]
    if alter:
        # AlterConfigs replaces a topic's whole set of its own configs: exactly the declared ones remain.
        for resp in await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, s.name, configs=dict(s.config)) for s in alter]):
            errors += _errors(resp, "resources")
    grow = [specs[c.topic] for c in changes if c.action == "add_partitions"]
    if grow:
        resp = await admin.create_partitions({s.name: NewPartitions(s.partitions) for s in grow}, timeout_ms=30000)
        errors += _errors(resp, "topic_errors")
    if errors:
        raise RuntimeError("could not apply: " + "; ".join(errors))
    return list(changes)


async def reconcile(bootstrap: str | None = None, namespace: str | None = None, path: str | Path | None = None,
                    *, overlay: str | Path | None = None, force: bool = False, dry_run: bool = False) -> TopicPlan:
    """Compare the declaration with the cluster and, unless ``dry_run``, apply what may be
    applied. Safe to run concurrently and twice: the second run finds nothing to do. Returns
    after every declared topic has a leader for each partition."""
    if namespace is None:
        namespace = os.environ.get("TONGBAN_NAMESPACE", "")
    specs = load_declared(namespace, path, overlay)
    admin = _admin(bootstrap)
    await admin.start()
    try:
        live, undeclared = await describe_live(admin, [s.name for s in specs], namespace)
        result = compare(specs, live, undeclared, force)
        if not dry_run:
            result.applied = await _execute(admin, {s.name: s for s in specs}, result.changes)
            await _wait_for_leaders(admin, [s.name for s in specs], within=30)
            if result.applied:
                await _wait_until_described(admin, specs, namespace, force, within=30)
    finally:
        await admin.close()
    return result


async def plan(bootstrap: str | None = None, namespace: str | None = None, path: str | Path | None = None,
               overlay: str | Path | None = None) -> list[TopicDiff]:
    """Compare the declaration with the cluster; changes nothing."""
    return (await reconcile(bootstrap, namespace, path, overlay=overlay, dry_run=True)).diffs


async def apply(bootstrap: str | None = None, namespace: str | None = None, path: str | Path | None = None,
                *, report=None, overlay: str | Path | None = None) -> list[str]:
    """Apply the declaration (without forcing anything); return the names created now.
    ``report`` (a callable taking one line) is told what was refused."""
    result = await reconcile(bootstrap, namespace, path, overlay=overlay)
    for r in result.refusals:
        if report is not None:
            report(f"refused  {r.topic}: {r.reason}")
    return result.created


# --------------------------------------------------------------------------- CLI


def _describe_spec(s: TopicSpec) -> str:
    cfg = " ".join(f"{k}={v}" for k, v in sorted(s.config.items()))
    return f"partitions={s.partitions} rf={s.replication_factor} {cfg} key={s.key} writer={s.writer}"


def plan_lines(result: TopicPlan, done: bool) -> list[str]:
    """The plan (or what was applied) as text, one change or refusal a line, then a count."""
    lines = [f"{c.action:15} {c.topic}  {c.detail}" for c in (result.applied if done else result.changes)]
    lines += [f"{'refused':15} {r.topic}: {r.reason}" for r in result.refusals]
    ok = sum(1 for d in result.diffs if d.action == "ok")
    verb = "applied" if done else "to apply"
    lines.append(f"topics: {len(result.applied if done else result.changes)} {verb}, "
                 f"{len(result.refusals)} refused, {ok} as declared")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tongban.ops.topics", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["plan", "apply", "list"])
    parser.add_argument("--namespace", default=None, help="prefix for every topic name (default: $TONGBAN_NAMESPACE)")
    parser.add_argument("--bootstrap", default=None, help="default: $TONGBAN_KAFKA_BOOTSTRAP or the local broker")
    parser.add_argument("--file", default=None, help=f"declaration file (default: {DEFAULT_FILE})")
    parser.add_argument("--overlay", default=None, help="environment overlay: a name in infra/overlays or a file")
    parser.add_argument("--force", action="store_true", help="apply: add partitions to keyed topics too")
    args = parser.parse_args(argv)

    if args.command == "list":
        for s in load_declared(args.namespace, args.file, args.overlay):
            print(f"{s.name}  {_describe_spec(s)}")
        return 0
    # `make topics` and `make topics-plan` run this and report; `tongban topics plan` is the gate
    # that exits 1 on drift.
    result = asyncio.run(reconcile(args.bootstrap, args.namespace, args.file, overlay=args.overlay,
                                   force=args.force, dry_run=args.command == "plan"))
    print("\n".join(plan_lines(result, done=args.command == "apply")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
