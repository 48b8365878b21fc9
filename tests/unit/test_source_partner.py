"""A partner's submission is published as intake's ApplicationReceived naming the partner in
the envelope's source_partner (Emit.source_partner, put there by the runtime's encode); an
application from intake's own channels names none."""

from test_intake_api_auth import InstantRuntime
from test_intake_partner_submissions import PARTNER, feed_of, submission
from test_runtime_core import OUTPUT, UNROUTABLE, Harness, envelope_of, received_value, unroutable

from services.intake import domain, handlers
from tongban import topics
from tongban.handling import Emit, Event, Outcome


async def test_the_partners_numbered_application_names_the_partner_and_not_in_its_body():
    runtime = InstantRuntime()
    await feed_of(runtime).handle(PARTNER, *submission("HB-SP-1"))
    [received] = [e for e in runtime.published if e.event_type == topics.APPLICATION_RECEIVED_EVENT]
    assert received.source_partner == PARTNER
    assert "source_partner" not in received.payload  # ApplicationReceived has no such field


async def test_an_application_numbered_for_intakes_own_channels_names_no_partner():
    runtime = InstantRuntime()
    await feed_of(runtime).handle(PARTNER, *submission("HB-SP-2"))
    [numbered] = [e for e in runtime.published if e.event_type == topics.APPLICATION_RECEIVED_EVENT]
    body = {k: v for k, v in numbered.payload.items() if k != "application_number"}
    key = domain.numbering_key(body["application_id"])
    outcome = await handlers.number(Event("number:x", "command", key, body, {}, "command"), None)
    assert [e.source_partner for e in outcome.emits] == [""]


async def test_the_runtime_puts_an_emits_source_partner_in_the_envelope_and_none_otherwise():
    async def republish(event: Event, state: dict | None) -> Outcome:
        body = unroutable(event.key)
        return Outcome(emits=[Emit(OUTPUT, UNROUTABLE, event.key, body, qualifier="partner", source_partner="420000"),
                              Emit(OUTPUT, UNROUTABLE, event.key, body, qualifier="own")])

    h = Harness(handlers={UNROUTABLE: republish})
    await h.feed(h.rec(received_value()))  # a key this task owns
    envelopes = [envelope_of(r.value) for r in h.outputs()]
    assert [(e["source_partner"], e["source_system"]) for e in envelopes] == [
        ("420000", "tongban-routing"), (None, "tongban-routing")]
    assert not h.dead_letters()
