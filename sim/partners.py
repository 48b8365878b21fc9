"""Simulated partner systems.

- An **authority** (another province, a city under a point-to-point agreement, or Hunan's own
  departments) reads `tongban.partner.<id>.assignments`, accepts (受理) and decides: it approves
  unless the matter is on its deny list (the demo's stand-in for a substantive review).
- The **carrier** (EMS) reads `tongban.partner.ems.dispatches` and reports delivery on
  `tongban.partner.ems.receipts`.
Replies derive their event ids from the record they answer, so a redelivered assignment gives
the same replies, which Tongban recognises as duplicates.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from opentelemetry import trace

from tongban import bus
from tongban.codec import CodecError, SchemaRegistry
from tongban.config import Settings
from tongban.events import encode_event, now_utc
from tongban.pii import PiiCipher, PiiError
from tongban.telemetry import extract_headers, inject_headers
from tongban.telemetry import log as log_fields

log = logging.getLogger(__name__)
tracer = trace.get_tracer("tongban.sim")


@dataclass(frozen=True)
class Reply:
    topic: str
    event_type: str
    payload: dict


Respond = Callable[[str, dict], list[Reply]]


def authority(partner_id: str, deny_matters: frozenset[str], cipher: PiiCipher) -> Respond:
    decisions = f"tongban.partner.{partner_id}.decisions"

    def respond(event_type: str, assigned: dict) -> list[Reply]:
        if event_type != "tongban.partner.MatterAssigned":
            return []
        base = {"assignment_id": assigned["assignment_id"], "application_id": assigned["application_id"]}
        try:
            # The authority looks the applicant up in its own records: it must be able to read
            # them, sealed for this partner and bound to this assignment's field.
            cipher.open(assigned["applicant"]["id_number"], record="tongban.partner.MatterAssigned",
                        path="applicant.id_number", subject=assigned["application_id"])
        except PiiError:
            refused = {**base, "outcome": "REFUSED", "reason": "申请人信息无法读取 (applicant data unreadable)",
                       "accepted_at": now_utc()}
            return [Reply(decisions, "tongban.partner.AuthorityAcceptance", refused)]
        accepted = {**base, "outcome": "ACCEPTED", "reason": None, "accepted_at": now_utc()}
        if assigned["matter_code"] in deny_matters:
            decided = {**base, "outcome": "DENIED", "result_reference": None,
                       "reason": "不符合法定条件 (simulated substantive review)", "decided_at": now_utc()}
        else:
            reference = "LIC-" + hashlib.sha256(assigned["assignment_id"].encode()).hexdigest()[:12].upper()
            decided = {**base, "outcome": "APPROVED", "result_reference": reference, "reason": None,
                       "decided_at": now_utc()}
        return [Reply(decisions, "tongban.partner.AuthorityAcceptance", accepted),
                Reply(decisions, "tongban.partner.AuthorityDecision", decided)]

    return respond


def carrier(cipher: PiiCipher, ledger: Path | None = None) -> Respond:
    """The carrier; `ledger` is its own record of every parcel it was handed (one JSON line
    per dispatch record received), the count an independent party keeps."""

    def respond(event_type: str, dispatch: dict) -> list[Reply]:
        if event_type != "tongban.delivery.PostalDispatch":
            return []
        if ledger is not None:
            with ledger.open("a", encoding="utf-8") as parcels:
                parcels.write(json.dumps({"dispatch_id": dispatch["dispatch_id"],
                                          "application_id": dispatch["application_id"]}) + "\n")
        try:  # the carrier must read the address to deliver
            cipher.open(dispatch["address"], record="tongban.delivery.PostalDispatch", path="address",
                        subject=dispatch["application_id"])
            status = "DELIVERED"
        except PiiError:
            status = "RETURNED"
        tracking = "EMS" + hashlib.sha256(dispatch["dispatch_id"].encode()).hexdigest()[:10].upper()
        receipt = {"dispatch_id": dispatch["dispatch_id"], "application_id": dispatch["application_id"],
                   "tracking_number": tracking, "status": status, "at": now_utc()}
        return [Reply("tongban.partner.ems.receipts", "tongban.delivery.PostalReceipt", receipt)]

    return respond


def identity_of(partner_id: str) -> str:
    """The partner's own client id, consumer group and source system on the bus."""
    return f"partner-{partner_id}"


async def run_partner(settings: Settings, registry: SchemaRegistry, partner_id: str, inbound: str,
                      respond: Respond, stopping: asyncio.Event) -> None:
    """Consume one partner's outbound topic and answer, committing after the answers are sent.
    The partner connects as its own Kafka principal (`partner-<id>`, its secret from the
    secrets file), so the broker's ACLs hold it to its own topics and group."""
    identity = identity_of(partner_id)
    settings = settings.as_principal(identity)
    cipher = settings.pii_cipher()
    producer: AIOKafkaProducer = bus.make_producer(settings, client_id=identity)
    consumer = bus.make_consumer(settings, [settings.topic(inbound)], group=settings.topic(identity))
    await producer.start()
    await bus.publish_schemas(producer, settings, registry)  # like every writer on the bus
    await consumer.start()
    try:
        while not stopping.is_set():
            batch = {}
            try:
                batch = await consumer.getmany(timeout_ms=500)
                sends = [await producer.send(settings.topic(reply.topic), key=record.key, value=value,
                                             headers=headers)
                         for record, reply, value, headers in _answers(registry, partner_id, respond, cipher,
                                                                       batch)]
                await asyncio.gather(*sends)
                if batch:
                    await consumer.commit()
            except KafkaError as exc:
                # A broker outage: answer the batch again once it is back (replies keep their ids).
                log_fields(log, logging.WARNING, "partner paused by a broker outage", partner=partner_id,
                           error=type(exc).__name__)
                if isinstance(exc, bus.PRODUCER_STATE_ERRORS):
                    producer = await bus.renewed(producer, settings, client_id=identity)
                bus.rewind(consumer, batch)
                await asyncio.sleep(1)
    finally:
        await consumer.stop()
        await producer.stop()


def _answers(registry: SchemaRegistry, partner_id: str, respond: Respond, cipher: PiiCipher, batch: dict):
    """(record, reply, encoded reply, trace headers) for every reply the batch calls for."""
    identity = identity_of(partner_id)
    for records in batch.values():
        for record in records:
            try:
                event_type, body = registry.decode(record.value)
            except CodecError as exc:
                log_fields(log, logging.WARNING, "partner could not read a record", partner=partner_id,
                           offset=record.offset, error=type(exc).__name__)
                continue
            envelope = body.pop("envelope")
            with tracer.start_as_current_span(f"{identity} {event_type.rsplit('.', 1)[-1]}",
                                              context=extract_headers(record.headers)):
                for reply in respond(event_type, body):
                    _, value = encode_event(
                        registry, reply.event_type, reply.payload, cause_id=envelope["event_id"],
                        correlation_id=envelope["correlation_id"], source_system=identity,
                        source_partner=partner_id, cipher=cipher)
                    yield record, reply, value, inject_headers()
