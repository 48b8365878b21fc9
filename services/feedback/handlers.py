"""Feedback service.

Inputs:  ServiceRating (好差评) on tongban.feedback.ratings; HotlineWorkOrder (12345) on
         tongban.feedback.workorders.
Outputs: MatterFlagged / MatterFlagCleared on tongban.feedback.flags (keyed by matter code).
State:   per matter × division: the score (ratings, bad ratings, complaints, flagged), flags raised, window start.
Rules:   services.feedback.domain (bad levels, thresholds with hysteresis).
"""

from __future__ import annotations

from dataclasses import asdict

from services.feedback.domain import FlagThresholds, InvalidRating, MatterScore, ServiceRating, evaluate
from tongban import topics
from tongban.events import now_utc
from tongban.handling import Emit, Event, Handler, Outcome, Rejected

FLAGS = topics.FEEDBACK_FLAGS
INPUTS = [topics.FEEDBACK_RATINGS, topics.FEEDBACK_WORKORDERS]
RATING = topics.SERVICE_RATING_EVENT
WORK_ORDER = topics.HOTLINE_WORK_ORDER_EVENT


def score_key(event: Event) -> str:
    """Scores are per matter and division, whatever the input topic is keyed by."""
    return f"{event.payload['matter_code'] or '-'}|{event.payload['division_code']}"


def _load(state: dict | None, event: Event, party: str) -> tuple[MatterScore, dict]:
    """The score, and the flag bookkeeping kept beside it (flags raised, window start)."""
    if state is None:
        p = event.payload
        return MatterScore(matter_code=p["matter_code"], division_code=p["division_code"], party=party), {}
    return MatterScore(**state["score"]), {k: v for k, v in state.items() if k != "score"}


def _decide(event: Event, score: MatterScore, extra: dict, thresholds: FlagThresholds) -> Outcome:
    extra.setdefault("window_start", event.envelope["occurred_at"])
    verdict = evaluate(score, thresholds)
    emits = []
    if verdict is not None:
        extra["flags"] = extra.get("flags", 0) + (verdict == "FLAG")
        flag_id = f"{score.matter_code}|{score.division_code}|{extra['flags']}"
        common = {"flag_id": flag_id, "matter_code": score.matter_code, "division_code": score.division_code,
                  "party": score.party}
        if verdict == "FLAG":
            body = {**common, "reason": _reason(score, thresholds), "bad_ratings": score.bad_ratings,
                    "total_ratings": score.total_ratings, "complaints": score.complaints,
                    "window_start": extra["window_start"], "window_end": now_utc()}
            emits.append(Emit(FLAGS, topics.MATTER_FLAGGED_EVENT, score.matter_code, body))
        else:
            emits.append(Emit(FLAGS, topics.MATTER_FLAG_CLEARED_EVENT, score.matter_code,
                              {**common, "cleared_at": now_utc()}))
    return Outcome(state={"score": asdict(score), **extra}, emits=emits)


def _reason(score: MatterScore, thresholds: FlagThresholds) -> str:
    if score.complaints >= thresholds.complaints:
        return f"{score.complaints} complaints on the 12345 hotline"
    return f"{score.bad_ratings} of {score.total_ratings} ratings were bad (差评)"


def make_handlers(thresholds: FlagThresholds) -> dict[str, Handler]:
    async def on_rating(event: Event, state: dict | None) -> Outcome:
        p = event.payload
        score, extra = _load(state, event, p["party"])
        try:
            score.add_rating(ServiceRating(p["rating_id"], p["matter_code"], p["division_code"], p["party"],
                                           p["level"], p["rated_at"]))
        except InvalidRating as exc:
            raise Rejected(str(exc)) from exc
        return _decide(event, score, extra, thresholds)

    async def on_work_order(event: Event, state: dict | None) -> Outcome:
        p = event.payload
        if p["matter_code"] is None:
            return Outcome()  # a hotline case about no particular matter scores nothing
        score, extra = _load(state, event, p["division_code"])
        # A complaint counts once, when the hotline receives it, not at every later stage.
        if p["category"] == "COMPLAINT" and p["stage"] == "RECEIVED":
            score.add_complaint()
        return _decide(event, score, extra, thresholds)

    return {RATING: on_rating, WORK_ORDER: on_work_order}


def keys() -> dict:
    return {RATING: score_key, WORK_ORDER: score_key}


def business_ids() -> dict:
    """A rating counts once by its id, a work order's stage once, whatever event carried them."""
    return {RATING: lambda event: event.payload["rating_id"],
            WORK_ORDER: lambda event: f"{event.payload['work_order_id']}|{event.payload['stage']}"}
