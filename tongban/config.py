"""Settings from environment variables, read once at start and checked up front."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tongban import paths, topics
from tongban.pii import Keyring, PiiCipher
from tongban.pii_policy import load_keyring

# Where TONGBAN_CRASH_POINT may kill a service: after the handlers ran but before anything
# was produced, after producing inside the open transaction, and while restoring state.
CRASH_POINTS = ("after_handler", "after_produce", "during_restore")
STATE_STORES = ("rocksdb", "memory")
SERVICE_PORTS = {"intake": 50051, "routing": 50052, "verification": 50053, "delivery": 50054, "feedback": 50055}
_NAMESPACE = re.compile(r"^[a-z0-9-]*$")
ROOT = Path(__file__).resolve().parents[1]
VAR = paths.var_dir()
# Kafka security: the first is the default. SASL_* authenticate with SCRAM-SHA-512.
KAFKA_SECURITY = ("SASL_PLAINTEXT", "SASL_SSL", "PLAINTEXT")  # PLAINTEXT: an external cluster without logins
# Every Kafka principal's secret, one `name=secret` a line: made by `make setup` (mode 600,
# git-ignored), read by every process for its own identity (tongban.ops.principals).
DEFAULT_KAFKA_SECRETS_FILE = VAR / "kafka" / "principals.secrets"
LOCAL_KAFKA_CAFILE = VAR / "kafka" / "tls" / "ca.pem"  # operator tools' default CA (SASL_SSL)
KAFKA_ADMIN = "admin"  # the broker's own super user; operator tools (local_defaults) run as it


def kafka_principal(name: str) -> str:
    """The Kafka user a process runs as unless TONGBAN_KAFKA_USERNAME says otherwise:
    `tongban-<service>` for a service, `partner-<id>` for a partner system or feed."""
    return name if name.startswith(("partner-", "tongban-")) else f"tongban-{name}"


def read_kafka_secrets(path: Path) -> dict[str, str]:
    """principal -> secret from a secrets file; empty when the file does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, secret = line.split("=", 1)
            out[name.strip()] = secret.strip()
    return out


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    service: str
    kafka_bootstrap: str
    mongo_uri: str
    namespace: str
    crash_point: str | None
    log_level: str
    grpc_port: int
    session_timeout_ms: int
    kafka_security: str
    sasl_username: str | None
    sasl_password: str | None
    ssl_cafile: str | None
    trace_file: str | None
    pii_keys: Keyring  # this process's party keys and the current keys of those it seals for
    state_store: str = "rocksdb"
    state_dir: Path = VAR / "state"
    replay_horizon_days: int = 30
    kafka_secrets_file: Path = DEFAULT_KAFKA_SECRETS_FILE  # TONGBAN_KAFKA_SECRETS_FILE
    grpc_host: str = "127.0.0.1"  # TONGBAN_GRPC_HOST: the address the gRPC server listens on
    grpc_tls_dir: Path = VAR / "tls" / "grpc"  # TONGBAN_GRPC_TLS_DIR: CA, server and client certificates
    # TONGBAN_GRPC_MAX_CONCURRENT_RPCS: calls a service's gRPC server holds open at once (Watch
    # streams included); one more is refused with RESOURCE_EXHAUSTED at once, for the caller to
    # retry, instead of waiting in memory (each open Submit holds ~60 KB until its commit).
    grpc_max_concurrent_rpcs: int = 512
    # TONGBAN_SLA_CLOCK_AHEAD_DAYS: the SLA ledger's clock runs this many days ahead of the wall
    # clock, so deadlines fall due that much sooner (tests and demos; 0 in production).
    sla_clock_ahead_days: int = 0

    def pii_cipher(self) -> PiiCipher:
        return PiiCipher(self.pii_keys)

    def topic(self, name: str) -> str:
        return f"{self.namespace}{name}"

    def logical_topic(self, physical: str) -> str:
        return physical.removeprefix(self.namespace)

    @property
    def group(self) -> str:
        return f"{self.namespace}{self.group_name}"

    @property
    def database(self) -> str:
        return f"{self.namespace.replace('-', '_')}tongban_{self.service}"

    @property
    def group_name(self) -> str:
        """The consumer group without the namespace, as topics.toml names it."""
        return f"tongban-{self.service}"

    @property
    def dlq_topic(self) -> str:
        return self.topic(topics.dlq(self.group_name))

    @property
    def retry_topic(self) -> str:
        return self.topic(topics.retry(self.group_name))

    @property
    def changelog_topic(self) -> str:
        return self.topic(topics.changelog(self.group_name))

    @property
    def commands_topic(self) -> str:
        return self.topic(topics.commands(self.group_name))

    @property
    def repartition_topic(self) -> str:
        return self.topic(topics.repartition(self.group_name))

    def kafka_client_options(self) -> dict:
        """Bootstrap and security options shared by every aiokafka client of this process.
        Raises ConfigError when SASL is on and this identity has no secret."""
        if self.kafka_security == "PLAINTEXT":
            return {"bootstrap_servers": self.kafka_bootstrap}
        if not (self.sasl_username and self.sasl_password):
            raise ConfigError(
                f"no Kafka secret for principal {self.sasl_username!r}: set TONGBAN_KAFKA_USERNAME and "
                f"TONGBAN_KAFKA_PASSWORD, or list it in {self.kafka_secrets_file} (TONGBAN_KAFKA_SECRETS_FILE; "
                "make setup creates the local one)")
        options: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap,
            "security_protocol": self.kafka_security,
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": self.sasl_password,
        }
        if self.kafka_security == "SASL_SSL":
            import ssl

            options["ssl_context"] = ssl.create_default_context(cafile=self.ssl_cafile)
        return options

    def as_principal(self, principal: str) -> Settings:
        """The same settings under another Kafka identity, its secret from the secrets file
        (the partner simulator connects each partner as that partner)."""
        return replace(self, sasl_username=principal,
                       sasl_password=read_kafka_secrets(self.kafka_secrets_file).get(principal))


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def _at_least_one(env: dict[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")
    return value


def _choice(env: dict[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or choices[0]
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _pii_keys(service: str, env: dict[str, str]) -> Keyring:
    """The process's personal-data keyring (tongban.pii_policy): its party's keys from
    TONGBAN_PII_KEYS, TONGBAN_PII_KEY_FILE or var/pii/<party>.keys (made by `make setup`), and
    the current keys of the parties it seals for. Routing holds its own, for its command topic; feedback none."""
    try:
        return load_keyring(service, env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _grpc_host(env: dict[str, str]) -> str:
    """TONGBAN_GRPC_HOST: loopback unless told otherwise (an address or a name, no port)."""
    host = env.get("TONGBAN_GRPC_HOST") or "127.0.0.1"
    if not re.match(r"^(\[[0-9a-fA-F:.]+\]|[0-9a-fA-F:.]+|[A-Za-z0-9.-]+)$", host) or host.count(":") == 1:
        raise ConfigError(f"TONGBAN_GRPC_HOST must be a host name or an IP address without a port, got {host!r}")
    return host


def load_settings(service: str, env: dict[str, str] | None = None, *, local_defaults: bool = False) -> Settings:
    """Read and check the TONGBAN_* variables. The Kafka identity is TONGBAN_KAFKA_USERNAME /
    _PASSWORD, else the process's own principal (`kafka_principal(service)`) with its secret
    from the secrets file; `local_defaults` (operator tools only) makes it the broker's
    `admin` and the CA the local one."""
    env = dict(os.environ if env is None else env)
    namespace = env.get("TONGBAN_NAMESPACE", "")
    if not _NAMESPACE.match(namespace):
        raise ConfigError("TONGBAN_NAMESPACE may hold only lowercase letters, digits and '-'")
    crash_point = env.get("TONGBAN_CRASH_POINT") or None
    if crash_point is not None and crash_point not in CRASH_POINTS:
        raise ConfigError(f"TONGBAN_CRASH_POINT must be one of {', '.join(CRASH_POINTS)}, got {crash_point!r}")
    security = (env.get("TONGBAN_KAFKA_SECURITY") or KAFKA_SECURITY[0]).upper()
    if security not in KAFKA_SECURITY:
        raise ConfigError(f"TONGBAN_KAFKA_SECURITY must be one of {', '.join(KAFKA_SECURITY)}, got {security!r}")
    secrets_file = Path(env.get("TONGBAN_KAFKA_SECRETS_FILE") or DEFAULT_KAFKA_SECRETS_FILE)
    username = env.get("TONGBAN_KAFKA_USERNAME") or (KAFKA_ADMIN if local_defaults else kafka_principal(service))
    password = env.get("TONGBAN_KAFKA_PASSWORD") or None
    if security != "PLAINTEXT" and password is None:
        password = read_kafka_secrets(secrets_file).get(username)  # None: kafka_client_options() refuses
    cafile = env.get("TONGBAN_KAFKA_CAFILE") or (str(LOCAL_KAFKA_CAFILE) if local_defaults else None)
    return Settings(
        service=service,
        kafka_bootstrap=env.get("TONGBAN_KAFKA_BOOTSTRAP")
        or ("127.0.0.1:19094" if security == "SASL_SSL" else "127.0.0.1:19092"),
        mongo_uri=env.get("TONGBAN_MONGO_URI", "mongodb://127.0.0.1:27217/"),
        namespace=namespace,
        crash_point=crash_point,
        log_level=env.get("TONGBAN_LOG_LEVEL", "INFO").upper(),
        grpc_port=_int(env, f"TONGBAN_GRPC_PORT_{service.upper()}", SERVICE_PORTS.get(service, 0)),
        session_timeout_ms=_int(env, "TONGBAN_SESSION_TIMEOUT_MS", 10000),
        kafka_security=security,
        sasl_username=username,
        sasl_password=password,
        ssl_cafile=cafile,
        trace_file=env.get("TONGBAN_TRACE_FILE") or None,
        pii_keys=_pii_keys(service, env),
        state_store=_choice(env, "TONGBAN_STATE_STORE", STATE_STORES),
        state_dir=Path(env.get("TONGBAN_STATE_DIR") or VAR / "state"),
        replay_horizon_days=_int(env, "TONGBAN_REPLAY_HORIZON_DAYS", 30),
        kafka_secrets_file=secrets_file,
        grpc_host=_grpc_host(env),
        grpc_tls_dir=Path(env.get("TONGBAN_GRPC_TLS_DIR") or VAR / "tls" / "grpc"),
        grpc_max_concurrent_rpcs=_at_least_one(env, "TONGBAN_GRPC_MAX_CONCURRENT_RPCS", 512),
        sla_clock_ahead_days=_int(env, "TONGBAN_SLA_CLOCK_AHEAD_DAYS", 0),
    )
