"""`tongban`: the operator's command for the bus (topics, ACLs, quotas, users, lag, dead
letters, schemas, live records).

Every command has ``--help``; every read has ``--json``. Exit status: 0 done and as
declared, 1 drift (a plan that finds differences, an apply that refused something, a
schema check that fails), 2 failure (bad arguments, the broker unreachable, ...). Personal
data is always masked (``***``) in what is printed. The broker is TONGBAN_KAFKA_BOOTSTRAP
(or ``--bootstrap``), reached as the broker's `admin` unless TONGBAN_KAFKA_USERNAME/_PASSWORD
say otherwise; topics and groups are those of TONGBAN_NAMESPACE (or ``--namespace``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from tongban import topics as names
from tongban.codec import CodecError, SchemaRegistry
from tongban.config import ConfigError, read_kafka_secrets
from tongban.ops import acls, dlq, lag, principals, quotas, stuck, topics
from tongban.ops.kafka_admin import admin_client, ops_settings
from tongban.ops.pii import SERVICES
from tongban.ops.records import consumer, decode_masked, dumps, partitions_of, plain, text, timestamp
from tongban.runtime.core import MAX_REPLAYS
from tongban.schema_compat import check_directory, lock_problems

DRIFT = 1
FAILED = 2

# Piped output is not cut to 80 columns (rich's default without a terminal).
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False)


class Failure(click.ClickException):
    exit_code = FAILED


@dataclass(frozen=True)
class Ops:
    bootstrap: str | None
    namespace: str

    def settings(self):
        return ops_settings(self.bootstrap)


def _run(coro):
    from aiokafka.errors import KafkaError

    try:
        return asyncio.run(coro)
    except (KafkaError, ConfigError, LookupError, RuntimeError, TimeoutError, OSError, ValueError) as exc:
        raise Failure(f"{type(exc).__name__}: {exc}") from exc


def _show(as_json: bool, data: Any, render: Callable[[], None]) -> None:
    if as_json:
        click.echo(dumps(data))
    else:
        render()


json_option = click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")
file_option = click.option("--file", type=click.Path(exists=True, dir_okay=False), default=None,
                           help="declaration file (default: infra/topics.toml)")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bootstrap", default=None, help="Kafka bootstrap servers (default: $TONGBAN_KAFKA_BOOTSTRAP)")
@click.option("--namespace", default=None, help="topic and group prefix (default: $TONGBAN_NAMESPACE)")
@click.pass_context
def cli(ctx: click.Context, bootstrap: str | None, namespace: str | None) -> None:
    """Operate the Tongban bus: topics, ACLs, quotas, users, lag, dead letters, schemas, applications, metrics."""
    ctx.obj = Ops(bootstrap, os.environ.get("TONGBAN_NAMESPACE", "") if namespace is None else namespace)


# ------------------------------------------------------------------------------ topics


@cli.group("topics")
def topics_group() -> None:
    """Declared topics (infra/topics.toml, with an environment overlay) against the cluster."""


overlay_option = click.option("--overlay", default=None,
                              help="environment overlay: a name in infra/overlays (production) or a file")


def _print_plan(result: topics.TopicPlan, done: bool) -> None:
    for line in topics.plan_lines(result, done):
        out.print(line, markup=False)


@topics_group.command("plan")
@overlay_option
@file_option
@json_option
@click.pass_obj
def topics_plan(ops: Ops, overlay: str | None, file: str | None, as_json: bool) -> None:
    """Compare the declaration with the cluster; exit 1 if anything differs."""
    result = _run(topics.reconcile(ops.bootstrap, ops.namespace, file, overlay=overlay, dry_run=True))
    _show(as_json, result.as_json(), lambda: _print_plan(result, done=False))
    if result.drift:
        raise SystemExit(DRIFT)


@topics_group.command("apply")
@overlay_option
@file_option
@click.option("--force", is_flag=True, help="add partitions to keyed topics too (their keys' order breaks)")
@json_option
@click.pass_obj
def topics_apply(ops: Ops, overlay: str | None, file: str | None, force: bool, as_json: bool) -> None:
    """Create topics, set configs, add partitions; exit 1 if something was refused."""
    result = _run(topics.reconcile(ops.bootstrap, ops.namespace, file, overlay=overlay, force=force))
    _show(as_json, result.as_json(), lambda: _print_plan(result, done=True))
    if result.refusals:
        raise SystemExit(DRIFT)


@topics_group.command("list")
@overlay_option
@file_option
@json_option
@click.pass_obj
def topics_list(ops: Ops, overlay: str | None, file: str | None, as_json: bool) -> None:
    """The declared topics with their settings, writer and key."""
    specs = topics.load_declared(ops.namespace, file, overlay)

    def render() -> None:
        table = Table("topic", "partitions", "replication", "key", "writer", "config")
        for s in specs:
            table.add_row(s.name, str(s.partitions), str(s.replication_factor), s.key, s.writer,
                          " ".join(f"{k}={v}" for k, v in sorted(s.config.items())))
        out.print(table)

    _show(as_json, [{"topic": s.name, "partitions": s.partitions, "replication_factor": s.replication_factor,
                     "key": s.key, "writer": s.writer, "readers": list(s.readers), "config": dict(s.config)}
                    for s in specs], render)


# ------------------------------------------------------------------------------ acls, quotas, users


@cli.group("acls")
def acls_group() -> None:
    """ACLs generated from the declaration (writers, readers, groups, transactional ids)."""


def _acl_command(action: str) -> Callable[..., None]:
    @file_option
    @json_option
    @click.pass_obj
    def command(ops: Ops, file: str | None, as_json: bool) -> None:
        fn = acls.plan if action == "plan" else acls.apply
        try:
            result = fn(ops.namespace, file, admin_client(ops.settings()))
        except Exception as exc:  # confluent-kafka raises KafkaException with the broker's error
            raise Failure(f"acls {action}: {exc}") from exc
        data = {"grant": [str(a) for a in result.create], "revoke": [str(a) for a in result.revoke],
                "foreign": [str(a) for a in result.foreign], "unchanged": result.unchanged}

        def render() -> None:
            for a in result.create:
                out.print(f"grant    {a}", markup=False)
            for a in result.revoke:
                out.print(f"revoke   {a}", markup=False)
            for a in result.foreign:
                out.print(f"foreign  {a}  (not a Tongban principal: left alone)", markup=False)
            verb = "granted/revoked" if action == "apply" else "to grant/revoke"
            out.print(f"acls: {len(result.create)}/{len(result.revoke)} {verb}, {result.unchanged} unchanged")

        _show(as_json, data, render)
        if action == "plan" and result.changes:
            raise SystemExit(DRIFT)

    command.__doc__ = ("Compare the declared ACLs with the broker's; exit 1 if they differ." if action == "plan"
                       else "Grant the declared ACLs and revoke Tongban ACLs no longer declared.")
    return command


acls_group.command("plan")(_acl_command("plan"))
acls_group.command("apply")(_acl_command("apply"))


@cli.group("quotas")
def quotas_group() -> None:
    """Client quotas per principal ([quotas] in the declaration)."""


def _quota_command(action: str) -> Callable[..., None]:
    @file_option
    @json_option
    @click.pass_obj
    def command(ops: Ops, file: str | None, as_json: bool) -> None:
        fn = quotas.plan if action == "plan" else quotas.apply
        changes = _run(fn(ops.settings(), file))
        data = [{"user": c.user, "key": c.key, "declared": c.declared, "actual": c.actual} for c in changes]

        def render() -> None:
            for c in changes:
                out.print(str(c), markup=False)
            out.print(f"quotas: {len(changes)} {'changed' if action == 'apply' else 'to change'}")

        _show(as_json, data, render)
        if action == "plan" and changes:
            raise SystemExit(DRIFT)

    command.__doc__ = ("Compare the declared quotas with the broker's; exit 1 if they differ." if action == "plan"
                       else "Set the declared quotas and remove undeclared ones.")
    return command


quotas_group.command("plan")(_quota_command("plan"))
quotas_group.command("apply")(_quota_command("apply"))


@cli.group("users")
def users_group() -> None:
    """SCRAM users of the declared principals (services, partners, feeds, the operator)."""


def _declared_only(fn: Callable[..., Any], *args: Any) -> Any:
    """The principals module refuses an undeclared name with SystemExit(message): a failure here."""
    try:
        return fn(*args)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            raise Failure(exc.code) from None
        raise


@users_group.command("list")
@file_option
@json_option
@click.pass_obj
def users_list(ops: Ops, file: str | None, as_json: bool) -> None:
    """The declared principals and whether the secrets file has their secret (never shown)."""
    values = read_kafka_secrets(ops.settings().kafka_secrets_file)
    rows = [{"name": p.name, "kind": p.kind, "ref": p.ref, "secret": p.name in values}
            for p in principals.declared(file)]

    def render() -> None:
        for r in rows:
            out.print(f"{r['name']:24} {r['kind']:9} {r['ref']:10} {'secret' if r['secret'] else 'NO SECRET'}",
                      markup=False)

    _show(as_json, rows, render)


@users_group.command("create")
@click.argument("name", nargs=-1)
@file_option
@click.pass_obj
def users_create(ops: Ops, name: tuple[str, ...], file: str | None) -> None:
    """Create the SCRAM user of each declared principal NAME (default: every one missing)."""
    created = _declared_only(principals.create, list(name) or None, ops.settings(), file)
    for n in created:
        out.print(f"created  {n}", markup=False)
    out.print(f"users: {len(created)} created")


@users_group.command("rotate")
@click.argument("name")
@file_option
@click.pass_obj
def users_rotate(ops: Ops, name: str, file: str | None) -> None:
    """A new secret for NAME, on the broker and in the secrets file; restart its processes."""
    _declared_only(principals.rotate, name, ops.settings(), file)
    out.print(f"rotated  {name}: restart the processes that run as it", markup=False)


# ------------------------------------------------------------------------------ lag


def _lag_table(rows: list[lag.PartitionLag]) -> Table:
    table = Table("group", "topic", "partition", "committed", "end", "lag")
    for r in rows:
        table.add_row(r.group, r.topic, str(r.partition), "-" if r.committed is None else str(r.committed),
                      str(r.end), str(r.lag))
    for group, per_topic in lag.totals(rows).items():
        table.add_row(group, "total", "", "", "", str(per_topic["*"]), style="bold")
    return table


@cli.command("lag")
@click.option("--group", "groups", multiple=True, help="only this group (without the namespace); repeatable")
@click.option("--watch", type=float, default=None, metavar="SECONDS", help="refresh every SECONDS until Ctrl-C")
@json_option
@click.pass_obj
def lag_command(ops: Ops, groups: tuple[str, ...], watch: float | None, as_json: bool) -> None:
    """Lag per group, topic and partition, with totals per group."""
    wanted = [ops.namespace + g for g in groups] or None

    def measure() -> list[lag.PartitionLag]:
        return _run(lag.measure(ops.namespace, wanted, ops.bootstrap))

    if watch is None:
        rows = measure()
        _show(as_json, {"partitions": [r.as_json() for r in rows], "totals": lag.totals(rows)},
              lambda: out.print(_lag_table(rows)))
        return
    try:
        if as_json:
            while True:
                rows = measure()
                click.echo(dumps({"at": datetime.now(UTC).isoformat(), "partitions": [r.as_json() for r in rows],
                                  "totals": lag.totals(rows)}))
                time.sleep(watch)
        with Live(_lag_table(measure()), console=out, auto_refresh=False) as live:
            while True:
                time.sleep(watch)
                live.update(_lag_table(measure()), refresh=True)
    except KeyboardInterrupt:
        pass


# ------------------------------------------------------------------------------ dead letters


def _groups(ops: Ops, group: tuple[str, ...]) -> list[str]:
    declared = list(topics.load_document().get("groups", {}))
    unknown = sorted(set(group) - set(declared))
    if unknown:
        raise Failure(f"not a declared group: {', '.join(unknown)} (declared: {', '.join(declared)})")
    return list(group) or declared


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO date or time (2026-12-04T08:00)") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@cli.group("dlq")
def dlq_group() -> None:
    """Dead letters: list, show, replay into the group's retry topic."""


@dlq_group.command("list")
@click.argument("group", nargs=-1)
@click.option("--since", default=None, help="only those dead-lettered since (ISO time, UTC unless given)")
@click.option("--reason", default=None, help="only those whose reason or error class contains this text")
@json_option
@click.pass_obj
def dlq_list(ops: Ops, group: tuple[str, ...], since: str | None, reason: str | None, as_json: bool) -> None:
    """The dead letters of each GROUP (default: every declared group), with origin and reason."""
    registry = SchemaRegistry.load()
    selection = dlq.Selection(_since(since), reason)
    letters: list[dlq.DeadLetter] = []
    for g in _groups(ops, group):
        try:
            letters += [dl for dl in asyncio.run(dlq.read(g, ops.namespace, registry, ops.bootstrap))
                        if selection.selects(dl)]
        except LookupError as exc:  # a group declared since the topics were last applied
            if group:
                raise Failure(str(exc)) from exc
            err.print(f"skipped {g}: {exc}", markup=False)

    def render() -> None:
        table = Table("group", "ref", "at", "key", "origin", "event", "class", "reason", "replays")
        for dl in letters:
            table.add_row(dl.group, dl.ref, dl.at.strftime("%Y-%m-%d %H:%M:%S"), dl.key or "",
                          f"{dl.origin_topic.removeprefix(ops.namespace)}[{dl.origin_partition}]@{dl.origin_offset}",
                          dl.decoded.event_type or "?", dl.error_class, dl.reason, str(dl.replays))
        out.print(table)
        out.print(f"{len(letters)} dead letter(s)")

    _show(as_json, [dl.as_json() for dl in letters], render)


@dlq_group.command("show")
@click.argument("group")
@click.argument("ref")
@json_option
@click.pass_obj
def dlq_show(ops: Ops, group: str, ref: str, as_json: bool) -> None:
    """One dead letter of GROUP by REF (partition:offset, as `dlq list` shows), decoded and masked."""
    _groups(ops, (group,))
    found = [dl for dl in _run(dlq.read(group, ops.namespace, SchemaRegistry.load(), ops.bootstrap))
             if dl.ref == ref]
    if not found:
        raise Failure(f"no dead letter {ref} in {names.dlq(group)}")
    data = found[0].as_json(with_body=True)
    _show(as_json, data, lambda: out.print_json(dumps(data)))


@dlq_group.command("replay")
@click.argument("group")
@click.option("--since", default=None, help="only those dead-lettered since (ISO time, UTC unless given)")
@click.option("--reason", default=None, help="only those whose reason or error class contains this text")
@click.option("--dry-run", is_flag=True, help="show what would be replayed; write and move nothing")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="look at no more than this many dead letters now (the next run goes on from there)")
@click.option("--max-replays", type=click.IntRange(1, MAX_REPLAYS), default=MAX_REPLAYS, show_default=True,
              help="a dead letter replayed this often is not replayed again")
@json_option
@click.pass_obj
def dlq_replay(ops: Ops, group: str, since: str | None, reason: str | None, dry_run: bool, limit: int | None,
               max_replays: int, as_json: bool) -> None:
    """Replay GROUP's dead letters into its retry topic, resuming where the last replay ended."""
    _groups(ops, (group,))
    selection = dlq.Selection(_since(since), reason, max_replays)
    registry = SchemaRegistry.load()
    with Progress(TextColumn("replay {task.description}"), BarColumn(), MofNCompleteColumn(), console=err,
                  disable=as_json) as bar:
        task = bar.add_task(group, total=None)
        summary = _run(dlq.replay(group, ops.namespace, registry, selection, dry_run=dry_run, limit=limit,
                                  bootstrap=ops.bootstrap,
                                  progress=lambda done, total: bar.update(task, completed=done, total=total)))

    def render() -> None:
        verb = "would replay" if dry_run else "replayed"
        for dl in summary.replayed:
            out.print(f"{verb}  {dl.ref} {dl.key or ''} {dl.decoded.event_type or '?'} ({dl.reason})", markup=False)
        out.print(f"{group}: {len(summary.replayed)} {verb}, {summary.not_selected} not selected, "
                  f"{sum(summary.refused.values())} refused"
                  + ("" if summary.finished else "; more remain (run it again)"), markup=False)
        for why, n in summary.refused.items():
            out.print(f"  refused {n}: {why}", markup=False)

    _show(as_json, summary.as_json(), render)


# ------------------------------------------------------------------------------ schemas


@cli.group("schemas")
def schemas_group() -> None:
    """Released schemas: FULL_TRANSITIVE check, list, show."""


schemas_option = click.option("--schemas", "directory", type=click.Path(exists=True, file_okay=False),
                              default=None, help="schema directory (default: schemas/)")


@schemas_group.command("check")
@schemas_option
@json_option
def schemas_check(directory: str | None, as_json: bool) -> None:
    """Every version against every other (FULL_TRANSITIVE) and the released lock; exit 1 on a problem."""
    path = Path(directory) if directory else None
    try:
        problems = check_directory(path) + lock_problems(path)
    except CodecError as exc:
        raise Failure(f"cannot load schemas: {exc}") from exc

    def render() -> None:
        for p in problems:
            out.print(p, markup=False)
        out.print(f"{len(problems)} problem(s)" if problems else "schemas compatible (FULL_TRANSITIVE) and locked")

    _show(as_json, {"problems": problems}, render)
    if problems:
        raise SystemExit(DRIFT)


@schemas_group.command("list")
@schemas_option
@json_option
def schemas_list(directory: str | None, as_json: bool) -> None:
    """Every schema version with its fingerprint."""
    registry = SchemaRegistry.load(Path(directory) if directory else None)
    versions = registry.all_versions()
    pii = {sv.full_name: [".".join(p) for p in registry.pii_paths(sv.full_name)] for sv in versions}

    def render() -> None:
        table = Table("schema", "version", "fingerprint", "personal fields")
        for sv in versions:
            table.add_row(sv.full_name, str(sv.version), sv.fingerprint_hex, ", ".join(pii[sv.full_name]))
        out.print(table)

    _show(as_json, [{"name": sv.full_name, "version": sv.version, "fingerprint": sv.fingerprint_hex,
                     "pii": pii[sv.full_name]} for sv in versions], render)


@schemas_group.command("show")
@click.argument("name_or_fingerprint")
@click.option("--version", type=int, default=None, help="this version (default: the latest)")
@schemas_option
@json_option
def schemas_show(name_or_fingerprint: str, version: int | None, directory: str | None, as_json: bool) -> None:
    """One schema by full name (latest, or --version) or by fingerprint (hex)."""
    import json

    registry = SchemaRegistry.load(Path(directory) if directory else None)
    versions = registry.versions(name_or_fingerprint)
    if versions:
        found = [sv for sv in versions if version is None or sv.version == version][-1:]
    else:
        found = [sv for sv in registry.all_versions() if sv.fingerprint_hex == name_or_fingerprint.lower()]
    if not found:
        raise Failure(f"no schema {name_or_fingerprint}" + (f" v{version}" if version else ""))
    sv = found[0]
    data = {"name": sv.full_name, "version": sv.version, "fingerprint": sv.fingerprint_hex,
            "schema": json.loads(sv.schema_json)}
    _show(as_json, data, lambda: out.print_json(dumps(data)))


# ------------------------------------------------------------------------------ stuck

DURATION = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def duration(value: str) -> timedelta:
    """``90s``, ``30m``, ``4h`` or ``2d``."""
    found = DURATION.match(value.strip())
    if not found:
        raise click.BadParameter(f"{value!r}: a number and s, m, h or d (4h)")
    return timedelta(**{UNITS[found.group(2)]: int(found.group(1))})


@cli.command("stuck")
@click.option("--older-than", "older_than", default="4h", show_default=True,
              help="no progress for longer than this (90s, 30m, 4h, 2d)")
@json_option
@click.pass_obj
def stuck_command(ops: Ops, older_than: str, as_json: bool) -> None:
    """Applications with no progress for longer than --older-than, by stage and the party they wait for."""
    threshold = duration(older_than)
    now = datetime.now(UTC)
    groups = stuck.stuck(_run(stuck.read(ops.namespace, SchemaRegistry.load(), ops.bootstrap)), now, threshold)
    data = [{"stage": stage, "waiting_for": party, "count": len(apps),
             "applications": [p.as_json(now) for p in apps]} for (stage, party), apps in groups.items()]

    def render() -> None:
        table = Table("stage", "waiting for", "applications", "oldest since")
        for (stage, party), apps in groups.items():
            table.add_row(stage, party, ", ".join(p.application_id for p in apps[:5])
                          + (f" (+{len(apps) - 5})" if len(apps) > 5 else ""), apps[0].since.isoformat())
        out.print(table)
        out.print(f"{sum(len(a) for a in groups.values())} application(s) without progress for over {older_than}")

    _show(as_json, data, render)


@cli.command("app")
@click.argument("application_id")
@json_option
@click.pass_obj
def app_command(ops: Ops, application_id: str, as_json: bool) -> None:
    """One application's events across the lifecycle and partner topics, and the step it waits at."""
    history = [e for e in _run(stuck.events(ops.namespace, SchemaRegistry.load(), ops.bootstrap))
               if e[1] == application_id]
    if not history:
        raise Failure(f"no event for {application_id} on the lifecycle and partner topics")
    now = stuck.follow(history).get(application_id)  # None: only events that move nothing on (SLA, notices)
    events = [{"at": at.isoformat(), "topic": topic, "event_type": event_type, "body": plain(body)}
              for topic, _, event_type, body, at in history]
    data = {"application_id": application_id, "stage": now.stage if now else None,
            "waiting_for": now.waiting_for if now else None, "finished": bool(now and now.finished),
            "since": now.since.isoformat() if now else None, "events": events}

    def render() -> None:
        for event in events:
            out.print(f"{event['at']}  {event['topic']:40} {event['event_type']}", markup=False)
        if now is not None:
            state = "finished" if now.finished else f"waits for {now.waiting_for or '-'}"
            out.print(f"{application_id}: {now.stage}, {state} since {now.since.isoformat()}", markup=False)

    _show(as_json, data, render)


# ------------------------------------------------------------------------------ metrics


@cli.command("metrics")
@click.option("--host", default="127.0.0.1", show_default=True, help="address of the scrape endpoint")
@click.option("--port", type=int, default=9464, show_default=True, help="port of the scrape endpoint (/metrics)")
@click.option("--interval", type=float, default=15.0, show_default=True, help="seconds between measurements")
@click.option("--stuck-after", default="4h", show_default=True, help="what counts as stuck (90s, 30m, 4h, 2d)")
@click.pass_obj
def metrics_command(ops: Ops, host: str, port: int, interval: float, stuck_after: str) -> None:
    """Serve lag, dead letters and stuck applications for Prometheus until Ctrl-C."""
    from tongban.ops.metrics import Exporter

    exporter = Exporter()
    exporter.serve(host, port)
    err.print(f"serving http://{host}:{port}/metrics (every {interval:g} s)", markup=False)
    with contextlib.suppress(KeyboardInterrupt):
        exporter.refresh_forever(ops.namespace, duration(stuck_after), interval, ops.bootstrap,
                                 lambda line: err.print(line, markup=False))


# ------------------------------------------------------------------------------ top


def _targets(values: tuple[str, ...]) -> dict[str, str]:
    from tongban.ops.top import default_targets

    if not values:
        return default_targets()
    found = {}
    for value in values:
        service, _, target = value.partition("=")
        if not service or ":" not in target:
            raise click.BadParameter(f"{value!r} is not SERVICE=HOST:PORT", param_hint="--target")
        found[service] = target
    return found


def _top_table(rows: list[Any]) -> Table:
    table = Table("service", "metrics", "records/s", "lag", "dead letters", "aborts", "p99 handler ms",
                  title=f"tongban top  {datetime.now(UTC):%H:%M:%S} UTC")

    def shown(value: float | None, fmt: str = "{:,.0f}") -> str:
        return "-" if value is None else fmt.format(value)

    for r in rows:
        if not r.up:
            table.add_row(r.service, r.target, "[red]down[/red]", "", "", "", "")
            continue
        letters = shown(r.dead_letters)
        table.add_row(r.service, r.target, shown(r.records_per_s, "{:,.1f}"), shown(r.lag),
                      f"[yellow]{letters}[/yellow]" if r.dead_letters else letters, shown(r.aborts),
                      shown(r.p99_ms, "{:,.1f}"))
    return table


@cli.command("top")
@click.option("--target", "targets", multiple=True, metavar="SERVICE=HOST:PORT",
              help="a service's metrics endpoint (repeatable; default: every service on 127.0.0.1, "
                   "ports 9551-9555)")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="seconds between two readings")
@click.option("--once", is_flag=True, help="read twice, print once and exit (1 when a service is down)")
@json_option
def top_command(targets: tuple[str, ...], interval: float, once: bool, as_json: bool) -> None:
    """A live view per service: records/s, input lag, dead letters, transaction aborts and the
    p99 handler latency, from the services' own metrics endpoints."""
    from tongban.ops.top import rows, scrape_all

    where = _targets(targets)
    before = scrape_all(where)
    if once:
        time.sleep(interval)  # a rate needs a second reading
        found = rows(before, scrape_all(where))
        _show(as_json, {"interval_s": interval, "services": [r.as_json() for r in found]},
              lambda: out.print(_top_table(found)))
        if not all(r.up for r in found):
            sys.exit(DRIFT)
        return
    with contextlib.suppress(KeyboardInterrupt), contextlib.ExitStack() as stack:
        # --json streams one line a reading (for a pipe); otherwise the table is redrawn in place.
        live = None if as_json else stack.enter_context(
            Live(_top_table(rows([], before)), console=out, auto_refresh=False))
        while True:
            time.sleep(interval)
            now = scrape_all(where)
            found = rows(before, now)
            if live is None:
                click.echo(dumps({"at": datetime.now(UTC).isoformat(), "services": [r.as_json() for r in found]}))
            else:
                live.update(_top_table(found), refresh=True)
            before = now


# ------------------------------------------------------------------------------ review


@cli.group("review")
def review_group() -> None:
    """Routing's review queue: applications no rule routed, waiting for an operator."""


target_option = click.option("--target", default=None, metavar="HOST:PORT",
                             help="routing's gRPC address (default 127.0.0.1:$TONGBAN_GRPC_PORT_ROUTING or 50052)")


def _review(action: Callable[[], Any], service: str = "routing") -> Any:
    import grpc

    try:
        return action()
    except grpc.RpcError as exc:
        err.print(f"[red]{service} answered {exc.code().name}: {exc.details()}[/red]")
        sys.exit(FAILED)


@review_group.command("list")
@target_option
@json_option
def review_list(target: str | None, as_json: bool) -> None:
    """What waits for an operator, oldest first (codes and times only: nothing personal)."""
    from tongban.ops import review

    entries = _review(lambda: review.waiting(target or review.default_target()))

    def render() -> None:
        table = Table("application", "matter", "since", "why no rule routed it")
        for e in entries:
            since = datetime.fromtimestamp(int(e["since_millis"]) / 1000, UTC).isoformat(timespec="seconds")
            table.add_row(e["application_id"], e["matter_code"], since, e["reason"])
        out.print(table)

    _show(as_json, entries, render)


@review_group.command("reroute")
@click.argument("application_id")
@click.argument("partner")
@click.option("--reason", default="", help="why this authority (kept with the decision)")
@target_option
def review_reroute(application_id: str, partner: str, reason: str, target: str | None) -> None:
    """Route APPLICATION_ID to the deciding authority PARTNER (a partner id, e.g. 420000)."""
    from tongban.ops import review

    _review(lambda: review.reroute(target or review.default_target(), application_id, partner, reason))
    out.print(f"{application_id}: re-routed to {partner}")


@review_group.command("reject")
@click.argument("application_id")
@click.option("--reason", required=True, help="the reason the applicant is given")
@target_option
def review_reject(application_id: str, reason: str, target: str | None) -> None:
    """End APPLICATION_ID with the operator's reason."""
    from tongban.ops import review

    _review(lambda: review.reject(target or review.default_target(), application_id, reason))
    out.print(f"{application_id}: rejected")


# ------------------------------------------------------------------------------ manual


@cli.group("manual")
def manual_group() -> None:
    """Delivery's manual-handling queue: results no channel could deliver, waiting for an operator."""


targets_option = click.option("--target", "targets", multiple=True, metavar="HOST:PORT",
                              help="a delivery instance's gRPC address, once per instance (default "
                                   "127.0.0.1:$TONGBAN_GRPC_PORT_DELIVERY or 50054)")


@manual_group.command("list")
@targets_option
@json_option
def manual_list(targets: tuple[str, ...], as_json: bool) -> None:
    """What waits for an operator, oldest first (codes and times only: nothing personal). Exits 1
    when some partition was not answered for (its results are missing), 2 when no instance answered."""
    from tongban.ops import manual

    found = manual.listing(list(targets) or manual.default_targets())

    def render() -> None:
        table = Table("application", "matter", "authority", "channel", "why", "returns", "attempt", "since")
        for e in found.entries:
            since = int(e["since_millis"])
            table.add_row(e["application_id"], e["matter_code"], e["deciding_partner"], e["method"],
                          e["reason_code"], ", ".join(e["return_reasons"]), str(e["attempt"]),
                          datetime.fromtimestamp(since / 1000, UTC).isoformat(timespec="seconds") if since else "-")
        out.print(table)

    _show(as_json, found.as_json(), render)
    for target, why in found.failed.items():
        err.print(f"[red]{target} answered {why}[/red]")
    if not found.partition_count:
        sys.exit(FAILED)
    if found.uncovered:
        err.print(f"[yellow]partitions {', '.join(map(str, found.uncovered))} of {found.partition_count} were not "
                  "answered for: their waiting results are not listed (name every instance with --target)[/yellow]")
        sys.exit(DRIFT)


@manual_group.command("resolve")
@click.argument("application_id")
@click.option("--outcome", required=True, type=click.Choice(["POST", "WINDOW"], case_sensitive=False),
              help="POST: post again (to --address, or the same address); WINDOW: pick-up at the receiving window")
@click.option("--reason", required=True, help="why, told with the resolution (ID and phone numbers are scrubbed)")
@click.option("--address", default="", help="the corrected postal address, for POST")
@click.option("--reference", default=None, help="this resolution's id: repeating it repeats the same request")
@targets_option
def manual_resolve(application_id: str, outcome: str, reason: str, address: str, reference: str | None,
                   targets: tuple[str, ...]) -> None:
    """Send APPLICATION_ID's waiting result on; delivery refuses (exit 2) one that is not waiting."""
    from tongban.ops import manual

    _review(lambda: manual.resolve(list(targets) or manual.default_targets(), application_id, outcome.upper(),
                                   reason, address, reference), "delivery")
    out.print(f"{application_id}: sent on by {outcome.upper()}")


# ------------------------------------------------------------------------------ retention


@cli.group("retention")
def retention_group() -> None:
    """How long the services' archives keep finished cases (infra/retention.toml), in the store."""


def _retention(ops: Ops, action: str, services: tuple[str, ...], file: str | None, dry_run: bool,
               as_json: bool) -> list[Any]:
    from tongban.ops import retention

    try:
        declared, found = retention.run(action, list(services), namespace=ops.namespace, file=file, dry_run=dry_run)
    except (ConfigError, ValueError, OSError) as exc:
        raise Failure(f"{type(exc).__name__}: {exc}") from exc
    data = {"archives": [e.as_json() for e in found],
            "kept": [{"store": store, "why": why} for store, why in declared.kept]}

    def render() -> None:
        for line in retention.lines(declared, found, action):
            out.print(line, markup=False)

    _show(as_json, data, render)
    return found


service_option = click.option("--service", "services", multiple=True,
                              type=click.Choice(SERVICES),
                              help="only this service's archive (repeatable; default: every service)")
retention_file_option = click.option("--file", type=click.Path(exists=True, dir_okay=False), default=None,
                                     help="declaration (default: $TONGBAN_RETENTION_FILE or infra/retention.toml)")


@retention_group.command("plan")
@service_option
@retention_file_option
@json_option
@click.pass_obj
def retention_plan(ops: Ops, services: tuple[str, ...], file: str | None, as_json: bool) -> None:
    """Count archived cases older than their service's retention; exit 1 if any are due."""
    if any(e.count for e in _retention(ops, "plan", services, file, True, as_json)):
        raise SystemExit(DRIFT)


@retention_group.command("purge")
@service_option
@retention_file_option
@click.option("--dry-run", is_flag=True, help="count what would be deleted; delete nothing")
@json_option
@click.pass_obj
def retention_purge(ops: Ops, services: tuple[str, ...], file: str | None, dry_run: bool, as_json: bool) -> None:
    """Delete archived cases older than their service's retention, shard by shard."""
    _retention(ops, "purge", services, file, dry_run, as_json)


# ------------------------------------------------------------------------------ tail


async def _tail(ops: Ops, topic: str, from_beginning: bool, count: int | None, seconds: float | None,
                show: Callable[[dict[str, Any]], None]) -> int:
    registry = SchemaRegistry.load()
    client = consumer(ops.bootstrap, group_id=None)
    await client.start()
    seen = 0
    try:
        tps = await partitions_of(ops.namespace + topic, ops.bootstrap)
        client.assign(tps)
        if from_beginning:
            await client.seek_to_beginning(*tps)
        else:
            await client.seek_to_end(*tps)
        deadline = None if seconds is None else time.monotonic() + seconds
        while (count is None or seen < count) and (deadline is None or time.monotonic() < deadline):
            for records in (await client.getmany(*tps, timeout_ms=500)).values():
                for r in records:
                    if count is not None and seen >= count:
                        break
                    decoded = decode_masked(registry, r.value)
                    show({"partition": r.partition, "offset": r.offset, "at": timestamp(r.timestamp).isoformat(),
                          "key": text(r.key), "event_type": decoded.event_type, "body": decoded.body,
                          **({"problem": decoded.problem} if decoded.problem else {})})
                    seen += 1
    finally:
        await client.stop()
    return seen


@cli.command("tail")
@click.argument("topic")
@click.option("--from-beginning", is_flag=True, help="from the oldest record kept, not only new ones")
@click.option("--count", type=click.IntRange(min=1), default=None, help="stop after this many records")
@click.option("--timeout", type=float, default=None, help="stop after this many seconds")
@json_option
@click.pass_obj
def tail(ops: Ops, topic: str, from_beginning: bool, count: int | None, timeout: float | None,
         as_json: bool) -> None:
    """Print TOPIC's records (name without the namespace) as they come, decoded, personal data masked."""
    if topic not in {s.declared_name for s in topics.load_declared("")}:
        raise Failure(f"{topic} is not a declared topic (tongban topics list)")

    def show(record: dict[str, Any]) -> None:
        if as_json:
            click.echo(dumps(record))
        else:
            body = record["body"] if record["body"] is not None else record.get("problem")
            out.print(f"{record['at']} [{record['partition']}]@{record['offset']} {record['key']} "
                      f"{record['event_type'] or '?'} {dumps(body)}", markup=False)

    with contextlib.suppress(KeyboardInterrupt):
        _run(_tail(ops, topic, from_beginning, count, timeout, show))


# ------------------------------------------------------------------------------ render (tongban.ops.render)


@topics_group.command("render")
@click.option("--format", "fmt", type=click.Choice(["strimzi"]), required=True, help="resource format")
@overlay_option
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="write to this file (default: stdout)")
@click.pass_obj
def topics_render(ops: Ops, fmt: str, overlay: str | None, out: str | None) -> None:
    """KafkaTopic and KafkaUser resources (SCRAM, ACLs, quotas) from the declaration."""
    from tongban.ops import render

    text = render.render_strimzi(overlay, ops.namespace)
    if out:
        Path(out).write_text(text)
    else:
        click.echo(text, nl=False)


@cli.group("render")
def render_group() -> None:
    """Deployment artefacts generated from the declarations (Kubernetes, the partner kit's AsyncAPI)."""


@render_group.command("k8s")
@click.option("--out", type=click.Path(file_okay=False), default="deploy/k8s", show_default=True)
@click.option("--bench", type=click.Path(dir_okay=False), default=None,
              help="bench result sizing the memory requests (default: var/bench/latest.json when present)")
def render_k8s(out: str, bench: str | None) -> None:
    """Kustomize base and production overlay: Deployments, Services, probes, ServiceMonitor, Strimzi resources."""
    from tongban import paths
    from tongban.ops import render

    sizes = render.sizing(Path(bench) if bench else paths.var_dir() / "bench" / "latest.json")
    for path in render.render_k8s(Path(out), sizes):
        click.echo(str(path))


@render_group.command("compose")
@click.option("--out", type=click.Path(dir_okay=False), default="deploy/compose.yaml", show_default=True)
def render_compose(out: str) -> None:
    """Compose file matching the manifests: Kafka (SCRAM), MongoDB, the topics job, the services and providers."""
    from tongban.ops import render

    Path(out).write_text(render.render_compose())
    click.echo(out)


@render_group.command("asyncapi")
@click.option("--out", type=click.Path(dir_okay=False), default="docs/partner-kit/asyncapi.yaml", show_default=True)
def render_asyncapi(out: str) -> None:
    """The partner kit's AsyncAPI 3.0 document from infra/topics.toml and schemas/."""
    from tongban.ops import render

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(render.render_asyncapi())
    click.echo(out)


@render_group.command("vectors")
@click.option("--out", type=click.Path(file_okay=False), default="docs/partner-kit/vectors", show_default=True)
def render_vectors(out: str) -> None:
    """The partner kit's test vectors: a JSON example and its single-object bytes per partner-facing event."""
    from tongban.ops import render

    for path in render.render_vectors(Path(out)):
        click.echo(str(path))


def main() -> None:
    cli(prog_name="tongban")


if __name__ == "__main__":
    main()
