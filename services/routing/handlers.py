"""Routing service.

Inputs:  ApplicationReceived and ApplicationWithdrawn on tongban.application.received; the
         acceptance lifecycle on tongban.application.accepted (accepted, refused, 补正,
         materials supplemented, clock changes, closed), ApplicationDecided and a joint
         matter's LegCompleted / LegFailed on .decided,
         ApplicationDelivered on .delivered; the carrier's MaterialsDispatched / MaterialsReceived
         on tongban.partner.ems.originals (资料寄递); its own ApplicationUnderReview and ReviewResolved
         on .routed, re-keyed to the review queue (review.QUEUE); the Review API's commands
         (COMMANDS: re-route, reject).
Outputs: ApplicationRouted, ApplicationUnroutable (a matter not in the catalogue, or an
         operator's rejection), ApplicationUnderReview, and ReviewResolved on
         tongban.application.routed; SlaWarning and SlaBreached on tongban.sla.breached.
         一件事一次办 (services.routing.bundles): BundleMemberHeld (an application of a bundle
         waits; read back into the bundle's aggregate) and BundleReleased (one per application
         of the bundle, read back by each) on tongban.application.routed.
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

from services.routing import bundles, review
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
    originals_travel,
)
from tongban import topics
from tongban.events import millis
from tongban.handling import Emit, Event, Handler, Outcome, Rejected, Timer
from tongban.workdays import WorkingCalendar

ROUTED = topics.APPLICATION_ROUTED
SLA = topics.SLA_BREACHED
INPUTS = [topics.APPLICATION_RECEIVED, topics.APPLICATION_ACCEPTED, topics.APPLICATION_DECIDED,
          topics.APPLICATION_DELIVERED, topics.APPLICATION_ROUTED, topics.POSTAL_ORIGINALS]
# Requests of the Review API (services/routing/api.py), applied as commands keyed by application.
REROUTE = "routing.Reroute"
REJECT = "routing.RejectUnroutable"
COMMANDS = (REROUTE, REJECT)
SLA_TIMER = "sla"  # one timer per application, at the ledger's next alert
TIMERS = (bundles.WAIT_TIMER,)  # make_handlers' timers (the SLA timer is make_timers')


def keys() -> dict[str, Callable[[Event], str]]:
    """Routing reads its own review events into the one queue an operator lists, and a
    bundle's held applications into the bundle."""
    return {topics.APPLICATION_UNDER_REVIEW_EVENT: lambda event: review.QUEUE,
            topics.REVIEW_RESOLVED_EVENT: lambda event: review.QUEUE,
            topics.BUNDLE_MEMBER_HELD_EVENT: lambda event: bundles.key(event.payload["bundle_id"])}


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
        if p.get("bundle_id"):
            return held(event.key, kept, p["bundle_id"])
        try:
            decision = decide_route(facts, catalogue, partners, calendar)
        except Unroutable as exc:
            unroutable = {"application_id": facts.application_id, "matter_code": facts.matter_code,
                          "reason": exc.reason}
            if not exc.reviewable:  # nothing an operator could route: refused at once
                return Outcome(state={"unroutable": exc.reason}, finished=True,
                               emits=[Emit(ROUTED, topics.APPLICATION_UNROUTABLE_EVENT, event.key, unroutable)])
            return to_review(event.key, kept, exc.reason)
        return routed_outcome(event.key, kept, decision)

    def to_review(key: str, kept: dict[str, Any], reason: str) -> Outcome:
        """The application waits in the review queue for an operator (ReviewServicer)."""
        unroutable = {"application_id": kept["application_id"], "matter_code": kept["matter_code"], "reason": reason}
        return Outcome(state={"review": {**kept, "reason": reason}},
                       emits=[Emit(ROUTED, topics.APPLICATION_UNDER_REVIEW_EVENT, key, unroutable)])

    # ------------------------------------------------------------ bundles (一件事一次办, bundles.py)
    def held(key: str, kept: dict[str, Any], bundle_id: str) -> Outcome:
        """An application of a bundle waits for the bundle's other matters; the bundle learns
        whether it is routable on its own."""
        try:
            decide_route(review.facts_of(kept), catalogue, partners, calendar)
            routable, reason = True, ""
        except Unroutable as exc:
            routable, reason = False, exc.reason
        member = {"application_id": kept["application_id"], "matter_code": kept["matter_code"],
                  "bundle_id": bundle_id, "routable": routable, "reason": reason}
        return Outcome(state={"held": {**kept, "bundle_id": bundle_id}},
                       emits=[Emit(ROUTED, topics.BUNDLE_MEMBER_HELD_EVENT, key, member)])

    async def on_member_held(event: Event, state: dict | None) -> Outcome:
        """The bundle (key bundles.key) takes in one of its applications, and releases all of
        them once its matters are in (or cannot be)."""
        p, at = event.payload, _occurred(event)
        if state and state.get("released"):
            late = bundles.late(p["bundle_id"])
            return Outcome(state=state, finished=True, emits=[
                released(p["application_id"], p["bundle_id"], late, (p["application_id"],), at)])
        members = bundles.joined((state or {}).get("members", []), p)
        outcome = bundles.release(catalogue, members)
        if outcome is None:
            timers = [] if state else [Timer(bundles.WAIT_TIMER, at + bundles.WAIT, {"bundle_id": p["bundle_id"]})]
            return Outcome(state={"members": members}, timers=timers)
        return release_all(p["bundle_id"], members, outcome, at)

    def release_all(bundle_id: str, members: list[dict[str, Any]], outcome: bundles.Release,
                    at: datetime) -> Outcome:
        emits = [released(application_id, bundle_id, outcome, outcome.applications, at)
                 for application_id in outcome.applications]
        return Outcome(state={"members": members, "released": outcome.release, "bundle_code": outcome.bundle_code},
                       emits=emits, cancel_timers=[bundles.WAIT_TIMER], finished=True)

    def released(application_id: str, bundle_id: str, outcome: bundles.Release, applications: tuple[str, ...],
                 at: datetime) -> Emit:
        body = {"application_id": application_id, "bundle_id": bundle_id, "bundle_code": outcome.bundle_code,
                "applications": list(applications), "release": outcome.release, "reason": outcome.reason,
                "released_at": at}
        # One per application from one input: the qualifier keeps their event ids apart, and each
        # is the application's own (what follows from it, personal fields sealed for a partner
        # included, is bound to that application, not to the member that completed the bundle).
        return Emit(ROUTED, topics.BUNDLE_RELEASED_EVENT, application_id, body, qualifier=application_id,
                    correlation_id=application_id)

    async def on_bundle_wait(event: Event, state: dict | None) -> Outcome:
        """The bundle's other matters did not come in time: what came goes to review."""
        if not state or state.get("released"):
            return Outcome()
        return release_all(event.payload["payload"]["bundle_id"], state["members"],
                           bundles.expired(state["members"]), _occurred(event))

    async def on_bundle_released(event: Event, state: dict | None) -> Outcome:
        """The application's bundle is released: it is routed now, or waits for an operator."""
        p = event.payload
        kept = (state or {}).get("held")
        if kept is None:
            return Outcome()  # withdrawn while its bundle waited, or released already
        kept = {k: v for k, v in kept.items() if k != "bundle_id"}
        if p["release"] != bundles.ROUTE:
            return to_review(event.key, kept, p["reason"])
        try:  # routed as it would have been on arrival (its clock counts from its receipt)
            decision = decide_route(review.facts_of(kept), catalogue, partners, calendar)
        except Unroutable as exc:  # the catalogue changed while the bundle waited
            return to_review(event.key, kept, exc.reason)
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
        matter = catalogue.get(kept["matter_code"])  # routed, so in the catalogue
        ledger = Ledger.open(
            kept["received_at"], window=window, deciding_party=decision.deciding_partner,
            decision_legs=[DecisionLeg(leg.partner_id, leg.step, leg.working_days) for leg in decision.legs],
            delivery_party=serves, originals_posted=decision.mode == RECEIVE_HERE_HANDLE_THERE,
            policy=policy, calendar=calendar,
            originals_tracked=matter is not None and originals_travel(matter.required_materials))
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
        if state and "held" in state:  # its bundle, once released, finds nothing to route
            return Outcome(state={"unroutable": "withdrawn while its bundle waited"}, finished=True)
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
        topics.BUNDLE_MEMBER_HELD_EVENT: on_member_held,
        topics.BUNDLE_RELEASED_EVENT: on_bundle_released,
        bundles.WAIT_TIMER: on_bundle_wait,
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
        # 资料寄递, as the carrier tracks the parcel of originals.
        topics.MATERIALS_DISPATCHED_EVENT: lifecycle(lambda ledger, p: ledger.originals_dispatched(
            p["tracking_number"])),
        topics.MATERIALS_RECEIVED_EVENT: lifecycle(lambda ledger, p: ledger.originals_received(
            p["tracking_number"], p["received_by"], p["received_at"])),
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
