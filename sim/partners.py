"""Simulated partner systems.

- An **authority** (another province, a city under a point-to-point agreement, or Hunan's own
  departments) reads `tongban.partner.<id>.assignments`, accepts (受理) and decides: it approves
  unless the matter, or a joint matter's leg, is on its deny lists (the demo's stand-in for a
  substantive review). It
  answers a 补正 notice instead for the matters of its supplement list and a share of the
  rest (`Answers`), then accepts and decides once the materials come back
  (MaterialsSupplemented); it does not accept (不予受理, with the remedy) the matters of its
  refuse list; a cancelled assignment (AssignmentCancelled) gets no answer. Asked to check a
  告知承诺 (CommitmentCheckRequested), it finds the promise broken for the matters of its
  failed-commitment list and holding otherwise.
- The **carrier**, the **wallet** and the **windows**: sim/carrier.py.
Replies derive their event ids from the record they answer, so a redelivered assignment gives
the same replies, which Tongban recognises as duplicates.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from opentelemetry import trace

from services.delivery.channels.electronic import licence_id
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
    qualifier: str = ""  # tells apart several replies of one type to one record (a parcel's receipts)
    delay: float = 0.0  # seconds the partner takes before sending it


class PartnerFault(Exception):
    """The partner's own system failed mid-batch: it answers the batch again (sim/carrier.py)."""


Respond = Callable[[str, dict], list[Reply]]


@dataclass(frozen=True)
class Answers:
    """How the simulated authorities answer besides approving."""

    deny_matters: frozenset[str] = frozenset()
    supplement_matters: frozenset[str] = frozenset()  # always a 补正 notice first
    supplement_share: float = 0.0  # of the other assignments, chosen by assignment id (a redelivery answers alike)
    refuse_matters: frozenset[str] = frozenset()  # 不予受理
    broken_commitment_matters: frozenset[str] = frozenset()  # a 告知承诺 check fails
    deny_legs: frozenset[str] = frozenset()  # 多地联办: legs denied, as "<matter code>:<step>"

    def supplements(self, assigned: dict) -> bool:
        if assigned["matter_code"] in self.supplement_matters:
            return True
        draw = int(hashlib.sha256(assigned["assignment_id"].encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return draw < self.supplement_share


SUPPLEMENT_REASON = "材料不齐全或者不符合法定形式，请补正 (simulated)"
REFUSAL = ("申请事项依法不属于本机关职权范围 (simulated)",
           "请向有权机关申请；对本决定不服的，可依法申请行政复议或者提起行政诉讼 (simulated)")


def authority(partner_id: str, answers: Answers, cipher: PiiCipher) -> Respond:
    decisions = f"tongban.partner.{partner_id}.decisions"

    def accept_and_decide(base: dict, matter_code: str | None, step: str = "") -> list[Reply]:
        accepted = {**base, "outcome": "ACCEPTED", "reason": None, "accepted_at": now_utc()}
        if matter_code in answers.deny_matters or f"{matter_code}:{step}" in answers.deny_legs:
            decided = {**base, "outcome": "DENIED", "result_reference": None,
                       "reason": "不符合法定条件 (simulated substantive review)", "decided_at": now_utc()}
        else:
            # Signed into the authority's e-licence library under its own division.
            reference = licence_id(partner_id, hashlib.sha256(base["assignment_id"].encode()).hexdigest()[:12].upper())
            decided = {**base, "outcome": "APPROVED", "result_reference": reference, "reason": None,
                       "decided_at": now_utc()}
        return [Reply(decisions, "tongban.partner.AuthorityAcceptance", accepted),
                Reply(decisions, "tongban.partner.AuthorityDecision", decided)]

    def respond(event_type: str, assigned: dict) -> list[Reply]:
        if event_type == "tongban.application.MaterialsSupplemented":
            # The file is back complete; the supplement list never holds a denied matter.
            base = {"assignment_id": assigned["assignment_id"], "application_id": assigned["application_id"]}
            return accept_and_decide(base, None)
        if event_type == "tongban.partner.CommitmentCheckRequested":
            broken = assigned["matter_code"] in answers.broken_commitment_matters
            result = {"assignment_id": assigned["assignment_id"], "application_id": assigned["application_id"],
                      "passed": not broken, "checked_at": now_utc(),
                      "failed_commitments": {c: "承诺内容与实际情况不符 (simulated)" for c in assigned["commitments"]}
                      if broken else {},
                      "reason": "核查发现承诺不实，依法撤销 (simulated)" if broken else ""}
            return [Reply(decisions, "tongban.partner.CommitmentCheckResult", result)]
        if event_type != "tongban.partner.MatterAssigned":
            return []  # an AssignmentCancelled: the work simply stops
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
        if assigned["matter_code"] in answers.refuse_matters:
            reason, remedy = REFUSAL
            refused = {**base, "outcome": "REFUSED", "reason": reason, "remedy": remedy, "accepted_at": now_utc()}
            return [Reply(decisions, "tongban.partner.AuthorityAcceptance", refused)]
        if answers.supplements(assigned) and assigned["materials"]:
            # One notice listing everything it wants again (一次性告知): here, the last material.
            missing = {assigned["materials"][-1]["code"]: "复印件不清晰 (simulated)"}
            notice = {**base, "outcome": "SUPPLEMENT_REQUIRED", "reason": SUPPLEMENT_REASON,
                      "missing_materials": missing, "accepted_at": now_utc()}
            return [Reply(decisions, "tongban.partner.AuthorityAcceptance", notice)]
        # Each leg of a joint matter is its own assignment, answered alike (MatterAssigned v2 names the step).
        return accept_and_decide(base, assigned["matter_code"], assigned.get("step", ""))

    return respond


def identity_of(partner_id: str) -> str:
    """The partner's own client id, consumer group and source system on the bus."""
    return f"partner-{partner_id}"


async def run_partner(settings: Settings, registry: SchemaRegistry, partner_id: str, inbound: str,
                      respond: Respond, stopping: asyncio.Event, stream: str = "") -> None:
    """Consume one partner's outbound topic and answer, committing after the answers are sent.
    The partner connects as its own Kafka principal (`partner-<id>`, its secret from the
    secrets file), so the broker's ACLs hold it to its own topics and group. A partner reading
    a second topic names that `stream`: its group is `partner-<id>-<stream>`, so the two
    readers do not share one group's partitions."""
    identity = identity_of(partner_id)
    settings = settings.as_principal(identity)
    cipher = settings.pii_cipher()
    producer: AIOKafkaProducer = bus.make_producer(settings, client_id=identity)
    group = f"{identity}-{stream}" if stream else identity
    consumer = bus.make_consumer(settings, [settings.topic(inbound)], group=settings.topic(group))
    await producer.start()
    await bus.publish_schemas(producer, settings, registry)  # like every writer on the bus
    await consumer.start()
    try:
        while not stopping.is_set():
            batch = {}
            try:
                batch = await consumer.getmany(timeout_ms=500)
                sends = []
                for record, reply, value, headers in _answers(registry, partner_id, respond, cipher, batch):
                    if reply.delay:  # a partner that takes its time (the carrier: sim/carrier.py)
                        await asyncio.sleep(reply.delay)
                    sends.append(await producer.send(settings.topic(reply.topic), key=record.key, value=value,
                                                     headers=headers))
                await asyncio.gather(*sends)
                if batch:
                    await consumer.commit()
            except (KafkaError, PartnerFault) as exc:
                # A broker outage or its own failure: answer the batch again (replies keep their ids).
                log_fields(log, logging.WARNING, "partner paused by a broker outage or its own failure",
                           partner=partner_id, error=type(exc).__name__)
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
                        source_partner=partner_id, qualifier=reply.qualifier, cipher=cipher)
                    yield record, reply, value, inject_headers()
