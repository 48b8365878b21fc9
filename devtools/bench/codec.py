"""codec_ratio: the shared codec (tongban.codec.SchemaRegistry encode + decode) against bare
fastavro (schemaless_writer + schemaless_reader with the same parsed schema) on the same
records, one round trip per record."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import fastavro

from devtools.bench.common import CHAIN_EVENT, rounded
from devtools.bench.profiling import profile_call
from tongban.codec import SchemaRegistry

RECEIVED = "tongban.application.ApplicationReceived"


def _envelope(registry: SchemaRegistry, event_type: str, application_id: str) -> dict[str, Any]:
    return {"event_id": f"00000000-0000-5000-8000-{application_id[-12:]:0>12}", "event_type": event_type,
            "schema_version": registry.latest(event_type).version, "occurred_at": 1_764_000_000_000,
            "source_system": "intake", "source_partner": None, "correlation_id": application_id,
            "causation_id": None}


def received_records(registry: SchemaRegistry) -> list[dict[str, Any]]:
    """ApplicationReceived events as intake writes them, one per sample that passes the
    formal check (plain values: sealing personal data is the cipher's cost, not the codec's)."""
    from sim.samples import samples

    out = []
    for i, sample in enumerate(samples("bench-codec")):
        if sample.expected == "REJECTED_AT_INTAKE":
            continue
        application_id = f"TB{i:020d}"
        out.append({"envelope": _envelope(registry, RECEIVED, application_id),
                    **received_body(application_id, sample.request)})
    return out


def received_body(application_id: str, request: Any) -> dict[str, Any]:
    """The ApplicationReceived body intake builds from a SubmitRequest (the shape of
    services/intake/api.py received_body, without importing the service and its runtime)."""
    try:
        from services.intake.api import received_body as real
    except Exception:  # the service may not import while its runtime is being changed
        pass
    else:
        return real(application_id, request)
    return {
        "application_id": application_id, "matter_code": request.matter_code, "channel": request.channel,
        "receiving_division": request.receiving_division, "home_division": request.home_division,
        "applicant": {"kind": request.applicant.kind, "name": request.applicant.name,
                      "id_number": request.applicant.id_number, "phone": request.applicant.phone or None},
        "materials": [{"code": m.code, "name": m.name, "provided": m.provided,
                       "original_checked": m.original_checked} for m in request.materials],
        "delivery_method": request.delivery_method, "postal_address": request.postal_address or None,
        "submitted_at": datetime.now(UTC),
    }


def unroutable_records(registry: SchemaRegistry, count: int = 8) -> list[dict[str, Any]]:
    return [{"envelope": _envelope(registry, CHAIN_EVENT, f"TB{i:020d}"), "application_id": f"TB{i:020d}",
             "matter_code": "KSTB-XXX-99", "reason": "matter not in the catalogue"} for i in range(count)]


def _rate(work: Callable[[], None], per_call: int, seconds: float) -> float:
    """Calls of `work` per second over at least `seconds`, times `per_call` records."""
    calls = 0
    start = time.perf_counter()
    while True:
        work()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls * per_call / elapsed


def _measure(registry: SchemaRegistry, event_type: str, records: list[dict[str, Any]],
             seconds: float) -> dict[str, float | None]:
    parsed = registry.latest(event_type).parsed

    def codec_round_trip() -> None:
        for record in records:
            registry.decode(registry.encode(event_type, record))

    def bare_round_trip() -> None:
        for record in records:
            buffer = io.BytesIO()
            fastavro.schemaless_writer(buffer, parsed, record)
            fastavro.schemaless_reader(io.BytesIO(buffer.getvalue()), parsed, None)

    encoded = [registry.encode(event_type, r) for r in records]
    bodies = []
    for record in records:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, parsed, record)
        bodies.append(buffer.getvalue())

    def codec_encode() -> None:
        for record in records:
            registry.encode(event_type, record)

    def bare_encode() -> None:
        for record in records:
            fastavro.schemaless_writer(io.BytesIO(), parsed, record)

    def codec_decode() -> None:
        for data in encoded:
            registry.decode(data)

    def bare_decode() -> None:
        for body in bodies:
            fastavro.schemaless_reader(io.BytesIO(body), parsed, None)

    n = len(records)
    best: dict[str, float] = {}
    # Alternate the two sides and keep the best of three, so neither gets a warmer CPU.
    for _ in range(3):
        for name, work in (("codec", codec_round_trip), ("bare", bare_round_trip),
                           ("codec_encode", codec_encode), ("bare_encode", bare_encode),
                           ("codec_decode", codec_decode), ("bare_decode", bare_decode)):
            best[name] = max(best.get(name, 0.0), _rate(work, n, seconds / 3))
    return {
        "codec_round_trips_per_s": round(best["codec"]),
        "fastavro_round_trips_per_s": round(best["bare"]),
        "ratio": rounded(best["codec"] / best["bare"], 3),
        "encode_ratio": rounded(best["codec_encode"] / best["bare_encode"], 3),
        "decode_ratio": rounded(best["codec_decode"] / best["bare_decode"], 3),
        "encoded_bytes_avg": round(sum(len(e) for e in encoded) / n),
    }


def run(seconds: float, profile_to: str | None = None) -> dict[str, Any]:
    """Figures for ApplicationReceived (the headline codec_ratio) and the small chain event."""
    registry = SchemaRegistry.load()
    received = received_records(registry)
    small = unroutable_records(registry)
    result: dict[str, Any] = {
        "codec_ratio": None,
        "received": _measure(registry, RECEIVED, received, seconds),
        "unroutable": _measure(registry, CHAIN_EVENT, small, seconds / 2),
    }
    result["codec_ratio"] = result["received"]["ratio"]
    if profile_to:

        def work() -> None:
            for _ in range(300):
                for record in received:
                    registry.decode(registry.encode(RECEIVED, record))

        result["profile"] = profile_call(work, profile_to, "codec encode+decode of ApplicationReceived")
    return result
