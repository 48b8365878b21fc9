"""Kafka principals: who they are, their secrets, their SCRAM credentials on the broker.

    python -m tongban.ops principals list
    python -m tongban.ops principals init            # the secrets file: add what is missing (make setup)
    python -m tongban.ops principals plan|apply      # SCRAM credentials on the broker match the file
    python -m tongban.ops principals rotate NAME     # a new secret, on the broker, then in the file
    python -m tongban.ops principals scram-args      # StorageTool --add-scram values (infra/scripts/kafka.sh)

Principals come from infra/topics.toml: the broker's `admin` (the one super user), one
`tongban-<service>` per service in [groups], one `partner-<id>` per entry of [partners] and
[feeds], and `tongban-operator`. Each has its own random secret in the secrets file
(TONGBAN_KAFKA_SECRETS_FILE, default var/kafka/principals.secrets, mode 600, git-ignored),
from which every process takes its own identity (tongban.config).

`apply` creates the SCRAM-SHA-512 credential of every declared principal whose secret does
not log in (missing, or set from another file), and deletes the credentials of users that
follow Tongban's naming (`tongban-*`, `partner-*`) but are no longer declared. `rotate`
changes one secret on the broker first and then in the file; connections made before keep
working (SCRAM authenticates once per connection), a process started afterwards needs the
new secret.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

from tongban.config import KAFKA_ADMIN, Settings, kafka_principal, read_kafka_secrets
from tongban.ops.kafka_admin import TIMEOUT_S, admin_client, ops_settings
from tongban.ops.topics import load_document

OPERATOR = "tongban-operator"
MECHANISM = "SCRAM-SHA-512"
ITERATIONS = 4096  # Kafka's default and the minimum for SCRAM-SHA-512; paid on every connection
MANAGED = re.compile(r"^(tongban-|partner-)")  # users Tongban creates, and may therefore delete

HEADER = """\
# Kafka SCRAM secrets of Tongban's principals, one `principal=secret` a line.
# Made by `make setup` (python -m tongban.ops principals init); rotate one with
# `python -m tongban.ops principals rotate NAME`. Never commit or copy this file.
"""


@dataclass(frozen=True)
class Principal:
    name: str  # the SCRAM user name; the ACL principal is User:<name>
    kind: str  # "admin", "service", "partner", "feed" or "operator"
    ref: str = ""  # the service name or the partner or feed id

    @property
    def acl(self) -> str:
        return f"User:{self.name}"


def declared(path: str | Path | None = None) -> list[Principal]:
    """Every principal the declaration calls for, admin first."""
    doc = load_document(path)
    out = [Principal(KAFKA_ADMIN, "admin")]
    for service in dict.fromkeys(doc.get("groups", {}).values()):
        out.append(Principal(kafka_principal(service), "service", service))
    for pid in doc.get("partners", {}):
        out.append(Principal(f"partner-{pid}", "partner", pid))
    for fid in doc.get("feeds", {}):
        out.append(Principal(f"partner-{fid}", "feed", fid))
    out.append(Principal(OPERATOR, "operator"))
    names = [p.name for p in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"principals declared twice (a feed with a partner's id?): {duplicates}")
    return out


# ------------------------------------------------------------------------------ the file


def secrets_file(settings: Settings | None = None) -> Path:
    return (settings or ops_settings()).kafka_secrets_file


def new_secret() -> str:
    return secrets.token_urlsafe(32)  # [A-Za-z0-9_-]: safe in JAAS, StorageTool and properties files


def write_secrets(path: Path, values: dict[str, str]) -> None:
    """Replace the file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(HEADER + "".join(f"{name}={secret}\n" for name, secret in values.items()))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def init(path: Path | None = None, declaration: str | Path | None = None) -> list[str]:
    """Give every declared principal a secret in the file; keep those already there.
    Returns the names added."""
    path = path or secrets_file()
    values = read_kafka_secrets(path)
    added = [p.name for p in declared(declaration) if p.name not in values]
    for name in added:
        values[name] = new_secret()
    if added or not path.exists() or (path.stat().st_mode & 0o077):
        write_secrets(path, values)
    return added


def scram_args(path: Path | None = None, declaration: str | Path | None = None) -> list[str]:
    """`--add-scram` values for StorageTool format, one per declared principal."""
    values = read_kafka_secrets(path or secrets_file())
    missing = [p.name for p in declared(declaration) if p.name not in values]
    if missing:
        raise SystemExit(f"no secret for {missing}: run python -m tongban.ops principals init")
    return [f"{MECHANISM}=[name={p.name},iterations={ITERATIONS},password={values[p.name]}]"
            for p in declared(declaration)]


# ------------------------------------------------------------------------------ the broker


@dataclass(frozen=True)
class PrincipalChange:
    name: str
    action: str  # "create" (no credential), "reset" (the file's secret does not log in), "delete", "ok"


async def _logs_in(settings: Settings, name: str, secret: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    options = replace(settings, sasl_username=name, sasl_password=secret).kafka_client_options()
    client = AIOKafkaAdminClient(client_id="tongban-ops-login-check", request_timeout_ms=10000, **options)
    try:
        await client.start()
        return True
    except KafkaError:
        return False
    finally:
        await client.close()


def _on_broker(admin) -> set[str]:
    """Users with a SCRAM-SHA-512 credential."""
    from confluent_kafka.admin import ScramMechanism

    try:
        described = admin.describe_user_scram_credentials(request_timeout=TIMEOUT_S).result()
    except Exception as exc:  # "no credentials" comes back as an error on some versions
        if "RESOURCE_NOT_FOUND" in str(exc):
            return set()
        raise
    return {user for user, desc in described.items()
            if any(info.mechanism == ScramMechanism.SCRAM_SHA_512 for info in desc.scram_credential_infos)}


def plan(settings: Settings | None = None, declaration: str | Path | None = None) -> list[PrincipalChange]:
    settings = settings or ops_settings()
    values = read_kafka_secrets(settings.kafka_secrets_file)
    wanted = [p.name for p in declared(declaration)]
    missing_secret = [n for n in wanted if n not in values]
    if missing_secret:
        raise SystemExit(f"no secret in {settings.kafka_secrets_file} for {missing_secret}: "
                         "run python -m tongban.ops principals init")
    present = _on_broker(admin_client(settings))

    async def check() -> list[bool]:
        return await asyncio.gather(*(_logs_in(settings, n, values[n]) for n in wanted if n in present))

    logins = dict(zip([n for n in wanted if n in present], asyncio.run(check()), strict=True))
    out = []
    for name in wanted:
        if name == KAFKA_ADMIN:
            # The admin is this tool's own identity: it logged in, or nothing here would work.
            out.append(PrincipalChange(name, "ok"))
        elif name not in present:
            out.append(PrincipalChange(name, "create"))
        else:
            out.append(PrincipalChange(name, "ok" if logins[name] else "reset"))
    out += [PrincipalChange(n, "delete") for n in sorted(present - set(wanted)) if MANAGED.match(n)]
    return out


def _upsert(admin, values: dict[str, str]) -> None:
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    if not values:
        return
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, ITERATIONS)
    futures = admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(name, info, secret.encode()) for name, secret in values.items()],
        request_timeout=TIMEOUT_S)
    for future in futures.values():
        future.result()


def apply(settings: Settings | None = None, declaration: str | Path | None = None) -> list[PrincipalChange]:
    """Make the broker's SCRAM credentials match the file; returns what was changed."""
    from confluent_kafka.admin import ScramMechanism, UserScramCredentialDeletion

    settings = settings or ops_settings()
    changes = [c for c in plan(settings, declaration) if c.action != "ok"]
    values = read_kafka_secrets(settings.kafka_secrets_file)
    admin = admin_client(settings)
    _upsert(admin, {c.name: values[c.name] for c in changes if c.action in ("create", "reset")})
    deletions = [UserScramCredentialDeletion(c.name, ScramMechanism.SCRAM_SHA_512)
                 for c in changes if c.action == "delete"]
    if deletions:
        for future in admin.alter_user_scram_credentials(deletions, request_timeout=TIMEOUT_S).values():
            future.result()
    return changes


def create(names: list[str] | None = None, settings: Settings | None = None,
           declaration: str | Path | None = None) -> list[str]:
    """Give the declared principals (or those of `names`) that have no SCRAM credential on
    the broker one, with a secret added to the file where it has none; nothing else changes
    (unlike `apply`, no credential is reset or deleted). Returns the names created."""
    settings = settings or ops_settings()
    known = {p.name for p in declared(declaration)}
    unknown = sorted(set(names or ()) - known)
    if unknown:
        raise SystemExit(f"{', '.join(unknown)}: not declared in topics.toml (a principal is declared first)")
    init(settings.kafka_secrets_file, declaration)
    values = read_kafka_secrets(settings.kafka_secrets_file)
    admin = admin_client(settings)
    present = _on_broker(admin)
    missing = [n for n in sorted(set(names) if names else known) if n not in present]
    _upsert(admin, {n: values[n] for n in missing})
    return missing


def rotate(name: str, settings: Settings | None = None, declaration: str | Path | None = None) -> str:
    """A new secret for `name`: set on the broker, checked by logging in, then written to
    the file. Returns the new secret."""
    settings = settings or ops_settings()
    if name not in {p.name for p in declared(declaration)}:
        raise SystemExit(f"{name} is not a declared principal (python -m tongban.ops principals list)")
    secret = new_secret()
    _upsert(admin_client(settings), {name: secret})
    if not asyncio.run(_logs_in(settings, name, secret)):
        raise SystemExit(f"{name}: the broker took the new secret but it does not log in; the file is unchanged")
    values = read_kafka_secrets(settings.kafka_secrets_file)
    values[name] = secret
    write_secrets(settings.kafka_secrets_file, values)
    if name == KAFKA_ADMIN:
        _mark_data_dir(secret)
    return secret


def local_data_dir() -> Path:
    """The local broker's data dir, as infra/scripts/kafka.sh names it."""
    from tongban.config import ROOT

    instance = os.environ.get("TONGBAN_KAFKA_INSTANCE") or "kafka"
    base = ROOT / "var" / "kafka" if instance == "kafka" else ROOT / "var" / "kafka" / instance
    return Path(os.environ.get("TONGBAN_KAFKA_DATA_DIR") or base / "data")


def _mark_data_dir(admin_secret: str) -> None:
    """kafka.sh refuses a data dir formatted with another admin secret than the file holds;
    after rotating it on the broker, the local data dir's marker follows."""
    import hashlib

    marker = local_data_dir() / ".tongban-principals"
    if marker.exists():
        marker.write_text(hashlib.sha256(admin_secret.encode()).hexdigest()[:16] + "\n")
