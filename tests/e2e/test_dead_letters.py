"""Poison records on each service's input land in that group's dead-letter topic with their
origin and reason, and valid records keep flowing past them."""

import io
import json
import secrets

import fastavro
import grpc
import pytest
from aiokafka import AIOKafkaProducer

from services.intake import intake_pb2, intake_pb2_grpc
from services.intake.api import received_body
from services.intake.domain import application_id_for
from sim.samples import samples
from tests.pii_parties import sealed_by
from tests.support import KAFKA, REGISTRY, Sink, produce, submit, wait_terminal
from tongban.codec import schema_fingerprint
from tongban.events import encode_event, now_utc
from tongban.grpc_tls import client_channel

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
                                 correlation_id="KSTB-MED-01", source_system="test",
                                 **sealed_by("intake", "tongban.feedback.ratings"))
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
    assert "level" in reason
    assert "张三" not in reason
    assert "13800000000" not in reason


async def test_a_record_replayed_through_the_retry_topic_is_handled_as_from_its_origin(stack, namespace):
    """What an operator's replay does: the record goes to tongban.retry.<group> naming its
    origin topic, and only that group handles it, as if read from the origin."""
    application_id = "TBREPLAY" + secrets.token_hex(4).upper()
    body = received_body(application_id, samples(secrets.token_hex(4))[0].request)
    _, value = encode_event(REGISTRY, "tongban.application.ApplicationReceived", body, cause_id=application_id,
                            correlation_id=application_id, source_system="tongban-intake",
                            **sealed_by("intake", "tongban.application.received"))
    origin = (namespace + "tongban.application.received").encode()
    await produce(namespace, "tongban.retry.tongban-routing", application_id.encode(), value,
                  headers=[("tongban.origin.topic", origin)])
    async with Sink(namespace, ["tongban.application.routed", "tongban.application.verified"]) as sink:
        await sink.wait_for(lambda s: s.events("tongban.application.ApplicationRouted", application_id))
        seen = await sink.poll(2)
    assert seen.events("tongban.application.ApplicationRouted", application_id)[0]["deciding_partner"] == "420000"
    assert not seen.events("tongban.application.ApplicationVerified", application_id), \
        "other groups never read routing's retry topic"


def rogue_event() -> tuple[str, bytes]:
    """A partner's new event type whose envelope has no event id: (its schema, a framed record)."""
    schema = {"type": "record", "name": "RogueDecision", "namespace": "tongban.partner", "fields": [
        {"name": "envelope", "type": {"type": "record", "name": "RogueEnvelope", "fields": [
            {"name": "event_type", "type": "string"}, {"name": "correlation_id", "type": "string"}]}},
        {"name": "application_id", "type": "string"}]}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), {
        "envelope": {"event_type": "tongban.partner.RogueDecision", "correlation_id": "TBROGUE"},
        "application_id": "TBROGUE"})
    return json.dumps(schema), bytes.fromhex("c301") + schema_fingerprint(schema) + body.getvalue()


async def produce_raw(namespace: str, topic: str, key: bytes | None, value: bytes | None, headers) -> None:
    """What a client in another language can write and aiokafka's send() refuses: null key and
    value together, null header values."""
    producer = AIOKafkaProducer(**KAFKA, acks="all")
    await producer.start()
    try:
        batch = producer.create_batch()
        batch.append(key=key, value=value, timestamp=None, headers=headers)
        partition = 0
        await (await producer.send_batch(batch, namespace + topic, partition=partition))
    finally:
        await producer.stop()


async def test_records_that_once_halted_services_are_dead_lettered_and_every_process_stays_up(stack, namespace):
    received = "tongban.application.received"
    await produce_raw(namespace, received, None, None, [])  # a tombstone with a null key
    valid_id = "TBNULLTRACE" + secrets.token_hex(4).upper()
    body = received_body(valid_id, samples(secrets.token_hex(4))[0].request)
    _, valid = encode_event(REGISTRY, "tongban.application.ApplicationReceived", body, cause_id=valid_id,
                            correlation_id=valid_id, source_system="test",
                            **sealed_by("intake", "tongban.application.received"))
    await produce_raw(namespace, received, valid_id.encode(), valid, [("traceparent", None)])
    for origin in (None, b"\xff\xfe not utf-8"):
        await produce_raw(namespace, "tongban.retry.tongban-routing", b"replayed", valid,
                          [("tongban.origin.topic", origin)])
    schema_json, rogue = rogue_event()
    await produce(namespace, "tongban.schemas", schema_fingerprint(json.loads(schema_json)).hex().encode(),
                  schema_json.encode())
    await produce(namespace, "tongban.partner.420000.decisions", b"TBROGUE", rogue)

    # The record with a null trace header is valid: it is carried to its end. It did not come
    # through intake's API, so no receiving system may track it: an operator does.
    assert (await wait_terminal(stack, valid_id, caller="tongban-operator")).stage == "DELIVERED"
    application_id = await submit(stack, samples(secrets.token_hex(4))[0].request)
    assert (await wait_terminal(stack, application_id)).stage == "DELIVERED"

    dlqs = [f"tongban.dlq.tongban-{s}" for s in ("routing", "verification", "delivery")]
    async with Sink(namespace, dlqs) as sink:
        def reasons(seen, service):
            return [header(r, "tongban.dlq.error.message") for r in seen.records
                    if r.topic == f"{namespace}tongban.dlq.tongban-{service}"]

        def all_there(seen) -> bool:
            readers = ("routing", "verification", "delivery")
            return all(any("tombstone" in r for r in reasons(seen, s)) for s in readers) \
                and sum("tongban.origin.topic" in r for r in reasons(seen, "routing")) == 2 \
                and any("event id" in r for r in reasons(seen, "delivery"))

        try:
            seen = await sink.wait_for(all_there)
        except TimeoutError:
            pytest.fail(f"dead letters seen: { {s: reasons(sink.seen, s) for s in ('routing', 'delivery')} }")
    assert all(p.poll() is None for p in stack.processes.values()), "a poison record stopped a process"
    tombstone = next(r for r in seen.records if "tombstone" in header(r, "tongban.dlq.error.message"))
    assert tombstone.key is None
    assert header(tombstone, "tongban.dlq.error.class") == "MalformedRecord"


async def test_an_oversized_submit_is_refused_naming_the_field_and_nothing_is_written(stack, namespace):
    request = samples(secrets.token_hex(4))[0].request
    del request.materials[:]
    request.materials.extend(intake_pb2.Material(code=f"M{n}", name="材料", provided=True) for n in range(100_000))
    async with client_channel(stack.grpc_target("intake")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await intake_pb2_grpc.IntakeStub(channel).Submit(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "materials: at most 50 items (got 100000)" in refused.value.details()
    application_id = application_id_for(request.source_system, request.client_reference)

    marker = await submit(stack, samples(secrets.token_hex(4))[0].request)  # written after the refusal
    topics = ["tongban.commands.tongban-intake", "tongban.application.received"]
    async with Sink(namespace, topics) as sink:
        seen = await sink.wait_for(lambda s: s.events("tongban.application.ApplicationReceived", marker))
    assert not [r for r in seen.records if r.key == application_id.encode()], "a refused Submit was written"
