"""Settings from environment variables, read once at start and checked up front."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from tongban.pii import PiiCipher, parse_keys

# Where TONGBAN_CRASH_POINT may kill a service: after the handlers ran but before anything
# was produced, after producing inside the open transaction, and while restoring state.
CRASH_POINTS = ("after_handler", "after_produce", "during_restore")
STATE_STORES = ("rocksdb", "memory")
SERVICE_PORTS = {"intake": 50051, "routing": 50052, "verification": 50053, "delivery": 50054, "feedback": 50055}
_NAMESPACE = re.compile(r"^[a-z0-9-]*$")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PII_KEY_FILE = ROOT / "var" / "pii.keys"
# What `make up` gives the local broker in SASL_SSL mode; operator tools fall back to these,
# services never do (they must be told their own identity).
LOCAL_SASL_SSL = {
    "TONGBAN_KAFKA_USERNAME": "tongban",
    "TONGBAN_KAFKA_PASSWORD": "tongban-secret",
    "TONGBAN_KAFKA_CAFILE": str(ROOT / "var" / "kafka" / "tls" / "ca.pem"),
}


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
    pii_keys: dict[str, bytes]
    state_store: str = "rocksdb"
    state_dir: Path = ROOT / "var" / "state"
    replay_horizon_days: int = 30

    def pii_cipher(self) -> PiiCipher:
        return PiiCipher(self.pii_keys)

    def topic(self, name: str) -> str:
        return f"{self.namespace}{name}"

    def logical_topic(self, physical: str) -> str:
        return physical.removeprefix(self.namespace)

    @property
    def group(self) -> str:
        return f"{self.namespace}tongban-{self.service}"

    @property
    def database(self) -> str:
        return f"{self.namespace.replace('-', '_')}tongban_{self.service}"

    @property
    def dlq_topic(self) -> str:
        return self.topic(f"tongban.dlq.tongban-{self.service}")

    @property
    def retry_topic(self) -> str:
        return self.topic(f"tongban.retry.tongban-{self.service}")

    @property
    def changelog_topic(self) -> str:
        return self.topic(f"tongban.changelog.tongban-{self.service}")

    @property
    def commands_topic(self) -> str:
        return self.topic(f"tongban.commands.tongban-{self.service}")

    @property
    def repartition_topic(self) -> str:
        return self.topic(f"tongban.repartition.tongban-{self.service}")

    def kafka_client_options(self) -> dict:
        """Bootstrap and security options shared by every aiokafka client of this process."""
        if self.kafka_security == "PLAINTEXT":
            return {"bootstrap_servers": self.kafka_bootstrap}
        import ssl

        context = ssl.create_default_context(cafile=self.ssl_cafile)
        return {
            "bootstrap_servers": self.kafka_bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": self.sasl_password,
            "ssl_context": context,
        }


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def _choice(env: dict[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or choices[0]
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _pii_keys(env: dict[str, str]) -> dict[str, bytes]:
    """TONGBAN_PII_KEYS, else the file TONGBAN_PII_KEY_FILE (default var/pii.keys, made by
    `make setup`)."""
    text = env.get("TONGBAN_PII_KEYS")
    source = "TONGBAN_PII_KEYS"
    if not text:
        path = Path(env.get("TONGBAN_PII_KEY_FILE") or DEFAULT_PII_KEY_FILE)
        source = str(path)
        try:
            text = path.read_text()
        except OSError:
            raise ConfigError(f"no personal-data key: set TONGBAN_PII_KEYS or create {path} (make setup)") from None
    try:
        return parse_keys(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_settings(service: str, env: dict[str, str] | None = None, *, local_defaults: bool = False) -> Settings:
    """Read and check the TONGBAN_* variables. `local_defaults` (operator tools only) fills
    in the local broker's SASL_SSL identity when none is given."""
    env = dict(os.environ if env is None else env)
    namespace = env.get("TONGBAN_NAMESPACE", "")
    if not _NAMESPACE.match(namespace):
        raise ConfigError("TONGBAN_NAMESPACE may hold only lowercase letters, digits and '-'")
    crash_point = env.get("TONGBAN_CRASH_POINT") or None
    if crash_point is not None and crash_point not in CRASH_POINTS:
        raise ConfigError(f"TONGBAN_CRASH_POINT must be one of {', '.join(CRASH_POINTS)}, got {crash_point!r}")
    security = env.get("TONGBAN_KAFKA_SECURITY", "PLAINTEXT").upper()
    if security not in ("PLAINTEXT", "SASL_SSL"):
        raise ConfigError(f"TONGBAN_KAFKA_SECURITY must be PLAINTEXT or SASL_SSL, got {security!r}")
    if security == "SASL_SSL" and local_defaults:
        env = {**LOCAL_SASL_SSL, **{k: v for k, v in env.items() if v}}
    username = env.get("TONGBAN_KAFKA_USERNAME") or None
    password = env.get("TONGBAN_KAFKA_PASSWORD") or None
    if security == "SASL_SSL" and not (username and password):
        raise ConfigError("TONGBAN_KAFKA_SECURITY=SASL_SSL needs TONGBAN_KAFKA_USERNAME and TONGBAN_KAFKA_PASSWORD")
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
        ssl_cafile=env.get("TONGBAN_KAFKA_CAFILE") or None,
        trace_file=env.get("TONGBAN_TRACE_FILE") or None,
        pii_keys=_pii_keys(env),
        state_store=_choice(env, "TONGBAN_STATE_STORE", STATE_STORES),
        state_dir=Path(env.get("TONGBAN_STATE_DIR") or ROOT / "var" / "state"),
        replay_horizon_days=_int(env, "TONGBAN_REPLAY_HORIZON_DAYS", 30),
    )
