"""Feedback's rules through its handlers, no broker: 好差评 slots (一事一评, 一次一评), both
parties of 代收代办, appeals, rectification deadlines on the durable timer, 12345 work
orders (merged duplicates, the final handling unit) and SLA breaches, as counted facts."""

from datetime import UTC, date, datetime, timedelta

import pytest

from services.feedback import handlers
from services.feedback.domain import WORK_ORDER_STAGES, DuplicateRule, RectificationPolicies, RectificationPolicy
from tongban.events import derive_event_id
from tongban.handling import TIMER_FIRED, Event, Outcome, Rejected
from tongban.runtime.core import pack, unpack
from tongban.workdays import WorkingCalendar

CALENDAR = WorkingCalendar.load()

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)  # a Monday, 09:00 in Beijing
MATTER, DIVISION, PARTY = "KSTB-MKT-01", "430102", "420000"
NAME, PHONE = "张三", "13800000000"


def rating(level: int, n: int = 0, application: str = "TB1", comment: str | None = None, **changes) -> tuple:
    return handlers.RATING, {"rating_id": f"R{n}", "application_id": application, "matter_code": MATTER,
                             "division_code": DIVISION, "party": PARTY, "level": level, "channel": "ONLINE",
                             "comment": comment, "rated_at": T0, "rated_role": "SERVICE", "interaction_id": None,
                             **changes}


def work_order(stage: str = "RECEIVED", n: int = 0, category: str = "COMPLAINT", at: datetime = T0,
               unit: str | None = None, caller: str | None = "c0ffee", **changes) -> tuple:
    return handlers.WORK_ORDER, {"work_order_id": f"WO{n}", "stage": stage, "matter_code": MATTER,
                                 "division_code": DIVISION, "application_id": None, "category": category,
                                 "content": f"{NAME} {PHONE} 办事太慢", "occurred_at": at, "caller_hash": caller,
                                 "handling_unit": unit, **changes}


def appeal(rating_id: str, upheld: bool = True, reason: str = "误评: rated the wrong office") -> tuple:
    return handlers.APPEAL, {"rating_id": rating_id, "application_id": "TB1", "upheld": upheld, "reason": reason,
                             "decided_at": T0}


def step(rating_id: str, name: str) -> tuple:
    return handlers.STEP, {"rating_id": rating_id, "application_id": "TB1", "step": name, "done_at": T0}


def fired(timer) -> tuple:
    return TIMER_FIRED, {"timer_id": "t1", "name": timer.name, "payload": timer.payload}


async def feed(*steps, state: dict | None = None, key: str = "application|TB1",
               topic: str = "t") -> tuple[dict | None, list[Outcome]]:
    outcomes = []
    # made inside each test (not at import) so that mutation testing sees which test runs them
    on_events, on_timers = handlers.make_handlers(RectificationPolicies(), CALENDAR.add_working_days,
                                                  DuplicateRule(days=7))
    for n, (event_type, payload) in enumerate(steps):
        e = Event(f"id-{n}", event_type, key, payload, {"occurred_at": T0 + timedelta(minutes=n)}, topic)
        handler = on_timers[payload["name"]] if event_type == TIMER_FIRED else on_events[event_type]
        # the handler gets its own copy, as from the runtime: what it changes in place without
        # returning it as the new state is lost here as it would be there
        outcome = await handler(e, unpack(pack(state)) if state is not None else None)
        # kept as the runtime keeps it (BSON), so what does not survive the store fails here
        state = unpack(pack(outcome.state)) if outcome.state is not None else state
        outcomes.append(outcome)
    return state, outcomes


def facts(outcomes: list[Outcome]) -> list[tuple]:
    """(kind, fact id, party, counted, bad) of every fact emitted."""
    return [(e.payload["kind"], e.payload["fact_id"], e.payload["party"], e.payload["counted"], e.payload["bad"])
            for o in outcomes for e in o.emits if e.event_type == handlers.topics.SUPERVISION_FACT_EVENT]


# ---------------------------------------------------------------------------- wiring

def test_feedback_reads_ratings_work_orders_and_casework_and_writes_facts_only():
    assert handlers.INPUTS == ["tongban.feedback.ratings", "tongban.feedback.ratings.hall",
                               "tongban.feedback.ratings.portal", "tongban.feedback.ratings.mobile",
                               "tongban.feedback.ratings.website", "tongban.feedback.workorders",
                               "tongban.feedback.casework", "tongban.sla.breached", "tongban.application.routed",
                               "tongban.application.decided"]
    assert handlers.FACTS == "tongban.feedback.facts"


def test_ratings_meet_per_application_and_work_orders_per_duplicate_group():
    keys = handlers.keys()
    assert keys[handlers.RATING](Event("i", handlers.RATING, "k", rating(2)[1], {}, "t")) == "application|TB1"
    lone = rating(2, 7, application=None)[1]
    assert keys[handlers.RATING](Event("i", handlers.RATING, "k", lone, {}, "t")) == "rating|R7"
    assert keys[handlers.WORK_ORDER](Event("i", "w", "k", work_order()[1], {}, "t")) == f"c0ffee|{MATTER}|{DIVISION}"
    anonymous = work_order(n=3, caller=None)[1]
    assert keys[handlers.WORK_ORDER](Event("i", "w", "k", anonymous, {}, "t")) == "order|WO3"


# ---------------------------------------------------------------------------- 好差评

async def test_a_rating_is_counted_against_its_matter_division_and_party():
    _, outcomes = await feed(rating(2, 1))
    [emit] = outcomes[0].emits
    assert (emit.topic, emit.key) == ("tongban.feedback.facts", f"{MATTER}|{DIVISION}|{PARTY}")
    assert facts(outcomes) == [("RATING", "R1", PARTY, True, False)]


@pytest.mark.parametrize(("level", "bad"), [(1, False), (3, False), (4, True), (5, True)])
async def test_the_bottom_two_levels_are_bad(level, bad):
    _, outcomes = await feed(rating(level))
    assert facts(outcomes)[0][4] is bad


@pytest.mark.parametrize("level", [0, 6, True])
async def test_a_rating_level_outside_one_to_five_is_dead_lettered(level):
    with pytest.raises(Rejected, match=r"rating level must be 1..5"):
        await feed(rating(level))


async def test_a_second_online_rating_of_the_same_application_is_refused_with_the_reason():
    state, _ = await feed(rating(2, 1))
    with pytest.raises(Rejected, match=r"一事一评: this matter was already rated for application TB1 .*rating R1"):
        await feed(rating(5, 2, channel="MOBILE"), state=state)


async def test_the_same_rating_again_counts_once():
    state, _ = await feed(rating(2, 1))
    _, outcomes = await feed(rating(2, 1), state=state)
    assert facts(outcomes) == []


async def test_on_site_each_service_interaction_is_rated_once():
    on_site = {"channel": "ONSITE"}
    state, outcomes = await feed(rating(2, 1, interaction_id="visit-1", **on_site),
                                 rating(3, 2, interaction_id="visit-2", **on_site))
    assert [f[1] for f in facts(outcomes)] == ["R1", "R2"]
    with pytest.raises(Rejected, match="一次一评: this service interaction was already rated"):
        await feed(rating(1, 3, interaction_id="visit-1", **on_site), state=state)
    state, _ = await feed(rating(1, 4, **on_site))  # no interaction named (a v1 writer): the one visit
    with pytest.raises(Rejected, match="一次一评"):
        await feed(rating(1, 5, **on_site), state=state)


async def test_in_dai_shou_dai_ban_both_parties_are_rated_each_against_its_own_division():
    window = rating(2, 1, rated_role="RECEIVING", division_code="431200", party="431200-window")
    authority = rating(5, 2, rated_role="DECIDING", division_code="420100", party="420000")
    _, outcomes = await feed(window, authority)
    assert [e.key for o in outcomes for e in o.emits if e.event_type.endswith("SupervisionFact")] == [
        f"{MATTER}|431200|431200-window", f"{MATTER}|420100|420000"]
    with pytest.raises(Rejected, match="as DECIDING"):
        await feed(window, authority, rating(4, 3, rated_role="DECIDING", party="420000"))


async def test_a_rating_fact_carries_the_role_rated_and_a_rating_naming_none_rates_the_service():
    _, outcomes = await feed(rating(2, 1, rated_role="RECEIVING", division_code="431200", party="431200-window"),
                             rating(2, 2, application="TB2", rated_role=None))
    assert [e.payload["rated_role"] for o in outcomes for e in o.emits] == ["RECEIVING", "SERVICE"]


async def test_an_upheld_appeal_withdraws_the_rating_from_the_same_matter_division_party_and_role():
    window = rating(5, 1, rated_role="RECEIVING", division_code="431200", party="431200-window")
    _, outcomes = await feed(window, appeal("R1"))
    counted, withdrawn = outcomes[0].emits[0], outcomes[1].emits[0]
    assert withdrawn.key == counted.key == f"{MATTER}|431200|431200-window"
    assert {k: withdrawn.payload[k] for k in ("matter_code", "division_code", "party", "rated_role", "counted")} == {
        "matter_code": MATTER, "division_code": "431200", "party": "431200-window", "rated_role": "RECEIVING",
        "counted": False}


@pytest.mark.parametrize(("changes", "problem"), [
    ({"channel": "FAX"}, "unknown rating channel 'FAX'"), ({"rated_role": "BOSS"}, "rated role must be one of"),
    ({"indicator_set": "GB/T 39735-2020:v9"}, "unknown indicator set")])
async def test_a_rating_that_names_no_known_channel_role_or_indicator_set_is_refused(changes, problem):
    with pytest.raises(Rejected, match=problem):
        await feed(rating(2, **changes))


async def test_a_dead_letter_reason_never_carries_the_raters_comment():
    with pytest.raises(Rejected) as rejected:
        await feed(rating(9, comment=f"{NAME} {PHONE} 很差"))
    assert NAME not in str(rejected.value)
    assert PHONE not in str(rejected.value)


# ---------------------------------------------------------------------------- appeals

async def test_an_upheld_appeal_withdraws_the_rating_with_its_reason_kept():
    state, outcomes = await feed(rating(5, 1), appeal("R1"))
    assert facts(outcomes[1:]) == [("RATING", "R1", PARTY, False, True)]
    withdrawn = outcomes[1].emits[0].payload
    assert withdrawn["reason"] == "申诉复核 upheld: 误评: rated the wrong office"
    assert withdrawn["occurred_at"] == T0, "withdrawn from the windows it was counted in"
    assert state["ratings"]["R1"]["excluded"] == "误评: rated the wrong office"
    assert state["cases"] == {}
    assert outcomes[1].cancel_timers == [handlers.RECTIFICATION_TIMER]


async def test_a_dismissed_appeal_leaves_the_rating_counted():
    state, outcomes = await feed(rating(5, 1), appeal("R1", upheld=False))
    assert outcomes[1].emits == []
    assert state["ratings"]["R1"]["excluded"] is None


async def test_an_upheld_appeal_of_a_good_rating_withdraws_it_though_it_opened_no_case():
    _, outcomes = await feed(rating(2, 1), appeal("R1"))
    assert facts(outcomes[1:]) == [("RATING", "R1", PARTY, False, False)]


async def test_a_rectification_step_for_a_rating_without_a_case_is_refused_with_the_reason():
    state, _ = await feed(rating(2, 1))  # a good rating opens no case
    with pytest.raises(Rejected, match=r"^no open rectification case for rating R1$"):
        await feed(step("R1", "CALLED_BACK"), state=state)


async def test_an_appeal_for_an_unknown_rating_is_refused():
    with pytest.raises(Rejected, match="has not counted"):
        await feed(rating(5, 1), appeal("R9"))


# ---------------------------------------------------------------------------- rectification

async def test_a_bad_rating_opens_a_rectification_case_with_working_day_deadlines():
    state, outcomes = await feed(rating(4, 1))
    case = state["cases"]["R1"]
    # Monday: the call-back is due by the end of Tuesday, the answer 15 working days on (Beijing days)
    assert case["due"]["CALLED_BACK"] == datetime(2026, 11, 3, 16, 0, tzinfo=UTC)
    assert CALENDAR.add_working_days(T0, 15) == date(2026, 11, 23)
    assert case["due"]["RESOLVED"] == datetime(2026, 11, 23, 16, 0, tzinfo=UTC)
    [timer] = outcomes[0].timers
    assert (timer.name, timer.due_at) == (handlers.RECTIFICATION_TIMER, case["due"]["CALLED_BACK"])


async def test_a_locality_can_set_its_own_deadlines_the_longest_prefix_wins():
    policies = RectificationPolicies.of({"localities": {"42": {"callback_days": 2, "resolve_days": 10},
                                                         "4201": {"callback_days": 1, "resolve_days": 5}}})
    assert policies.for_division("420100") == RectificationPolicy(1, 5)
    assert policies.for_division("420500") == RectificationPolicy(2, 10)
    assert policies.for_division("430102") == RectificationPolicy(1, 15)


async def test_a_good_rating_opens_no_case():
    state, outcomes = await feed(rating(2, 1))
    assert state["cases"] == {}
    assert outcomes[0].timers == []


async def test_an_overdue_step_is_reported_once_and_the_timer_moves_to_the_next_deadline():
    state, outcomes = await feed(rating(5, 1))
    state, later = await feed(fired(outcomes[0].timers[0]), state=state)
    [overdue] = later[0].emits
    assert overdue.event_type == "tongban.feedback.RectificationOverdue"
    assert (overdue.key, overdue.payload["step"], overdue.payload["application_id"]) == (
        f"{MATTER}|{DIVISION}|{PARTY}", "CALLED_BACK", "TB1")
    assert later[0].timers[0].due_at == state["cases"]["R1"]["due"]["RESOLVED"]
    _, again = await feed(fired(outcomes[0].timers[0]), state=state)
    assert again[0].emits == []


async def test_an_overdue_report_names_the_rating_step_party_and_deadline_on_the_facts_topic():
    state, outcomes = await feed(rating(5, 1))
    _, later = await feed(fired(outcomes[0].timers[0]), state=state)
    [overdue] = later[0].emits
    assert overdue.topic == "tongban.feedback.facts"
    assert overdue.payload == {"rating_id": "R1", "application_id": "TB1", "step": "CALLED_BACK",
                               "matter_code": MATTER, "division_code": DIVISION, "party": PARTY,
                               "due_at": state["cases"]["R1"]["due"]["CALLED_BACK"]}
    # one event per rating and step, whichever timer firing reports it
    assert derive_event_id("cause", overdue.event_type, overdue.qualifier) == derive_event_id(
        "cause", overdue.event_type, "R1|CALLED_BACK")


async def test_once_the_rectification_is_answered_the_rater_gets_one_follow_up_rating():
    state, _ = await feed(rating(5, 1), step("R1", "CALLED_BACK"))
    with pytest.raises(Rejected, match="一事一评"):
        await feed(rating(2, 2), state=state)  # not answered yet: still the one rating
    state, outcomes = await feed(step("R1", "RESOLVED"), rating(2, 2), state=state)
    assert facts(outcomes[1:]) == [("RATING", "R2", PARTY, True, False)]
    assert state["cases"]["R1"]["done"] == ["CALLED_BACK", "RESOLVED", "FOLLOW_UP_RATED"]
    assert "R2" not in state["cases"]
    with pytest.raises(Rejected, match="一事一评"):
        await feed(rating(4, 3), state=state)  # one follow-up only


async def test_a_follow_up_the_casework_already_recorded_leaves_the_rater_no_further_rating():
    # the office may record the follow-up rating (回访评价) itself, taken by telephone
    state, _ = await feed(rating(5, 1), step("R1", "RESOLVED"), step("R1", "FOLLOW_UP_RATED"))
    with pytest.raises(Rejected, match="一事一评"):
        await feed(rating(2, 2), state=state)


async def test_a_step_done_in_time_is_never_overdue():
    state, outcomes = await feed(rating(5, 1), step("R1", "CALLED_BACK"))
    assert outcomes[1].timers[0].due_at == state["cases"]["R1"]["due"]["RESOLVED"]
    _, late = await feed(fired(outcomes[0].timers[0]), state=state)
    assert late[0].emits == []
    with pytest.raises(Rejected, match="unknown rectification step"):
        await feed(step("R1", "FORGOTTEN"), state=state)


# ---------------------------------------------------------------------------- 12345

async def test_a_complaint_counts_against_the_unit_it_is_dispatched_to():
    _, outcomes = await feed(work_order(), work_order("DISPATCHED", unit="U-market"), work_order("HANDLING"),
                             work_order("ANSWERED"), work_order("CLOSED"), work_order("REVISITED"),
                             work_order("EVALUATED"), key="g")
    assert facts(outcomes) == [("COMPLAINT", "WO0", "U-market", True, False)]


# every stage after the dispatch, bar the two that move the count (退单, 改派) and 即时办结
AFTER_DISPATCH = [s for s in WORK_ORDER_STAGES if s not in ("RECEIVED", "RETURNED", "REASSIGNED", "ANSWERED_ON_CALL")]


@pytest.mark.parametrize("later", AFTER_DISPATCH)
async def test_a_complaint_counts_once_per_work_order_not_at_every_stage(later):
    # 12345 systems name the handling unit on later stages too (and may send a dispatch
    # again): a stage that names the unit already counted must not count the complaint again
    _, outcomes = await feed(work_order(), work_order("DISPATCHED", unit="U-market"),
                             work_order(later, unit="U-market", at=T0 + timedelta(hours=1)), key="g")
    assert facts(outcomes) == [("COMPLAINT", "WO0", "U-market", True, False)]


@pytest.mark.parametrize("later", [s for s in AFTER_DISPATCH if s != "DISPATCHED"])
async def test_only_a_dispatch_or_a_reassignment_moves_the_complaint_to_the_unit_it_names(later):
    # a later stage may name another unit (one that helps, 协办): the complaint stays with
    # the unit it was dispatched to
    _, outcomes = await feed(work_order(), work_order("DISPATCHED", unit="U-a"),
                             work_order(later, unit="U-b", at=T0 + timedelta(hours=1)), key="g")
    assert facts(outcomes) == [("COMPLAINT", "WO0", "U-a", True, False)]


async def test_a_reassigned_order_counts_against_the_final_unit_not_the_one_that_returned_it():
    state, outcomes = await feed(work_order(), work_order("DISPATCHED", unit="U-a"), work_order("RETURNED"),
                                 work_order("REASSIGNED", unit="U-b"), work_order("CLOSED"), key="g")
    assert facts(outcomes) == [("COMPLAINT", "WO0", "U-a", True, False), ("COMPLAINT", "WO0", "U-a", False, False),
                               ("COMPLAINT", "WO0", "U-b", True, False)]
    assert state["cases"]["WO0"]["counted_unit"] == "U-b"


async def test_a_returned_order_withdraws_the_complaint_from_its_unit_and_counts_it_nowhere_until_reassigned():
    state, outcomes = await feed(work_order(), work_order("DISPATCHED", unit="U-a"),
                                 work_order("RETURNED", at=T0 + timedelta(hours=2)), key="g")
    [withdrawn] = outcomes[-1].emits
    assert (withdrawn.topic, withdrawn.key) == ("tongban.feedback.facts", f"{MATTER}|{DIVISION}|U-a")
    assert withdrawn.payload == {"fact_id": "WO0", "kind": "COMPLAINT", "matter_code": MATTER,
                                 "division_code": DIVISION, "party": "U-a", "rated_role": "SERVICE", "bad": False,
                                 "counted": False, "reason": "work order returned", "occurred_at": T0}
    assert state["cases"]["WO0"]["counted_unit"] is None


async def test_each_fact_one_input_emits_has_an_event_id_of_its_own():
    # a 改派 withdraws the count from one unit and counts it against another in one outcome;
    # the runtime derives each event's id from its cause, type and qualifier
    _, outcomes = await feed(work_order(), work_order("DISPATCHED", unit="U-a"),
                             work_order("REASSIGNED", unit="U-b"), key="g")
    ids = {derive_event_id("cause", e.event_type, e.qualifier) for e in outcomes[-1].emits}
    assert len(ids) == len(outcomes[-1].emits) == 2


async def test_reassigning_straight_to_another_unit_moves_the_count():
    _, outcomes = await feed(work_order(), work_order("DISPATCHED", unit="U-a"),
                             work_order("REASSIGNED", unit="U-b"), key="g")
    assert [(f[2], f[3]) for f in facts(outcomes)] == [("U-a", True), ("U-a", False), ("U-b", True)]


async def test_duplicates_of_one_caller_matter_and_division_within_the_days_are_merged():
    state, outcomes = await feed(work_order(n=1), work_order("DISPATCHED", 1, unit="U-a"),
                                 work_order(n=2, at=T0 + timedelta(days=3)),
                                 work_order("DISPATCHED", 2, unit="U-a", at=T0 + timedelta(days=3)),
                                 work_order(n=3, at=T0 + timedelta(days=9)), key="g")
    assert state["cases"]["WO1"]["orders"] == ["WO1", "WO2"]
    assert state["merged"] == {"WO1": "WO1", "WO2": "WO1", "WO3": "WO3"}, "after 7 days: a new case"
    assert facts(outcomes) == [("COMPLAINT", "WO1", "U-a", True, False)]


async def test_consultations_and_answers_on_the_call_count_nothing():
    _, outcomes = await feed(work_order(category="CONSULTATION"), work_order("DISPATCHED", unit="U-a",
                                                                             category="CONSULTATION"),
                             work_order("ANSWERED_ON_CALL", n=5), key="g")
    assert facts(outcomes) == []


async def test_an_unknown_stage_or_a_dispatch_to_nobody_is_refused():
    with pytest.raises(Rejected, match="unknown work-order stage"):
        await feed(work_order("LOST"), key="g")
    with pytest.raises(Rejected, match="REASSIGNED names no handling unit"):
        await feed(work_order(), work_order("REASSIGNED"), key="g")


# ---------------------------------------------------------------------------- SLA breaches

def breach(party: str, leg: str = "DECISION") -> dict:
    return {"application_id": "TB1", "matter_code": MATTER, "party": party, "leg": leg, "step": "DECIDE",
            "deadline": T0, "consequence": ""}


@pytest.mark.parametrize(("party", "group"), [("420000", f"{MATTER}|420000|420000"), ("ems", f"{MATTER}|-|ems")])
async def test_an_sla_breach_counts_against_the_party_it_names(party, group):
    on_events, _ = handlers.make_handlers(RectificationPolicies(), CALENDAR.add_working_days, DuplicateRule())
    e = Event("breach-1", handlers.SLA_BREACHED, "TB1", breach(party), {}, "t")
    outcome = await on_events[handlers.SLA_BREACHED](e, None)
    assert facts([outcome]) == [("SLA_BREACH", "TB1|DECISION|DECIDE", party, True, False)]
    assert outcome.emits[0].key == group
    assert outcome.emits[0].payload["occurred_at"] == T0, "counted in the window of its deadline"


async def test_a_breach_fact_says_which_leg_was_late():
    on_events, _ = handlers.make_handlers(RectificationPolicies(), CALENDAR.add_working_days, DuplicateRule())
    e = Event("breach-1", handlers.SLA_BREACHED, "TB1", breach("420000", "DELIVERY"), {}, "t")
    outcome = await on_events[handlers.SLA_BREACHED](e, None)
    assert outcome.emits[0].payload["reason"] == "DELIVERY"


def test_a_work_order_stage_is_one_business_fact_per_occurrence():
    def occurrence(event_id: str, stage: str, at: datetime) -> Event:
        return Event(event_id, handlers.WORK_ORDER, "g", work_order(stage, at=at)[1], {}, "t")

    ids = handlers.business_ids()[handlers.WORK_ORDER]
    later = T0 + timedelta(days=1)
    assert ids(occurrence("id-1", "EXTENDED", T0)) == ids(occurrence("id-2", "EXTENDED", T0)) == f"WO0|EXTENDED|{T0}"
    assert ids(occurrence("id-3", "EXTENDED", later)) == f"WO0|EXTENDED|{later}", "延期 again: another occurrence"


def test_a_breach_resent_under_another_event_id_is_the_same_business_fact():
    e1 = Event("id-1", handlers.SLA_BREACHED, "TB1", breach("420000"), {}, "t")
    e2 = Event("id-2", handlers.SLA_BREACHED, "TB1", breach("420000"), {}, "t")
    ids = handlers.business_ids()[handlers.SLA_BREACHED]
    assert ids(e1) == ids(e2) != ids(Event("id-3", handlers.SLA_BREACHED, "TB1", breach("420000", "DELIVERY"), {}, "t"))


# ---------------------------------------------------------------------------- rating channels

@pytest.mark.parametrize(("topic", "channel"), [("tongban.feedback.ratings.hall", "ONSITE"),
                                                ("tongban.feedback.ratings.portal", "ONLINE"),
                                                ("tongban.feedback.ratings.mobile", "MOBILE"),
                                                ("tongban.feedback.ratings.website", "WEBSITE")])
async def test_a_channel_topic_counts_ratings_of_its_own_channel(topic, channel):
    _, outcomes = await feed(rating(2, 1, channel=channel), topic=topic)
    assert facts(outcomes) == [("RATING", "R1", PARTY, True, False)]


async def test_a_channel_topic_refuses_a_rating_that_claims_another_channel():
    refusal = r"tongban\.feedback\.ratings\.hall carries ONSITE ratings only, this one says ONLINE"
    with pytest.raises(Rejected, match=refusal):
        await feed(rating(2, 1, channel="ONLINE"), topic="tongban.feedback.ratings.hall")


async def test_intakes_topic_takes_every_channel():
    _, outcomes = await feed(rating(2, 1, channel="WEBSITE"), topic="tongban.feedback.ratings")
    assert facts(outcomes) == [("RATING", "R1", PARTY, True, False)]


async def test_one_matter_rated_on_two_online_channels_is_one_rating_and_the_second_is_refused():
    """一事一评 holds across the channels: the portal's rating takes the slot, the app's is refused."""
    state, outcomes = await feed(rating(2, 1, channel="ONLINE"), topic="tongban.feedback.ratings.portal")
    assert facts(outcomes) == [("RATING", "R1", PARTY, True, False)]
    with pytest.raises(Rejected, match=r"一事一评: this matter was already rated for application TB1 .*rating R1"):
        await feed(rating(5, 2, channel="MOBILE"), state=state, topic="tongban.feedback.ratings.mobile")


async def test_at_the_hall_each_visit_is_rated_once_beside_the_online_rating():
    state, _ = await feed(rating(2, 1, channel="ONLINE"), topic="tongban.feedback.ratings.portal")
    state, outcomes = await feed(rating(1, 2, channel="ONSITE", interaction_id="visit-1"), state=state,
                                 topic="tongban.feedback.ratings.hall")
    assert facts(outcomes) == [("RATING", "R2", PARTY, True, False)]
    with pytest.raises(Rejected, match="一次一评: this service interaction was already rated"):
        await feed(rating(4, 3, channel="ONSITE", interaction_id="visit-1"), state=state,
                   topic="tongban.feedback.ratings.hall")


# ---------------------------------------------------------------------------- decisions per party

def routed(application: str = "TB1", legs: tuple[str, ...] = ("420000",)) -> tuple:
    return handlers.ROUTED, {"application_id": application, "matter_code": MATTER, "mode": "PROXY",
                             "deciding_partner": "420000", "deciding_division": "420100",
                             "legs": [{"partner_id": p, "division_code": p, "step": "DECIDE", "working_days": 15}
                                      for p in legs], "promised_working_days": 15, "due_at": T0}


def decided(application: str = "TB1", partner: str = "420000", outcome: str = "APPROVED") -> tuple:
    return handlers.DECIDED, {"application_id": application, "deciding_partner": partner, "outcome": outcome,
                              "result_reference": None, "reason": None, "decided_at": T0 + timedelta(days=3)}


@pytest.mark.parametrize("order", ["routed first", "decided first"])
async def test_a_decided_application_counts_once_for_each_party_of_its_legs(order):
    steps = [routed(legs=("430102", "420000")), decided()]
    state, outcomes = await feed(*(steps if order == "routed first" else steps[::-1]), key="TB1")
    emits = [e for o in outcomes for e in o.emits]
    assert sorted((e.key, e.payload["kind"], e.payload["fact_id"]) for e in emits) == [
        (f"{MATTER}|420000|420000", "DECISION", "decided|TB1"), (f"{MATTER}|430102|430102", "DECISION", "decided|TB1")]
    assert [o.finished for o in outcomes] == [False, True], "done once both are known"
    assert emits[0].payload["occurred_at"] == T0 + timedelta(days=3), "counted in the window of its decision"
    _, again = await feed(decided(outcome="DENIED"), routed(), state=state, key="TB1")
    assert [o.emits for o in again] == [[], []], "a second decision or route counts nothing more"


async def test_a_decision_is_counted_in_the_division_its_breaches_count_under():
    """The breach rate divides breaches by decisions of one matter × division × party."""
    _, outcomes = await feed(routed(legs=("ems",)), decided(), key="TB1")
    decision_groups = {e.key for o in outcomes for e in o.emits}
    on_events, _ = handlers.make_handlers(RectificationPolicies(), CALENDAR.add_working_days, DuplicateRule())
    breaches = [Event("b", handlers.SLA_BREACHED, "TB1", breach(p), {}, "t") for p in ("420000", "ems")]
    breach_groups = {(await on_events[handlers.SLA_BREACHED](e, None)).emits[0].key for e in breaches}
    assert decision_groups == breach_groups == {f"{MATTER}|420000|420000", f"{MATTER}|-|ems"}
