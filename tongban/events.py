"""Envelopes and deterministic event ids, shared by the runtime and partner-side tools."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tongban.codec import SchemaRegistry
from tongban.pii import PiiCipher, PiiError, seal_record, unsealed_fields

EVENT_ID_NAMESPACE = uuid.UUID("5f1d1a52-4f0e-4a39-9a53-7d3c1a6c2b10")


_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes


def derive_event_id(cause_id: str, event_type: str, qualifier: str = "") -> str:
    """The same cause and type always give the same id, so a replay is recognisable.

    RFC 4122 version 5, exactly `str(uuid.uuid5(EVENT_ID_NAMESPACE, name))` (a unit test
    holds it to that), computed without building a `UUID`: the runtime derives one id per
    event it emits, and the object cost more than the hash."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{cause_id}|{event_type}|{qualifier}".encode()).digest())
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def now_utc() -> datetime:
    return datetime.now(UTC)


def millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def encode_event(
    registry: SchemaRegistry,
    event_type: str,
    payload: dict[str, Any],
    *,
    cause_id: str,
    correlation_id: str,
    source_system: str,
    source_partner: str | None = None,
    qualifier: str = "",
    cipher: PiiCipher | None = None,
    recipients: Sequence[str] = (),
    event_id: str | None = None,
) -> tuple[str, bytes]:
    """Wrap a payload in its envelope, seal its personal fields with `cipher` for
    `recipients` (the parties `tongban.pii_policy.recipients(topic)` names), bound to their
    path and to `correlation_id`, and encode it; returns (event id, framed bytes). The id
    derives from the cause unless given (a command carries its caller's id).

    Raises PiiError (naming fields, never values) rather than let a personal field travel in
    the clear: no cipher or recipients for an event that has one, or a value already sealed."""
    event_id = event_id or derive_event_id(cause_id, event_type, qualifier)
    envelope = {
        "event_id": event_id,
        "event_type": event_type,
        "schema_version": registry.latest(event_type).version,
        "occurred_at": millis(now_utc()),
        "source_system": source_system,
        "source_partner": source_partner,
        "correlation_id": correlation_id,
        "causation_id": cause_id,
    }
    record = {"envelope": envelope, **payload}
    if cipher is not None and recipients:
        record = seal_record(registry, event_type, record, cipher, recipients, subject=correlation_id)
    plaintext = unsealed_fields(registry, event_type, record)
    if plaintext:
        raise PiiError(f"{event_type}: personal field(s) {', '.join(plaintext)} would travel unsealed "
                       "(no cipher or no recipients for this topic)")
    return event_id, registry.encode(event_type, record)
