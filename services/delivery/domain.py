"""Delivery's rules: when work can be assigned to the deciding authority, whose decisions
count, and the legs of a joint matter (多地联办) in turn. How a result reaches the
applicant: services/delivery/channels/."""

from __future__ import annotations

from dataclasses import dataclass

JOINT = "JOINT"  # ApplicationRouted.mode of a matter handled in legs by several authorities
DECIDE = "DECIDE"  # the step of the one assignment of a matter that is not joint


class NotAssigned(ValueError):
    """A decision from a party the work is not assigned to (or for another assignment)."""


def assignment_id_for(application_id: str, partner_id: str, leg: int | None = None) -> str:
    """One id per assignment; a joint matter's legs carry their number, since one partner
    may hold two legs (a pension transfer's new insured place writes the letter and completes)."""
    return f"{application_id}:{partner_id}" if leg is None else f"{application_id}:{partner_id}:{leg}"


@dataclass(frozen=True)
class Leg:
    """One assignment delivery makes: the party, where it works, its step and limit."""

    number: int  # from 1, in handling order
    count: int
    partner_id: str
    division_code: str
    step: str
    working_days: int

    @property
    def last(self) -> bool:
        return self.number == self.count


def is_joint(routed: dict) -> bool:
    return routed.get("mode") == JOINT and bool(routed.get("legs"))


def leg(routed: dict, number: int) -> Leg:
    """Leg `number` of the routed application: a joint matter's legs run in routing's order;
    any other matter is one leg, the deciding authority's decision."""
    if not is_joint(routed):
        return Leg(1, 1, routed["deciding_partner"], routed["deciding_division"], DECIDE,
                   routed["promised_working_days"])
    legs = routed["legs"]
    spec = legs[number - 1]
    return Leg(number, len(legs), spec["partner_id"], spec["division_code"], spec["step"], spec["working_days"])


def assignment_of(key: str, routed: dict, number: int) -> dict:
    """The file's `assignment` for a leg; a joint leg also records its number and step."""
    current = leg(routed, number)
    if not is_joint(routed):
        return {"assignment_id": assignment_id_for(key, current.partner_id), "partner_id": current.partner_id}
    return {"assignment_id": assignment_id_for(key, current.partner_id, number), "partner_id": current.partner_id,
            "leg": number, "step": current.step}


def current_leg(file: dict) -> Leg:
    return leg(file["routed"], file["assignment"].get("leg", 1))


def ready_to_assign(file: dict) -> bool:
    """The deciding authority gets the file once it is received, routed and verified, unless
    the application was closed (withdrawn) before that."""
    return all(k in file for k in ("received", "routed", "verified")) and not {"assignment", "closed"} & file.keys()


def check_sender(file: dict | None, sender: str, assignment_id: str) -> dict:
    """Decision rights never move: only the assigned authority may accept or decide."""
    assignment = (file or {}).get("assignment")
    if assignment is None:
        raise NotAssigned("no work is assigned for this application")
    if assignment["partner_id"] != sender or assignment["assignment_id"] != assignment_id:
        raise NotAssigned(f"partner {sender} is not the assigned authority for this application")
    return assignment

