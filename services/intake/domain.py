"""Intake's rules: the formal check of a submission and the applicant's progress view.

Receiving (收件) is not accepting (受理): intake only checks form here; the deciding
authority accepts later. The progress view holds no personal data.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from stdnum.cn import ric, uscc
from stdnum.iso7064 import mod_37_36

from tongban import divisions
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
    ("bundle_reference", "bundle_reference", MAX_REFERENCE_LENGTH),
    ("source_system", "source_system", MAX_REFERENCE_LENGTH),
    ("matter_code", "matter_code", MAX_CODE_LENGTH),
    ("applicant.name", "applicant_name", MAX_NAME_LENGTH),
    ("applicant.id_number", "applicant_id_number", MAX_ID_NUMBER_LENGTH),
    ("applicant.phone", "applicant_phone", MAX_PHONE_LENGTH),
    ("postal_address", "postal_address", MAX_ADDRESS_LENGTH),
)

# Stages in the order an application moves through them; the view never moves backwards,
# except between the two stages of a 补正 round (the authority may ask again).
STAGES = ("RECEIVED", "ROUTED", "VERIFIED", "SUPPLEMENT_REQUESTED", "SUPPLEMENTED", "ACCEPTED", "DECIDED",
          "DELIVERED")
SUPPLEMENT_ROUND = ("SUPPLEMENT_REQUESTED", "SUPPLEMENTED")
# CLOSED: ended without a decision for another reason than withdrawal (a missed 补正 deadline).
TERMINAL = ("DELIVERED", "DENIED", "REJECTED", "WITHDRAWN", "CLOSED")
RATEABLE = ("DELIVERED", "DENIED", "REJECTED", "CLOSED")
# 撤回 is possible until the authority decides.
DECIDED_OR_LATER = ("DECIDED", "DELIVERED")


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
    window_id: str = ""
    # Parallel to `materials`: whether each was handed in.
    provided: tuple[bool, ...] = ()
    commitments: tuple[str, ...] = ()
    deferred_materials: Mapping[str, str] = field(default_factory=dict)
    bundle_reference: str = ""  # 一件事一次办: the caller's id for the bundle the application belongs to


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


def check_submission(submission: Submission, catalogue: Catalogue | None = None,
                     windows: WindowRegistry | None = None) -> None:
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
        elif not divisions.is_known(getattr(submission, name)):
            problems.append(f"{name} is not a division in GB/T 2260 ({divisions.EDITION})")
    if submission.applicant_kind not in APPLICANT_KINDS:
        problems.append(f"applicant.kind must be one of {', '.join(APPLICANT_KINDS)}")
    if not submission.applicant_name.strip():
        problems.append("applicant.name is required")
    if not submission.applicant_id_number.strip():
        problems.append("applicant.id_number is required")
    elif len(submission.applicant_id_number) <= MAX_ID_NUMBER_LENGTH and (
            problem := identity_problem(submission.applicant_kind, submission.applicant_id_number)):
        problems.append(problem)
    if not submission.materials:
        problems.append("materials: at least one must be listed")
    if submission.delivery_method not in DELIVERY_METHODS:
        problems.append(f"delivery_method must be one of {', '.join(DELIVERY_METHODS)}")
    elif submission.delivery_method == "POST" and not (submission.postal_address or "").strip():
        problems.append("postal_address is required for POST delivery")
    # Commitments and deferred materials name material codes: bounded like them.
    deferred = tuple(submission.deferred_materials)
    for name, codes in (("commitments", submission.commitments), ("deferred_materials", deferred)):
        if len(codes) > MAX_MATERIALS:
            problems.append(f"{name}: at most {MAX_MATERIALS} items (got {len(codes)})")
        problems += _item_problems(name, "code", codes, MAX_CODE_LENGTH)
    for code, promised in submission.deferred_materials.items():
        if len(code) <= MAX_CODE_LENGTH and not looks_sealed(code) and not _is_date(promised):
            problems.append(f"deferred_materials[{code}]: the promised date must be YYYY-MM-DD")
    problems += form_problems(submission, catalogue, windows)
    if problems:
        raise InvalidSubmission(problems)


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


def identity_problem(kind: str, id_number: str) -> str | None:
    """A resident ID (GB 11643) or unified social credit code (GB 32100) whose form or check
    character is wrong: a typing error the window corrects on the spot, not a later 补正.
    Foreign documents are not numbers of these standards; they are checked by verification."""
    if kind == "PERSON" and not ric.is_valid(id_number):
        return "applicant.id_number: not a valid resident ID number (GB 11643: form, birth date or check digit)"
    if kind == "COMPANY" and not uscc.is_valid(id_number):
        return "applicant.id_number: not a valid unified social credit code (GB 32100: form or check character)"
    return None


def field_of(problem: str) -> str:
    """The field a problem names: every problem starts with it (`materials[1].code: ...`,
    `channel must be ...`)."""
    # A bracket holds an index or a map key, which may be any text (`deferred_materials[税务 证明]`).
    match = re.match(r"[\w.-]+(?:\[[^\]]*\][\w.-]*)*", problem)
    return match.group() if match else ""


# ---------------------------------------------------------------- catalogue and authorisation
# What the formal check needs of the catalogue (routing's, published on tongban.catalogue.
# changes) and of the window authorisation registry. Both come in through these small
# interfaces so the check stays pure and testable with stand-ins.
ONLINE_CHANNELS = ("PORTAL", "MOBILE")
ONLINE_MODES = ("FULLY_ONLINE", "JOINT")


@dataclass(frozen=True)
class MatterForm:
    """The parts of a catalogue entry the formal check uses."""

    subject: str  # PERSON or COMPANY
    modes: tuple[str, ...]
    essential: frozenset[str]  # material codes that must be handed in (or committed to)
    optional: frozenset[str] = frozenset()  # may follow later (容缺)
    committable: frozenset[str] | None = None  # may be replaced by a commitment (告知承诺); None: any
    checks_materials: bool = True  # False where the catalogue entry lists no materials


class Catalogue(Protocol):
    def matter(self, code: str) -> MatterForm | None: ...


class WindowRegistry(Protocol):
    def may_receive(self, window_id: str, matter_code: str, division: str) -> bool: ...

    def window(self, window_id: str) -> object | None: ...

    def speaks_for(self, caller: str, window_id: str) -> bool: ...


PERMISSION_DENIED, INVALID_ARGUMENT = "PERMISSION_DENIED", "INVALID_ARGUMENT"


def window_binding(caller: str, role: str, window_id: str, windows: WindowRegistry) -> tuple[str, str] | None:
    """A window system submits for a window it operates (windows.toml `systems`), never for
    another's: the application then carries that window as the one that received it. The
    problem's status and text, or None. A wrong window is the caller's mistake
    (INVALID_ARGUMENT); a window of someone else's is not its to name (PERMISSION_DENIED)."""
    if role != "window":
        return None  # portals and partners receive on their own account; may_receive checks a named window
    if not window_id:
        return INVALID_ARGUMENT, "window_id is required when a window system submits (the window that received)"
    if windows.window(window_id) is None:
        return INVALID_ARGUMENT, "window_id: not a registered 跨省通办 window"
    if not windows.speaks_for(caller, window_id):
        return PERMISSION_DENIED, "window_id: the window is operated by another system than the caller"
    return None


def form_problems(submission: Submission, catalogue: Catalogue | None, windows: WindowRegistry | None) -> list[str]:
    """The catalogue's and the registry's part of the formal check (each skipped when intake
    runs without it): a matter the catalogue lists suits the applicant and the channel, every
    essential material is there or replaced by an allowed commitment, only optional ones are
    deferred; the window is authorised to receive the matter. A matter intake's copy of the
    catalogue does not list is left to routing, which refuses it (Unroutable) with the
    catalogue itself: intake's copy is learned from a topic and may lag it."""
    problems: list[str] = []
    form = catalogue.matter(submission.matter_code) if catalogue is not None else None
    if form is not None:
        if form.subject and submission.applicant_kind in APPLICANT_KINDS and submission.applicant_kind != form.subject:
            problems.append(f"applicant.kind: the matter is for a {form.subject}")
        if submission.channel in ONLINE_CHANNELS and not set(form.modes) & set(ONLINE_MODES):
            problems.append("channel: the matter cannot be handled fully online; apply at a window")
        if form.checks_materials:
            problems += _material_problems(submission, form)
    if windows is not None and submission.channel == "WINDOW" and not submission.window_id:
        problems.append("window_id is required for the WINDOW channel")
    elif windows is not None and submission.window_id and not windows.may_receive(
            submission.window_id, submission.matter_code, submission.receiving_division):
        problems.append("window_id: the window is not authorised to receive this matter for this division")
    return problems


def _material_problems(submission: Submission, form: MatterForm) -> list[str]:
    problems = []
    provided = {code for code, given in zip(submission.materials, submission.provided or
                                             (True,) * len(submission.materials), strict=True) if given}
    missing = sorted(form.essential - provided - set(submission.commitments))
    if missing:
        problems.append(f"materials: essential material(s) missing: {', '.join(missing)}")
    if form.committable is not None and (refused := sorted(set(submission.commitments) - form.committable)):
        problems.append(f"commitments: no written commitment may replace: {', '.join(refused)}")
    unknown = sorted(set(submission.deferred_materials) - form.optional)
    if unknown:
        problems.append(f"deferred_materials: only non-essential materials may follow later: {', '.join(unknown)}")
    return problems


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
    fields += [(f"commitments[{i}]", value) for i, value in enumerate(submission.commitments)]
    fields += [(f"deferred_materials[{i}]", value) for i, value in enumerate(submission.deferred_materials)]
    return [f"{field}: {SEALED_INPUT}" for field, value in fields if looks_sealed(value)]


def partner_system(partner: str) -> str:
    """A partner's source system: its Kafka principal and client certificate name."""
    return f"partner-{partner}"


def bundle_id_for(source_system: str, bundle_reference: str) -> str:
    """One bundle per (source, reference), like an application; empty when not in a bundle."""
    if not bundle_reference:
        return ""
    digest = hashlib.sha256(f"{source_system}\x1fbundle\x1f{bundle_reference}".encode()).hexdigest()
    return f"TBB{digest[:20].upper()}"


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
        "history": [{"stage": "RECEIVED", "at": at, "detail": "", "sequence": 1,
                     "responsible": RECEIVING_WINDOW}],
        "ratings": [],
        "notices": [],
    }


def _step(view: dict, stage: str, at: datetime, detail: str, notice: str) -> dict:
    """A history step: `sequence` counts the steps in the order intake learned them (what
    Watch resumes after); `at` is when it happened (what Track orders by); `notice`, the kind
    of notice the step served, if any."""
    sequence = max((h.get("sequence", 0) for h in view["history"]), default=0) + 1
    step = {"stage": stage, "at": at, "detail": detail, "sequence": sequence,
            "responsible": responsible_for(stage, view.get("deciding_partner", ""))}
    return {**step, "notice": notice} if notice else step


def timeline(view: dict) -> list[dict]:
    """The history in the order things happened (events from different topics arrive in any
    order: a delivery can be learned before the decision it follows)."""
    return sorted(view["history"], key=lambda h: (h["at"], h.get("sequence", 0)))


def steps_after(view: dict, sequence: int) -> list[dict]:
    """The steps Watch has not sent yet, in the order intake learned them."""
    return [h for h in view["history"] if h.get("sequence", 0) > sequence]


# Who acts next, and on what, at each stage (the applicant's "what happens now").
APPLICANT = "APPLICANT"
RECEIVING_WINDOW = "RECEIVING_WINDOW"
DECIDING_AUTHORITY = "DECIDING_AUTHORITY"
NO_ONE = ""
_NEXT = {
    "RECEIVED": (RECEIVING_WINDOW, "the application is handed to the deciding authority"),
    "ROUTED": (DECIDING_AUTHORITY, "the materials are checked"),
    "VERIFIED": (DECIDING_AUTHORITY, "the deciding authority accepts (受理) or asks for 补正"),
    "SUPPLEMENT_REQUESTED": (APPLICANT, "hand in the materials of the 补正告知书 before its deadline"),
    "SUPPLEMENTED": (DECIDING_AUTHORITY, "the deciding authority checks the supplemented materials"),
    "ACCEPTED": (DECIDING_AUTHORITY, "the deciding authority decides"),
    "DECIDED": (DECIDING_AUTHORITY, "the result is delivered"),
}


def responsible_for(stage: str, deciding_partner: str) -> str:
    party = _NEXT.get(stage, (NO_ONE, ""))[0]
    return f"{party}:{deciding_partner}" if party == DECIDING_AUTHORITY and deciding_partner else party


def next_step(view: dict) -> str:
    return "" if view["terminal"] else _NEXT.get(view["stage"], (NO_ONE, ""))[1]


def deadline(view: dict) -> datetime | None:
    """The deadline of the next step: the 补正 deadline while one is open, else the
    authority's due date."""
    if view["stage"] == "SUPPLEMENT_REQUESTED" and view.get("supplement_by"):
        return view["supplement_by"]
    return None if view["terminal"] else view.get("due_at")


def check_withdrawal(view: dict) -> None:
    if view["terminal"] or view["stage"] in DECIDED_OR_LATER:
        raise InvalidSubmission([f"application: cannot be withdrawn at stage {view['stage']} "
                                 "(撤回 is possible until the decision)"])


def check_supplement(view: dict, materials: tuple[str, ...]) -> None:
    problems = []
    if view["stage"] != "SUPPLEMENT_REQUESTED":
        problems.append(f"application: no 补正 is open (stage {view['stage']})")
    if not materials:
        problems.append("materials: at least one must be listed")
    if problems:
        raise InvalidSubmission(problems)


# ---------------------------------------------------------------- notices
# The notices an applicant must receive (行政许可法 §32, §38). They carry no personal data:
# the application number identifies the application to its applicant.
RECEIPT, ACCEPTANCE, SUPPLEMENT, NON_ACCEPTANCE, DENIAL = (
    "RECEIPT", "ACCEPTANCE", "SUPPLEMENT", "NON_ACCEPTANCE", "DENIAL")
# 行政复议法 (2023) §20: 60 days to apply for reconsideration; 行政诉讼法 §46: six months to sue.
REMEDY = ("如不服，可自收到本通知之日起六十日内依法申请行政复议，或者六个月内依法提起行政诉讼。"
          " (Administrative reconsideration within 60 days or litigation within six months.)")


def notice(notice_id: str, view: dict, kind: str, at: datetime, reasons: list[str] | None = None,
           remedy: str = "", deadline: datetime | None = None) -> dict:
    """A NoticeServed body."""
    return {"notice_id": notice_id, "application_id": view["application_id"],
            "application_number": view.get("application_number", ""), "kind": kind, "reasons": reasons or [],
            "remedy": remedy, "deadline": deadline, "served_at": at}


def record_notice(view: dict, served: dict) -> dict:
    """The notice as Track lists it."""
    kept = {k: served[k] for k in ("notice_id", "kind", "reasons", "remedy", "served_at")}
    return {**view, "notices": [*view.get("notices", []), kept]}


# ---------------------------------------------------------------- idempotency
def fingerprints(application_id: str, fields: Mapping[str, object]) -> dict[str, str]:
    """A short salted digest per field, to name the fields a retry changed. Six hex digits
    tell a change apart with odds of 1 in 16 million of missing it, and are too short to
    recover a value from (the personal fields count too, so none is kept in the clear)."""
    return {name: hashlib.sha256(f"{application_id}\x1f{name}\x1f{value!r}".encode()).hexdigest()[:6]
            for name, value in fields.items()}


def differing(kept: Mapping[str, str], fresh: Mapping[str, str]) -> list[str]:
    return sorted(name for name in kept.keys() | fresh.keys() if kept.get(name) != fresh.get(name))


# ---------------------------------------------------------------- application numbers
# <county division>-<date of receipt, Beijing time>-<shard><sequence>-<check character>,
# e.g. 430102-20261204-0700042-K. The check character is ISO 7064 MOD 37,36 (0-9, A-Z) over
# the digits, as in GB 32100's code. Sequences come from NUMBER_SHARDS counters, each one
# aggregate in intake's state: the shard is fixed by the application id, so a retried
# submission always meets the counter (and dedupe mark) that numbered it, and each counter
# is advanced by its one owner in the same transaction as the ApplicationReceived it numbers.
NUMBER_SHARDS = 16
BEIJING = ZoneInfo("Asia/Shanghai")
_NUMBERING = "numbering:"


def awaits_number(view: dict) -> bool:
    """Recorded by Submit and not numbered yet. A view from before numbering (no such field)
    is never numbered: its ApplicationReceived was published long ago."""
    return view.get("application_number") == ""


def numbering_key(application_id: str) -> str:
    shard = int(hashlib.sha256(application_id.encode()).hexdigest()[:8], 16) % NUMBER_SHARDS
    return f"{_NUMBERING}{shard:02d}"


def is_numbering_key(key: str) -> bool:
    return key.startswith(_NUMBERING)


def assign_number(counter: dict | None, key: str, division: str, at: datetime) -> tuple[str, dict]:
    """The next number of the counter `key`, and the counter after it. The sequence starts
    again each day; a submission stamped before the counter's day (API instances' clocks
    around midnight) takes the counter's day, so a number never repeats."""
    today = at.astimezone(BEIJING).strftime("%Y%m%d")
    if counter is None or today > counter["day"]:
        counter = {"day": today, "next": 1}
    day, sequence = counter["day"], counter["next"]
    digits = f"{divisions.county(division)}{day}{key[len(_NUMBERING):]}{sequence:05d}"
    number = f"{digits[:6]}-{day}-{digits[14:]}-{mod_37_36.calc_check_digit(digits)}"
    return number, {"day": day, "next": sequence + 1}


def is_valid_number(number: str) -> bool:
    parts = number.split("-")
    return len(parts) == 4 and mod_37_36.is_valid("".join(parts[:3]) + parts[3])


def advance(progress: dict | None, application_id: str, stage: str, at: datetime, detail: str = "",
            notice: str = "", **facts: object) -> dict:
    """Record a step. Events from different topics may arrive out of order, so the stage
    only moves forward and a terminal stage is final; the history keeps every step."""
    view = dict(progress or {"application_id": application_id, "matter_code": "", "stage": "",
                             "terminal": False, "history": [], "ratings": [], "notices": []})
    view.update({k: v for k, v in facts.items() if v is not None})
    view["history"] = [*view["history"], _step(view, stage, at, detail, notice)]
    if view["terminal"] or stage not in (*STAGES, *TERMINAL):  # a fact on the way, not a stage
        return view
    if stage in TERMINAL:
        view["stage"], view["terminal"] = stage, True
    elif view["stage"] not in STAGES or STAGES.index(stage) > STAGES.index(view["stage"]) \
            or {stage, view["stage"]} <= set(SUPPLEMENT_ROUND):
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


# 好差评 in 异地代收代办 (国办发 2019 51号): the receiving window and the deciding authority
# are each rated, against their own division; SERVICE is an office that did both.
SERVICE, RECEIVING, DECIDING = "SERVICE", "RECEIVING", "DECIDING"
RATED_ROLES = (SERVICE, RECEIVING, DECIDING)
ONSITE = "ONSITE"  # 一次一评: one rating per service interaction; every other channel 一事一评
# The service a role is rated for has been given: the window's once it received (any stage),
# the authority's once it decided (or refused to accept), the whole service once concluded.
_AUTHORITY_DONE = ("DECIDED", "DELIVERED", "DENIED")


def rating_problems(progress: dict, rated_role: str, channel: str, interaction_id: str) -> list[str]:
    """Whom a rating is for and whether that service has been given yet."""
    if rated_role not in RATED_ROLES:
        return [f"rated_role must be one of {', '.join(RATED_ROLES)}"]
    problems = []
    if problem := too_long("interaction_id", interaction_id, MAX_REFERENCE_LENGTH):
        problems.append(problem)
    elif channel == ONSITE and not interaction_id:
        problems.append("interaction_id is required on site (一次一评: one rating per service interaction)")
    stage = progress["stage"]
    refused = any(n["kind"] == NON_ACCEPTANCE for n in progress.get("notices", []))
    if rated_role == RECEIVING and not progress.get("window_id"):
        problems.append("rated_role: RECEIVING rates the window that received; this application came in online")
    elif rated_role == DECIDING and not (stage in _AUTHORITY_DONE or refused):
        problems.append("rated_role: the deciding authority can be rated once it has decided")
    elif rated_role == SERVICE and stage not in (*RATEABLE, "DECIDED"):
        problems.append("an application can be rated once it is concluded or decided")
    return problems


def rated_party(progress: dict, rated_role: str) -> tuple[str, str]:
    """The party and division a rating counts against, from the application (never from the
    caller): the receiving window in the receiving division, the deciding authority in its own."""
    if rated_role == RECEIVING:  # only rated where a window received (rating_problems), so both are known
        return progress["window_id"], progress["receiving_division"]
    if rated_role == DECIDING:
        return (progress.get("deciding_partner", ""),
                progress.get("deciding_division") or progress.get("home_division", ""))
    return progress.get("deciding_partner", ""), progress.get("receiving_division", "")


def repeated_rating(progress: dict, rated_role: str, channel: str, interaction_id: str) -> str | None:
    """Why a rating is one too many, or None: online one per matter and rated party (一事一评),
    on site one per interaction (一次一评)."""
    for given in progress["ratings"]:
        if given.get("rated_role", SERVICE) != rated_role:
            continue
        if channel == ONSITE and given.get("channel") == ONSITE and given.get("interaction_id") == interaction_id:
            return f"this interaction was already rated for {rated_role} (一次一评: one rating per interaction)"
        if channel != ONSITE and given.get("channel") != ONSITE:
            return f"the application was already rated online for {rated_role} (一事一评: one rating per matter)"
    return None


def check_rating(progress: dict, level: int, channel: str, comment: str | None = None,
                 rated_role: str = SERVICE, interaction_id: str = "") -> None:
    problems = rating_problems(progress, rated_role, channel, interaction_id)
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


# ---------------------------------------------------------------- joint legs (多地联办)
# A joint matter runs in legs, one party at a time (delivery assigns them in turn). The view
# keeps each leg's party, step and state with the time it reached each state, learned from
# the events intake reads: the legs from ApplicationRouted, each leg's end from delivery's
# LegCompleted / LegFailed and the decision, the undoing of done legs from LegFailed and
# ApplicationClosed. Events from different topics arrive in any order, so a leg's state only
# moves forward (a done leg may still be undone: COMPLETED -> CANCELLED).
JOINT = "JOINT"
WAITING, ASSIGNED, COMPLETED, FAILED, CANCELLED = "WAITING", "ASSIGNED", "COMPLETED", "FAILED", "CANCELLED"
_LEG_RANK = {WAITING: 0, ASSIGNED: 1, COMPLETED: 2, FAILED: 3, CANCELLED: 3}
_LEG_TIME = {ASSIGNED: "assigned_at", COMPLETED: "completed_at", FAILED: "failed_at", CANCELLED: "cancelled_at"}
OPEN_LEGS = (WAITING, ASSIGNED)


def is_joint(view: dict) -> bool:
    return bool(view.get("legs"))


def joint_legs(view: dict, mode: str, legs: list[dict]) -> dict:
    """ApplicationRouted: a joint matter's legs, in handling order, wait for their turn. What
    a leg's own events told already (they may come first) is kept."""
    if mode != JOINT or not legs:
        return view
    known = {leg["number"]: leg for leg in view.get("legs", [])}
    merged = []
    for number, spec in enumerate(legs, start=1):
        leg = known.get(number) or {"number": number, "state": WAITING}
        merged.append({**leg, "count": len(legs), "step": spec["step"], "party": spec["partner_id"],
                       "division": spec["division_code"]})
    return {**view, "legs": merged}


def leg_reached(view: dict, number: int, state: str, at: datetime, count: int = 0, party: str = "",
                step: str = "", detail: str = "", result_reference: str | None = None) -> dict:
    """Leg `number` reached `state` at `at`; a step in the history says so (what Watch sends).
    A state the leg is already past changes nothing."""
    legs = {leg["number"]: leg for leg in view.get("legs", [])}
    leg = legs.get(number) or {"number": number, "state": WAITING, "count": count, "step": step, "party": party,
                               "division": ""}
    if _LEG_RANK[state] <= _LEG_RANK[leg["state"]]:
        return view
    leg = {**leg, "state": state, _LEG_TIME[state]: at}
    leg.update({k: v for k, v in (("count", count), ("party", party), ("step", step)) if v and not leg.get(k)})
    if detail:
        leg["detail"] = detail
    if result_reference:
        leg["result_reference"] = result_reference
    legs[number] = leg
    view = {**view, "legs": [legs[n] for n in sorted(legs)]}
    return {**view, "history": [*view["history"], _leg_step(view, leg, at, detail)]}


def _leg_step(view: dict, leg: dict, at: datetime, detail: str) -> dict:
    sequence = max(h.get("sequence", 0) for h in view["history"]) + 1  # a view always has a step
    what = f"leg {leg['number']} of {leg.get('count') or '?'} ({leg.get('step') or '?'})"
    party = leg["party"]  # every leg has one ("" until known)
    return {"stage": f"LEG_{leg['state']}", "at": at, "detail": f"{what}: {detail}" if detail else what,
            "sequence": sequence, "leg": leg["number"], "party": party,
            "responsible": f"{DECIDING_AUTHORITY}:{party}" if leg["state"] == ASSIGNED and party else NO_ONE}


def first_leg_assigned(view: dict, at: datetime) -> dict:
    """Delivery assigns leg 1 once the application is received, routed and verified
    (services.delivery.domain.ready_to_assign), unless it ended before; the legs after it are
    assigned as the one before completes (LegCompleted)."""
    stages = {h["stage"] for h in view["history"]}
    if not is_joint(view) or view["terminal"] or not {"ROUTED", "VERIFIED"} <= stages:
        return view
    return leg_reached(view, 1, ASSIGNED, at)


def leg_completed(view: dict, body: dict) -> dict:
    """LegCompleted: the leg is done and, in the same transaction, delivery assigned the next."""
    at, number = body["completed_at"], body["leg"]
    view = leg_reached(view, number, COMPLETED, at, body["legs"], body["partner_id"], body["step"],
                       result_reference=body.get("result_reference"))
    if number < body["legs"] and not view["terminal"]:
        view = leg_reached(view, number + 1, ASSIGNED, at, body["legs"])
    return view


def leg_failed(view: dict, body: dict, reason: str) -> dict:
    """LegFailed: the leg failed; the legs done before are undone, the ones after never run."""
    at, number = body["failed_at"], body["leg"]
    view = leg_reached(view, number, FAILED, at, body["legs"], body["partner_id"], body["step"], reason)
    undone = {int(leg["assignment_id"].rsplit(":", 1)[1]) for leg in body["compensated"]}
    for n in sorted(undone):
        view = leg_reached(view, n, CANCELLED, at, body["legs"], detail=f"undone: leg {number} failed")
    for n in range(number + 1, body["legs"] + 1):
        view = leg_reached(view, n, CANCELLED, at, body["legs"], detail=f"not run: leg {number} failed")
    return view


def last_leg_decided(view: dict, at: datetime) -> dict:
    """An approval of a joint matter is its last leg's result."""
    if not is_joint(view):
        return view
    return leg_reached(view, view["legs"][-1]["number"], COMPLETED, at)


def legs_ended(view: dict, at: datetime, why: str, undo_done: bool = False) -> dict:
    """The application ended: no open leg will run, and (`undo_done`, delivery's close) the
    done ones were undone."""
    ending = (*OPEN_LEGS, COMPLETED) if undo_done else OPEN_LEGS
    for leg in view.get("legs", []):
        if leg["state"] in ending:
            view = leg_reached(view, leg["number"], CANCELLED, at, detail=why)
    return view


def current_leg(view: dict) -> dict | None:
    return next((leg for leg in view.get("legs", []) if leg["state"] == ASSIGNED), None)


def acting_party(view: dict) -> str:
    """Who holds the application: the party of a joint matter's current leg, else the
    deciding authority."""
    leg = current_leg(view)
    return leg["party"] if leg and leg.get("party") else view.get("deciding_partner", "")
