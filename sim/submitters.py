"""Simulated partners that submit: applications received at another province's windows, sent
as that partner (principal partner-<id>) on `tongban.partner.<id>.submissions`, sealed for the
partner itself, and the answers each partner reads back from its own
`tongban.partner.<id>.acknowledgements`: the application number (SubmissionReceived) or every
problem (SubmissionRefused).

    python -m sim.submitters        (devtools.demo runs it once)

Not part of `python -m sim`, which answers what Tongban sends: a partner that submits on its
own would add applications to every run of the stack, tests included.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sim.partners import identity_of
from sim.samples import resident_id, with_wrong_check_digit
from tongban import bus, pii_policy, topics
from tongban.codec import CodecError, SchemaRegistry
from tongban.config import Settings, load_settings
from tongban.events import encode_event, now_utc
from tongban.pii import PiiCipher

ANSWER_WITHIN = 90.0  # seconds a partner waits for its acknowledgements


@dataclass(frozen=True)
class Submission:
    partner: str
    title: str
    body: dict[str, Any]  # a PartnerSubmission payload, personal fields in the clear until sent


@dataclass(frozen=True)
class Acknowledgement:
    partner: str
    submission_id: str
    application_number: str = ""  # SubmissionReceived
    problems: tuple[str, ...] = ()  # SubmissionRefused


def _submission(partner: str, submission_id: str, received_in: str, name: str, id_number: str,
                submitted_at: datetime) -> dict[str, Any]:
    """跨省异地就医备案 received at a partner's window for an applicant insured in Changsha."""
    return {"submission_id": submission_id, "matter_code": "KSTB-MED-01", "receiving_division": received_in,
            "home_division": "430102",
            "applicant": {"kind": "PERSON", "name": name, "id_number": id_number, "phone": "13800000000"},
            "materials": [{"code": "RESIDENT_ID", "name": "居民身份证", "provided": True, "original_checked": True},
                          {"code": "RESIDENCE_PROOF", "name": "异地居住证明", "provided": True,
                           "original_checked": True}],
            "delivery_method": "ELECTRONIC", "postal_address": None, "submitted_at": submitted_at,
            "window_id": "", "commitments": [], "deferred_materials": {}}


def demo_submissions(run: str, submitted_at: datetime) -> list[Submission]:
    """Hubei and Guangdong each send one from their windows; Guangdong's second carries a
    resident ID whose check digit is wrong, which intake refuses on Guangdong's topic."""
    hubei = resident_id("420106", "19860412", "317")
    guangdong = resident_id("440106", "19910923", "258")
    return [
        Submission("420000", "跨省异地就医备案 at a Wuhan window", _submission(
            "420000", f"HB-{run}-1", "420106", "示例庚", hubei, submitted_at)),
        Submission("440000", "跨省异地就医备案 at a Guangzhou window", _submission(
            "440000", f"GD-{run}-1", "440106", "示例辛", guangdong, submitted_at)),
        Submission("440000", "the same with a wrong check digit", _submission(
            "440000", f"GD-{run}-2", "440106", "示例辛", with_wrong_check_digit(guangdong), submitted_at)),
    ]


def encoded(registry: SchemaRegistry, cipher: PiiCipher, submission: Submission) -> bytes:
    """As the partner writes it: sealed for itself, bound to its submission id."""
    _, value = encode_event(registry, topics.PARTNER_SUBMISSION_EVENT, submission.body,
                            cause_id=f"{submission.partner}|{submission.body['submission_id']}",
                            correlation_id=submission.body["submission_id"],
                            source_system=identity_of(submission.partner), source_partner=submission.partner,
                            cipher=cipher, recipients=pii_policy.recipients(
                                topics.partner_submissions(submission.partner)))
    return value


def acknowledgement(partner: str, event_type: str, body: dict[str, Any]) -> Acknowledgement | None:
    if event_type == topics.SUBMISSION_RECEIVED_EVENT:
        return Acknowledgement(partner, body["submission_id"], application_number=body["application_number"])
    if event_type == topics.SUBMISSION_REFUSED_EVENT:
        return Acknowledgement(partner, body["submission_id"], problems=tuple(body["problems"]))
    return None


async def exchange(settings: Settings, registry: SchemaRegistry, ciphers: Mapping[str, PiiCipher],
                   submissions: list[Submission], within: float = ANSWER_WITHIN) -> list[Acknowledgement]:
    """Each partner sends its submissions and reads its acknowledgements until every one is
    answered (or `within` passes); the answers, in the order of `submissions`."""
    partners = sorted({s.partner for s in submissions})
    heard = await asyncio.gather(*(
        _partner_exchange(settings, registry, ciphers[p], p, [s for s in submissions if s.partner == p], within)
        for p in partners))
    answers = {(a.partner, a.submission_id): a for acks in heard for a in acks}
    return [answers[key] for s in submissions if (key := (s.partner, s.body["submission_id"])) in answers]


async def _partner_exchange(settings: Settings, registry: SchemaRegistry, cipher: PiiCipher, partner: str,
                            mine: list[Submission], within: float) -> list[Acknowledgement]:
    identity = identity_of(partner)
    settings = settings.as_principal(identity)
    producer = bus.make_producer(settings, client_id=identity)
    # Its own group for the answers (partner-<id>-*), apart from the one answering assignments.
    consumer = bus.make_consumer(settings, [settings.topic(topics.partner_acknowledgements(partner))],
                                 group=settings.topic(f"{identity}-acknowledgements"))
    await producer.start()
    try:
        await bus.publish_schemas(producer, settings, registry)  # like every writer on the bus
        for submission in mine:
            await producer.send_and_wait(settings.topic(topics.partner_submissions(partner)),
                                         key=submission.body["submission_id"].encode(),
                                         value=encoded(registry, cipher, submission))
    finally:
        await producer.stop()
    waiting = {s.body["submission_id"] for s in mine}
    heard: list[Acknowledgement] = []
    await consumer.start()
    try:
        deadline = time.monotonic() + within
        while waiting and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    try:
                        event_type, body = registry.decode(record.value)
                    except CodecError:
                        continue  # not an answer this partner can read; a real partner would report it
                    answer = acknowledgement(partner, event_type, body)
                    if answer is not None and answer.submission_id in waiting:
                        waiting.discard(answer.submission_id)
                        heard.append(answer)
            if batch:
                await consumer.commit()
    finally:
        await consumer.stop()
    return heard


def describe(submission: Submission, answer: Acknowledgement | None) -> str:
    head = f"partner {submission.partner}: {submission.title} ({submission.body['submission_id']})"
    if answer is None:
        return f"{head}: no answer yet"
    if answer.application_number:
        return f"{head}: received as {answer.application_number}"
    return f"{head}: refused: {'; '.join(answer.problems)}"


async def feed_demo(env: Mapping[str, str] | None = None) -> list[str]:
    """The demo's partner submissions (TONGBAN_* environment): one line per submission and its answer."""
    settings = load_settings("partner-sim", dict(env) if env is not None else None)
    registry = SchemaRegistry.load()
    submissions = demo_submissions(secrets.token_hex(4), now_utc())
    ciphers = {p: PiiCipher(pii_policy.party_keyring(p, env)) for p in {s.partner for s in submissions}}
    answers = {(a.partner, a.submission_id): a for a in await exchange(settings, registry, ciphers, submissions)}
    return [describe(s, answers.get((s.partner, s.body["submission_id"]))) for s in submissions]


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    for line in asyncio.run(feed_demo()):
        print(line)


if __name__ == "__main__":
    main()
