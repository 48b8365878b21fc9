"""Intake's rules: the formal check of a submission and the applicant's progress view.

Receiving (收件) is not accepting (受理): intake only checks form here; the deciding
authority accepts later. The progress view holds no personal data.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from tongban.pii import looks_sealed

CHANNELS = ("WINDOW", "PORTAL", "MOBILE", "TERMINAL", "PARTNER")
DELIVERY_METHODS = ("ELECTRONIC", "POST", "WINDOW")
APPLICANT_KINDS = ("PERSON", "COMPANY")
RATING_CHANNELS = ("ONSITE", "ONLINE", "MOBILE", "HOTLINE")
_DIVISION = re.compile(r"^\d{6}(\d{6})?$")

# Bounds at the edge (issue 6): every string and list a caller sends is capped, and a
# problem names the field and the limit, never the value. Lengths are in characters.
MAX_MATERIALS = 50
MAX_CODE_LENGTH = 64  # matter code, material code
MAX_NAME_LENGTH = 200  # applicant name (a person or a company), material name
MAX_ID_NUMBER_LENGTH = 32  # resident ID is 18, unified social credit code 18; room for foreign documents
MAX_PHONE_LENGTH = 32
MAX_ADDRESS_LENGTH = 500
MAX_REFERENCE_LENGTH = 128  # client_reference, source_system, rating_reference
MAX_COMMENT_LENGTH = 500  # a rating's comment

# Problem field name (as the API names it) -> Submission attribute, limit.
_STRING_LIMITS = (
    ("client_reference", "client_reference", MAX_REFERENCE_LENGTH),
    ("source_system", "source_system", MAX_REFERENCE_LENGTH),
    ("matter_code", "matter_code", MAX_CODE_LENGTH),
    ("applicant.name", "applicant_name", MAX_NAME_LENGTH),
    ("applicant.id_number", "applicant_id_number", MAX_ID_NUMBER_LENGTH),
    ("applicant.phone", "applicant_phone", MAX_PHONE_LENGTH),
    ("postal_address", "postal_address", MAX_ADDRESS_LENGTH),
)

# Stages in the order an application moves through them; the view never moves backwards.
STAGES = ("RECEIVED", "ROUTED", "VERIFIED", "ACCEPTED", "DECIDED", "DELIVERED")
TERMINAL = ("DELIVERED", "DENIED", "REJECTED", "WITHDRAWN")
RATEABLE = ("DELIVERED", "DENIED", "REJECTED")


class InvalidSubmission(ValueError):
    """The submission fails the formal check; `problems` name fields, never their values."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Submission:
    matter_code: str
    channel: str
    receiving_division: str
    home_division: str
    applicant_kind: str
    applicant_name: str
    applicant_id_number: str
    materials: tuple[str, ...]
    delivery_method: str
    postal_address: str | None
    # Parallel to `materials` (the codes): each material's name, as the applicant sees it.
    material_names: tuple[str, ...] = ()
    applicant_phone: str = ""
    client_reference: str = ""
    source_system: str = ""


def too_long(field: str, value: str | None, limit: int) -> str | None:
    """The problem when `value` is longer than `limit` characters, else None."""
    if value is not None and len(value) > limit:
        return f"{field}: at most {limit} characters (got {len(value)})"
    return None


def _item_problems(field: str, part: str, values: tuple[str, ...], limit: int) -> list[str]:
    """One problem for the first item whose `part` is too long, counting the others (the
    message stays short however many items a caller sends)."""
    over = [i for i, value in enumerate(values) if len(value) > limit]
    if not over:
        return []
    more = f"; {len(over) - 1} more too long" if len(over) > 1 else ""
    return [f"{field}[{over[0]}].{part}: at most {limit} characters (got {len(values[over[0]])}{more})"]


def check_submission(submission: Submission) -> None:
    """Raise InvalidSubmission listing every formal problem at once (补正 asks once)."""
    problems = [p for field, attribute, limit in _STRING_LIMITS
                if (p := too_long(field, getattr(submission, attribute), limit))]
    if len(submission.materials) > MAX_MATERIALS:
        problems.append(f"materials: at most {MAX_MATERIALS} items (got {len(submission.materials)})")
    problems += _item_problems("materials", "code", submission.materials, MAX_CODE_LENGTH)
    problems += _item_problems("materials", "name", submission.material_names, MAX_NAME_LENGTH)
    problems += sealed_problems(submission)
    if not submission.matter_code.strip():
        problems.append("matter_code is required")
    if submission.channel not in CHANNELS:
        problems.append(f"channel must be one of {', '.join(CHANNELS)}")
    for name in ("receiving_division", "home_division"):
        if not _DIVISION.match(getattr(submission, name)):
            problems.append(f"{name} must be a 6- or 12-digit division code")
    if submission.applicant_kind not in APPLICANT_KINDS:
        problems.append(f"applicant.kind must be one of {', '.join(APPLICANT_KINDS)}")
    if not submission.applicant_name.strip():
        problems.append("applicant.name is required")
    if not submission.applicant_id_number.strip():
        problems.append("applicant.id_number is required")
    if not submission.materials:
        problems.append("at least one material must be listed")
    if submission.delivery_method not in DELIVERY_METHODS:
        problems.append(f"delivery_method must be one of {', '.join(DELIVERY_METHODS)}")
    elif submission.delivery_method == "POST" and not (submission.postal_address or "").strip():
        problems.append("postal_address is required for POST delivery")
    if problems:
        raise InvalidSubmission(problems)


SEALED_INPUT = "looks sealed (starts with pii:v); send the plaintext: Tongban seals personal data itself"


def sealed_problems(submission: Submission) -> list[str]:
    """Input that already looks sealed is refused, naming the field (never its value): a
    sealed value is only ever made by Tongban, bound to its place, and is never taken in."""
    fields = [(field, getattr(submission, attribute)) for field, attribute, _ in _STRING_LIMITS]
    fields += [("channel", submission.channel), ("receiving_division", submission.receiving_division),
               ("home_division", submission.home_division), ("applicant.kind", submission.applicant_kind),
               ("delivery_method", submission.delivery_method)]
    for part, values in (("code", submission.materials), ("name", submission.material_names)):
        fields += [(f"materials[{i}].{part}", value) for i, value in enumerate(values)]
    return [f"{field}: {SEALED_INPUT}" for field, value in fields if looks_sealed(value)]


def application_id_for(source_system: str, client_reference: str) -> str:
    """One id per (source, reference): a retried submission is the same application."""
    digest = hashlib.sha256(f"{source_system}\x1f{client_reference}".encode()).hexdigest()
    return f"TB{digest[:20].upper()}"


def new_progress(application_id: str, matter_code: str, at: datetime, source_system: str = "",
                 source_role: str = "") -> dict:
    """`source_system` and `source_role` are the receiving caller's, from its certificate:
    they decide who may Track and Rate the application (`may_see`)."""
    return {
        "application_id": application_id,
        "matter_code": matter_code,
        "source_system": source_system,
        "source_role": source_role,
        "stage": "RECEIVED",
        "terminal": False,
        "history": [{"stage": "RECEIVED", "at": at, "detail": ""}],
        "ratings": [],
    }


def advance(progress: dict | None, application_id: str, stage: str, at: datetime, detail: str = "",
            **facts: object) -> dict:
    """Record a step. Events from different topics may arrive out of order, so the stage
    only moves forward and a terminal stage is final; the history keeps every step."""
    view = dict(progress or {"application_id": application_id, "matter_code": "", "stage": "",
                             "terminal": False, "history": [], "ratings": []})
    view["history"] = [*view["history"], {"stage": stage, "at": at, "detail": detail}]
    view.update({k: v for k, v in facts.items() if v is not None})
    if view["terminal"]:
        return view
    if stage in TERMINAL:
        view["stage"], view["terminal"] = stage, True
    elif view["stage"] not in STAGES or STAGES.index(stage) > STAGES.index(view["stage"]):
        view["stage"] = stage
    return view


def may_see(progress: dict, source_system: str, role: str) -> bool:
    """Whether a caller may Track (and, if its role may rate, Rate) an application: the
    system that received it; any portal, for what a portal received (the applicant follows
    an online application on any portal of the integrated platform); operators, all of it.
    A view without a receiver (received before receivers were recorded) is for operators."""
    if role == "operator":
        return True
    received_by = progress.get("source_system") or ""
    if received_by and received_by == source_system:
        return True
    return role == "portal" and progress.get("source_role") == "portal"


def check_rating(progress: dict, level: int, channel: str, comment: str | None = None) -> None:
    problems = []
    if progress["stage"] not in RATEABLE:
        problems.append("an application can be rated once it is concluded")
    if not 1 <= level <= 5:
        problems.append("level must be 1 (非常满意) to 5 (非常不满意)")
    if channel not in RATING_CHANNELS:
        problems.append(f"channel must be one of {', '.join(RATING_CHANNELS)}")
    if problem := too_long("comment", comment, MAX_COMMENT_LENGTH):
        problems.append(problem)
    if looks_sealed(comment):
        problems.append(f"comment: {SEALED_INPUT}")
    if problems:
        raise InvalidSubmission(problems)
