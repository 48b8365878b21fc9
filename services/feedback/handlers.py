"""Feedback service: the per-application and per-work-order rules of supervision.

Inputs:  ServiceRating (好差评) on tongban.feedback.ratings (intake's Rate) and on the
         channels' own topics tongban.feedback.ratings.{hall,portal,mobile,website};
         HotlineWorkOrder (12345) on tongban.feedback.workorders; AppealDecided and
         RectificationStepRecorded (the supervision desk) on tongban.feedback.casework;
         SlaBreached (routing's SLA ledger) on tongban.sla.breached; ApplicationRouted and
         ApplicationDecided, for the decisions an SLA breach rate divides by.
Outputs: SupervisionFact (a rating, complaint, breach or decision counted against, or withdrawn from,
         a matter × division × party) and RectificationOverdue on tongban.feedback.facts,
         keyed by matter|division|party. The windowed flags are the faust app's
         (services/feedback/windows.py).
State:   per application (or lone rating): the rating slots taken (一事一评 / 一次一评), each
         rating with its exclusion reason, the open rectification cases and their deadlines;
         per duplicate group of work orders (hashed caller × matter × division): the cases,
         their merged orders, stages and the unit each complaint counts against; per
         application id (the record key, not re-keyed): its matter and parties until it is decided.
Owners:  every aggregate is written only by the task that owns its key's partition: the
         runtime forwards ratings, casework and work orders to their aggregate's partition
         through tongban.repartition.tongban-feedback (`keys()`); routed and decided
         applications stay on their record key; breaches keep no state. What is counted per
         matter × division × party is only emitted, keyed by that group, and aggregated by
         the faust app, which owns the group's partition of tongban.feedback.facts.
Rules:   services.feedback.domain.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any, TypedDict

from services.feedback.domain import (
    COUNTED_CATEGORIES,
    DISPATCHING_STAGES,
    INDICATOR_SET,
    RECTIFICATION_STEPS,
    WORK_ORDER_STAGES,
    DuplicateRule,
    InvalidRating,
    RectificationPolicies,
    ServiceRating,
    duplicate_key,
    follow_up_of,
    rectification_deadlines,
    slot_taken,
)
from tongban import topics
from tongban.handling import Emit, Event, Handler, KeyOf, Outcome, Rejected, Timer

FACTS = topics.FEEDBACK_FACTS
# The channels' topics take ratings of their own channel only; intake's Rate takes every channel.
CHANNEL_TOPICS = {topics.FEEDBACK_RATINGS_HALL: "ONSITE", topics.FEEDBACK_RATINGS_PORTAL: "ONLINE",
                  topics.FEEDBACK_RATINGS_MOBILE: "MOBILE", topics.FEEDBACK_RATINGS_WEBSITE: "WEBSITE"}
INPUTS = [topics.FEEDBACK_RATINGS, *CHANNEL_TOPICS, topics.FEEDBACK_WORKORDERS, topics.FEEDBACK_CASEWORK,
          topics.SLA_BREACHED, topics.APPLICATION_ROUTED, topics.APPLICATION_DECIDED]
RATING = topics.SERVICE_RATING_EVENT
WORK_ORDER = topics.HOTLINE_WORK_ORDER_EVENT
APPEAL = topics.APPEAL_DECIDED_EVENT
STEP = topics.RECTIFICATION_STEP_EVENT
SLA_BREACHED = topics.SLA_BREACHED_EVENT  # routing's SLA ledger (its SlaWarning is not counted)
ROUTED = topics.APPLICATION_ROUTED_EVENT  # the parties of an application's legs
DECIDED = topics.APPLICATION_DECIDED_EVENT  # the decision each of those parties' breaches are divided by
WORK_ORDER_OCCURRENCE = ("work_order_id", "stage", "occurred_at")
RECTIFICATION_TIMER = "rectification"  # one per aggregate, due at the earliest open deadline


class RatingRecord(TypedDict):
    matter_code: str
    division_code: str
    party: str
    rated_role: str
    bad: bool
    rated_at: datetime
    excluded: str | None  # the upheld appeal's reason


class RectificationCase(TypedDict):
    due: dict[str, datetime]  # step -> deadline
    done: list[str]
    overdue: list[str]


class WorkOrderCase(TypedDict):
    received_at: datetime
    category: str
    matter_code: str | None
    division_code: str
    orders: list[str]  # the primary first, then the duplicates merged into it
    stages: list[str]
    counted_unit: str | None  # the unit the complaint counts against now


def group_of(matter_code: str, division_code: str, party: str) -> str:
    """The key of facts and windows: what is counted against whom."""
    return f"{matter_code}|{division_code}|{party}"


def division_of_party(party: str) -> str:
    """A party's own division where the party is one (a partner province, a receiving
    division); a window or the carrier has none of its own ("-"). Breaches and the
    decisions they are divided by are counted under the same one."""
    return party if party.isdigit() else "-"


def fact(kind: str, fact_id: str, matter: str, division: str, party: str, occurred_at: datetime, *,
         bad: bool = False, counted: bool = True, reason: str | None = None, role: str = "SERVICE") -> Emit:
    body = {"fact_id": fact_id, "kind": kind, "matter_code": matter, "division_code": division, "party": party,
            "rated_role": role, "bad": bad, "counted": counted, "reason": reason, "occurred_at": occurred_at}
    # several facts can follow from one input (withdrawn here, counted there): told apart by group and sense
    qualifier = f"{group_of(matter, division, party)}|{counted}"
    return Emit(FACTS, topics.SUPERVISION_FACT_EVENT, group_of(matter, division, party), body, qualifier)


# ---------------------------------------------------------------------------- ratings


def rating_key(event: Event) -> str:
    """Ratings, appeals and steps of one application meet in one aggregate (一事一评)."""
    p = event.payload
    return f"application|{p['application_id']}" if p.get("application_id") else f"rating|{p['rating_id']}"


def _next_deadline(cases: dict[str, RectificationCase]) -> datetime | None:
    open_deadlines = [due for case in cases.values() for step, due in case["due"].items()
                      if step not in case["done"] and step not in case["overdue"]]
    return min(open_deadlines, default=None)


def _rectification_timer(state: dict[str, Any]) -> tuple[list[Timer], list[str]]:
    due = _next_deadline(state["cases"])
    if due is None:
        return [], [RECTIFICATION_TIMER]
    return [Timer(RECTIFICATION_TIMER, due, {"due_at": due.isoformat()})], []


def _rating_state(state: dict[str, Any] | None) -> dict[str, Any]:
    return state if state is not None else {"slots": {}, "ratings": {}, "cases": {}}


def make_handlers(policies: RectificationPolicies, add_working_days: Callable[[datetime, int], date],
                  duplicates: DuplicateRule) -> tuple[dict[str, Handler], dict[str, Handler]]:
    """(event type -> handler, timer name -> handler)."""

    async def on_rating(event: Event, state: dict | None) -> Outcome:
        p = event.payload
        try:
            rating = ServiceRating(p["rating_id"], p.get("application_id"), p["matter_code"], p["division_code"],
                                   p["party"], p["level"], p["channel"], p.get("rated_role") or "SERVICE",
                                   p.get("interaction_id"), p.get("indicator_set") or INDICATOR_SET)
        except InvalidRating as exc:
            raise Rejected(str(exc)) from exc
        channel = CHANNEL_TOPICS.get(event.topic)
        if channel is not None and rating.channel != channel:
            raise Rejected(f"{event.topic} carries {channel} ratings only, this one says {rating.channel}")
        st = _rating_state(state)
        if rating.rating_id in st["ratings"]:
            return Outcome()  # the same rating again: counted once already
        follows_up = follow_up_of(rating, st["slots"], st["cases"])
        if follows_up is not None:  # the rater's one rating after the rectification was answered
            st["cases"][follows_up]["done"].append("FOLLOW_UP_RATED")
            st["slots"][f"{rating.slot}|FOLLOW_UP"] = rating.rating_id
        elif refusal := slot_taken(rating, st["slots"]):
            raise Rejected(refusal)
        else:
            st["slots"][rating.slot] = rating.rating_id
        st["ratings"][rating.rating_id] = RatingRecord(
            matter_code=rating.matter_code, division_code=rating.division_code, party=rating.party,
            rated_role=rating.rated_role, bad=rating.is_bad, rated_at=p["rated_at"], excluded=None)
        emits = [fact("RATING", rating.rating_id, rating.matter_code, rating.division_code, rating.party,
                      p["rated_at"], bad=rating.is_bad, role=rating.rated_role)]
        if rating.is_bad and follows_up is None:  # every 差评 opens a rectification case (整改), once
            st["cases"][rating.rating_id] = RectificationCase(
                due=rectification_deadlines(p["rated_at"], policies.for_division(rating.division_code),
                                            add_working_days), done=[], overdue=[])
        timers, cancel = _rectification_timer(st)
        return Outcome(state=st, emits=emits, timers=timers, cancel_timers=cancel)

    async def on_appeal(event: Event, state: dict | None) -> Outcome:
        p = event.payload
        record = _rating_state(state)["ratings"].get(p["rating_id"])
        if state is None or record is None:
            raise Rejected(f"appeal for rating {p['rating_id']}, which feedback has not counted")
        if not p["upheld"] or record["excluded"] is not None:
            return Outcome()  # dismissed: the rating stands; or already excluded
        record["excluded"] = p["reason"]
        # an excluded 差评 needs no rectification any more
        state["cases"].pop(p["rating_id"], None)
        timers, cancel = _rectification_timer(state)
        return Outcome(state=state, timers=timers, cancel_timers=cancel, emits=[fact(
            "RATING", p["rating_id"], record["matter_code"], record["division_code"], record["party"],
            record["rated_at"], bad=record["bad"], counted=False, reason=f"申诉复核 upheld: {p['reason']}",
            role=record["rated_role"])])

    async def on_step(event: Event, state: dict | None) -> Outcome:
        p = event.payload
        if p["step"] not in RECTIFICATION_STEPS:
            raise Rejected(f"unknown rectification step {p['step']!r}")
        case = _rating_state(state)["cases"].get(p["rating_id"])
        if state is None or case is None:
            raise Rejected(f"no open rectification case for rating {p['rating_id']}")
        if p["step"] not in case["done"]:
            case["done"].append(p["step"])
        timers, cancel = _rectification_timer(state)
        return Outcome(state=state, timers=timers, cancel_timers=cancel)

    async def on_rectification_due(event: Event, state: dict | None) -> Outcome:
        """Every open step whose deadline has come is overdue: reported once each."""
        assert state is not None  # a timer fires only for an aggregate that set it
        fired_for = datetime.fromisoformat(event.payload["payload"]["due_at"])
        emits = []
        for rating_id, case in state["cases"].items():
            record = state["ratings"][rating_id]
            for step, due in case["due"].items():
                if due <= fired_for and step not in case["done"] and step not in case["overdue"]:
                    case["overdue"].append(step)
                    emits.append(Emit(FACTS, topics.RECTIFICATION_OVERDUE_EVENT,
                                      group_of(record["matter_code"], record["division_code"], record["party"]),
                                      {"rating_id": rating_id, "application_id": event.key.removeprefix(
                                          "application|") if event.key.startswith("application|") else None,
                                       "step": step, "matter_code": record["matter_code"],
                                       "division_code": record["division_code"], "party": record["party"],
                                       "due_at": due}, qualifier=f"{rating_id}|{step}"))
        timers, cancel = _rectification_timer(state)
        return Outcome(state=state, emits=emits, timers=timers, cancel_timers=cancel)

    # ------------------------------------------------------------------------ 12345

    async def on_work_order(event: Event, state: dict | None) -> Outcome:
        p = event.payload
        if p["stage"] not in WORK_ORDER_STAGES:
            raise Rejected(f"unknown work-order stage {p['stage']!r}")
        if p["stage"] in DISPATCHING_STAGES and not p.get("handling_unit"):
            raise Rejected(f"work order {p['work_order_id']}: {p['stage']} names no handling unit")
        st: dict[str, Any] = state if state is not None else {"cases": {}, "merged": {}}
        order = p["work_order_id"]
        primary = st["merged"].get(order)
        emits: list[Emit] = []
        if primary is None:
            primary = next((pid for pid, case in st["cases"].items()
                            if case["category"] == p["category"]
                            and duplicates.merges(case["received_at"], p["occurred_at"])), None)
            if primary is not None:  # a duplicate: merged into the first order by the stated rule
                st["cases"][primary]["orders"].append(order)
            else:
                primary = order
                st["cases"][order] = WorkOrderCase(
                    received_at=p["occurred_at"], category=p["category"], matter_code=p["matter_code"],
                    division_code=p["division_code"], orders=[order], stages=[], counted_unit=None)
            st["merged"][order] = primary
        case = st["cases"][primary]
        case["stages"].append(p["stage"])
        if primary != order:
            return Outcome(state=st)  # a merged duplicate's stages follow its primary's handling
        if case["category"] in COUNTED_CATEGORIES and case["matter_code"]:
            emits = _count_against(primary, case, p)
        return Outcome(state=st, emits=emits)

    handlers: dict[str, Handler] = {RATING: on_rating, APPEAL: on_appeal, STEP: on_step, WORK_ORDER: on_work_order,
                                    SLA_BREACHED: on_sla_breached, ROUTED: on_routed, DECIDED: on_decided}
    return handlers, {RECTIFICATION_TIMER: on_rectification_due}


def breach_id(event: Event) -> str:
    """One breach per application, leg and step: the business id a resend shares."""
    p = event.payload
    return f"{p['application_id']}|{p['leg']}|{p['step']}"


async def on_sla_breached(event: Event, state: dict | None) -> Outcome:
    """A breach counts against the party the ledger names, in that party's division when
    the party is one (a partner province, a receiving division); a window or the carrier
    has none of its own in the breach ("-")."""
    p = event.payload
    return Outcome(emits=[fact("SLA_BREACH", breach_id(event), p["matter_code"], division_of_party(p["party"]),
                               p["party"], p["deadline"], reason=p["leg"])])


# ---------------------------------------------------------------------------- decisions per party


async def on_routed(event: Event, state: dict | None) -> Outcome:
    """The matter and the parties holding a leg of the application: whose decisions it counts for."""
    p = event.payload
    st: dict[str, Any] = state if state is not None else {}
    if "matter_code" in st:
        return Outcome()  # routed once: a re-route names the same matter
    parties = [p["deciding_partner"], *(leg["partner_id"] for leg in p["legs"]), *st.get("parties", [])]
    st.update(matter_code=p["matter_code"], parties=list(dict.fromkeys(parties)))
    return _decisions(event, st)


async def on_decided(event: Event, state: dict | None) -> Outcome:
    """The application is decided (granted or denied): once, whatever decision came later."""
    st: dict[str, Any] = state if state is not None else {}
    if "decided_at" in st:
        return Outcome()
    st.update(decided_at=event.payload["decided_at"],
              parties=list(dict.fromkeys([*st.get("parties", []), event.payload["deciding_partner"]])))
    return _decisions(event, st)


def _decisions(event: Event, st: dict[str, Any]) -> Outcome:
    """Once both the routing and the decision are known, one DECISION fact per party of the
    application, in the division its breaches count under; then the aggregate is done."""
    if "matter_code" not in st or "decided_at" not in st:
        return Outcome(state=st)  # the other one is still to come (they travel on different topics)
    return Outcome(state=st, finished=True, emits=[
        fact("DECISION", f"decided|{event.key}", st["matter_code"], division_of_party(party), party, st["decided_at"])
        for party in st["parties"]])


def _count_against(primary: str, case: WorkOrderCase, p: dict[str, Any]) -> list[Emit]:
    """A complaint counts against the unit handling it now: dispatch counts it, a 退单
    withdraws it, a 改派 counts it against the new unit (so finally against the last)."""
    matter, division = case["matter_code"], case["division_code"]
    assert matter is not None
    stage, unit = p["stage"], p.get("handling_unit")
    emits = []
    moves = stage in DISPATCHING_STAGES and unit is not None and unit != case["counted_unit"]
    if case["counted_unit"] and (stage == "RETURNED" or moves):
        emits.append(fact("COMPLAINT", primary, matter, division, case["counted_unit"], case["received_at"],
                          counted=False, reason=f"work order {stage.lower()}"))
        case["counted_unit"] = None
    if moves and unit is not None:
        emits.append(fact("COMPLAINT", primary, matter, division, unit, case["received_at"]))
        case["counted_unit"] = unit
    return emits


def work_order_key(event: Event) -> str:
    p = event.payload
    return duplicate_key(p.get("caller_hash"), p["matter_code"], p["division_code"], p["work_order_id"])


def keys() -> dict[str, KeyOf]:
    return {RATING: rating_key, APPEAL: rating_key, STEP: rating_key, WORK_ORDER: work_order_key}


def business_ids() -> dict[str, KeyOf]:
    """A rating counts once by its id, a work order's stage once, whatever event carried them."""
    return {RATING: lambda event: event.payload["rating_id"], SLA_BREACHED: breach_id,
            # a stage can recur (改派 twice, 延期 again): its time tells the occurrences apart
            WORK_ORDER: lambda event: "|".join(str(event.payload[f]) for f in WORK_ORDER_OCCURRENCE)}
