"""Shared helpers of the benchmark: Kafka options, bench namespaces and their topics,
percentiles, logging and the output folder."""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import sys
import time
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "var" / "bench"
TOPICS_FILE = ROOT / "infra" / "topics.toml"
PARTITIONS = 3
HOPS = 5
# A small event for the chains: the records travel unchanged (raw, faust) or are decoded
# and re-encoded with a new envelope (runtime).
CHAIN_EVENT = "tongban.application.ApplicationUnroutable"


def say(text: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] bench: {text}", file=sys.stderr, flush=True)


def kafka_options() -> dict[str, Any]:
    """aiokafka client options from the TONGBAN_KAFKA_* environment: the bench's own clients
    run as an operator tool does (the broker's `admin` on the local broker)."""
    from tongban.ops.topics import kafka_client_settings

    return kafka_client_settings()


def kafka_identity_env() -> dict[str, str]:
    """The same identity as TONGBAN_KAFKA_* variables, for the chains' hops (runtime hops
    would otherwise log in as `tongban-bench<i>`, a principal nobody declared)."""
    options = kafka_options()
    if "sasl_plain_username" not in options:
        return {}
    return {"TONGBAN_KAFKA_USERNAME": options["sasl_plain_username"],
            "TONGBAN_KAFKA_PASSWORD": options["sasl_plain_password"]}


def authenticating_broker() -> bool:
    """An authenticating broker has ACLs: a namespace's services need theirs applied."""
    return "sasl_mechanism" in kafka_options()


def new_prefix() -> str:
    """A fresh namespace for one bench step: `b<hex>-`."""
    return f"b{secrets.token_hex(3)}-"


def hop_topic(prefix: str, index: int) -> str:
    """Physical name of hop `index` (0 = the chain's input, 5 = its output)."""
    return f"{prefix}{logical_hop(index)}"


def logical_hop(index: int) -> str:
    return f"bench.hop{index}"


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int = PARTITIONS
    config: dict[str, str] = field(default_factory=dict)


def runtime_topics(prefix: str, services: Iterable[str]) -> list[Topic]:
    """The runtime's own topics for each service (every `[[group_stream]]` of
    infra/topics.toml with group `tongban-<service>`) plus the schema topic, namespaced."""
    with open(TOPICS_FILE, "rb") as fh:
        doc = tomllib.load(fh)
    defaults = {k: str(v) for k, v in doc.get("defaults", {}).get("config", {}).items()}
    out: list[Topic] = []
    for service in services:
        for entry in doc.get("group_stream", []):
            name = str(entry["name"]).replace("{group}", f"tongban-{service}")
            config = {**defaults, **{k: str(v) for k, v in entry.get("config", {}).items()}}
            out.append(Topic(prefix + name, PARTITIONS, config))
    for entry in doc.get("topic", []):
        if entry["name"] == "tongban.schemas":
            config = {**defaults, **{k: str(v) for k, v in entry.get("config", {}).items()}}
            out.append(Topic(prefix + entry["name"], int(entry.get("partitions", 1)), config))
    return out


async def create_topics(topics: Sequence[Topic], wait_s: float = 30.0) -> None:
    """Create the topics (an existing one is fine) and wait until each partition has a leader."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**kafka_options(), request_timeout_ms=30000)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(t.name, t.partitions, 1, topic_configs=dict(t.config)) for t in topics], timeout_ms=30000)
        errors = [f"{e[0]}: {e[1]}" for e in response.topic_errors if e[1] not in (0, 36)]
        if errors:
            raise RuntimeError("could not create bench topics: " + "; ".join(errors))
        deadline = time.monotonic() + wait_s
        pending = [t.name for t in topics]
        while pending:
            described = await admin.describe_topics(pending)
            ready = {d["topic"] for d in described if d["error_code"] == 0 and d["partitions"]
                     and all(p["leader"] >= 0 for p in d["partitions"])}
            pending = [n for n in pending if n not in ready]
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"bench topics without leaders: {pending}")
            if pending:
                await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def drop_namespace(prefix: str, databases: bool = False) -> None:
    """Delete every topic (and, if asked, every database and ACL) of a bench namespace."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**kafka_options(), request_timeout_ms=30000)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names, timeout_ms=30000)
    finally:
        await admin.close()
    if databases and authenticating_broker():
        from tongban.ops import acls

        await asyncio.to_thread(acls.drop, prefix)
    if databases:
        from pymongo import AsyncMongoClient

        client: AsyncMongoClient = AsyncMongoClient(
            os.environ.get("TONGBAN_MONGO_URI", "mongodb://127.0.0.1:27217/"), serverSelectionTimeoutMS=5000)
        try:
            for name in await client.list_database_names():
                if name.startswith(prefix.replace("-", "_")):
                    await client.drop_database(name)
        finally:
            await client.close()


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(values_s: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50/p95/p99 and max of durations given in seconds, in milliseconds."""

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 1)

    return {"count": len(values_s), "p50_ms": ms(percentile(values_s, 50)), "p95_ms": ms(percentile(values_s, 95)),
            "p99_ms": ms(percentile(values_s, 99)), "max_ms": ms(max(values_s) if values_s else None)}


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)
