"""Feedback's rules through its handlers: 好差评 ratings and 12345 complaints flag a matter
in a division, with hysteresis; no broker."""

from datetime import UTC, datetime, timedelta

import pytest

from services.feedback import handlers
from services.feedback.domain import FlagThresholds
from tongban.handling import Event, Outcome, Rejected

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
MATTER, DIVISION, PARTY = "KSTB-MKT-01", "430102", "420000"
NAME, PHONE = "张三", "13800000000"
THRESHOLDS = FlagThresholds()  # 5 ratings, 30 % bad, 3 complaints, clear under 10 %
STAGES = ("RECEIVED", "DISPATCHED", "HANDLING", "ANSWERED", "SUPERVISED", "CLOSED", "REVISITED", "EVALUATED")


def rating(level: int, n: int = 0, comment: str | None = None, **changes) -> tuple:
    return handlers.RATING, {"rating_id": f"R{n}", "application_id": f"TB{n}", "matter_code": MATTER,
                             "division_code": DIVISION, "party": PARTY, "level": level, "channel": "ONLINE",
                             "comment": comment, "rated_at": T0, **changes}


def work_order(stage: str = "RECEIVED", category: str = "COMPLAINT", n: int = 0, **changes) -> tuple:
    return handlers.WORK_ORDER, {"work_order_id": f"WO{n}", "stage": stage, "matter_code": MATTER,
                                 "division_code": DIVISION, "application_id": None, "category": category,
                                 "content": f"{NAME} {PHONE} 办事太慢", "occurred_at": T0, **changes}


async def feed(*steps, state: dict | None = None) -> tuple[dict | None, list[Outcome]]:
    outcomes = []
    # made inside each test (not at import) so that mutation testing sees which test runs them
    rules = handlers.make_handlers(THRESHOLDS)
    for n, (event_type, payload) in enumerate(steps):
        e = Event(f"id-{n}", event_type, "key", payload, {"occurred_at": T0 + timedelta(minutes=n)}, "t")
        outcome = await rules[event_type](e, state)
        state = outcome.state if outcome.state is not None else state
        outcomes.append(outcome)
    return state, outcomes


def flags(outcomes: list[Outcome]) -> list[str]:
    return [e.event_type.rsplit(".", 1)[1] for o in outcomes for e in o.emits]


# ---------------------------------------------------------------------------- scores

def test_a_score_is_kept_per_matter_and_division_whatever_the_input_is_keyed_by():
    assert handlers.keys() == {handlers.RATING: handlers.score_key, handlers.WORK_ORDER: handlers.score_key}
    e = Event("id", handlers.RATING, "TB1", rating(2)[1], {}, "t")
    assert handlers.score_key(e) == f"{MATTER}|{DIVISION}"
    no_matter = Event("id", handlers.WORK_ORDER, "WO", work_order(matter_code=None)[1], {}, "t")
    assert handlers.score_key(no_matter) == f"-|{DIVISION}"


def test_feedback_reads_ratings_and_work_orders():
    assert handlers.INPUTS == ["tongban.feedback.ratings", "tongban.feedback.workorders"]


async def test_ratings_are_counted_and_bad_ones_told_apart():
    state, outcomes = await feed(rating(1, 1), rating(4, 2), rating(3, 3))
    assert state["score"] == {"matter_code": MATTER, "division_code": DIVISION, "party": PARTY,
                              "total_ratings": 3, "bad_ratings": 1, "complaints": 0, "flagged": False}
    assert flags(outcomes) == []


@pytest.mark.parametrize("level", [0, 6])
async def test_a_rating_level_outside_one_to_five_is_dead_lettered(level):
    with pytest.raises(Rejected, match=r"rating level must be 1..5"):
        await feed(rating(level))


async def test_a_dead_letter_reason_never_carries_the_raters_comment():
    with pytest.raises(Rejected) as rejected:
        await feed(rating(9, comment=f"{NAME} {PHONE} 很差"))
    assert NAME not in str(rejected.value)
    assert PHONE not in str(rejected.value)


async def test_the_score_keeps_the_window_start_of_its_first_input():
    state, _ = await feed(rating(2, 1), rating(2, 2), rating(2, 3))
    assert state["window_start"] == T0


# ---------------------------------------------------------------------------- flags from ratings

async def test_bad_ratings_flag_the_matter_once_there_are_enough_of_them():
    state, outcomes = await feed(rating(5, 1), rating(5, 2), rating(1, 3), rating(1, 4), rating(1, 5))
    assert flags(outcomes[:4]) == [], "too few ratings to judge"
    [flag] = outcomes[4].emits
    assert (flag.topic, flag.event_type, flag.key) == ("tongban.feedback.flags", "tongban.feedback.MatterFlagged",
                                                       MATTER)
    payload = {k: v for k, v in flag.payload.items() if k != "window_end"}
    assert payload == {"flag_id": f"{MATTER}|{DIVISION}|1", "matter_code": MATTER, "division_code": DIVISION,
                       "party": PARTY, "reason": "2 of 5 ratings were bad (差评)", "bad_ratings": 2,
                       "total_ratings": 5, "complaints": 0, "window_start": T0}
    assert flag.payload["window_end"].tzinfo is not None
    assert state["score"]["flagged"] is True
    assert state["flags"] == 1


async def test_a_flagged_matter_is_not_flagged_again_while_it_stays_bad():
    state, _ = await feed(*(rating(5, n) for n in range(5)))
    _, outcomes = await feed(rating(5, 9), state=state)
    assert flags(outcomes) == []


async def test_a_flag_is_cleared_once_bad_ratings_fall_under_the_clearing_ratio():
    steps = [rating(5, n) for n in range(5)] + [rating(1, n) for n in range(5, 60)]
    state, outcomes = await feed(*steps)
    assert flags(outcomes) == ["MatterFlagged", "MatterFlagCleared"]
    cleared = [e for o in outcomes for e in o.emits][-1]
    assert (cleared.topic, cleared.key) == ("tongban.feedback.flags", MATTER)
    assert {k: v for k, v in cleared.payload.items() if k != "cleared_at"} == {
        "flag_id": f"{MATTER}|{DIVISION}|1", "matter_code": MATTER, "division_code": DIVISION, "party": PARTY}
    assert cleared.payload["cleared_at"].tzinfo is not None
    assert state["score"]["flagged"] is False
    assert state["flags"] == 1, "a clearing is not a new flag"


async def test_a_second_flag_after_a_clearing_has_its_own_id():
    steps = [rating(5, n) for n in range(5)] + [rating(1, n) for n in range(5, 60)] + \
        [rating(5, n) for n in range(60, 90)]
    state, outcomes = await feed(*steps)
    flagged = [e for o in outcomes for e in o.emits if e.event_type == "tongban.feedback.MatterFlagged"]
    assert [f.payload["flag_id"] for f in flagged] == [f"{MATTER}|{DIVISION}|1", f"{MATTER}|{DIVISION}|2"]
    assert state["flags"] == 2


# ---------------------------------------------------------------------------- 12345 complaints

async def test_a_complaint_counts_once_per_work_order_not_at_every_stage():
    state, outcomes = await feed(*(work_order(stage) for stage in STAGES))
    assert state["score"]["complaints"] == 1
    assert flags(outcomes) == []


@pytest.mark.parametrize("stage", STAGES[1:])
async def test_a_complaint_is_counted_when_the_hotline_receives_it_and_not_at_a_later_stage(stage):
    state, _ = await feed(work_order(stage))
    assert state["score"]["complaints"] == 0


@pytest.mark.parametrize("category", ["CONSULTATION", "REQUEST", "PRAISE", "REPORT"])
async def test_only_complaints_count(category):
    state, _ = await feed(work_order(category=category))
    assert state["score"]["complaints"] == 0


async def test_three_complaints_flag_the_matter_with_the_hotline_as_reason():
    state, outcomes = await feed(work_order(n=1), work_order(n=2), work_order(n=3))
    assert flags(outcomes) == ["MatterFlagged"]
    flag = outcomes[-1].emits[0]
    assert flag.payload["reason"] == "3 complaints on the 12345 hotline"
    assert flag.payload["complaints"] == 3
    assert flag.payload["party"] == DIVISION, "a hotline case names the division, not a party"
    assert state["score"]["complaints"] == 3


async def test_a_flag_raised_by_complaints_is_not_cleared_by_good_ratings():
    state, _ = await feed(work_order(n=1), work_order(n=2), work_order(n=3))
    _, outcomes = await feed(*(rating(1, n) for n in range(10)), state=state)
    assert flags(outcomes) == []


async def test_a_work_order_about_no_matter_scores_nothing():
    state, [outcome] = await feed(work_order(matter_code=None))
    assert state is None
    assert outcome.state is None
    assert outcome.emits == []


async def test_the_callers_words_are_not_kept_in_the_score():
    state, _ = await feed(work_order())
    assert NAME not in repr(state)
    assert PHONE not in repr(state)


def test_a_rating_and_a_work_order_stage_are_facts_applied_once_whatever_event_carries_them():
    ids = handlers.business_ids()
    first = Event("e1", handlers.RATING, "k", rating(1, n=7)[1], {}, "t")
    resent = Event("e2", handlers.RATING, "k", rating(1, n=7)[1], {}, "t")
    assert ids[handlers.RATING](first) == ids[handlers.RATING](resent) == "R7"
    received = Event("e3", handlers.WORK_ORDER, "k", work_order("RECEIVED", n=4)[1], {}, "t")
    answered = Event("e4", handlers.WORK_ORDER, "k", work_order("ANSWERED", n=4)[1], {}, "t")
    assert ids[handlers.WORK_ORDER](received) != ids[handlers.WORK_ORDER](answered)
