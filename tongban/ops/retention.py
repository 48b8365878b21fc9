"""Retention of the services' archives (finished cases), as declared in infra/retention.toml.

    python -m tongban.ops retention plan  [--service S] [--namespace NS] [--file F]
    python -m tongban.ops retention purge [--service S] [--namespace NS] [--file F] [--dry-run]
    tongban retention plan|purge ...      (the same, from the operator's command)

`plan` counts, per service, the archived documents whose `finished_at` is older than the
service's declared days (exit 1 when some are due, like any plan that finds a difference)
and lists the stored aggregates declared as kept. `purge` deletes them, shard by shard;
`--dry-run` counts instead. A daily job: on FerretDB v1 each shard's delete is a scan of
that shard. The services never delete from their archives; this is the one place that does.
The store is TONGBAN_MONGO_URI, the databases those of TONGBAN_NAMESPACE (or --namespace).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from tongban import paths
from tongban.config import load_settings
from tongban.ops.pii import SERVICES
from tongban.runtime.archive import MongoArchive
from tongban.store import retryable_writes


@dataclass(frozen=True)
class Declared:
    archive_days: Mapping[str, int]  # service -> days its archive keeps a finished case
    kept: Sequence[tuple[str, str]]  # (stored aggregate, why no purge touches it)


def load(path: Path | None = None, *, minimum_days: int) -> Declared:
    """The declaration; every service with an archive must have its days, none shorter than
    `minimum_days` (the replay horizon: until then a late event may load a finished case)."""
    path = path or paths.retention_file()
    data = tomllib.loads(path.read_text())
    days = data.get("archive", {})
    missing = [s for s in SERVICES if s not in days]
    unknown = sorted(set(days) - set(SERVICES))
    if missing or unknown:
        raise ValueError(f"{path}: [archive] must name exactly {', '.join(SERVICES)}"
                         + (f"; missing {', '.join(missing)}" if missing else "")
                         + (f"; unknown {', '.join(unknown)}" if unknown else ""))
    for service, value in days.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum_days:
            raise ValueError(f"{path}: archive retention of {service} must be a whole number of days, at least "
                             f"the replay horizon ({minimum_days}), got {value!r}")
    kept = [(entry["store"], entry["why"]) for entry in data.get("kept", [])]
    return Declared(dict(days), kept)


def database(namespace: str, service: str) -> str:
    """As Settings.database names it."""
    return f"{namespace.replace('-', '_')}tongban_{service}"


@dataclass(frozen=True)
class Expired:
    """One service's archived documents finished before `cutoff`: counted or deleted."""

    service: str
    days: int
    cutoff: datetime
    by_shard: Mapping[str, int]
    deleted: bool

    @property
    def count(self) -> int:
        return sum(self.by_shard.values())

    def as_json(self) -> dict[str, Any]:
        return {"service": self.service, "days": self.days, "cutoff": self.cutoff.isoformat(),
                "deleted" if self.deleted else "due": self.count,
                "shards": {name: n for name, n in self.by_shard.items() if n}}


async def expire(services: Sequence[str], declared: Declared, namespace: str, mongo_uri: str, *, delete: bool,
                 now: datetime | None = None) -> list[Expired]:
    now = now or datetime.now(UTC)
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri, retryWrites=retryable_writes(mongo_uri),
                                                serverSelectionTimeoutMS=5000, tz_aware=True)
    found = []
    try:
        for service in services:
            days = declared.archive_days[service]
            cutoff = now - timedelta(days=days)
            archive = MongoArchive(client[database(namespace, service)])
            found.append(Expired(service, days, cutoff, await archive.finished_before(cutoff, delete=delete), delete))
    finally:
        await client.close()
    return found


def run(action: str, services: Sequence[str] | None = None, *, namespace: str | None = None,
        file: str | None = None, dry_run: bool = False,
        env: Mapping[str, str] | None = None) -> tuple[Declared, list[Expired]]:
    """`plan` or `purge` (deleting unless `dry_run`) with the environment's settings."""
    env = dict(os.environ if env is None else env)
    settings = load_settings("ops", env, local_defaults=True)
    declared = load(Path(file) if file else paths.retention_file(env), minimum_days=settings.replay_horizon_days)
    namespace = settings.namespace if namespace is None else namespace
    delete = action == "purge" and not dry_run
    return declared, asyncio.run(expire(list(services or SERVICES), declared, namespace, settings.mongo_uri,
                                        delete=delete))


def lines(declared: Declared, found: Sequence[Expired], action: str) -> list[str]:
    verb = "deleted" if found and found[0].deleted else ("due" if action == "plan" else "to delete")
    out = [f"{e.service:13} keep {e.days} days: {e.count} {verb} (finished before {e.cutoff:%Y-%m-%d %H:%M} UTC)"
           for e in found]
    if action == "plan":
        out += [f"kept          {store}: {why}" for store, why in declared.kept]
    out.append(f"retention: {sum(e.count for e in found)} archived documents {verb} in {len(found)} services")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tongban.ops retention", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["plan", "purge"])
    parser.add_argument("--service", action="append", choices=SERVICES, help="default: every service")
    parser.add_argument("--namespace", default=None, help="default: $TONGBAN_NAMESPACE")
    parser.add_argument("--file", default=None, help="default: $TONGBAN_RETENTION_FILE or infra/retention.toml")
    parser.add_argument("--dry-run", action="store_true", help="purge: count what would be deleted, delete nothing")
    args = parser.parse_args(argv)
    try:
        declared, found = run(args.action, args.service, namespace=args.namespace, file=args.file,
                              dry_run=args.dry_run)
    except ValueError as exc:
        raise SystemExit(f"tongban.ops retention: {exc}") from None
    print("\n".join(lines(declared, found, args.action)))
    return 1 if args.action == "plan" and any(e.count for e in found) else 0


if __name__ == "__main__":
    sys.exit(main())
