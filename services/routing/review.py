"""The review queue for unroutable work: pure rules.

An application no rule routes waits in routing's state for an operator, who re-routes it to
a deciding authority they name or rejects it with a reason (routing's gRPC Review API,
applied as commands on the runtime). The queue an operator lists is one aggregate of its
own (QUEUE), fed by routing's own ApplicationUnderReview and ReviewResolved events.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from services.routing.catalogue import PLACE_KINDS
from services.routing.domain import (
    CHANNEL_MODES,
    DECISION_STEP,
    ApplicationFacts,
    Catalogue,
    PartnerRegistry,
    RoutingDecision,
    RoutingLeg,
    Unroutable,
)
from services.routing.ledger import end_of
from tongban import divisions, windows
from tongban.scrub import scrub
from tongban.workdays import WorkingCalendar

QUEUE = "review-queue"  # the aggregate key of the queue
DELIVERY_METHODS = ("ELECTRONIC", "POST", "WINDOW")
REJECTED, REROUTED, WITHDRAWN = "REJECTED", "REROUTED", "WITHDRAWN"  # ReviewResolved.resolution
MAX_REASON = 500  # characters of an operator's reason


def facts_state(facts: ApplicationFacts, received: dict[str, Any]) -> dict[str, Any]:
    """What a re-route needs of the application, kept while it waits: codes and times only.
    A field that is not a known code is kept empty, since unroutable work is often work with
    something typed in the wrong field, personal data included."""
    def division(code: str) -> str:
        return code if divisions.is_known(code) else ""

    window_id = received.get("window_id") or ""
    return {"application_id": facts.application_id, "matter_code": facts.matter_code,
            "channel": facts.channel if facts.channel in CHANNEL_MODES else "",
            "receiving_division": division(facts.receiving_division), "home_division": division(facts.home_division),
            "received_at": facts.received_at,
            "places": {kind: code for kind, code in facts.places.items() if kind in PLACE_KINDS and division(code)},
            "window_id": window_id if windows.registry().window(window_id) else "",
            "delivery_method": received["delivery_method"] if received["delivery_method"] in DELIVERY_METHODS else ""}


def facts_of(kept: dict[str, Any]) -> ApplicationFacts:
    received_at = kept["received_at"]
    if received_at.tzinfo is None:  # BSON keeps UTC without the zone
        received_at = received_at.replace(tzinfo=UTC)
    return ApplicationFacts(kept["application_id"], kept["matter_code"], kept["channel"], kept["receiving_division"],
                            kept["home_division"], received_at, kept["places"])


def reroute(facts: ApplicationFacts, partner_id: str, catalogue: Catalogue, partners: PartnerRegistry,
            calendar: WorkingCalendar) -> RoutingDecision:
    """The operator's route: the named authority decides in one leg. The catalogue must hold
    the matter, and not as a joint matter (its legs come from the rules, not from one name);
    the authority must be a partner under an agreement."""
    matter = catalogue.get(facts.matter_code)
    if matter is None:  # the catalogue changed since the application waited: reject it
        raise Unroutable("the matter is not in the catalogue: it can only be rejected")
    if matter.is_joint:
        raise Unroutable("a joint matter's legs follow its places of handling; fix the places or reject it")
    partner = partners.get(partner_id)
    if partner is None:
        raise Unroutable("the named deciding authority is not a partner under an agreement")
    preference = CHANNEL_MODES.get(facts.channel, ())
    mode = next((m for m in preference if m in matter.modes), matter.modes[0])
    due = calendar.add_working_days(facts.received_at, matter.promised_working_days)
    return RoutingDecision(
        mode=mode, deciding_partner=partner.partner_id, deciding_division=divisions.county(partner.division_code),
        legs=(RoutingLeg(partner.partner_id, divisions.county(partner.division_code), DECISION_STEP,
                         matter.promised_working_days),),
        promised_working_days=matter.promised_working_days, due_at=end_of(due))


def note(reason: str) -> str:
    """An operator's words as they travel unsealed (ReviewResolved, Track): at most MAX_REASON
    characters, ID and phone numbers scrubbed."""
    reason = reason.strip()
    if len(reason) > MAX_REASON:
        raise Unroutable(f"a reason takes at most {MAX_REASON} characters")
    return scrub(reason)


def check_reason(reason: str) -> str:
    """A rejection says why."""
    if not reason.strip():
        raise Unroutable("a rejection needs a reason")
    return note(reason)


def queued(queue: dict[str, Any] | None, entry: dict[str, Any]) -> dict[str, Any]:
    entries = dict((queue or {}).get("entries", {}))
    entries[entry["application_id"]] = entry
    return {"entries": entries}


def resolved(queue: dict[str, Any] | None, application_id: str) -> dict[str, Any]:
    entries = dict((queue or {}).get("entries", {}))
    entries.pop(application_id, None)
    return {"entries": entries}
