"""The simulated 好差评 channels (sim.raters): each channel writes its own topic as itself,
and feedback's rules take what they write, refusing the one rating the demo breaks 一事一评 with."""

import random
from datetime import UTC, datetime

from services.feedback import handlers
from services.feedback.domain import DuplicateRule, RectificationPolicies
from sim import raters
from tongban import topics
from tongban.codec import SchemaRegistry
from tongban.handling import Event, Rejected
from tongban.ops.topics import load_declared
from tongban.runtime.core import pack, unpack
from tongban.workdays import WorkingCalendar

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
REGISTRY = SchemaRegistry.load()


def test_each_channel_is_the_one_declared_writer_of_its_topic_and_feedback_reads_them_all():
    declared = {spec.declared_name: spec for spec in load_declared("")}
    for name, (_, topic) in raters.CHANNELS.items():
        assert declared[topic].writer == raters.feed_id(name)
        assert raters.principal(name) == f"partner-haochaping-{name}"
        assert declared[topic].readers == ("feedback",)
        assert topic in handlers.INPUTS
        assert handlers.CHANNEL_TOPICS[topic] == raters.CHANNELS[name][0]


async def test_the_demo_ratings_pass_feedbacks_rules_but_the_second_online_rating_of_one_application():
    ratings = raters.demo_ratings(12, random.Random(7))
    on_events, _ = handlers.make_handlers(RectificationPolicies(), WorkingCalendar.load().add_working_days,
                                          DuplicateRule())
    states: dict[str, dict | None] = {}
    counted, refused = [], []
    for n, r in enumerate(ratings):
        channel, key, value = raters.rating_record(REGISTRY, r, T0)
        event_type, body = REGISTRY.decode(value)
        assert (channel, event_type, body["comment"]) == (r.channel, topics.SERVICE_RATING_EVENT, None)
        assert body["envelope"]["source_partner"] == f"haochaping-{r.channel}"
        body.pop("envelope")
        event = Event(f"e{n}", event_type, key, body, {}, raters.CHANNELS[channel][1])
        aggregate = handlers.keys()[handlers.RATING](event)
        try:
            outcome = await on_events[handlers.RATING](event, states.get(aggregate))
        except Rejected as exc:
            refused.append((r.rating_id, str(exc)))
            continue
        states[aggregate] = unpack(pack(outcome.state))
        counted += [(e.payload["fact_id"], e.key) for e in outcome.emits]
    [(rating_id, reason)] = refused
    first = ratings[0]
    assert rating_id.startswith(first.application_id)
    assert "一事一评" in reason
    assert len(counted) == len(ratings) - 1
    proxy = {fact_id.rsplit("-", 1)[1]: group for fact_id, group in counted if "-proxy-" in fact_id}
    assert proxy == {"window": "KSTB-SOC-02|430102|430102", "authority": "KSTB-SOC-02|420100|420000"}, \
        "代收代办: both parties rated, each against its own division"
    assert {r.channel for r in ratings} == set(raters.CHANNELS), "every channel writes in the demo"
