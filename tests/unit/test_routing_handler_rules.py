"""Routing's rules through its real handlers that the mutation run found unguarded: where an
application is decided when it names its places, who each event is published under, what a
bundle's release says and when, what a timer firing as the runtime fires it does, who the
delivery clock runs against, and the exact words an operator reads. No broker."""

from datetime import UTC, date, datetime

import pytest

from services.routing import bundles, handlers, review
from services.routing.catalogue import Catalogue
from services.routing.ledger import Ledger
from tests.unit.test_routing_rules import (
    APP,
    MONDAY,
    RECEIVED,
    RECEIVED_STEP,
    RULES,
    SLA_TOPIC,
    accepted,
    beijing,
    clock_changed,
    decided,
    feed,
    lifecycle,
    received,
)
from tongban import topics
from tongban.events import derive_event_id
from tongban.handling import TIMER_FIRED, Event, Outcome, Rejected

ROUTED_TOPIC = topics.APPLICATION_ROUTED
BUNDLE = "TBBUNDLE1"
RETIREMENT = ("KSTB-HPF-02", "KSTB-SOC-04")  # 退休一件事: both routable from Changsha for home 440103
OPERATOR = "tongban-operator"
LATER = datetime(2025, 9, 23, 2, 0, tzinfo=UTC)


def event(event_type: str, payload: dict, key: str = APP, n: str = "1") -> Event:
    return Event(f"id-{n}", event_type, key, payload, {"occurred_at": MONDAY, "correlation_id": key}, "t")


def member(application_id: str, matter: str) -> dict:
    return received(application_id=application_id, matter_code=matter, home_division="440103", window_id="",
                    places={}, bundle_id=BUNDLE)


async def held(application_id: str, matter: str) -> Outcome:
    """The application's own outcome on arrival: held for its bundle."""
    return await handlers.make_handlers(*RULES)[RECEIVED](
        event(RECEIVED, member(application_id, matter), application_id), None)


async def bundle_takes(*held_outcomes: Outcome) -> tuple[dict | None, list[Outcome]]:
    """The bundle's aggregate (key bundles.key) reading back each BundleMemberHeld, as the runtime re-keys it."""
    rules = handlers.make_handlers(*RULES)
    state, outcomes = None, []
    for n, outcome in enumerate(held_outcomes):
        [emit] = outcome.emits
        result = await rules[emit.event_type](event(emit.event_type, emit.payload, bundles.key(BUNDLE), f"h{n}"), state)
        state = result.state if result.state is not None else state
        outcomes.append(result)
    return state, outcomes


def timer_fired(name: str, key: str, payload: dict | None) -> Event:
    """A timer firing as the runtime builds it (tongban/runtime/core.py): its own payload, no occurred_at."""
    body = {"timer_id": f"{key}:{name}", "name": name, "payload": payload}
    return Event(f"timer:{key}:{name}", TIMER_FIRED, key, body, {"correlation_id": key}, "timer")


# ---------------------------------------------------------------------------- routing a received file

async def test_an_application_naming_its_places_is_decided_at_the_place_it_names():
    # KSTB-MED-01 is handled where the applicant is insured now; the v2 file names it (广州), not home (武汉)
    outcome = await handlers.make_handlers(*RULES)[RECEIVED](
        event(RECEIVED, received(places={"INSURED_AFTER": "440103"})), None)
    [routed] = outcome.emits
    assert (routed.payload["deciding_partner"], routed.payload["deciding_division"]) == ("440000", "440103")


async def test_a_matter_not_in_the_catalogue_is_published_unroutable_on_the_routed_topic_under_its_application():
    outcome = await handlers.make_handlers(*RULES)[RECEIVED](
        event(RECEIVED, received(matter_code="KSTB-NOPE-99")), None)
    [emit] = outcome.emits
    assert (emit.topic, emit.event_type, emit.key) == (ROUTED_TOPIC, topics.APPLICATION_UNROUTABLE_EVENT, APP)


# ---------------------------------------------------------------------------- 一件事一次办

async def test_a_held_bundle_member_is_published_under_its_own_application_and_a_routable_one_with_no_reason():
    outcome = await held("TBA1", RETIREMENT[1])
    [emit] = outcome.emits
    # intake reads it under the application's key: the applicant sees it waiting for the bundle
    assert (emit.topic, emit.event_type, emit.key) == (ROUTED_TOPIC, topics.BUNDLE_MEMBER_HELD_EVENT, "TBA1")
    assert emit.payload == {"application_id": "TBA1", "matter_code": RETIREMENT[1], "bundle_id": BUNDLE,
                            "routable": True, "reason": ""}


async def test_a_released_bundle_tells_each_application_its_bundle_and_when_it_was_released():
    _, [_, released] = await bundle_takes(await held("TBA1", RETIREMENT[1]), await held("TBA2", RETIREMENT[0]))
    assert sorted(e.payload["application_id"] for e in released.emits) == ["TBA1", "TBA2"]
    for emit in released.emits:
        assert emit.payload == {"application_id": emit.key, "bundle_id": BUNDLE, "bundle_code": "BUNDLE-RETIREMENT",
                                "applications": ["TBA2", "TBA1"], "release": bundles.ROUTE, "reason": "",
                                "released_at": MONDAY}


async def test_an_application_routed_on_its_bundles_release_is_published_under_its_own_id():
    arrived = await held("TBA1", RETIREMENT[1])
    _, [_, released] = await bundle_takes(arrived, await held("TBA2", RETIREMENT[0]))
    mine = next(e for e in released.emits if e.key == "TBA1")
    outcome = await handlers.make_handlers(*RULES)[mine.event_type](
        event(mine.event_type, mine.payload, "TBA1", "r"), arrived.state)
    [routed] = outcome.emits
    assert (routed.topic, routed.event_type, routed.key) == (ROUTED_TOPIC, topics.APPLICATION_ROUTED_EVENT, "TBA1")


async def test_a_member_arriving_after_its_bundle_was_released_is_sent_to_review_alone_and_the_bundle_stays_done():
    state, _ = await bundle_takes(await held("TBA1", RETIREMENT[1]), await held("TBA2", RETIREMENT[0]))
    late = (await held("TBA3", RETIREMENT[0])).emits[0]
    outcome = await handlers.make_handlers(*RULES)[late.event_type](
        event(late.event_type, late.payload, bundles.key(BUNDLE), "late"), state)
    assert outcome.finished is True
    assert outcome.state == state
    [emit] = outcome.emits
    assert (emit.event_type, emit.key) == (topics.BUNDLE_RELEASED_EVENT, "TBA3")
    assert emit.payload == {"application_id": "TBA3", "bundle_id": BUNDLE, "bundle_code": "", "applications": ["TBA3"],
                            "release": bundles.REVIEW, "reason": f"bundle {BUNDLE} was released before this "
                                                                 "application arrived", "released_at": MONDAY}


async def test_a_bundle_whose_wait_timer_fires_as_the_runtime_fires_it_sends_what_came_to_review_now():
    _, [waiting] = await bundle_takes(await held("TBD1", RETIREMENT[0]))
    [timer] = waiting.timers
    before = datetime.now(UTC)
    outcome = await handlers.make_handlers(*RULES)[timer.name](
        timer_fired(timer.name, bundles.key(BUNDLE), timer.payload), waiting.state)
    after = datetime.now(UTC)
    [emit] = outcome.emits
    assert (emit.event_type, emit.key) == (topics.BUNDLE_RELEASED_EVENT, "TBD1")
    assert (emit.payload["bundle_id"], emit.payload["release"]) == (BUNDLE, bundles.REVIEW)
    # a timer's firing has no occurred_at: it was released when the timer fired, an instant in UTC
    assert before <= emit.payload["released_at"] <= after
    assert outcome.finished is True


async def test_a_wait_timer_firing_after_the_bundle_was_released_changes_nothing():
    released, _ = await bundle_takes(await held("TBA1", RETIREMENT[1]), await held("TBA2", RETIREMENT[0]))
    rules = handlers.make_handlers(*RULES)
    for state in (released, None):  # done, or already archived and gone from the hot state
        outcome = await rules[bundles.WAIT_TIMER](
            timer_fired(bundles.WAIT_TIMER, bundles.key(BUNDLE), {"bundle_id": BUNDLE}), state)
        assert outcome == Outcome()


async def test_a_bundle_released_after_the_catalogue_dropped_a_matter_sends_that_application_to_review():
    arrived = await held("TBA1", RETIREMENT[1])
    _, [_, released] = await bundle_takes(arrived, await held("TBA2", RETIREMENT[0]))
    mine = next(e for e in released.emits if e.key == "TBA1")
    catalogue = Catalogue([m for m in RULES[0].all() if m.code != RETIREMENT[1]])
    outcome = await handlers.make_handlers(catalogue, *RULES[1:])[mine.event_type](
        event(mine.event_type, mine.payload, "TBA1", "r"), arrived.state)
    [emit] = outcome.emits
    assert (emit.event_type, emit.key) == (topics.APPLICATION_UNDER_REVIEW_EVENT, "TBA1")
    assert emit.payload == {"application_id": "TBA1", "matter_code": RETIREMENT[1],
                            "reason": "matter code is not in the catalogue"}
    # what a re-route needs is kept while it waits
    kept = outcome.state["review"]
    assert (kept["matter_code"], kept["home_division"], kept["reason"]) == (
        RETIREMENT[1], "440103", "matter code is not in the catalogue")
    assert outcome.finished is False


# ---------------------------------------------------------------------------- the SLA ledger

@pytest.mark.parametrize(("delivery_method", "party"), [
    ("POST", topics.CARRIER),  # the carrier takes the result to the applicant
    ("WINDOW", "430102"),  # collected at the receiving window (no window named: the receiving division)
    ("ELECTRONIC", "420000"),  # served by the deciding authority
])
async def test_the_delivery_clock_runs_against_whoever_serves_the_result(delivery_method, party):
    fed = await feed((RECEIVED, received(delivery_method=delivery_method), "tongban.application.received"),
                     accepted(date(2025, 9, 23)), decided(date(2025, 9, 24)), beijing(date(2025, 11, 3)))
    delivery = [e.payload["party"] for e in fed.emits if e.topic == SLA_TOPIC and e.payload["leg"] == "DELIVERY"]
    assert delivery, "the delivery clock ran out"
    assert set(delivery) == {party}


async def test_alerts_raised_at_one_moment_are_distinct_events_and_a_replayed_timer_raises_the_same_ones():
    steps = ((RECEIVED, received(channel="WINDOW"), "tongban.application.received"), beijing(date(2025, 12, 29), 9))
    first, again = await feed(*steps), await feed(*steps)

    def ids(fed) -> list[list[str]]:
        # the runtime derives an output's event id from its cause, its type and its qualifier
        return [[derive_event_id(f"cause-{n}", e.event_type, e.qualifier) for e in o.emits]
                for n, o in enumerate(fed.outcomes)]

    together = [o for o in first.outcomes if len(o.emits) > 1]
    assert {e.event_type for o in together for e in o.emits} == {topics.SLA_WARNING_EVENT, topics.SLA_BREACHED_EVENT}
    assert all(len(set(i)) == len(i) for i in ids(first)), "two alerts of one firing would be one event"
    assert ids(first) == ids(again)


async def test_every_alert_is_published_on_the_sla_topic_under_its_application():
    fed = await feed((RECEIVED, received(), "tongban.application.received"), beijing(date(2025, 9, 29), 9))
    alerts = [e for e in fed.emits if e.event_type in (topics.SLA_WARNING_EVENT, topics.SLA_BREACHED_EVENT)]
    assert {e.event_type for e in alerts} == {topics.SLA_WARNING_EVENT, topics.SLA_BREACHED_EVENT}
    assert {(e.topic, e.key) for e in alerts} == {(SLA_TOPIC, APP)}


async def test_an_sla_timer_for_work_routing_no_longer_holds_a_clock_for_raises_nothing():
    timers = handlers.make_timers(RULES[2])
    under_review = (await handlers.make_handlers(*RULES)[RECEIVED](
        event(RECEIVED, received(home_division="370102")), None)).state
    # an operator replaying a dead-lettered firing after the work ended, or of work now under review
    for state in (None, under_review):
        outcome = await timers[handlers.SLA_TIMER](timer_fired(handlers.SLA_TIMER, APP, {"at_ms": 0}), state)
        assert outcome == Outcome()


# ---------------------------------------------------------------------------- the review queue

async def test_a_review_command_for_work_not_under_review_is_refused_with_exactly_that_reason():
    with pytest.raises(Rejected) as refused:
        await handlers.make_handlers(*RULES)[handlers.REJECT](
            event(handlers.REJECT, {"operator": "tongban-operator", "reason": "r"}), None)
    assert str(refused.value) == "the application is not in the review queue"


async def test_a_withdrawal_under_review_is_resolved_on_the_routed_topic_naming_no_operator():
    rules = handlers.make_handlers(*RULES)
    waiting = (await rules[RECEIVED](event(RECEIVED, received(home_division="370102")), None)).state
    outcome = await rules[topics.APPLICATION_WITHDRAWN_EVENT](
        event(topics.APPLICATION_WITHDRAWN_EVENT, {"application_id": APP, "reason": "", "withdrawn_at": MONDAY}, n="w"),
        waiting)
    [resolved] = outcome.emits
    assert (resolved.topic, resolved.event_type, resolved.key) == (ROUTED_TOPIC, topics.REVIEW_RESOLVED_EVENT, APP)
    assert resolved.payload == {"application_id": APP, "matter_code": "KSTB-MED-01", "resolution": review.WITHDRAWN,
                                "deciding_partner": "", "reason": "withdrawn by the applicant", "operator": "",
                                "resolved_at": MONDAY}


async def under_review(rules: dict) -> dict:
    # 370102 (济南) takes only files received in 湘西: from Changsha no rule routes it
    return (await rules[RECEIVED](event(RECEIVED, received(home_division="370102")), None)).state


def command(name: str, **payload) -> Event:
    return Event(f"{name}:{APP}", name, APP, {"operator": OPERATOR, **payload},
                 {"occurred_at": LATER, "correlation_id": APP}, "command")


async def test_an_operators_reroute_routes_the_application_and_is_resolved_naming_the_authority_and_the_why():
    rules = handlers.make_handlers(*RULES)
    outcome = await rules[handlers.REROUTE](
        command(handlers.REROUTE, deciding_partner="420000", reason="业务协同"), await under_review(rules))
    routed, resolved = outcome.emits
    assert (routed.topic, routed.event_type, routed.key) == (ROUTED_TOPIC, topics.APPLICATION_ROUTED_EVENT, APP)
    assert (resolved.topic, resolved.event_type, resolved.key) == (ROUTED_TOPIC, topics.REVIEW_RESOLVED_EVENT, APP)
    assert resolved.payload == {"application_id": APP, "matter_code": "KSTB-MED-01", "resolution": review.REROUTED,
                                "deciding_partner": "420000", "reason": "业务协同", "operator": OPERATOR,
                                "resolved_at": LATER}


async def test_an_operators_rejection_ends_the_application_as_unroutable_and_is_resolved_naming_the_operator():
    rules = handlers.make_handlers(*RULES)
    outcome = await rules[handlers.REJECT](command(handlers.REJECT, reason="事项不属跨省通办范围"),
                                           await under_review(rules))
    rejected, resolved = outcome.emits
    assert (rejected.topic, rejected.event_type, rejected.key) == (
        ROUTED_TOPIC, topics.APPLICATION_UNROUTABLE_EVENT, APP)
    assert rejected.payload == {"application_id": APP, "matter_code": "KSTB-MED-01",
                                "reason": "rejected on review: 事项不属跨省通办范围"}
    assert (resolved.topic, resolved.event_type, resolved.key) == (ROUTED_TOPIC, topics.REVIEW_RESOLVED_EVENT, APP)
    assert resolved.payload == {"application_id": APP, "matter_code": "KSTB-MED-01", "resolution": review.REJECTED,
                                "deciding_partner": "", "reason": "事项不属跨省通办范围", "operator": OPERATOR,
                                "resolved_at": LATER}


@pytest.mark.parametrize("leaves", [
    command(handlers.REJECT, reason="事项不属跨省通办范围"),
    event(topics.APPLICATION_WITHDRAWN_EVENT, {"application_id": APP, "reason": "", "withdrawn_at": MONDAY}, n="w"),
])
async def test_an_application_that_left_the_review_queue_can_no_longer_be_rerouted(leaves):
    rules = handlers.make_handlers(*RULES)
    state = await under_review(rules)
    outcome = await rules[leaves.event_type](leaves, state)
    assert outcome.finished is True
    state = outcome.state if outcome.state is not None else state  # as the runtime keeps it
    with pytest.raises(Rejected, match="not in the review queue"):
        await rules[handlers.REROUTE](command(handlers.REROUTE, deciding_partner="420000", reason=""), state)


async def test_an_unknown_clock_change_is_refused_with_exactly_that_reason():
    with pytest.raises(Rejected) as refused:
        await feed(RECEIVED_STEP, accepted(date(2025, 9, 23)), clock_changed("PAUSED"))
    assert str(refused.value) == "clock change kind is not one of EXTENDED, EXCLUSION_STARTED, EXCLUSION_ENDED"


@pytest.mark.parametrize(("ending", "why"), [
    (lifecycle("ApplicationWithdrawn", "tongban.application.received", reason="申请人撤回",
               withdrawn_at=beijing(date(2025, 9, 25))), "WITHDRAWN"),
    (lifecycle("ApplicationClosed", status="SUPPLEMENT_EXPIRED", reason="补正期满",
               closed_at=beijing(date(2025, 9, 25))), "SUPPLEMENT_EXPIRED"),
])
async def test_the_end_of_the_application_stops_its_running_clock_on_that_day_and_says_why(ending, why):
    fed = await feed(RECEIVED_STEP, accepted(date(2025, 9, 23)), ending)
    ledger = Ledger.from_state(fed.state["ledger"])
    assert ledger.ended == why
    decision = ledger.clock("DECISION")
    assert (decision.status, decision.ended_on) == ("STOPPED", date(2025, 9, 25))


async def test_only_the_authoritys_supplement_notice_stops_the_acceptance_clock():
    missed = lifecycle("SupplementRequested", deciding_partner="420000", cause="DEFERRED_PROMISE_MISSED",
                       missing_materials={"FORM": "未按期补交"}, requested_at=beijing(date(2025, 9, 24)),
                       supplement_by=beijing(date(2025, 10, 24)))
    fed = await feed(RECEIVED_STEP, missed, beijing(date(2025, 9, 29), 9))
    # the authority still owes its answer: acceptance is deemed on the fifth working day as before
    assert [e.payload["consequence"] for e in fed.emits
            if e.event_type == topics.SLA_BREACHED_EVENT and e.payload["leg"] == "ACCEPTANCE"] == ["DEEMED_ACCEPTED"]
