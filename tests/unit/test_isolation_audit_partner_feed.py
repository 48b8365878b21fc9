"""Intake's reader of partners' submissions takes the partner from the topic the broker let it
write, like delivery does for decisions (issue 8): a submission whose envelope names another
partner is dead-lettered, not numbered, and its partner hears nothing. No broker."""

from test_intake_api_auth import InstantRuntime
from test_intake_partner_submissions import ACKS, PARTNER, REGISTRY, Record, feed_of, submission

from services.intake.partner_feed import reader_settings
from tongban import topics
from tongban.config import load_settings
from tongban.events import encode_event


def record_claiming(source_partner: str | None) -> Record:
    """A well-formed submission on PARTNER's topic, its envelope naming `source_partner`."""
    envelope, body = submission(submission_id="HB-CLAIM-1")
    _, value = encode_event(REGISTRY, topics.PARTNER_SUBMISSION_EVENT, body, cause_id=envelope["event_id"],
                            correlation_id=envelope["correlation_id"], source_system=f"partner-{PARTNER}",
                            source_partner=source_partner)
    return Record(value, key=b"HB-CLAIM-1")


async def test_a_submission_whose_envelope_names_another_partner_is_dead_lettered_and_not_numbered():
    runtime = InstantRuntime()
    settings = reader_settings(load_settings("intake", {}))
    dead = await feed_of(runtime).hand_over(settings, PARTNER, record_claiming("440000"))
    assert dead is not None
    assert dead.topic == "tongban.dlq.tongban-intake-partners"
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers["tongban.dlq.error.message"] == \
        "the envelope names partner 440000, but the record came on partner 420000's topic"
    assert headers["tongban.dlq.origin.topic"] == f"tongban.partner.{PARTNER}.submissions"
    assert (runtime.commands, runtime.published) == ([], [])


async def test_a_submission_whose_envelope_names_its_own_partner_is_numbered_for_that_partner():
    runtime = InstantRuntime()
    settings = reader_settings(load_settings("intake", {}))
    assert await feed_of(runtime).hand_over(settings, PARTNER, record_claiming(PARTNER)) is None
    assert [e.event_type for e in runtime.published if e.topic == ACKS] == [topics.SUBMISSION_RECEIVED_EVENT]
    received, = [e for e in runtime.published if e.event_type == topics.APPLICATION_RECEIVED_EVENT]
    assert received.source_partner == PARTNER
