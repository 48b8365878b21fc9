"""Reading records as an operator: decoded, personal data masked, and the clients to read them.

Every value an operator tool prints passes through `decode_masked`: a personal field shows as
``***`` whether it arrived sealed or not (``SchemaRegistry.mask``), so no command prints
personal data, whatever the topic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tongban.codec import CodecError, SchemaRegistry
from tongban.ops.topics import kafka_client_settings


@dataclass(frozen=True)
class Decoded:
    event_type: str | None  # None: the value does not decode (the reason is in `problem`)
    body: dict[str, Any] | None
    problem: str | None = None


def decode_masked(registry: SchemaRegistry, value: bytes | None) -> Decoded:
    if value is None:
        return Decoded(None, None, "no value (tombstone)")
    try:
        name, body = registry.decode(value)
    except CodecError as exc:  # our own messages: fingerprints and schema names, no field values
        return Decoded(None, None, str(exc))
    return Decoded(name, plain(registry.mask(name, body)))


def plain(value: Any) -> Any:
    """A decoded value as JSON-ready data (datetimes as ISO text, bytes as hex)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return value


def text(value: bytes | None) -> str | None:
    return value.decode("utf-8", "replace") if value is not None else None


def timestamp(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, default=str)


def consumer(bootstrap: str | None = None, **options: Any):
    """A read_committed consumer as the operator (the broker's `admin` unless told otherwise)."""
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(**kafka_client_settings(bootstrap), isolation_level="read_committed",
                            enable_auto_commit=False, **options)


async def partitions_of(topic: str, bootstrap: str | None = None) -> list:
    """The topic's partitions; LookupError if it does not exist."""
    from aiokafka import TopicPartition

    from tongban.ops.topics import _admin

    admin = _admin(bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    found = [t for t in described if t["topic"] == topic and t["error_code"] == 0 and t["partitions"]]
    if not found:
        raise LookupError(f"topic {topic} does not exist")
    return [TopicPartition(topic, p["partition"]) for p in sorted(found[0]["partitions"], key=lambda p: p["partition"])]


async def read_to_end(names: list[str], bootstrap: str | None = None) -> list:
    """Every committed record of the topics `names` (physical names) there is now, from the
    oldest kept; partitions are read up to the end offsets seen at the start."""
    tps = [tp for name in names for tp in await partitions_of(name, bootstrap)]
    client = consumer(bootstrap, group_id=None)
    await client.start()
    try:
        client.assign(tps)
        await client.seek_to_beginning(*tps)
        ends = await client.end_offsets(tps)
        out: list = []
        while any([await client.position(tp) < end for tp, end in ends.items()]):
            for tp, records in (await client.getmany(*tps, timeout_ms=500)).items():
                out += [r for r in records if r.offset < ends[tp]]
        return out
    finally:
        await client.stop()
