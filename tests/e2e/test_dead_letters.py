"""Poison records on each service's input land in that group's dead-letter topic with their
origin and reason, and valid records keep flowing past them."""

import secrets

import pytest

from services.intake.api import received_body
from sim.samples import samples
from tests.support import REGISTRY, Sink, produce, submit, wait_terminal
from tongban.events import encode_event, now_utc

pytestmark = pytest.mark.integration

SERVICES_READING = {
    "tongban.application.received": ["routing", "verification", "delivery"],
    "tongban.application.routed": ["intake", "verification", "delivery"],
    "tongban.feedback.ratings": ["feedback"],
}
UNKNOWN_FINGERPRINT = bytes.fromhex("c301") + b"\x13\x37" * 4 + b"\x02\x04"


def header(record, name: str) -> str:
    return dict(record.headers)[name].decode()


def dead_letters(seen, namespace: str, service: str, value: bytes, origin: str | None = None) -> list:
    group = f"{namespace}tongban-{service}"
    return [r for r in seen.records
            if r.topic == f"{namespace}tongban.dlq.tongban-{service}" and r.value == value
            and header(r, "tongban.dlq.group") == group
            and (origin is None or header(r, "tongban.dlq.origin.topic") == namespace + origin)]


async def test_undecodable_records_are_dead_lettered_and_valid_ones_flow(stack, namespace):
    garbage = b"not an avro event " + secrets.token_hex(4).encode()
    for topic in SERVICES_READING:
        await produce(namespace, topic, b"poison", garbage, headers=[("x-origin", b"test")])
        await produce(namespace, topic, b"poison", UNKNOWN_FINGERPRINT)

    application_id = await submit(stack, samples(secrets.token_hex(4))[0].request)
    assert (await wait_terminal(stack, application_id)).stage == "DELIVERED"

    dlq_topics = [f"tongban.dlq.tongban-{s}" for s in ("intake", "routing", "verification", "delivery", "feedback")]
    expected = [(s, t) for t, services in SERVICES_READING.items() for s in services]
    async with Sink(namespace, dlq_topics) as sink:
        seen = await sink.wait_for(lambda seen: all(
            dead_letters(seen, namespace, s, garbage, t) and dead_letters(seen, namespace, s, UNKNOWN_FINGERPRINT, t)
            for s, t in expected))
    for service, topic in expected:
        record = dead_letters(seen, namespace, service, garbage, topic)[0]
        assert record.key == b"poison"
        assert header(record, "x-origin") == "test", "original headers are kept"
        assert int(header(record, "tongban.dlq.origin.offset")) >= 0
        assert header(record, "tongban.dlq.origin.partition").isdigit()
        assert header(record, "tongban.dlq.error.class") == "MalformedRecord"
        assert header(record, "tongban.dlq.error.message")
        unknown = dead_letters(seen, namespace, service, UNKNOWN_FINGERPRINT, topic)[0]
        assert header(unknown, "tongban.dlq.error.class") == "UnknownSchema"


async def test_content_that_breaks_a_rule_is_dead_lettered_with_its_reason(stack, namespace):
    # A decision from an authority the work was never assigned to: decision rights never move.
    application_id = "TBNOTASSIGNED" + secrets.token_hex(4).upper()
    decision = {"assignment_id": f"{application_id}:420000", "application_id": application_id,
                "outcome": "APPROVED", "result_reference": "LIC-FORGED", "reason": None, "decided_at": now_utc()}
    _, forged = encode_event(REGISTRY, "tongban.partner.AuthorityDecision", decision, cause_id="forged",
                             correlation_id=application_id, source_system="partner-420000", source_partner="420000")
    await produce(namespace, "tongban.partner.420000.decisions", application_id.encode(), forged)
    # A 好差评 level outside 1..5.
    rating = {"rating_id": "bad-level", "application_id": None, "matter_code": "KSTB-MED-01",
              "division_code": "430102", "party": "420000", "level": 9, "channel": "ONLINE",
              "comment": "张三 13800000000",
              "rated_at": now_utc()}
    _, bad_rating = encode_event(REGISTRY, "tongban.feedback.ServiceRating", rating, cause_id="bad-level",
                                 correlation_id="KSTB-MED-01", source_system="test")
    await produce(namespace, "tongban.feedback.ratings", b"KSTB-MED-01", bad_rating)

    async with Sink(namespace, ["tongban.dlq.tongban-delivery", "tongban.dlq.tongban-feedback"]) as sink:
        seen = await sink.wait_for(lambda seen: dead_letters(seen, namespace, "delivery", forged)
                                   and dead_letters(seen, namespace, "feedback", bad_rating))
    refused = dead_letters(seen, namespace, "delivery", forged)[0]
    assert header(refused, "tongban.dlq.error.class") == "Rejected"
    assert "no work is assigned" in header(refused, "tongban.dlq.error.message")
    invalid = dead_letters(seen, namespace, "feedback", bad_rating)[0]
    assert header(invalid, "tongban.dlq.error.class") == "Rejected"
    reason = header(invalid, "tongban.dlq.error.message")
    assert "level" in reason and "张三" not in reason and "13800000000" not in reason


async def test_a_record_replayed_through_the_retry_topic_is_handled_as_from_its_origin(stack, namespace):
    """What an operator's replay does: the record goes to tongban.retry.<group> naming its
    origin topic, and only that group handles it, as if read from the origin."""
    application_id = "TBREPLAY" + secrets.token_hex(4).upper()
    body = received_body(application_id, samples(secrets.token_hex(4))[0].request)
    _, value = encode_event(REGISTRY, "tongban.application.ApplicationReceived", body, cause_id=application_id,
                            correlation_id=application_id, source_system="tongban-intake")
    origin = (namespace + "tongban.application.received").encode()
    await produce(namespace, "tongban.retry.tongban-routing", application_id.encode(), value,
                  headers=[("tongban.origin.topic", origin)])
    async with Sink(namespace, ["tongban.application.routed", "tongban.application.verified"]) as sink:
        await sink.wait_for(lambda s: s.events("tongban.application.ApplicationRouted", application_id))
        seen = await sink.poll(2)
    assert seen.events("tongban.application.ApplicationRouted", application_id)[0]["deciding_partner"] == "420000"
    assert not seen.events("tongban.application.ApplicationVerified", application_id), \
        "other groups never read routing's retry topic"
