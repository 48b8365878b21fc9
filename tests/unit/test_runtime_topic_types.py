"""A record is handled only if its topic carries its event type (infra/topics.toml `events`).

The runtime dispatches by event type, and the broker's ACLs only say who may write a topic: a
partner allowed to write its own decisions topic could otherwise put verification's
`ApplicationVerified` there and have delivery take it as verification's. The real core over the
in-memory store and transactions (the Harness of test_runtime_core); the same rule over the real
broker is tests/e2e/test_topic_carries_e2e.py."""

from __future__ import annotations

import pytest

from tests.unit.test_runtime_core import (
    KEY,
    NS,
    OUTPUT,
    REGISTRY,
    SETTINGS,
    UNROUTABLE,
    Harness,
    header,
    received_value,
    unroutable,
)
from tongban import topic_events, topics
from tongban.events import encode_event
from tongban.handling import Emit, Event, Outcome
from tongban.runtime.core import ORIGIN_TOPIC_HEADER, TIMER_ORIGIN

PARTNER = "420000"
DECISIONS = topics.partner_decisions(PARTNER)
VERIFIED = topics.APPLICATION_VERIFIED_EVENT
DECISION = topics.AUTHORITY_DECISION_EVENT


def value_of(event_type: str, body: dict, cause: str, source_partner: str | None = None) -> bytes:
    return encode_event(REGISTRY, event_type, body, cause_id=cause, correlation_id=KEY,
                        source_system=f"partner-{source_partner}" if source_partner else "test",
                        source_partner=source_partner)[1]


def verified(cause: str) -> bytes:
    """What verification writes, or what a partner forging it would write."""
    return value_of(VERIFIED, {"application_id": KEY, "checks": [], "materials": []}, cause)


def decided(cause: str, source_partner: str | None = PARTNER) -> bytes:
    body = {"assignment_id": f"AS-{KEY}-1", "application_id": KEY, "outcome": "APPROVED",
            "result_reference": "EL-1", "reason": None, "decided_at": 0}
    return value_of(DECISION, body, cause, source_partner)


def harness() -> Harness:
    """A service with handlers for both types: dispatch by type alone would run either."""
    h = Harness()
    h.ctx.wiring.handlers.update({VERIFIED: h.count, DECISION: h.count})
    return h


def reasons(h: Harness) -> list[str]:
    return [header(d, "tongban.dlq.error.message") for d in h.dead_letters()]


def test_the_declarations_name_what_each_topic_carries_and_its_partner_writer():
    assert VERIFIED in topic_events.carries(topics.APPLICATION_VERIFIED)
    assert VERIFIED not in topic_events.carries(DECISIONS)
    assert topic_events.carriage(DECISIONS) == topic_events.Carriage(
        frozenset({topics.AUTHORITY_ACCEPTANCE_EVENT, DECISION, topics.AUTHORITY_CLOCK_CHANGE_EVENT,
                   topics.COMMITMENT_CHECK_RESULT_EVENT}), PARTNER)
    # A feed writes as principal partner-<id>; its envelope names the bare id.
    assert topic_events.carriage(topics.FEEDBACK_WORKORDERS).partner == "12345"
    assert topic_events.carriage(topics.APPLICATION_VERIFIED).partner is None
    # The carrier and the wallet each answer with their own kind of receipt only.
    assert topic_events.carries(topics.POSTAL_RECEIPTS) == {topics.POSTAL_RECEIPT_EVENT}
    assert topic_events.carries(topics.WALLET_RECEIPTS) == {topics.WALLET_RECEIPT_EVENT}
    assert topic_events.carriage("tongban.partner.999999.decisions") is None


async def test_an_internal_type_on_a_partners_topic_is_dead_lettered_and_the_next_record_handled():
    h = harness()
    forged = h.rec(verified("forged"), topic=NS + DECISIONS)
    await h.feed(forged, h.rec(decided("d1"), topic=NS + DECISIONS))
    dead, = h.dead_letters()
    assert header(dead, "tongban.dlq.error.message") == f"{DECISIONS} does not carry {VERIFIED}"
    assert header(dead, "tongban.dlq.error.class") == "Misplaced"
    assert header(dead, "tongban.dlq.origin.topic") == NS + DECISIONS
    assert dead.value == forged.value
    assert [(e.event_type, e.topic) for e in h.calls] == [(DECISION, DECISIONS)]
    # The same type on the topic that carries it is handled: the rule is per topic, not per type.
    await h.feed(h.rec(verified("real"), topic=NS + topics.APPLICATION_VERIFIED))
    assert [(e.event_type, e.topic) for e in h.calls][-1] == (VERIFIED, topics.APPLICATION_VERIFIED)
    assert len(h.dead_letters()) == 1


@pytest.mark.parametrize("via", ["retry", "repartition"])
async def test_a_replay_or_forward_is_checked_against_its_origin_topic(via):
    h = harness()
    through = SETTINGS.retry_topic if via == "retry" else SETTINGS.repartition_topic
    origin = [(ORIGIN_TOPIC_HEADER, (NS + DECISIONS).encode())]
    await h.feed(h.rec(verified("forged"), topic=through, headers=origin),
                 h.rec(decided("d1"), topic=through, headers=origin))
    assert reasons(h) == [f"{DECISIONS} does not carry {VERIFIED}"]
    assert [(e.event_type, e.topic) for e in h.calls] == [(DECISION, DECISIONS)]


async def test_a_timer_firing_comes_only_from_the_schedule_never_from_a_partners_topic():
    fired: list[Event] = []

    async def remind(event: Event, state: dict | None) -> Outcome:
        fired.append(event)
        return Outcome(state={"reminded": True})

    h = Harness(timers={"remind": remind})
    body = {"timer_id": f"{KEY}:remind:0", "name": "remind", "key": KEY, "due_at": 0, "payload": None}
    firing = encode_event(REGISTRY, topics.TIMER_FIRED_EVENT, body, cause_id="t", correlation_id=KEY,
                          source_system="partner-420000")[1]
    await h.feed(h.rec(firing, topic=NS + DECISIONS))
    assert reasons(h) == [f"{DECISIONS} does not carry {topics.TIMER_FIRED_EVENT}"]
    assert fired == []
    # An operator's replay of a dead-lettered timer names the schedule as its origin, and fires.
    await h.feed(h.rec(firing, topic=SETTINGS.retry_topic,
                       headers=[(ORIGIN_TOPIC_HEADER, SETTINGS.topic(TIMER_ORIGIN).encode())]))
    assert [e.key for e in fired] == [KEY]


@pytest.mark.parametrize(("claimed", "handled"), [("440000", False), (PARTNER, True), (None, True)])
async def test_an_envelope_naming_another_partner_than_the_topics_writer_is_dead_lettered(claimed, handled):
    h = harness()
    await h.feed(h.rec(decided("d1", source_partner=claimed), topic=NS + DECISIONS),
                 h.rec(received_value(cause="after")))
    assert [e.event_type for e in h.calls] == ([DECISION] if handled else []) + [UNROUTABLE]
    assert reasons(h) == ([] if handled else [
        f"the envelope names partner {claimed}, but the record came on partner {PARTNER}'s topic"])


async def test_a_handler_that_emits_a_type_its_output_topic_does_not_carry_fails_and_sends_nothing():
    async def misroute(event: Event, state: dict | None) -> Outcome:
        return Outcome(state={"x": 1}, emits=[
            Emit(OUTPUT, UNROUTABLE, event.key, unroutable(event.key)),
            Emit(OUTPUT, VERIFIED, event.key, {"application_id": event.key, "checks": [], "materials": []})])

    h = Harness(handlers={UNROUTABLE: misroute})
    await h.feed(h.rec(received_value()))
    assert reasons(h) == [f"{OUTPUT} does not carry {VERIFIED}"]
    assert h.outputs() == [], "none of the handler's outputs, not even the valid one"
    assert h.state() is None


async def test_a_topic_infra_does_not_declare_is_not_checked():
    """Only the broker's admin may write an undeclared topic (the ACLs grant declared ones
    alone): the benchmark's hop topics carry any type."""
    h = harness()
    await h.feed(h.rec(verified("hop"), topic=NS + "bench.hop0"))
    assert [e.event_type for e in h.calls] == [VERIFIED]
    assert h.dead_letters() == []
