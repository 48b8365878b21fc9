"""Rules of routing's, verification's and feedback's handlers that the fresh-clone mutation run
(836805e) found unguarded: the later check of a 告知承诺 promise (who is asked, a provider down,
a matter gone from the catalogue, a firing after the check), what a verdict says and under
which application, a rectification reminder following the deadlines still open, a locality's
own deadlines, and an SLA timer giving the alert of the instant it was set for. Through the
real handlers, with the helpers of each service's rules tests."""

from datetime import UTC, datetime, timedelta

from services.feedback import handlers as feedback
from services.feedback.domain import DuplicateRule, RectificationPolicies
from services.routing import handlers as routing
from services.verification import handlers as verification
from services.verification import matters
from tests.unit.test_feedback_rules import CALENDAR as FEEDBACK_CALENDAR
from tests.unit.test_feedback_rules import T0 as RATED_AT
from tests.unit.test_feedback_rules import appeal, fired, rating, step
from tests.unit.test_feedback_rules import feed as feed_feedback
from tests.unit.test_routing_handler_rules import timer_fired
from tests.unit.test_routing_rules import APP as ROUTED_APP
from tests.unit.test_routing_rules import CALENDAR as ROUTING_CALENDAR
from tests.unit.test_routing_rules import RECEIVED_STEP
from tests.unit.test_routing_rules import feed as feed_routing
from tests.unit.test_verification_handler_rules import COMMITTED, HOUSEHOLD_FILE, OUTSIDE, Recording
from tests.unit.test_verification_rules import (
    APP,
    CATALOGUE,
    CIPHER,
    COMMITMENT_CHECK,
    MATERIAL,
    NAME,
    ROUTED,
    VALID_ID,
    Providers,
    feed,
    feed_from,
    handle,
    received,
)
from tongban import topics
from tongban.handling import Event, Outcome, Timer

# ---------------------------------------------------------------------------- verification: what a verdict says


async def test_a_material_code_that_repeats_the_applicant_is_scrubbed_from_the_checks_of_a_verified_file():
    careless = {"code": f"POWER_{NAME}", "name": "委托书", "provided": True, "original_checked": True}
    _, outcomes = await feed(ROUTED, received(materials=(MATERIAL, careless), matter=OUTSIDE))
    [emit] = outcomes[-1].emits
    assert emit.event_type == topics.APPLICATION_VERIFIED_EVENT
    assert [c["check"] for c in emit.payload["checks"]] == [
        "applicant_name", "resident_id", "material:RESIDENT_ID", "material:POWER_[NAME]"]
    assert NAME not in repr(emit.payload)


async def test_a_failed_verdict_names_its_application_in_its_body():
    wrong_check_character = VALID_ID[:-1] + ("0" if VALID_ID[-1] != "0" else "1")
    _, outcomes = await feed(received(id_number=wrong_check_character), ROUTED)
    [emit] = outcomes[-1].emits
    assert (emit.event_type, emit.key) == (topics.APPLICATION_VERIFICATION_FAILED_EVENT, APP)
    assert emit.payload == {"application_id": APP, "outcome": "FAILED",
                            "reasons": ["resident ID number check character does not match"],
                            "missing_materials": [], "materials": []}


async def test_a_providers_mismatch_that_quotes_the_applicant_reaches_the_verdict_scrubbed():
    # the provider is another department's system: what it says of a mismatch is not ours to trust
    providers = Providers(verdicts={"HOUSEHOLD": ("NO_MATCH", (f"name {NAME}",))})
    _, outcomes = await feed(received(materials=HOUSEHOLD_FILE, matter="KSTB-PSB-01"), ROUTED, providers=providers)
    [emit] = outcomes[-1].emits
    why = "居民户口簿: the HOUSEHOLD record of mps does not confirm the declared name [NAME]"
    assert emit.payload["reasons"] == [why]
    assert emit.payload["materials"] == [{"code": "HOUSEHOLD_REGISTER", "problem": "CONTRADICTED", "reason": why}]
    assert NAME not in repr(emit.payload)


# ------------------------------------------------------------------ verification: the later check of a promise

def later_check() -> Event:
    """The commitment-check timer firing, as test_verification_rules.handle builds it."""
    return Event("timer:1", "tongban.runtime.TimerFired", APP, {"name": verification.COMMITMENT_CHECK},
                 {"correlation_id": APP}, "timer")


async def test_the_later_check_of_a_promise_asks_for_the_application_and_matter_the_demand_was_approved_for():
    providers = Recording()
    state, _ = await feed(COMMITTED, ROUTED, providers=providers)
    await feed_from(state, COMMITMENT_CHECK, providers=providers)
    assert providers.made_for[-1] == (APP, "KSTB-SOC-01", "SOCIAL_INSURANCE")


async def test_a_provider_down_at_the_later_check_of_a_promise_is_asked_again_5_s_later_and_the_work_stays_open():
    providers = Providers()
    state, _ = await feed(COMMITTED, ROUTED, providers=providers)
    providers.down.add(CATALOGUE.evidence["SOCIAL_INSURANCE"].provider)
    before = datetime.now(UTC)
    waiting = await handle(COMMITMENT_CHECK, state, providers)
    after = datetime.now(UTC)
    [timer] = waiting.timers
    assert timer.name == verification.COMMITMENT_CHECK
    assert before + timedelta(seconds=5) <= timer.due_at <= after + timedelta(seconds=5)
    assert waiting.finished is False
    providers.down.clear()
    state, [done] = await feed_from(waiting.state or state, COMMITMENT_CHECK, providers=providers)
    assert state["commitment_check"] == {"SOCIAL_INSURANCE": "MATCH"}
    assert done.finished is True


async def test_a_promise_whose_matter_left_the_catalogue_before_its_later_check_ends_without_asking_anyone():
    providers = Providers()
    state, _ = await feed(COMMITTED, ROUTED, providers=providers)
    asked = len(providers.asked)
    now = matters.MatterView(matters.load())
    now.apply({"matter_code": "KSTB-SOC-01", "change": "WITHDRAWN", "materials": []})
    _, timers = verification.make_handlers(CIPHER, providers, now)
    outcome = await timers[verification.COMMITMENT_CHECK](later_check(), state)
    assert outcome.finished is True
    assert "subject" not in outcome.state, "the sealed name and number are not kept"
    assert providers.asked[asked:] == []


async def test_a_later_check_fired_again_once_the_promise_was_checked_asks_nobody_and_the_work_stays_done():
    # an operator replaying a dead-lettered firing, say
    providers = Providers()
    state, _ = await feed(COMMITTED, ROUTED, COMMITMENT_CHECK, providers=providers)
    asked = len(providers.asked)
    again = await handle(COMMITMENT_CHECK, state, providers)
    assert (again.emits, again.timers, again.finished) == ([], [], True)
    assert providers.asked[asked:] == []


# ---------------------------------------------------------------------------- feedback: the rectification reminder

FIRE = object()  # a step: the pending reminder fires
LOST = object()  # a step: the pending reminder's firing fails and is dead-lettered (the runtime drops the timer)
REPLAY = object()  # a step: an operator replays that dead-lettered firing


async def casework(*steps) -> tuple[dict | None, list[Outcome], Timer | None]:
    """test_feedback_rules.feed, one step at a time, keeping the pending reminder as the runtime
    keeps it (tongban/runtime/core.py `_fire`, `_next_entry`): a timer that fired is gone (a
    replayed firing is not that timer), a cancel or a timer of the same name replaces it."""
    state, outcomes, pending, lost = None, [], None, None
    for each in steps:
        if each is LOST:
            lost, pending = pending, None
            continue
        firing = pending if each is FIRE else lost if each is REPLAY else None
        state, [outcome] = await feed_feedback(fired(firing) if firing is not None else each, state=state)
        outcomes.append(outcome)
        if each is FIRE:
            pending = None
        if feedback.RECTIFICATION_TIMER in set(outcome.cancel_timers) | {t.name for t in outcome.timers}:
            pending = None
        pending = next((t for t in outcome.timers if t.name == feedback.RECTIFICATION_TIMER), pending)
    return state, outcomes, pending


def overdue(outcomes: list[Outcome]) -> list[str]:
    return [e.payload["step"] for o in outcomes for e in o.emits if e.event_type == topics.RECTIFICATION_OVERDUE_EVENT]


async def test_once_every_step_of_a_rectification_is_done_no_reminder_is_left():
    _, _, pending = await casework(rating(5, 1), step("R1", "CALLED_BACK"), step("R1", "RESOLVED"))
    assert pending is None


async def test_once_every_deadline_of_a_rectification_has_passed_no_reminder_is_left():
    _, outcomes, pending = await casework(rating(5, 1), FIRE, FIRE)
    assert overdue(outcomes) == ["CALLED_BACK", "RESOLVED"]
    assert pending is None


async def test_a_replayed_firing_that_leaves_no_step_open_leaves_no_reminder():
    # the call-back reminder's firing was dead-lettered; the answer was recorded before the call-back;
    # the operator then replays the firing: the call-back is overdue, and nothing is open any more
    _, outcomes, pending = await casework(rating(5, 1), LOST, step("R1", "RESOLVED"), REPLAY)
    assert overdue(outcomes) == ["CALLED_BACK"]
    assert pending is None


async def test_an_upheld_appeal_moves_the_reminder_to_the_earliest_deadline_still_open():
    on_site_next_day = {"channel": "ONSITE", "interaction_id": "visit-1", "rated_at": RATED_AT + timedelta(days=1)}
    state, _, pending = await casework(rating(5, 1), rating(5, 2, **on_site_next_day), appeal("R1"))
    assert pending is not None
    assert pending.due_at == state["cases"]["R2"]["due"]["CALLED_BACK"]


async def test_a_bad_rating_gets_the_rectification_deadlines_of_its_own_locality():
    policies = RectificationPolicies.of({"localities": {"43": {"callback_days": 2, "resolve_days": 10}}})
    on_events, _ = feedback.make_handlers(policies, FEEDBACK_CALENDAR.add_working_days, DuplicateRule(days=7))
    kind, body = rating(5, 1)  # rated Monday 2 Nov in 430102
    outcome = await on_events[kind](Event("id-0", kind, "application|TB1", body, {"occurred_at": RATED_AT}, "t"), None)
    # two working days to call back (end of Wednesday 4 Nov), ten to answer (end of Monday 16 Nov), Beijing days
    assert outcome.state["cases"]["R1"]["due"] == {"CALLED_BACK": datetime(2026, 11, 4, 16, 0, tzinfo=UTC),
                                                   "RESOLVED": datetime(2026, 11, 16, 16, 0, tzinfo=UTC)}


# ---------------------------------------------------------------------------- routing: the SLA timer

async def test_one_firing_of_the_sla_timer_gives_the_alert_due_at_the_instant_it_was_set_for():
    fed = await feed_routing(RECEIVED_STEP)
    on_sla = routing.make_timers(ROUTING_CALENDAR)[routing.SLA_TIMER]
    outcome = await on_sla(timer_fired(routing.SLA_TIMER, ROUTED_APP, fed.timer.payload), fed.state)
    assert [(e.event_type, e.payload["level"], e.payload["leg"]) for e in outcome.emits] == [
        (topics.SLA_WARNING_EVENT, "YELLOW", "ACCEPTANCE")]
