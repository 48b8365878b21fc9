"""Partners' submissions: applications received at a partner province's windows arrive on
`tongban.partner.<P>.submissions` (PartnerSubmission, keyed by the partner's submission id)
and go through the same formal checks as a gRPC Submit.

A thin adapter, like the gRPC servicer: it reads the partners' topics and hands each
submission to intake's handlers as a command (`runtime.submit`). A valid one is recorded
(PARTNER_SUBMIT) and numbered (NUMBER), and the partner learns its application number on
`tongban.partner.<P>.acknowledgements` (SubmissionReceived); an invalid one is refused there
with every problem (PARTNER_REFUSE → SubmissionRefused); a resend under the same id is a
duplicate, one with another payload is refused naming what differs. Nothing is dropped
silently: a record that is not a readable PartnerSubmission has no submission id to answer,
so it goes to the reader's dead-letter topic with its reason (and the partner, hearing nothing,
resends).

The partner is the topic's one writer (its ACL), so the topic names the partner; the
envelope's own claim is not used. Personal fields are sealed by the partner for itself
(a partner holds only its own key); intake opens them with the partner's key, as delivery
holds it to seal assignments (tongban/pii_policy.py).

The reader has its own principal, consumer group and dead-letter topic
(`tongban-intake-partners`, declared in infra/topics.toml) and commits a batch once every
record of it is handed over or dead-lettered: at least once. Command ids derive from the
partner's record (its event id), so a batch read again after a crash is a duplicate the
owner drops.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

from aiokafka.errors import KafkaError

from services.intake import domain, handlers
from tongban import bus, telemetry, topics
from tongban.codec import CodecError, MalformedRecord, SchemaRegistry, UnknownSchema
from tongban.config import Settings
from tongban.events import now_utc
from tongban.ops.topics import load_declared
from tongban.pii import PiiCipher, PiiError, open_record
from tongban.runtime.core import OutRecord, dead_letter_of

log = logging.getLogger(__name__)
RETRY_SECONDS = 5
READER = "intake-partners"  # the reader's own identity: principal and group tongban-intake-partners
_SUBMISSIONS = re.compile(r"^tongban\.partner\.([^.]+)\.submissions$")
UNREADABLE = ("applicant: the personal data cannot be opened with the partner's key "
              "(seal it for the partner itself, bound to this record)")


def reader_settings(settings: Settings) -> Settings:
    """Intake's settings as the reader: its own principal, consumer group, dead-letter topic."""
    return replace(settings, service=READER).as_principal(f"tongban-{READER}")


def submitters() -> list[str]:
    """Partners with a declared submissions stream (infra/topics.toml)."""
    return [m.group(1) for spec in load_declared("") if (m := _SUBMISSIONS.match(spec.declared_name))]


class Commands(Protocol):
    async def submit(self, command_type: str, key: str, command_id: str, payload: dict) -> None: ...


class NotASubmission(MalformedRecord):
    """A record on a submissions topic that is not a readable PartnerSubmission."""


def received_body(application_id: str, partner: str, submission: dict[str, Any]) -> dict[str, Any]:
    """The ApplicationReceived body (without envelope and number) of a checked submission."""
    return {
        "application_id": application_id,
        "matter_code": submission["matter_code"],
        "channel": "PARTNER",
        "receiving_division": submission["receiving_division"],
        "home_division": submission["home_division"],
        "applicant": submission["applicant"],
        "materials": submission["materials"],
        "delivery_method": submission["delivery_method"],
        "postal_address": submission.get("postal_address"),
        "submitted_at": submission["submitted_at"],
        "window_id": submission.get("window_id") or "",
        "places": {},
        "bundle_id": "",
        "commitments": list(submission.get("commitments") or []),
        "deferred_materials": dict(submission.get("deferred_materials") or {}),
    }


def _submission(partner: str, submission: dict[str, Any]) -> domain.Submission:
    applicant, materials = submission["applicant"], submission["materials"]
    return domain.Submission(
        matter_code=submission["matter_code"], channel="PARTNER",
        receiving_division=submission["receiving_division"], home_division=submission["home_division"],
        applicant_kind=applicant["kind"], applicant_name=applicant["name"],
        applicant_id_number=applicant["id_number"], materials=tuple(m["code"] for m in materials),
        delivery_method=submission["delivery_method"], postal_address=submission.get("postal_address"),
        material_names=tuple(m["name"] for m in materials), applicant_phone=applicant.get("phone") or "",
        client_reference=submission["submission_id"], source_system=domain.partner_system(partner),
        window_id=submission.get("window_id") or "", provided=tuple(m["provided"] for m in materials),
        commitments=tuple(submission.get("commitments") or ()),
        deferred_materials=dict(submission.get("deferred_materials") or {}))


def compared_fields(submission: dict[str, Any]) -> dict[str, object]:
    """What makes two submissions under one id the same application (the API's names)."""
    applicant = submission["applicant"]
    return {
        "matter_code": submission["matter_code"], "receiving_division": submission["receiving_division"],
        "home_division": submission["home_division"], "applicant.kind": applicant["kind"],
        "applicant.name": applicant["name"], "applicant.id_number": applicant["id_number"],
        "applicant.phone": applicant.get("phone") or "",
        "materials": [(m["code"], m["name"], m["provided"], m["original_checked"]) for m in submission["materials"]],
        "delivery_method": submission["delivery_method"], "postal_address": submission.get("postal_address") or "",
        "window_id": submission.get("window_id") or "", "commitments": sorted(submission.get("commitments") or []),
        "deferred_materials": sorted((submission.get("deferred_materials") or {}).items()),
    }


class PartnerFeed:
    def __init__(self, runtime: Commands, registry: SchemaRegistry, openers: Mapping[str, PiiCipher],
                 catalogue: domain.Catalogue | None = None, windows: domain.WindowRegistry | None = None) -> None:
        self.runtime = runtime
        self.registry = registry
        self.openers = openers  # partner -> a cipher holding that partner's key
        self.catalogue = catalogue
        self.windows = windows

    async def handle(self, partner: str, envelope: dict[str, Any], submission: dict[str, Any]) -> None:
        """Hand one decoded PartnerSubmission over as a command."""
        submission_id = submission["submission_id"]
        application_id = domain.application_id_for(domain.partner_system(partner), submission_id)
        event_id = envelope["event_id"]
        problems = [p for p in (domain.too_long("submission_id", submission_id, domain.MAX_REFERENCE_LENGTH),
                                "submission_id is required" if not submission_id.strip() else None) if p]
        try:
            personal = open_record(self.registry, topics.PARTNER_SUBMISSION_EVENT,
                                   {"applicant": submission["applicant"],
                                    "postal_address": submission.get("postal_address")},
                                   self.openers[partner], envelope["correlation_id"])
            opened = {**submission, **personal}
        except PiiError:
            problems.append(UNREADABLE)
        if not problems:
            try:
                domain.check_submission(_submission(partner, opened), self.catalogue, self.windows)
            except domain.InvalidSubmission as exc:
                problems = exc.problems
        if problems:
            await self.runtime.submit(handlers.PARTNER_REFUSE, application_id, f"partner-refuse:{event_id}",
                                      {"partner": partner, "submission_id": submission_id, "problems": problems,
                                       "refused_at": now_utc()})
            return
        body = received_body(application_id, partner, opened)
        # Recorded first, then numbered: both commands of one submission id go to the same
        # partitions in this order, so the first payload recorded is the one numbered (a
        # later NUMBER under the same id is a duplicate).
        await self.runtime.submit(handlers.PARTNER_SUBMIT, application_id, f"partner-submit:{event_id}",
                                  {**body, "partner": partner, "submission_id": submission_id,
                                   "fingerprints": domain.fingerprints(application_id, compared_fields(opened))})
        # The partner is named in the published application's envelope (source_partner): the
        # topic it came on says who sent it, and only intake writes its own command topic.
        await self.runtime.submit(handlers.NUMBER, domain.numbering_key(application_id), f"number:{application_id}",
                                  {**body, "source_partner": partner})

    async def follow(self, settings: Settings) -> None:
        """Read every partner's submissions as they come, from where the group left off; runs until cancelled."""
        settings = reader_settings(settings)
        while True:
            try:
                await self._read(settings)
            except (KafkaError, OSError) as exc:
                telemetry.log(log, logging.WARNING, "partner submissions not readable; retrying",
                              error=type(exc).__name__)
                await asyncio.sleep(RETRY_SECONDS)

    async def _read(self, settings: Settings) -> None:
        wanted = [settings.topic(topics.partner_submissions(p)) for p in self.openers]
        consumer = bus.make_consumer(settings, wanted)
        producer = bus.make_producer(settings)
        await producer.start()
        try:
            await consumer.start()
            while True:
                batch = await consumer.getmany(timeout_ms=1000)
                for tp, records in batch.items():
                    partner = _SUBMISSIONS.match(settings.logical_topic(tp.topic))
                    assert partner is not None, "only submissions topics are subscribed"
                    for record in records:
                        if (dead := await self.hand_over(settings, partner.group(1), record)) is not None:
                            await producer.send_and_wait(dead.topic, value=dead.value, key=dead.key,
                                                         headers=dead.headers)
                if batch:
                    await consumer.commit()
        finally:
            await consumer.stop()
            await producer.stop()

    async def hand_over(self, settings: Settings, partner: str, record: Any) -> OutRecord | None:
        """Hand one record over; what is no readable submission comes back as its dead letter."""
        try:
            envelope, body = await self._decoded(settings, record)
        except NotASubmission as exc:
            return dead_letter_of(settings, record, exc)
        # The partner is the topic, which the broker lets that partner alone write; the
        # envelope's source_partner is the client's own claim, and one that disagrees is no
        # submission of that partner's.
        claimed = envelope.get("source_partner")
        if claimed is not None and claimed != partner:
            return dead_letter_of(settings, record, NotASubmission(
                f"the envelope names partner {claimed}, but the record came on partner {partner}'s topic"))
        await self.handle(partner, envelope, body)
        return None

    async def _decoded(self, settings: Settings, record: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        if record.value is None:
            raise NotASubmission("record has no value (tombstone) where a PartnerSubmission was expected")
        try:
            try:
                event_type, body = self.registry.decode(record.value)
            except UnknownSchema:  # a newer writer's schema not learned yet: learn, then try once more
                await bus.learn_schemas(settings, self.registry)
                event_type, body = self.registry.decode(record.value)
        except CodecError as exc:
            raise NotASubmission(f"not a readable Avro event ({type(exc).__name__})") from None
        if event_type != topics.PARTNER_SUBMISSION_EVENT:
            raise NotASubmission(f"{event_type} on a submissions topic; only {topics.PARTNER_SUBMISSION_EVENT} is")
        envelope = body.pop("envelope")
        if not isinstance(envelope, dict) or not envelope.get("event_id") or not envelope.get("correlation_id"):
            raise NotASubmission("the envelope has no event id or correlation id")
        return envelope, body
