"""Delivery's rules: when work can be assigned to the deciding authority, whose decisions
count. How a result reaches the applicant: services/delivery/channels/."""

from __future__ import annotations


class NotAssigned(ValueError):
    """A decision from a party the work is not assigned to (or for another assignment)."""


def assignment_id_for(application_id: str, partner_id: str) -> str:
    return f"{application_id}:{partner_id}"


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

