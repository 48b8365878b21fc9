"""The one interface every result channel implements, and what channels share.

A channel carries an approved result to the applicant: it starts when the decision arrives
and moves on with reports from outside (the carrier's receipts, the wallet's answer, the
window's arrival and pick-up), with Tongban's own commands (a corrected address, an
operator's resolution) and with its durable timers. Every step is a pure function of the
file's `result` part; the handlers turn a `Step` into an `Outcome`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

from services.delivery.matters import Matter
from tongban import divisions, topics, windows
from tongban.handling import Emit, Rejected, Timer
from tongban.pii import DEFAULT_SUITE, keyed_digest

ResultState = dict[str, Any]  # the file's `result`: method, attempt, dispatch ids, status ...
# (window id, matter code, act, at) -> why the window may not (None: it may)
Authorised = Callable[[str, str, str, datetime], str | None]
# (division, matter code, at) -> a window there that may hand over the matter's results
HandOverWindow = Callable[[str, str, datetime], str | None]
HAND_OVER = windows.HAND_OVER  # the act a window must be authorised for to hand a result over


@dataclass(frozen=True)
class Policy:
    """How long a result may wait and how often post is tried; configured per deployment
    (services/delivery/__main__.py reads TONGBAN_DELIVERY_*)."""

    post_attempts: int = 3
    retry_after: timedelta = timedelta(days=2)
    pickup_reminder_after: timedelta = timedelta(days=7)
    uncollected_report_after: timedelta = timedelta(days=30)


@dataclass(frozen=True)
class Context:
    """What a channel may know about the application it carries a result for. Personal data
    is opened only on demand, to be sealed again for the recipient by the runtime."""

    application_id: str
    matter_code: str
    deciding_partner: str
    window_id: str
    result_reference: str | None
    item: str  # what the parcel holds, as the carrier may read it (scrubbed of the applicant)
    now: datetime
    policy: Policy
    secret: bytes
    suite: str  # TONGBAN_PII_CIPHER: the keyed hash of the dispatch ids follows it (SM3 under sm4-gcm)
    holder: Callable[[], dict[str, Any]]
    postal_address: Callable[[ResultState], str | None]
    authorised: Authorised
    matter: Matter


@dataclass(frozen=True)
class Delivered:
    dispatch_id: str
    tracking_number: str | None
    at: datetime


@dataclass
class Step:
    """A channel's answer: the new `result`, what to send, timers, and whether the result
    has now reached the applicant. Reports reach a channel only for a dispatch of this result
    (the handlers refuse any other)."""

    result: ResultState
    emits: list[Emit] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    cancel_timers: list[str] = field(default_factory=list)
    delivered: Delivered | None = None
    switch_to: str | None = None  # go on with this channel (its `start`), e.g. WINDOW after returns


@dataclass(frozen=True)
class Redirection:
    """Where a result goes next after a return: POST to an (optionally corrected) address,
    or WINDOW pick-up at the receiving window."""

    method: str
    address: str | None = None
    reason: str = ""  # an operator's, told with the resolution


class Channel:
    """One way a result reaches the applicant. Subclasses set `method` and implement
    `start`; the rest refuse what does not belong to them."""

    method: ClassVar[str]

    def refusal(self, ctx: Context) -> str | None:
        """Why this channel cannot carry this matter's result (None: it can)."""
        return None

    def check_result(self, ctx: Context) -> None:
        """Refuses (Rejected) a decision whose result this channel cannot carry."""

    def start(self, ctx: Context, previous: ResultState | None) -> Step:
        """Send the result out: the first attempt, or the next after `previous` (another
        channel's or this one's)."""
        raise NotImplementedError

    def on_carrier(self, ctx: Context, result: ResultState, receipt: dict[str, Any]) -> Step:
        raise Rejected(f"results by {self.method} do not travel with the carrier")

    def on_wallet(self, ctx: Context, result: ResultState, receipt: dict[str, Any]) -> Step:
        raise Rejected(f"results by {self.method} are not recorded in a wallet")

    def on_arrival(self, ctx: Context, result: ResultState, window_id: str) -> Step:
        raise Rejected(f"results by {self.method} do not wait at a window")

    def on_pickup(self, ctx: Context, result: ResultState, window_id: str) -> Step:
        raise Rejected(f"results by {self.method} are not picked up at a window")

    def on_redirect(self, ctx: Context, result: ResultState, to: Redirection, operator: bool) -> Step:
        """An operator resolves a result in the manual-handling queue: it goes out again, by
        this channel or another."""
        if result["status"] != "MANUAL":
            raise Rejected("the result is not waiting for a new address")
        if not operator:
            raise Rejected("only an operator resolves a result in manual handling")
        resolved = {**result, "status": "RESOLVED"}
        if to.address:
            resolved["corrected_address"] = to.address
        told = progress(ctx, resolved, "RESOLVED",
                        f"an operator sent it on by {to.method}" + (f": {to.reason}" if to.reason else ""))
        if to.method != self.method:
            return Step(resolved, emits=[told], switch_to=to.method)
        again = self.start(ctx, resolved)
        return Step(again.result, emits=[told, *again.emits], timers=again.timers)

    def on_timer(self, ctx: Context, result: ResultState, name: str, payload: dict[str, Any]) -> Step:
        return Step(result)  # a timer of another channel, set before a switch: nothing to do


def dispatch_id_for(secret: bytes, application_id: str, attempt: int, suite: str = DEFAULT_SUITE) -> str:
    """Deterministic, so a replayed decision makes the same dispatch, and unguessable without
    delivery's secret, so nobody can forge a receipt for a dispatch from the application id.
    The keyed hash is the cipher suite's (tongban.pii.keyed_digest): HMAC-SHA256 by default,
    HMAC-SM3 under sm4-gcm."""
    mac = keyed_digest(secret, f"{application_id}:{attempt}".encode(), suite).hex()
    return "DSP" + mac[:24].upper()


def progress(ctx: Context, result: ResultState, stage: str, detail: str = "") -> Emit:
    """A step on the way (DeliveryProgress), for Track and the SLA ledger: no personal data."""
    body = {"application_id": ctx.application_id, "method": result["method"],
            "dispatch_id": result.get("dispatch_id", ""), "stage": stage, "attempt": result.get("attempt", 1),
            "detail": detail, "at": ctx.now}
    return Emit(topics.APPLICATION_DELIVERED, topics.DELIVERY_PROGRESS_EVENT, ctx.application_id, body,
                qualifier=f"{stage}:{result.get('attempt', 1)}:{result.get('status', '')}")


def known_dispatch(result: ResultState, dispatch_id: str) -> bool:
    """A report names one of this result's dispatches (an earlier attempt's included)."""
    return dispatch_id in result.get("dispatches", [])


def manual(ctx: Context, result: ResultState, reason: str) -> Step:
    """The result waits for an operator (the manual-handling queue), with the reason."""
    queued = {**result, "status": "MANUAL", "manual_reason": reason, "manual_since": ctx.now}
    return Step(queued, emits=[progress(ctx, queued, "MANUAL_HANDLING", reason)])


def carrier_dispatch(ctx: Context, result: ResultState, recipient: str, address: str, phone: str | None,
                     purpose: str, window_id: str = "") -> Emit:
    """A parcel for the carrier (PostalDispatch); the runtime seals the recipient for it."""
    body = {"dispatch_id": result["dispatch_id"], "application_id": ctx.application_id, "recipient_name": recipient,
            "address": address, "phone": phone, "item": ctx.item, "purpose": purpose, "window_id": window_id,
            "attempt": result["attempt"]}
    return Emit(topics.POSTAL_DISPATCHES, topics.POSTAL_DISPATCH_EVENT, ctx.application_id, body,
                qualifier=str(result["attempt"]))


def attempt_of(ctx: Context, previous: ResultState | None, method: str, attempt: int, **fields: Any) -> ResultState:
    """The `result` of a new dispatch attempt, remembering every earlier dispatch id."""
    dispatch_id = dispatch_id_for(ctx.secret, ctx.application_id, attempt, ctx.suite)
    earlier = (previous or {}).get("dispatches", [])
    return {"method": method, "attempt": attempt, "dispatch_id": dispatch_id, "dispatches": [*earlier, dispatch_id],
            **fields}


def registry_authorised(window_id: str, matter_code: str, act: str, at: datetime) -> str | None:
    """The windows registry's answer (tongban/windows.toml), on the day in Asia/Shanghai."""
    verdict = windows.authorised(window_id, matter_code, act, at.astimezone(windows.SHANGHAI).date())
    return None if verdict else f"window {window_id}: {verdict.reason}"


def registry_window(division: str, matter_code: str, at: datetime) -> str | None:
    """A registered window in the division's county that may hand over the matter's results."""
    if not divisions.is_known(division):
        return None
    county = divisions.county(division)
    return next((w.window_id for w in windows.registry().windows()
                 if divisions.county(w.division) == county
                 and registry_authorised(w.window_id, matter_code, HAND_OVER, at) is None), None)


@dataclass(frozen=True)
class Deployment:
    """What the channels need from where delivery runs: its policy, its dispatch secret
    (services/delivery/__main__.py), which matters allow post (the catalogue) and which
    windows may hand results over (the windows registry)."""

    secret: bytes
    matters: Callable[[str], Matter]
    policy: Policy = Policy()
    authorised: Authorised = registry_authorised
    window_for: HandOverWindow = registry_window
