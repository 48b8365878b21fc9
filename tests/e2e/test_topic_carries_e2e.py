"""A partner writes a record name that belongs on another writer's topic (issue 8).

Hubei's authority, logged in as itself, may write its own decisions topic, and only that. On
it, it writes an `ApplicationVerified`, which verification alone writes on
`tongban.application.verified`. Delivery has a handler for that type; it must not take the
record as verification's: it dead-letters it because the topic does not carry that type, and
goes on with the next record on the same partition (a decision for an application nobody
assigned to Hubei, which delivery's own handler refuses with its own reason)."""

import os
import secrets

import pytest
from aiokafka import AIOKafkaProducer

from tests.support import KAFKA_ACLS, REGISTRY, Sink, start_stack
from tongban import topics
from tongban.config import load_settings
from tongban.events import encode_event

pytestmark = pytest.mark.integration

PARTNER = "420000"
DECISIONS = topics.partner_decisions(PARTNER)
DLQ = topics.dlq("tongban-delivery")


@pytest.fixture(scope="module")
def stack(namespace):
    stack = start_stack(namespace, only=("delivery",))
    yield stack
    stack.stop_all()


def partner_record(event_type: str, body: dict, application_id: str) -> bytes:
    return encode_event(REGISTRY, event_type, body, cause_id=f"{event_type}:{application_id}",
                        correlation_id=application_id, source_system=f"partner-{PARTNER}",
                        source_partner=PARTNER)[1]


async def test_a_partner_cannot_pass_off_verifications_event_on_its_own_topic(stack, namespace):
    application_id = f"TB-CARRIES-{secrets.token_hex(4)}"
    forged = partner_record(topics.APPLICATION_VERIFIED_EVENT,
                            {"application_id": application_id, "checks": [], "materials": []}, application_id)
    marker = partner_record(topics.AUTHORITY_DECISION_EVENT,
                            {"assignment_id": f"AS-{application_id}-1", "application_id": application_id,
                             "outcome": "APPROVED", "result_reference": "EL-1", "reason": None, "decided_at": 0},
                            application_id)
    settings = load_settings("sim", {**os.environ, "TONGBAN_NAMESPACE": namespace})
    if KAFKA_ACLS:  # the partner's own principal: the broker lets it write its decisions topic
        settings = settings.as_principal(f"partner-{PARTNER}")
    producer = AIOKafkaProducer(**settings.kafka_client_options(), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for value in (forged, marker):  # one key: one partition, in this order
            await producer.send_and_wait(settings.topic(DECISIONS), key=application_id.encode(), value=value)
    finally:
        await producer.stop()

    async with Sink(namespace, [DLQ, topics.APPLICATION_ACCEPTED, topics.APPLICATION_DECIDED]) as sink:
        seen = await sink.wait_for(lambda s: len([r for r in s.records if r.key == application_id.encode()]) >= 2)
        # Nothing delivery would write for a verified application (nor anything else) came of it.
        outputs = [r for r in seen.records if r.key == application_id.encode() and not r.topic.endswith(DLQ)]
    dead = [{k: v.decode() for k, v in r.headers} | {"value": r.value}
            for r in seen.records if r.key == application_id.encode() and r.topic.endswith(DLQ)]
    assert [(d["tongban.dlq.error.class"], d["tongban.dlq.error.message"], d["value"]) for d in dead] == [
        ("Misplaced", f"{DECISIONS} does not carry {topics.APPLICATION_VERIFIED_EVENT}", forged),
        # The marker got past decoding to delivery's handler, which refuses it for its own reason.
        ("Rejected", "no work is assigned for this application", marker),
    ]
    assert {d["tongban.dlq.origin.topic"] for d in dead} == {namespace + DECISIONS}
    assert outputs == []
