"""Client quotas per principal from infra/topics.toml [quotas], planned and applied.

    python -m tongban.ops quotas plan|apply

Kafka throttles a user above its `producer_byte_rate` / `consumer_byte_rate` (bytes per
second, averaged over `quota.window.num` x `quota.window.size.seconds`, 11 x 1 s by default):
the broker delays its responses and mutes the connection for the throttle time, so the
flooding client slows down and nobody else does.

Neither confluent-kafka (librdkafka has no client-quota admin calls) nor aiokafka's admin
client can set client quotas, so this speaks Kafka's own DescribeClientQuotas (key 48) and
AlterClientQuotas (key 49), version 0 of both, over an aiokafka connection; Kafka 4.1.1
answers both (checked by tests/integration/test_quotas.py). Quotas are cluster-wide (per
user, not per namespace). Managed: the user quotas of Tongban's principals (User:tongban-*,
User:partner-*); a quota on such a user that is no longer declared is removed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Float64, Int8, Int16, Int32, Schema, String

from tongban.config import Settings
from tongban.ops.kafka_admin import ops_settings
from tongban.ops.principals import MANAGED, declared
from tongban.ops.topics import load_document

KEYS = ("producer_byte_rate", "consumer_byte_rate", "request_percentage")
MATCH_EXACT, MATCH_DEFAULT, MATCH_ANY = 0, 1, 2


# ------------------------------------------------------------------------------ protocol


class DescribeClientQuotasResponse_v0(Response):
    API_KEY = 48
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", String("utf-8")),
        ("entries", Array(
            ("entity", Array(("entity_type", String("utf-8")), ("entity_name", String("utf-8")))),
            ("values", Array(("key", String("utf-8")), ("value", Float64))),
        )),
    )


class DescribeClientQuotasRequest_v0(RequestStruct):
    API_KEY = 48
    API_VERSION = 0
    RESPONSE_TYPE = DescribeClientQuotasResponse_v0
    SCHEMA = Schema(
        ("components", Array(("entity_type", String("utf-8")), ("match_type", Int8), ("match", String("utf-8")))),
        ("strict", Boolean),
    )


class DescribeClientQuotasRequest(Request[DescribeClientQuotasRequest_v0]):
    API_KEY = 48

    def __init__(self, components: list[tuple[str, int, str | None]], strict: bool) -> None:
        self._components = components
        self._strict = strict

    def build(self, request_struct_class: type[DescribeClientQuotasRequest_v0]) -> DescribeClientQuotasRequest_v0:
        return request_struct_class(self._components, self._strict)


class AlterClientQuotasResponse_v0(Response):
    API_KEY = 49
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("entries", Array(
            ("error_code", Int16),
            ("error_message", String("utf-8")),
            ("entity", Array(("entity_type", String("utf-8")), ("entity_name", String("utf-8")))),
        )),
    )


class AlterClientQuotasRequest_v0(RequestStruct):
    API_KEY = 49
    API_VERSION = 0
    RESPONSE_TYPE = AlterClientQuotasResponse_v0
    SCHEMA = Schema(
        ("entries", Array(
            ("entity", Array(("entity_type", String("utf-8")), ("entity_name", String("utf-8")))),
            ("ops", Array(("key", String("utf-8")), ("value", Float64), ("remove", Boolean))),
        )),
        ("validate_only", Boolean),
    )


class AlterClientQuotasRequest(Request[AlterClientQuotasRequest_v0]):
    API_KEY = 49

    def __init__(self, entries: list, validate_only: bool = False) -> None:
        self._entries = entries
        self._validate_only = validate_only

    def build(self, request_struct_class: type[AlterClientQuotasRequest_v0]) -> AlterClientQuotasRequest_v0:
        return request_struct_class(self._entries, self._validate_only)


# ------------------------------------------------------------------------------ declaration


@dataclass(frozen=True)
class QuotaChange:
    user: str
    key: str
    declared: float | None  # None: remove
    actual: float | None

    def __str__(self) -> str:
        if self.declared is None:
            return f"remove   user {self.user} {self.key} (was {number(self.actual)})"
        verb = "set     " if self.actual is None else "change  "
        was = "" if self.actual is None else f" (was {number(self.actual)})"
        return f"{verb} user {self.user} {self.key}={number(self.declared)}{was}"


def number(value: float | None) -> str:
    return "-" if value is None else (f"{value:.0f}" if float(value).is_integer() else f"{value:g}")


def generate(path: str | Path | None = None) -> dict[str, dict[str, float]]:
    """user -> quota key -> value, for every principal with a declared quota."""
    doc = load_document(path)
    quotas = doc.get("quotas", {})
    partners = {k: float(v) for k, v in quotas.get("partners", {}).items()}
    overrides = quotas.get("principal", {})
    names = {p.name for p in declared(path)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"[quotas.principal] names undeclared principals: {unknown}")
    out: dict[str, dict[str, float]] = {}
    for p in declared(path):
        values = dict(partners) if p.kind in ("partner", "feed") else {}
        if p.name in overrides:
            values = {k: float(v) for k, v in overrides[p.name].items()}
        bad = sorted(set(values) - set(KEYS))
        if bad:
            raise ValueError(f"quotas of {p.name}: unknown keys {bad} (known: {', '.join(KEYS)})")
        if values:
            out[p.name] = values
    return out


def compare(wanted: dict[str, dict[str, float]], actual: dict[str, dict[str, float]]) -> list[QuotaChange]:
    changes = []
    for user in sorted(set(wanted) | {u for u in actual if MANAGED.match(u)}):
        want, have = wanted.get(user, {}), actual.get(user, {})
        for key in sorted(set(want) | set(have)):
            if want.get(key) != have.get(key):
                changes.append(QuotaChange(user, key, want.get(key), have.get(key)))
    return changes


# ------------------------------------------------------------------------------ the broker


async def _send(settings: Settings, request):
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(client_id="tongban-ops-quotas", request_timeout_ms=30000,
                                **settings.kafka_client_options())
    await admin.start()
    try:
        return await admin._send_request(request)  # aiokafka has no public call for these
    finally:
        await admin.close()


async def describe(settings: Settings | None = None) -> dict[str, dict[str, float]]:
    """user -> quota key -> value, for every user entity with a quota (no client-id part)."""
    response = await _send(settings or ops_settings(), DescribeClientQuotasRequest([("user", MATCH_ANY, None)], True))
    if response.error_code:
        raise RuntimeError(f"DescribeClientQuotas: error {response.error_code} {response.error_message}")
    out: dict[str, dict[str, float]] = {}
    for entity, values in response.entries or []:
        if len(entity) == 1 and entity[0][0] == "user" and entity[0][1] is not None:
            out[entity[0][1]] = {key: value for key, value in values}
    return out


async def plan(settings: Settings | None = None, path: str | Path | None = None) -> list[QuotaChange]:
    return compare(generate(path), await describe(settings))


async def apply(settings: Settings | None = None, path: str | Path | None = None,
                settle_s: float = 10.0) -> list[QuotaChange]:
    """Set declared quotas, remove undeclared ones of managed users; returns the changes made
    once the broker shows them (so a plan right after finds nothing)."""
    settings = settings or ops_settings()
    changes = await plan(settings, path)
    by_user: dict[str, list] = {}
    for c in changes:
        by_user.setdefault(c.user, []).append((c.key, c.declared or 0.0, c.declared is None))
    if by_user:
        response = await _send(settings, AlterClientQuotasRequest(
            [([("user", user)], ops) for user, ops in by_user.items()]))
        errors = [f"{entity}: {code} {message}" for code, message, entity in response.entries if code]
        if errors:
            raise RuntimeError("AlterClientQuotas: " + "; ".join(errors))
        deadline = asyncio.get_running_loop().time() + settle_s
        # Polls the broker until it shows the changes: there is nothing local to await.
        while await plan(settings, path) and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    return changes

