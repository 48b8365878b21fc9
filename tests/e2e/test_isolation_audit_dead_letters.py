"""A partner that does not seal: the 12345 hotline, logged in as itself, writes a work order
whose caller's words hold a name, an ID number and a phone number in the clear. Feedback (which
holds no key and must never see personal data) dead-letters it without handling it, and the
dead letter keeps only a digest: the plaintext is on no topic but the partner's own, and in no
log line or span of the service (issue 8: "the runtime never passes plaintext through where a
sealed value is expected"; the dead letters of the end-to-end scan, with something in them)."""

import hashlib
import os
import secrets
from datetime import UTC, datetime

import pytest
from test_personal_data import Person, careless, files_under, leaks, topic_bytes

from sim import hotline
from tests.support import REGISTRY, Sink, start_stack
from tongban import topics
from tongban.config import load_settings
from tongban.events import derive_event_id, millis

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(namespace):
    stack = start_stack(namespace, only=("feedback",))
    yield stack
    stack.stop_all()


def unsealed_work_order(work_order_id: str, caller: Person) -> bytes:
    """What a hotline that skips sealing would write: framed like any event, its personal
    field (`content`) in the clear. Encoded by the registry directly, since Tongban's own
    encoder refuses to write it."""
    envelope = {"event_id": derive_event_id(work_order_id, topics.HOTLINE_WORK_ORDER_EVENT, ""),
                "event_type": topics.HOTLINE_WORK_ORDER_EVENT,
                "schema_version": REGISTRY.latest(topics.HOTLINE_WORK_ORDER_EVENT).version,
                "occurred_at": millis(datetime.now(UTC)), "source_system": "12345", "source_partner": hotline.HOTLINE,
                "correlation_id": work_order_id, "causation_id": work_order_id}
    body = {"work_order_id": work_order_id, "stage": "RECEIVED", "matter_code": "KSTB-MED-01",
            "division_code": "430102", "application_id": None, "category": "COMPLAINT",
            "content": f"办理太慢，{careless(caller)}", "occurred_at": datetime.now(UTC),
            "caller_hash": hotline.caller_hash(caller.phone), "handling_unit": None}
    return REGISTRY.encode(topics.HOTLINE_WORK_ORDER_EVENT, {"envelope": envelope, **body})


async def test_personal_data_a_partner_wrote_in_the_clear_is_dead_lettered_as_a_digest_and_kept_nowhere(
        stack, namespace):
    caller = Person.made_up()
    work_order_id = f"WO-AUDIT-{secrets.token_hex(4)}"
    value = unsealed_work_order(work_order_id, caller)
    # The hotline's own principal: the broker lets partner-12345 write the work-order topic.
    settings = load_settings(hotline.PRINCIPAL, {**os.environ, "TONGBAN_NAMESPACE": namespace})
    assert await hotline.publish(settings, [(work_order_id, value)]) == 1

    dlq = "tongban.dlq.tongban-feedback"
    async with Sink(namespace, [dlq]) as sink:
        seen = await sink.wait_for(lambda s: any(r.key == work_order_id.encode() for r in s.records))
    dead, = [r for r in seen.records if r.key == work_order_id.encode()]
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers["tongban.dlq.error.class"] == "UnsealedPersonalData"
    assert headers["tongban.dlq.error.message"] == \
        f"{topics.HOTLINE_WORK_ORDER_EVENT}: personal field(s) content arrived unsealed"
    assert headers["tongban.dlq.reduced"] == "value held personal data in the clear"
    assert headers["tongban.dlq.origin.topic"] == f"{namespace}{topics.FEEDBACK_WORKORDERS}"
    # What is left of the value: its digest and size, so an operator can match it to the partner's record.
    assert dead.value == f"sha256={hashlib.sha256(value).hexdigest()} size={len(value)}".encode()

    written = {f"topic {name}": data for name, data in (await topic_bytes(namespace)).items()}
    partners_own = f"topic {namespace}{topics.FEEDBACK_WORKORDERS}"
    assert caller.id_number.encode() in written.pop(partners_own), "the scan would not recognise the plaintext"
    written.update(files_under(stack.log_dir))
    assert "feedback.log" in {p.name for p in stack.log_dir.iterdir()}
    found = leaks(written, [caller])
    assert not found, "personal data in the clear:\n" + "\n".join(found)
