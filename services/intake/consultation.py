"""异地视频会商收件: the rules of a video consultation between a receiving window and the
deciding authority in another province, which agrees the materials the applicant must
provide before the application is received (or during 补正). Only the agreed checklist and
the outcome are recorded; the video itself stays outside Tongban.

A consultation is its own aggregate in intake's state, keyed by its id, which follows from
the request (a retry is the same consultation). Pure functions; no broker, no store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta

from services.intake.domain import (
    MAX_CODE_LENGTH,
    MAX_COMMENT_LENGTH,
    MAX_MATERIALS,
    MAX_REFERENCE_LENGTH,
    Catalogue,
    InvalidSubmission,
    too_long,
)
from tongban.pii import looks_sealed

AGREED, NOT_AGREED, NOT_HELD = "AGREED", "NOT_AGREED", "NOT_HELD"
OUTCOMES = (AGREED, NOT_AGREED, NOT_HELD)
# A consultation held "in the future" is a clock or a typing error; a minute covers clock skew.
CLOCK_SKEW = timedelta(minutes=1)
_PREFIX = "CS"


def consultation_id_for(source_system: str, subject: str, matter_code: str, window_id: str,
                        deciding_partner: str, checklist: Iterable[str]) -> str:
    """One id per (caller, application or pre-application reference, matter, window,
    authority, proposed checklist): a retried request is the same consultation, another
    checklist is another consultation."""
    parts = (source_system, subject, matter_code, window_id, deciding_partner, *sorted(set(checklist)))
    return f"{_PREFIX}{hashlib.sha256(chr(0x1f).join(parts).encode()).hexdigest()[:20].upper()}"


def is_consultation_id(key: str) -> bool:
    return key.startswith(_PREFIX) and len(key) == len(_PREFIX) + 20


def _checklist_problems(field: str, codes: tuple[str, ...], matter_code: str, catalogue: Catalogue | None) -> list[str]:
    if len(codes) > MAX_MATERIALS:
        return [f"{field}: at most {MAX_MATERIALS} items"]
    problems = [p for i, code in enumerate(codes) if (p := too_long(f"{field}[{i}]", code, MAX_CODE_LENGTH))]
    if len(set(codes)) != len(codes):
        problems.append(f"{field}: a material code is repeated")
    form = catalogue.matter(matter_code) if catalogue is not None else None
    if form is not None and form.checks_materials:
        unknown = sorted(set(codes) - form.essential - form.optional)
        if unknown:
            problems.append(f"{field}: not materials of matter {matter_code}: {', '.join(unknown)}")
    return problems


def check_request(*, application_id: str, reference: str, matter_code: str, window_id: str, deciding_partner: str,
                  checklist: tuple[str, ...], reason: str, catalogue: Catalogue | None) -> None:
    """The request's formal check: every problem at once (InvalidSubmission). Checklist codes
    must be materials of the matter in intake's copy of the catalogue (skipped for a matter
    the copy does not list yet: it is learned from a topic and may lag)."""
    problems = []
    if bool(application_id) == bool(reference):
        problems.append("application_id: name either the application or a pre-application reference")
    problems += [p for p in (too_long("pre_application_reference", reference, MAX_REFERENCE_LENGTH),
                             too_long("matter_code", matter_code, MAX_CODE_LENGTH),
                             too_long("window_id", window_id, MAX_REFERENCE_LENGTH),
                             too_long("deciding_partner", deciding_partner, MAX_CODE_LENGTH),
                             too_long("reason", reason, MAX_COMMENT_LENGTH)) if p]
    if not matter_code:
        problems.append("matter_code is required")
    if not window_id:
        problems.append("window_id is required (the window that asks)")
    if not deciding_partner:
        problems.append("deciding_partner is required")
    if not checklist:
        problems.append("proposed_materials: name at least one material to consult on")
    problems += _checklist_problems("proposed_materials", checklist, matter_code, catalogue)
    problems += [f"{name}: looks sealed; send the plaintext" for name, value in
                 (("reason", reason), ("pre_application_reference", reference)) if looks_sealed(value)]
    if problems:
        raise InvalidSubmission(problems)


def check_record(consultation: dict, outcome: str, agreed: tuple[str, ...], held_at: datetime | None,
                 note: str, now: datetime, catalogue: Catalogue | None) -> None:
    """An outcome for a requested consultation: AGREED names the agreed checklist (materials
    of the matter); NOT_HELD names none and no time; a held one was held after it was
    requested and not in the future."""
    problems = []
    if outcome not in OUTCOMES:
        problems.append(f"outcome: one of {', '.join(OUTCOMES)}")
    if outcome == AGREED and not agreed:
        problems.append("agreed_materials: an agreed consultation names the agreed checklist")
    if outcome == NOT_HELD and agreed:
        problems.append("agreed_materials: a consultation that was not held agreed nothing")
    problems += _checklist_problems("agreed_materials", agreed, consultation["matter_code"], catalogue)
    if outcome in (AGREED, NOT_AGREED):
        if held_at is None:
            problems.append("held_at is required for a consultation that was held")
        elif held_at > now + CLOCK_SKEW or held_at < consultation["requested_at"] - CLOCK_SKEW:
            problems.append("held_at: between the request and now")
    elif outcome == NOT_HELD and held_at is not None:
        problems.append("held_at: a consultation that was not held has no time")
    if problem := too_long("note", note, MAX_COMMENT_LENGTH):
        problems.append(problem)
    if looks_sealed(note):
        problems.append("note: looks sealed; send the plaintext")
    if problems:
        raise InvalidSubmission(problems)


def conflict(consultation: dict, outcome: str, agreed: Iterable[str]) -> str | None:
    """Why another outcome cannot be recorded (None for the first one, or a retry of it)."""
    recorded = consultation.get("outcome")
    if recorded is None or (recorded == outcome and sorted(consultation["agreed_materials"]) == sorted(agreed)):
        return None
    return f"the consultation is already recorded as {recorded}; a consultation has one outcome"


def new_consultation(body: dict) -> dict:
    """The consultation's state: what was asked, by whom; nothing personal (the reason is scrubbed)."""
    keep = ("consultation_id", "application_id", "pre_application_reference", "matter_code", "window_id",
            "deciding_partner", "proposed_materials", "requested_by", "requested_at")
    return {k: body[k] for k in keep}


def recorded(consultation: dict, body: dict) -> dict:
    return {**consultation, "outcome": body["outcome"], "agreed_materials": list(body["agreed_materials"]),
            "held_at": body["held_at"], "recorded_at": body["recorded_at"]}


def step_detail(event: dict) -> str:
    """The timeline's detail for a consultation step: who, the outcome and the checklist codes."""
    if "outcome" not in event:
        return f"{event['deciding_partner']}: {', '.join(event['proposed_materials'])}"
    return f"{event['outcome']}: {', '.join(event['agreed_materials'])}".rstrip(": ")
