"""Routing service.

Inputs:  ApplicationReceived on tongban.application.received.
Outputs: ApplicationRouted or ApplicationUnroutable on tongban.application.routed.
State:   the routing decision per application.
Rules:   services.routing.domain (catalogue, partner registry, modes, deciding authority,
         SLA due date in working days).
"""

from __future__ import annotations

from dataclasses import asdict

from services.routing.domain import ApplicationFacts, Catalogue, PartnerRegistry, Unroutable, decide_route
from services.routing.workdays import WorkingCalendar
from tongban import topics
from tongban.handling import Emit, Event, Handler, Outcome

ROUTED = topics.APPLICATION_ROUTED
INPUTS = [topics.APPLICATION_RECEIVED]


def make_handlers(catalogue: Catalogue, partners: PartnerRegistry, calendar: WorkingCalendar) -> dict[str, Handler]:
    async def on_received(event: Event, state: dict | None) -> Outcome:
        p = event.payload
        facts = ApplicationFacts(
            application_id=p["application_id"],
            matter_code=p["matter_code"],
            channel=p["channel"],
            receiving_division=p["receiving_division"],
            home_division=p["home_division"],
            received_at=p["submitted_at"],
        )
        try:
            decision = decide_route(facts, catalogue, partners, calendar)
        except Unroutable as exc:
            unroutable = {"application_id": facts.application_id, "matter_code": facts.matter_code,
                          "reason": exc.reason}
            return Outcome(state={"unroutable": exc.reason}, finished=True,
                           emits=[Emit(ROUTED, topics.APPLICATION_UNROUTABLE_EVENT, event.key, unroutable)])
        routed = {
            "application_id": facts.application_id,
            "matter_code": facts.matter_code,
            "mode": decision.mode,
            "deciding_partner": decision.deciding_partner,
            "deciding_division": decision.deciding_division,
            "legs": [asdict(leg) for leg in decision.legs],
            "promised_working_days": decision.promised_working_days,
            "due_at": decision.due_at,
        }
        return Outcome(state={"decision": routed}, finished=True,
                       emits=[Emit(ROUTED, topics.APPLICATION_ROUTED_EVENT, event.key, routed)])

    return {topics.APPLICATION_RECEIVED_EVENT: on_received}
