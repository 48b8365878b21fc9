"""The acceptance lifecycle: what may happen between hand-over to the deciding authority and
its decision (行政许可法 §32 受理 / 补正 / 不予受理; 国办发[2020]35号 on 容缺受理).

Pure rules over delivery's file (a plain dict, see handlers.py); no broker, no store. The
handlers turn a refused step into a dead letter (`Rejected`) with the message as its reason,
so messages name codes and stages only, never the applicant.

Stages of one file:

    (not yet assigned) --assign--> AWAITING --ACCEPTED--> ACCEPTED --decision--> DECIDED
                                     |  ^  \\--REFUSED--> NOT_ACCEPTED
                      SUPPLEMENT_REQUIRED  \\ all listed materials supplemented
                                     v  |
                                 SUPPLEMENTING --deadline passed--> SUPPLEMENT_EXPIRED
    any stage before DECIDED --withdrawn--> WITHDRAWN
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

ANSWERS = ("ACCEPTED", "SUPPLEMENT_REQUIRED", "REFUSED")  # AuthorityAcceptance.outcome, case-sensitive
DECISION_OUTCOMES = ("APPROVED", "DENIED")  # AuthorityDecision.outcome, case-sensitive
CLOCK_CHANGES = ("EXTENDED", "EXCLUSION_STARTED", "EXCLUSION_ENDED")  # AuthorityClockChange.kind

# How long the applicant has to supplement once asked. The law leaves the period to the
# authority's rules; 30 days is the common provincial practice and the default here
# (TONGBAN_SUPPLEMENT_PERIOD_SECONDS changes it, e.g. for tests).
SUPPLEMENT_PERIOD = timedelta(days=30)

# 告知承诺: the approving authority checks what was promised after its approval (事后核查);
# two months is a common provincial rule and the default here.
COMMITMENT_CHECK_AFTER = timedelta(days=60)

# Timer names (delivery's Wiring.timers).
SUPPLEMENT_DEADLINE = "supplement-deadline"
DEFERRED_PROMISE = "deferred-promise"
COMMITMENT_CHECK = "commitment-check"
TIMERS = (SUPPLEMENT_DEADLINE, DEFERRED_PROMISE, COMMITMENT_CHECK)

# 容缺 promise dates are calendar dates where the application was received: a promise "by
# 2026-11-20" holds until that day ends in China.
CHINA = ZoneInfo("Asia/Shanghai")

# SupplementRequested.cause
AUTHORITY_NOTICE = "AUTHORITY"  # the authority's 补正 notice: the application pauses
DEFERRED_PROMISE_MISSED = "DEFERRED_PROMISE_MISSED"  # a 容缺 material is late: the result keeps waiting


class Stage(StrEnum):
    UNASSIGNED = "UNASSIGNED"  # received, routed and verified not yet all known
    AWAITING = "AWAITING"  # assigned or supplemented: the authority's answer is due
    SUPPLEMENTING = "SUPPLEMENTING"  # paused for the applicant's 补正
    ACCEPTED = "ACCEPTED"
    NOT_ACCEPTED = "NOT_ACCEPTED"
    DECIDED = "DECIDED"
    WITHDRAWN = "WITHDRAWN"
    SUPPLEMENT_EXPIRED = "SUPPLEMENT_EXPIRED"


CLOSED = (Stage.WITHDRAWN, Stage.SUPPLEMENT_EXPIRED)  # ApplicationClosed.status
ENDED_UNDECIDED = (Stage.NOT_ACCEPTED, *CLOSED)


class SupplementRequest(TypedDict):
    """The one 补正 notice of an application (the file's `supplement`)."""

    missing: dict[str, str]  # material code -> what is wrong
    supplement_by: datetime
    supplemented: list[str]  # codes the applicant has supplemented so far
    returned: bool  # every listed material is back with the authority


class OutOfOrder(ValueError):
    """A step the application's stage does not allow; the message is the dead-letter reason."""


def stage(file: dict[str, Any] | None) -> Stage:
    file = file or {}
    if "closed" in file:
        return Stage(file["closed"])
    if "decision" in file:
        return Stage.DECIDED
    answer = file.get("acceptance")
    if answer == "REFUSED":
        return Stage.NOT_ACCEPTED
    if answer == "ACCEPTED":
        return Stage.ACCEPTED
    supplement: SupplementRequest | None = file.get("supplement")
    if supplement is not None and not supplement["returned"]:
        return Stage.SUPPLEMENTING
    return Stage.AWAITING if "assignment" in file else Stage.UNASSIGNED


_ENDED = {
    Stage.NOT_ACCEPTED: "the authority did not accept this application",
    Stage.DECIDED: "the authority already decided this application",
    Stage.WITHDRAWN: "the applicant withdrew this application",
    Stage.SUPPLEMENT_EXPIRED: "this application closed when its deadline for supplementing passed",
}


def check_answer(file: dict[str, Any], outcome: str, missing: dict[str, str]) -> None:
    """May the assigned authority give this acceptance answer now?"""
    if outcome not in ANSWERS:
        raise OutOfOrder(f"acceptance outcome {outcome!r} is not one of {', '.join(ANSWERS)}")
    current = stage(file)
    if current in _ENDED:
        raise OutOfOrder(f"{_ENDED[current]}; it takes no acceptance answer")
    if current is Stage.ACCEPTED:
        raise OutOfOrder("the authority already accepted this application")
    if current is Stage.SUPPLEMENTING:
        raise OutOfOrder("this application waits for the applicant's supplement; the authority answers once it is back")
    if outcome == "SUPPLEMENT_REQUIRED":
        if not missing:
            raise OutOfOrder("a 补正 notice must list every missing material")
        if "supplement" in file:
            raise OutOfOrder("the authority already sent its 补正 notice; everything missing is listed at once "
                             "(一次性告知), so it now accepts or does not accept")


def check_decision(file: dict[str, Any], outcome: str) -> None:
    """Only an accepted application is decided, once, with a declared outcome."""
    if outcome not in DECISION_OUTCOMES:
        raise OutOfOrder(f"decision outcome {outcome!r} is not one of {', '.join(DECISION_OUTCOMES)}")
    current = stage(file)
    if current is Stage.NOT_ACCEPTED:
        raise OutOfOrder("the authority refused to accept this application; it cannot decide it")
    if current is Stage.DECIDED:
        raise OutOfOrder("the authority already decided this application")
    if current in _ENDED:
        raise OutOfOrder(f"{_ENDED[current]}; it cannot be decided")
    if current is not Stage.ACCEPTED:
        raise OutOfOrder("the authority has not accepted this application; it cannot decide it yet")


def check_withdrawal(file: dict[str, Any] | None) -> None:
    """An application may be withdrawn until it is decided (撤回 before the decision)."""
    current = stage(file)
    if current in _ENDED:
        raise OutOfOrder(f"{_ENDED[current]}; it can no longer be withdrawn")


def check_supplement(file: dict[str, Any]) -> None:
    """Materials handed in after the application ended without a decision go nowhere; a 容缺
    material after the decision still releases the result."""
    current = stage(file)
    if current in ENDED_UNDECIDED:
        raise OutOfOrder(f"{_ENDED[current]}; it takes no supplement")


def check_clock_change(file: dict[str, Any], kind: str, working_days: int) -> None:
    """延期 and excluded periods belong to an application the authority still works on."""
    if kind not in CLOCK_CHANGES:
        raise OutOfOrder(f"clock change {kind!r} is not one of {', '.join(CLOCK_CHANGES)}")
    if kind == "EXTENDED" and working_days <= 0:
        raise OutOfOrder("an extension must add working days")
    current = stage(file)
    if current not in (Stage.AWAITING, Stage.ACCEPTED):
        raise OutOfOrder(f"the authority's clock cannot change while this application is {current}")


def commitment_check_due(file: dict[str, Any]) -> bool:
    """An approval under 告知承诺 not yet checked (nor revoked) is to be checked."""
    return (stage(file) is Stage.DECIDED and file.get("decision") == "APPROVED" and bool(file.get("commitments"))
            and "commitment_check" not in file)


def check_commitment_result(file: dict[str, Any]) -> None:
    """The authority reports on a 告知承诺 check it was asked for, once."""
    if file.get("commitment_check") != "REQUESTED":
        raise OutOfOrder("no 告知承诺 check of this application is awaited from the authority")


def request_supplement(missing: dict[str, str], requested_at: datetime, period: timedelta) -> SupplementRequest:
    return {"missing": dict(sorted(missing.items())), "supplement_by": requested_at + period, "supplemented": [],
            "returned": False}


def supplement(request: SupplementRequest, codes: list[str]) -> SupplementRequest:
    """The applicant supplements some materials; the file goes back once all listed are in."""
    supplemented = sorted({*request["supplemented"], *codes})
    return {**request, "supplemented": supplemented, "returned": set(request["missing"]) <= set(supplemented)}


def promise_deadline(promised_by: str) -> datetime:
    """The end of the promised day in China."""
    return datetime.combine(date.fromisoformat(promised_by) + timedelta(days=1), time.min, CHINA)


def overdue(deferred: dict[str, str], now: datetime) -> dict[str, str]:
    """容缺 materials still outstanding whose promised date has passed."""
    return {code: by for code, by in sorted(deferred.items()) if promise_deadline(by) <= now}


def next_promise(deferred: dict[str, str], now: datetime) -> datetime | None:
    """When the next outstanding 容缺 promise runs out, if any is still ahead."""
    ahead = [promise_deadline(by) for by in deferred.values() if promise_deadline(by) > now]
    return min(ahead, default=None)


def result_may_go_out(file: dict[str, Any]) -> bool:
    """A result waits for every 容缺 material (the file's `deferred`: code -> promised date).

    Channels dispatch a result only when this holds; delivery dispatches a held result when
    the last deferred material arrives."""
    return not file.get("deferred")
