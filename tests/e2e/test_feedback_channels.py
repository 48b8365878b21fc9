"""好差评 from every channel over the real broker, with two feedback instances in the group:

- the hall, the portal, the mobile apps and the websites each write their own topic as their
  own principal, and no other channel's (ACLs from infra/topics.toml);
- feedback counts every rating once, whichever instance owns its partition, and refuses a
  second online rating of one application given on another channel (一事一评), with the reason;
- decisions per party (ApplicationRouted + ApplicationDecided) and SLA breaches give the
  breach rate: counted facts, the faust app's flag, the report's figure.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
from collections import Counter
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from devtools import report
from devtools.launcher import ROOT, Stack
from sim import raters
from tests.support import KAFKA, KAFKA_ACLS, REGISTRY, Sink
from tongban import topics
from tongban.config import load_settings
from tongban.events import encode_event, now_utc

NOW = now_utc()
FACT = topics.SUPERVISION_FACT_EVENT
DLQ = topics.dlq("tongban-feedback")


@pytest.fixture(scope="module")
def stack(namespace):
    stack = Stack({"TONGBAN_NAMESPACE": namespace, "TONGBAN_SESSION_TIMEOUT_MS": "6000",
                   "TONGBAN_LOG_LEVEL": "INFO"}, ROOT / "var" / "test" / namespace.rstrip("-"))
    second = stack.add_instance("feedback", 2)
    stack.start("feedback")
    stack.start(second)
    stack.start("feedback.windows")
    try:
        asyncio.run(stack.wait_healthy(("feedback", second)))
        yield stack
    finally:
        stack.stop_all()


def channel_settings(namespace: str):
    return load_settings("sim-raters", {**os.environ, "TONGBAN_NAMESPACE": namespace})


@pytest.mark.skipif(not KAFKA_ACLS, reason="a broker without authentication has no ACLs to check")
async def test_a_channel_writes_its_own_topic_and_no_other(stack, namespace):
    settings = channel_settings(namespace).as_principal(raters.principal("hall"))
    rating = raters.Rating(f"R-{secrets.token_hex(3)}", None, "KSTB-MKT-01", "430102", "430000", 1, "hall")
    _, key, value = raters.rating_record(REGISTRY, rating, NOW)
    producer = AIOKafkaProducer(**settings.kafka_client_options(), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic(topics.FEEDBACK_RATINGS_HALL), key=key.encode(), value=value)
        with pytest.raises(KafkaError, match="TopicAuthorizationFailed"):
            await producer.send_and_wait(settings.topic(topics.FEEDBACK_RATINGS_PORTAL), key=key.encode(),
                                         value=value)
    finally:
        await producer.stop()


async def test_every_channels_ratings_are_counted_once_and_a_second_online_rating_is_refused(stack, namespace):
    ratings = raters.demo_ratings(24, random.Random(secrets.randbits(32)))
    first, again = ratings[0], ratings[-1]  # the demo's one rater who rates again on another online channel
    ids = {r.rating_id for r in ratings}
    async with Sink(namespace, [topics.FEEDBACK_FACTS, DLQ]) as sink:
        written = await raters.publish(channel_settings(namespace),
                                       [raters.rating_record(REGISTRY, r, NOW) for r in ratings])
        assert written == len(ratings)

        def done(seen) -> bool:
            counted = {f["fact_id"] for f in seen.events(FACT) if f["fact_id"] in ids}
            return len(counted) == len(ratings) - 1 and any(r.topic.endswith(DLQ) for r in seen.records)

        seen = await sink.wait_for(done, within=90)
        await sink.poll(3)  # what a second count would have written by now
    facts = [f for f in seen.events(FACT) if f["fact_id"] in ids]
    assert [i for i, n in Counter(f["fact_id"] for f in facts).items() if n > 1] == [], "counted twice"
    assert len({f["envelope"]["event_id"] for f in facts}) == len(facts), "an event on the wire twice"
    refused = {first.rating_id, again.rating_id} - {f["fact_id"] for f in facts}
    assert len(refused) == 1, "one of the two online ratings of the application holds the slot"
    [dead] = [r for r in seen.records if r.topic.endswith(DLQ)]
    reason = dict(dead.headers)["tongban.dlq.error.message"].decode()
    assert reason.startswith(f"一事一评: this matter was already rated for application {first.application_id}")
    assert {f["_topic"] for f in facts} == {topics.FEEDBACK_FACTS}
    by_channel = {r.rating_id: r.channel for r in ratings}
    assert {by_channel[f["fact_id"]] for f in facts} == set(raters.CHANNELS), "every channel counted"
    proxy = {f["rated_role"]: f["_key"] for f in facts if "-proxy-" in f["fact_id"]}
    assert proxy == {"RECEIVING": "KSTB-SOC-02|430102|430102", "DECIDING": "KSTB-SOC-02|420100|420000"}


def lifecycle(matter: str, application: str, decided_at) -> list[tuple[str, str, bytes]]:
    routed = {"application_id": application, "matter_code": matter, "mode": "PROXY", "deciding_partner": "420000",
              "deciding_division": "420100", "legs": [{"partner_id": "420000", "division_code": "420100",
                                                       "step": "DECIDE", "working_days": 15}],
              "promised_working_days": 15, "due_at": decided_at}
    decided = {"application_id": application, "deciding_partner": "420000", "outcome": "APPROVED",
               "result_reference": None, "reason": None, "decided_at": decided_at}
    return [(topics.APPLICATION_ROUTED, application, encode_event(
                REGISTRY, topics.APPLICATION_ROUTED_EVENT, routed, cause_id=f"routed-{application}",
                correlation_id=application, source_system="test")[1]),
            (topics.APPLICATION_DECIDED, application, encode_event(
                REGISTRY, topics.APPLICATION_DECIDED_EVENT, decided, cause_id=f"decided-{application}",
                correlation_id=application, source_system="test")[1])]


def breach(matter: str, application: str) -> tuple[str, str, bytes]:
    body = {"application_id": application, "matter_code": matter, "party": "420000", "leg": "DECISION",
            "step": "DECIDE", "deadline": NOW - timedelta(hours=1), "consequence": ""}
    return topics.SLA_BREACHED, application, encode_event(REGISTRY, topics.SLA_BREACHED_EVENT, body,
                                                          cause_id=f"breach-{application}", correlation_id=application,
                                                          source_system="test")[1]


async def send(namespace: str, records: list[tuple[str, str, bytes]]) -> None:
    producer = AIOKafkaProducer(**KAFKA, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(namespace + topic, key=key.encode(), value=value)
    finally:
        await producer.stop()


async def test_breaches_per_decision_flag_the_party_and_show_in_the_report(stack, namespace):
    matter = f"M-{secrets.token_hex(3)}"
    group = f"{matter}|420000|420000"  # a partner's breaches and decisions count in its own division
    applications = [f"A{n}-{matter}" for n in range(5)]
    async with Sink(namespace, [topics.FEEDBACK_FACTS, topics.FEEDBACK_FLAGS]) as sink:
        await send(namespace, [r for a in applications for r in lifecycle(matter, a, NOW)])
        await send(namespace, [breach(matter, applications[0]), breach(matter, applications[0])])  # resent: once
        seen = await sink.wait_for(lambda s: [f for f in s.events(topics.MATTER_FLAGGED_EVENT)
                                              if f["matter_code"] == matter and f["rule"] == "sla-breach-rate"],
                                   within=90)
    facts = [f for f in seen.events(FACT) if f["matter_code"] == matter]
    assert sorted((f["_key"], f["kind"], f["fact_id"]) for f in facts) == sorted(
        [(group, "DECISION", f"decided|{a}") for a in applications]
        + [(group, "SLA_BREACH", f"{applications[0]}|DECISION|DECIDE")])
    flagged = [f for f in seen.events(topics.MATTER_FLAGGED_EVENT) if f["matter_code"] == matter]
    assert {(f["division_code"], f["party"], f["window"]) for f in flagged} == {
        ("420000", "420000", "7d"), ("420000", "420000", "30d-hop7d")}
    assert all("sla_breach_rate 0.2 >= 0.2" in f["reason"] for f in flagged)
    built = await report.build(namespace)
    [row] = [r for r in built.breach_rates if r["matter_code"] == matter]
    assert (row["division_code"], row["party"], row["sla_breaches"], row["decided"], row["rate"]) == (
        "420000", "420000", 1, 5, 0.2)
