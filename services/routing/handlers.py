"""Routing service.

Inputs:  ApplicationReceived and ApplicationWithdrawn on tongban.application.received; the
         acceptance lifecycle on tongban.application.accepted (accepted, refused, 补正,
         materials supplemented, clock changes, closed), ApplicationDecided and a joint
         matter's LegCompleted / LegFailed on .decided,
         ApplicationDelivered on .delivered; its own ApplicationUnderReview and ReviewResolved
         on .routed, re-keyed to the review queue (review.QUEUE); the Review API's commands
         (COMMANDS: re-route, reject).
Outputs: ApplicationRouted, ApplicationUnroutable (a matter not in the catalogue, or an
         operator's rejection), ApplicationUnderReview, and ReviewResolved on
         tongban.application.routed; SlaWarning and SlaBreached on tongban.sla.breached.
State:   the routing decision per application and its SLA ledger (services.routing.ledger),
         kept until the application ends; one durable timer at the ledger's next alert. An
         unroutable application keeps what a re-route needs (codes, no personal data) until
         an operator resolves it; the queue aggregate lists what waits.
Rules:   services.routing.domain (catalogue, partner registry, modes, deciding authority),
         services.routing.ledger (a clock per party and leg, in working days).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from services.routing import review
from services.routing.domain import (
    RECEIVE_HERE_HANDLE_THERE,
    ApplicationFacts,
    Catalogue,
    PartnerRegistry,
    RoutingDecision,
    Unroutable,
    decide_route,
)
from services.routing.ledger import (
    BREACHED,
    REFUSED,
    Alert,
    ClockError,
    DecisionLeg,
    Ledger,
    SlaPolicy,
    end_of,
)
from tongban import topics
from tongban.events import millis
from tongban.handling import Emit, Event, Handler, Outcome, Rejected, Timer
from tongban.workdays import WorkingCalendar

ROUTED = topics.APPLICATION_ROUTED
SLA = topics.SLA_BREACHED
INPUTS = [topics.APPLICATION_RECEIVED, topics.APPLICATION_ACCEPTED, topics.APPLICATION_DECIDED,
          topics.APPLICATION_DELIVERED, topics.APPLICATION_ROUTED]
# Requests of the Review API (services/routing/api.py), applied as commands keyed by application.
REROUTE = "routing.Reroute"
REJECT = "routing.RejectUnroutable"
COMMANDS = (REROUTE, REJECT)
SLA_TIMER = "sla"  # one timer per application, at the ledger's next alert


def keys() -> dict[str, Callable[[Event], str]]:
    """Routing reads its own review events into the one queue an operator lists."""
    return {topics.APPLICATION_UNDER_REVIEW_EVENT: lambda event: review.QUEUE,
            topics.REVIEW_RESOLVED_EVENT: lambda event: review.QUEUE}


@dataclass(frozen=True)
class SlaClock:
    """Where the ledger's clock stands against the wall clock the runtime fires timers by.
    Running it `ahead` makes every deadline fall due that much sooner (tests and demos)."""

    ahead: timedelta = timedelta(0)

    def timer_due(self, ledger_instant: datetime) -> datetime:
        return ledger_instant - self.ahead


POLICY = SlaPolicy()
WALL_CLOCK = SlaClock()


def make_handlers(catalogue: Catalogue, partners: PartnerRegistry, calendar: WorkingCalendar,
                  policy: SlaPolicy = POLICY, clock: SlaClock = WALL_CLOCK) -> dict[str, Handler]:
    async def on_received(event: Event, state: dict | None) -> Outcome:
        p = event.payload
        facts = ApplicationFacts(
            application_id=p["application_id"],
            matter_code=p["matter_code"],
            channel=p["channel"],
            receiving_division=p["receiving_division"],
            home_division=p["home_division"],
            received_at=p["submitted_at"],
            places=p.get("places") or {},
        )
        kept = review.facts_state(facts, p)
        try:
            decision = decide_route(facts, catalogue, partners, calendar)
        except Unroutable as exc:
            unroutable = {"application_id": facts.application_id, "matter_code": facts.matter_code,
                          "reason": exc.reason}
            if not exc.reviewable:  # nothing an operator could route: refused at once
                return Outcome(state={"unroutable": exc.reason}, finished=True,
                               emits=[Emit(ROUTED, topics.APPLICATION_UNROUTABLE_EVENT, event.key, unroutable)])
            # The application waits in the review queue for an operator (ReviewServicer).
            return Outcome(state={"review": {**kept, "reason": exc.reason}},
                           emits=[Emit(ROUTED, topics.APPLICATION_UNDER_REVIEW_EVENT, event.key, unroutable)])
        return routed_outcome(event.key, kept, decision)

    def routed_outcome(key: str, kept: dict[str, Any], decision: RoutingDecision) -> Outcome:
        """The decision published and the application's SLA ledger opened."""
        routed = {
            "application_id": kept["application_id"],
            "matter_code": kept["matter_code"],
            "mode": decision.mode,
            "deciding_partner": decision.deciding_partner,
            "deciding_division": decision.deciding_division,
            "legs": [asdict(leg) for leg in decision.legs],
            "promised_working_days": decision.promised_working_days,
            "due_at": decision.due_at,
        }
        # Parties by id only: the window (or, online, the receiving division), the deciding
        # authorities, and who serves the result.
        window = kept["window_id"] or kept["receiving_division"]
        serves = {"POST": topics.CARRIER, "WINDOW": window}.get(kept["delivery_method"], decision.deciding_partner)
        ledger = Ledger.open(
            kept["received_at"], window=window, deciding_party=decision.deciding_partner,
            decision_legs=[DecisionLeg(leg.partner_id, leg.step, leg.working_days) for leg in decision.legs],
            delivery_party=serves, originals_posted=decision.mode == RECEIVE_HERE_HANDLE_THERE,
            policy=policy, calendar=calendar)
        outcome = _settled({"decision": routed}, ledger, calendar, policy, clock)
        outcome.emits.insert(0, Emit(ROUTED, topics.APPLICATION_ROUTED_EVENT, key, routed))
        return outcome

    # ------------------------------------------------------------ the review queue (review.py)
    def under_review(state: dict | None) -> dict[str, Any]:
        if not state or "review" not in state:
            raise Rejected("the application is not in the review queue")
        return state["review"]

    def resolution(event: Event, kept: dict[str, Any], how: str, partner: str, reason: str,
                   operator: str = "") -> Emit:
        body = {"application_id": kept["application_id"], "matter_code": kept["matter_code"], "resolution": how,
                "deciding_partner": partner, "reason": reason, "operator": operator, "resolved_at": _occurred(event)}
        return Emit(ROUTED, topics.REVIEW_RESOLVED_EVENT, event.key, body)

    async def on_reroute(event: Event, state: dict | None) -> Outcome:
        """An operator names the deciding authority: the application is routed to it."""
        kept = under_review(state)
        partner = event.payload["deciding_partner"]
        try:
            decision = review.reroute(review.facts_of(kept), partner, catalogue, partners, calendar)
            why = review.note(event.payload["reason"])
        except Unroutable as exc:
            raise Rejected(exc.reason) from None
        outcome = routed_outcome(event.key, kept, decision)
        outcome.emits.append(resolution(event, kept, review.REROUTED, partner, why, event.payload["operator"]))
        return outcome

    async def on_reject(event: Event, state: dict | None) -> Outcome:
        """An operator rejects the application with a reason: it ends."""
        kept = under_review(state)
        try:
            reason = review.check_reason(event.payload["reason"])
        except Unroutable as exc:
            raise Rejected(exc.reason) from None
        rejected = {"application_id": kept["application_id"], "matter_code": kept["matter_code"],
                    "reason": f"rejected on review: {reason}"}
        return Outcome(state={"unroutable": rejected["reason"]}, finished=True,
                       emits=[Emit(ROUTED, topics.APPLICATION_UNROUTABLE_EVENT, event.key, rejected),
                              resolution(event, kept, review.REJECTED, "", reason, event.payload["operator"])])

    async def on_queued(event: Event, state: dict | None) -> Outcome:
        """The queue (key review.QUEUE) takes in what routing itself put under review."""
        p = event.payload
        entry = {"application_id": p["application_id"], "matter_code": p["matter_code"], "reason": p["reason"],
                 "since_ms": millis(_occurred(event))}
        return Outcome(state=review.queued(state, entry))

    async def on_resolved(event: Event, state: dict | None) -> Outcome:
        return Outcome(state=review.resolved(state, event.payload["application_id"]))

    async def on_withdrawn(event: Event, state: dict | None) -> Outcome:
        """Intake's record of a withdrawal: the earlier fact ends the clocks (delivery's
        ApplicationClosed follows); an application under review leaves the queue."""
        if state and "review" in state:
            kept = state["review"]
            return Outcome(state={"unroutable": kept["reason"]}, finished=True,
                           emits=[resolution(event, kept, review.WITHDRAWN, "", "withdrawn by the applicant")])
        return await withdrawn(event, state)

    def lifecycle(apply: Callable[[Ledger, dict[str, Any]], object]) -> Handler:
        async def handle(event: Event, state: dict | None) -> Outcome:
            if not state or "ledger" not in state:
                return Outcome()  # never routed (unroutable, or not ours): no clock runs
            ledger = Ledger.from_state(state["ledger"])
            if ledger.ended:
                return Outcome()
            try:
                apply(ledger, event.payload)
            except ClockError as exc:
                raise Rejected(str(exc)) from None
            return _settled(state, ledger, calendar, policy, clock)

        return handle

    def clock_changed(ledger: Ledger, p: dict[str, Any]) -> None:
        if p["kind"] == "EXTENDED":
            ledger.extended(p["working_days"], policy)
        elif p["kind"] == "EXCLUSION_STARTED":
            ledger.exclusion_started(p["changed_at"])
        elif p["kind"] == "EXCLUSION_ENDED":
            ledger.exclusion_ended(p["changed_at"])
        else:
            raise ClockError("clock change kind is not one of EXTENDED, EXCLUSION_STARTED, EXCLUSION_ENDED")

    withdrawn = lifecycle(lambda ledger, p: ledger.end("WITHDRAWN", p["withdrawn_at"]))

    return {
        REROUTE: on_reroute,
        REJECT: on_reject,
        topics.APPLICATION_UNDER_REVIEW_EVENT: on_queued,
        topics.REVIEW_RESOLVED_EVENT: on_resolved,
        topics.APPLICATION_RECEIVED_EVENT: on_received,
        topics.APPLICATION_ACCEPTED_EVENT: lifecycle(lambda ledger, p: ledger.accepted(p["accepted_at"])),
        topics.APPLICATION_REFUSED_EVENT: lifecycle(lambda ledger, p: ledger.end(REFUSED)),
        topics.SUPPLEMENT_REQUESTED_EVENT: lifecycle(lambda ledger, p: ledger.supplement_requested(
            p["requested_at"], by_authority=p["cause"] == "AUTHORITY")),
        topics.MATERIALS_SUPPLEMENTED_EVENT: lifecycle(
            lambda ledger, p: ledger.materials_arrived(p["supplemented_at"])),
        topics.APPLICATION_CLOCK_CHANGED_EVENT: lifecycle(clock_changed),
        topics.APPLICATION_CLOSED_EVENT: lifecycle(lambda ledger, p: ledger.end(p["status"], p["closed_at"])),
        topics.APPLICATION_WITHDRAWN_EVENT: on_withdrawn,
        # 多地联办: delivery runs the legs in turn; each leg's clock closes and the next one's starts.
        topics.LEG_COMPLETED_EVENT: lifecycle(lambda ledger, p: ledger.leg_completed(p["step"], p["completed_at"])),
        topics.LEG_FAILED_EVENT: lifecycle(lambda ledger, p: ledger.leg_failed(p["step"], p["failed_at"])),
        topics.APPLICATION_DECIDED_EVENT: lifecycle(lambda ledger, p: ledger.decided(p["outcome"], p["decided_at"])),
        topics.APPLICATION_DELIVERED_EVENT: lifecycle(lambda ledger, p: ledger.delivered(p["delivered_at"])),
    }


def make_timers(calendar: WorkingCalendar, policy: SlaPolicy = POLICY,
                clock: SlaClock = WALL_CLOCK) -> dict[str, Handler]:
    async def on_sla_timer(event: Event, state: dict | None) -> Outcome:
        if not state or "ledger" not in state:
            return Outcome()
        ledger = Ledger.from_state(state["ledger"])
        # The ledger's own instant the timer was set for: under a clock running ahead the
        # wall clock says less, and a replayed timer must give the same alerts.
        now = datetime.fromtimestamp(event.payload["payload"]["at_ms"] / 1000, UTC)
        alerts = ledger.advance(now, calendar, policy)
        outcome = _settled(state, ledger, calendar, policy, clock)
        outcome.emits = [_alert_emit(event.key, state["decision"], alert) for alert in alerts]
        return outcome

    return {SLA_TIMER: on_sla_timer}


def _settled(state: dict[str, Any], ledger: Ledger, calendar: WorkingCalendar, policy: SlaPolicy,
             clock: SlaClock) -> Outcome:
    """The state with the ledger as it now stands, and its timer at the next alert (the
    deadlines are recomputed from the clocks every time). An ended ledger ends the work."""
    new_state = {**state, "ledger": ledger.to_state()}
    if ledger.ended:
        return Outcome(state=new_state, cancel_timers=[SLA_TIMER], finished=True)
    next_at = ledger.next_alert_at(calendar, policy)
    if next_at is None:  # every clock stands still (补正, an excluded period) or waits
        return Outcome(state=new_state, cancel_timers=[SLA_TIMER])
    return Outcome(state=new_state, timers=[Timer(SLA_TIMER, clock.timer_due(next_at), {"at_ms": millis(next_at)})])


def _occurred(event: Event) -> datetime:
    """When the input happened: its envelope's time (a command's is when the API took it)."""
    occurred = event.envelope.get("occurred_at")
    return occurred if isinstance(occurred, datetime) else datetime.now(UTC)


def _alert_emit(key: str, decision: dict[str, Any], alert: Alert) -> Emit:
    payload: dict[str, Any] = {"application_id": decision["application_id"], "matter_code": decision["matter_code"],
                               "party": alert.party, "leg": alert.leg, "step": alert.step,
                               "deadline": end_of(alert.deadline)}
    if alert.level == BREACHED:
        return Emit(SLA, topics.SLA_BREACHED_EVENT, key, {**payload, "consequence": alert.consequence},
                    qualifier=alert.key)
    return Emit(SLA, topics.SLA_WARNING_EVENT, key, {**payload, "level": alert.level}, qualifier=alert.key)
