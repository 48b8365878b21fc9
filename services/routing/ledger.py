"""The SLA ledger: a clock per party and leg of one application, counted in working days.

Pure rules over the working calendar. Routing's handler keeps one Ledger in each
application's state, feeds it the lifecycle facts, emits the alerts `advance` returns and
sets one durable timer at `next_alert_at`.

The law it follows (中华人民共和国行政许可法):
- §32: within 5 days of receiving the file the authority accepts it or tells the applicant,
  once, everything to supplement (补正); if it does neither, the file counts as accepted
  from the day it was received.
- §42: the decision limit may be extended once, with approval, by at most 10 days, unless a
  law or regulation says otherwise.
- §44: a licence is issued and served (送达) within 10 days of the decision.
- §45: hearings, tendering, auctions, testing, inspection, quarantine and expert review are
  not counted in the limits (excluded periods).
- §82: the limits are working days.
A period never counts the day it starts (see services.routing.workdays).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from services.routing.catalogue import MaterialRequirement
from tongban.workdays import SHANGHAI, WorkingCalendar

DEFAULT_POLICY = Path(__file__).with_name("sla.toml")

# Legs: whose clock runs, from the window to the applicant's hands.
RECEIPT = "RECEIPT"  # 收件: the window receives the file (an instant: the day counting starts)
TRANSIT = "TRANSIT"  # 寄递: originals posted from the receiving window to the deciding authority
ACCEPTANCE = "ACCEPTANCE"  # 受理: the deciding authority accepts or sends its 补正 notice
DECISION = "DECISION"  # 办结: a deciding party decides its leg (the statutory clock, from 受理)
DELIVERY = "DELIVERY"  # 送达: the result reaches the applicant
LEGS = (RECEIPT, TRANSIT, ACCEPTANCE, DECISION, DELIVERY)

# Clock status.
WAITING = "WAITING"  # its leg has not started (a later joint leg, delivery before the decision)
RUNNING = "RUNNING"  # counting, or stopped by an open interval (补正, an excluded period)
DONE = "DONE"
DEEMED = "DEEMED"  # acceptance by law (§32), not by the authority
FAILED = "FAILED"
STOPPED = "STOPPED"  # the application ended before the leg did

# Why a clock stands still; both are intervals the limit does not count.
SUPPLEMENT = "SUPPLEMENT"  # 补正: waiting for the applicant's materials
EXCLUSION = "EXCLUSION"  # §45: hearing, testing, inspection, expert review

# Alert levels, 红黄牌 style: yellow ahead of the deadline, red on its last day, then breach.
YELLOW, RED, BREACHED = "YELLOW", "RED", "BREACHED"
DEEMED_ACCEPTED = "DEEMED_ACCEPTED"  # the consequence of a breached acceptance clock

# How the application ended.
DELIVERED, DENIED, REFUSED, LEG_FAILED = "DELIVERED", "DENIED", "REFUSED", "LEG_FAILED"


@dataclass(frozen=True)
class SlaPolicy:
    """The limits the ledger holds parties to; the statutory ones name their article."""

    acceptance_working_days: int = 5  # §32
    delivery_working_days: int = 10  # §44
    max_extension_working_days: int = 10  # §42, unless a law says otherwise
    # Not statutory: the service commitment for posting originals between windows.
    transit_working_days: int = 3
    # 黄牌: the warning this many working days before a deadline (0: none).
    yellow_working_days_before: int = 2

    @classmethod
    def load(cls, path: Path | None = None) -> SlaPolicy:
        """The policy in services/routing/sla.toml; an unknown key or a negative limit is refused."""
        path = path or DEFAULT_POLICY
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        known = {f.name for f in fields(cls)}
        problems = [f"unknown key {k}" for k in data if k not in known]
        problems += [f"{k} must be a whole number >= 0" for k, v in data.items()
                     if k in known and (not isinstance(v, int) or isinstance(v, bool) or v < 0)]
        if problems:
            raise ValueError(f"{path}: " + "; ".join(problems))
        return cls(**data)


class ClockError(ValueError):
    """A fact the ledger cannot take (an extension beyond the law); the text names no person."""


@dataclass
class Interval:
    """Days d with start < d <= end are not counted: the day it starts still counts (the
    notice went out that day), the day it ends does not (counting resumes the day after)."""

    kind: str
    start: date
    end: date | None = None

    def covers(self, d: date) -> bool:
        return self.start < d and (self.end is None or d <= self.end)


@dataclass
class Clock:
    leg: str
    party: str
    limit: int  # working days
    step: str = ""  # the routed leg's step for DECISION clocks
    starts_on: date | None = None  # the day counting starts from (not itself counted)
    status: str = WAITING
    extension: int = 0
    stops: list[Interval] = field(default_factory=list)
    ended_on: date | None = None

    @property
    def name(self) -> str:
        return f"{self.leg}:{self.step}" if self.step else self.leg

    @property
    def stopped_by(self) -> Interval | None:
        return next((i for i in self.stops if i.end is None), None)

    def start(self, on: date) -> None:
        self.starts_on, self.status = on, RUNNING

    def end(self, status: str, on: date | None) -> None:
        if self.status in (WAITING, RUNNING):
            self.status, self.ended_on = status, on
            if (open_stop := self.stopped_by) is not None and on is not None:
                open_stop.end = on

    def deadline(self, calendar: WorkingCalendar) -> date | None:
        """The last day of the limit; None while the clock is not counting."""
        if self.status != RUNNING or self.starts_on is None or self.stopped_by is not None:
            return None
        d, remaining = self.starts_on, self.limit + self.extension
        while remaining:
            d += timedelta(days=1)
            if calendar.is_working_day(d) and not any(i.covers(d) for i in self.stops):
                remaining -= 1
        return d


@dataclass(frozen=True)
class Alert:
    level: str
    leg: str
    party: str
    step: str
    deadline: date
    at: datetime  # the ledger instant it is due
    consequence: str = ""

    @property
    def key(self) -> str:
        return f"{self.leg}:{self.step}|{self.level}|{self.deadline.isoformat()}"


def originals_travel(required: Iterable[MaterialRequirement]) -> bool:
    """资料寄递: a matter needs its paper originals posted to the deciding authority when it
    requires a material that data sharing cannot supply (no `shared_evidence` in the catalogue)."""
    return any(not m.shared_evidence for m in required)


def start_of(d: date) -> datetime:
    return datetime.combine(d, time(0), SHANGHAI).astimezone(UTC)


def end_of(d: date) -> datetime:
    """The last millisecond of a Beijing day: survives Avro timestamp-millis unchanged."""
    return datetime.combine(d, time(23, 59, 59, 999000), SHANGHAI).astimezone(UTC)


def _day(moment: datetime) -> date:
    if moment.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    return moment.astimezone(SHANGHAI).date()


@dataclass(frozen=True)
class DecisionLeg:
    """One routed leg: who decides which step within how many working days."""

    party: str
    step: str
    working_days: int


@dataclass
class Ledger:
    submitted_on: date  # the Beijing date of the submission
    received_on: date  # the working day it counts as received (the next one for a day off)
    clocks: list[Clock]
    deemed_accepted_on: date | None = None  # set when §32 made the file accepted
    supplement_notices: int = 0  # before acceptance the law allows one
    sent: list[str] = field(default_factory=list)  # keys of the alerts already given
    ended: str = ""  # how the application ended; "" while it runs
    # 资料寄递 tracked by the carrier: only the deciding authority's signature for the parcel
    # ends transit (it may accept on scanned copies while the paper is still on the road).
    originals_tracked: bool = False
    parcels: list[str] = field(default_factory=list)  # tracking numbers dispatched for it

    @classmethod
    def open(cls, submitted_at: datetime, *, window: str, deciding_party: str,
             decision_legs: Sequence[DecisionLeg], delivery_party: str, originals_posted: bool,
             policy: SlaPolicy, calendar: WorkingCalendar, originals_tracked: bool = False) -> Ledger:
        """Clocks for a routed application: receipt is recorded, acceptance (and transit of
        originals, where they are posted) runs, the decision legs and delivery wait.
        `originals_tracked`: the matter's paper originals travel (`originals_travel`), so transit
        ends on the authority's MaterialsReceived, not on its first act."""
        received_on = calendar.first_working_day(submitted_at)
        receipt = Clock(RECEIPT, window, 0, starts_on=received_on, status=DONE, ended_on=received_on)
        transit = [Clock(TRANSIT, window, policy.transit_working_days, starts_on=received_on, status=RUNNING)]
        acceptance = Clock(ACCEPTANCE, deciding_party, policy.acceptance_working_days, starts_on=received_on,
                           status=RUNNING)
        clocks = [receipt, *(transit if originals_posted else []), acceptance,
                  *(Clock(DECISION, leg.party, leg.working_days, step=leg.step) for leg in decision_legs),
                  Clock(DELIVERY, delivery_party, policy.delivery_working_days)]
        return cls(_day(submitted_at), received_on, clocks, originals_tracked=originals_posted and originals_tracked)

    # ------------------------------------------------------------------ lookups
    def clock(self, leg: str, step: str = "") -> Clock | None:
        return next((c for c in self.clocks if c.leg == leg and (not step or c.step == step)), None)

    def _running(self, leg: str) -> Clock | None:
        return next((c for c in self.clocks if c.leg == leg and c.status == RUNNING), None)

    def _decision_clocks(self) -> list[Clock]:
        return [c for c in self.clocks if c.leg == DECISION]

    # ------------------------------------------------------------------ facts
    def accepted(self, at: datetime) -> None:
        """The authority accepted: the statutory clock starts (unless §32 started it already)."""
        self._authority_has_file(at)
        acceptance = self.clock(ACCEPTANCE)
        if acceptance is None or acceptance.status != RUNNING:
            return  # deemed by §32, or shown already by a joint leg's result read first
        acceptance.end(DONE, _day(at))
        self._start_next_decision(_day(at))

    def supplement_requested(self, at: datetime, *, by_authority: bool = True) -> None:
        """补正: before acceptance the authority's one notice stops the acceptance clock until
        the materials arrive; later a notice stops the clock that runs (the decision, or the
        delivery of a result held for 容缺 materials promised and not sent)."""
        day = _day(at)
        self._authority_has_file(at)
        acceptance = self.clock(ACCEPTANCE)
        if acceptance is not None and acceptance.status == RUNNING:
            if not by_authority:
                return  # not the §32 notice: the authority still owes its answer
            self.supplement_notices += 1
            if self.supplement_notices > 1:
                return  # a second notice is not the law's one notice: the clock keeps running
            acceptance.stops.append(Interval(SUPPLEMENT, day))
            return
        current = self._after_acceptance()
        if current is not None and current.stopped_by is None:
            current.stops.append(Interval(SUPPLEMENT, day))

    def materials_arrived(self, at: datetime) -> None:
        """The supplement reached the authority: a complete file counts as received that day,
        so acceptance starts over from it; a stopped later clock counts on."""
        day = _day(at)
        acceptance = self.clock(ACCEPTANCE)
        if acceptance is not None and acceptance.status == RUNNING and acceptance.stopped_by is not None:
            acceptance.stops.clear()
            acceptance.start(day)
            return
        current = self._after_acceptance()
        if current is not None and (stop := current.stopped_by) is not None and stop.kind == SUPPLEMENT:
            stop.end = day

    def originals_dispatched(self, tracking_number: str) -> None:
        """资料寄递: the carrier took the originals at the window; the parcel is what a receipt
        must name. Nothing posted for this application is a mistake to look at, not a clock."""
        if self.clock(TRANSIT) is None:
            raise ClockError("no originals are posted for this application")
        if tracking_number not in self.parcels:
            self.parcels.append(tracking_number)

    def originals_received(self, tracking_number: str, received_by: str, at: datetime) -> None:
        """The deciding authority signed for a dispatched parcel: transit is done that day.
        A parcel signed for by anyone else has not reached the party that decides."""
        transit = self.clock(TRANSIT)
        if transit is None:
            raise ClockError("no originals are posted for this application")
        if tracking_number not in self.parcels:
            raise ClockError("the tracking number was not dispatched for this application")
        acceptance = self.clock(ACCEPTANCE)
        if acceptance is not None and received_by != acceptance.party:
            raise ClockError("the originals were signed for by a party that does not decide this application")
        if transit.status == RUNNING:
            transit.end(DONE, _day(at))

    def extended(self, working_days: int, policy: SlaPolicy) -> None:
        """延期 with approval: the running decision leg gets more days, within the law's cap."""
        decision = self._running(DECISION)
        if decision is None:
            raise ClockError("no decision leg is running to extend")
        if working_days <= 0 or decision.extension + working_days > policy.max_extension_working_days:
            raise ClockError(f"an extension takes 1 to {policy.max_extension_working_days} working days in all;"
                             f" {decision.extension} granted, {working_days} asked")
        decision.extension += working_days

    def exclusion_started(self, at: datetime) -> None:
        decision = self._running(DECISION)
        if decision is not None and decision.stopped_by is None:
            decision.stops.append(Interval(EXCLUSION, _day(at)))

    def exclusion_ended(self, at: datetime) -> None:
        decision = self._running(DECISION)
        if decision is not None and (stop := decision.stopped_by) is not None and stop.kind == EXCLUSION:
            stop.end = _day(at)

    def leg_completed(self, step: str, at: datetime) -> None:
        """A joint leg is done: the next one starts the same day."""
        self._leg_reached(step, at)
        clock = self.clock(DECISION, step)
        if clock is not None and clock.status == RUNNING:
            clock.end(DONE, _day(at))
            self._start_next_decision(_day(at))

    def leg_failed(self, step: str, at: datetime) -> list[Clock]:
        """A leg failed: the application ends; the legs already done stay done and are
        returned (their parties are told to undo their part)."""
        self._leg_reached(step, at)
        clock = self.clock(DECISION, step)
        if clock is not None:
            clock.end(FAILED, _day(at))
        self.end(LEG_FAILED, at)
        return [c for c in self._decision_clocks() if c.status == DONE]

    def decided(self, outcome: str, at: datetime) -> None:
        """The last leg decided. An approval is served within §44's limit; a denial ends
        the ledger (delivery serves it without a result to hand over)."""
        day = _day(at)
        self._authority_has_file(at)
        for clock in [self.clock(ACCEPTANCE), *self._decision_clocks()]:
            if clock is not None:  # a decision shows the file was accepted, whatever was heard of it
                if clock.leg == DECISION and clock.status == WAITING:
                    # The acceptance comes on another topic and is not read yet: the file was
                    # accepted on this day at the latest, so the decision clock ran from it.
                    clock.start(day)
                clock.end(DONE, day)
        if outcome != "APPROVED":
            self.end(DENIED, at)
            return
        delivery = self.clock(DELIVERY)
        if delivery is not None and delivery.status == WAITING:
            delivery.start(day)

    def delivered(self, at: datetime) -> None:
        delivery = self.clock(DELIVERY)
        if delivery is not None:
            delivery.end(DONE, _day(at))
        self.end(DELIVERED, at)

    def end(self, why: str, at: datetime | None = None) -> None:
        """The application ended (delivered, denied, refused, closed, withdrawn): every clock
        still open stops where it stands."""
        day = _day(at) if at is not None else None
        for clock in self.clocks:
            clock.end(STOPPED, day)
        self.ended = self.ended or why

    def _after_acceptance(self) -> Clock | None:
        """The clock that runs once the file is accepted: a decision leg, then delivery."""
        return self._running(DECISION) or self._running(DELIVERY)

    def _authority_has_file(self, at: datetime) -> None:
        """The authority acting on the file shows the originals reached it, unless the carrier
        tracks them: then only its receipt does."""
        if self.originals_tracked:
            return
        transit = self._running(TRANSIT)
        if transit is not None:
            transit.end(DONE, _day(at))

    def _leg_reached(self, step: str, at: datetime) -> None:
        """A leg's result shows the file was accepted and the legs before it done, whatever
        was heard of them: the acceptance and the leg results travel on different topics."""
        day = _day(at)
        self._authority_has_file(at)
        acceptance = self.clock(ACCEPTANCE)
        if acceptance is not None and acceptance.status == RUNNING:
            acceptance.end(DONE, day)
        for clock in self._decision_clocks():
            if clock.step == step:
                if clock.status == WAITING:
                    clock.start(day)
                return
            clock.end(DONE, day)  # only a waiting or running clock changes

    def _start_next_decision(self, on: date) -> None:
        waiting = next((c for c in self._decision_clocks() if c.status == WAITING), None)
        if waiting is not None:
            waiting.start(on)

    def _deem_accepted(self, acceptance: Clock) -> None:
        """§32: neither acceptance nor 补正 notice in time, so accepted from the day received."""
        assert acceptance.starts_on is not None
        acceptance.end(DEEMED, acceptance.starts_on)
        self.deemed_accepted_on = acceptance.starts_on
        self._start_next_decision(acceptance.starts_on)

    # ------------------------------------------------------------------ deadlines and alerts
    def deadlines(self, calendar: WorkingCalendar) -> dict[str, date | None]:
        """Each counting clock's last day, recomputed from its current state."""
        return {c.name: c.deadline(calendar) for c in self.clocks if c.status == RUNNING}

    def _alerts(self, calendar: WorkingCalendar, policy: SlaPolicy) -> Iterator[Alert]:
        for clock in self.clocks:
            deadline = clock.deadline(calendar)
            if deadline is None:
                continue
            assert clock.starts_on is not None

            def alert(level: str, day: date, c: Clock = clock, d: date = deadline) -> Alert:
                return Alert(level, c.leg, c.party, c.step, d, start_of(day))

            if policy.yellow_working_days_before:
                yellow = calendar.working_days_before(deadline, policy.yellow_working_days_before)
                if yellow > clock.starts_on:
                    yield alert(YELLOW, yellow)
            yield alert(RED, deadline)
            yield alert(BREACHED, deadline + timedelta(days=1))

    def advance(self, now: datetime, calendar: WorkingCalendar, policy: SlaPolicy) -> list[Alert]:
        """Every alert due by `now` and not yet given, earliest first. A breached acceptance
        clock makes the file accepted by law, which starts the decision clock from the day
        received, whose own alerts may then be due as well (of those, only a breach is
        given: a yellow or red card for a deadline already past would mislead)."""
        given: list[Alert] = []
        while True:
            due = sorted((a for a in self._alerts(calendar, policy) if a.at <= now and a.key not in self.sent),
                         key=lambda a: a.at)
            if not due:
                return given
            alert = due[0]
            self.sent.append(alert.key)
            if alert.level != BREACHED and start_of(alert.deadline + timedelta(days=1)) <= now:
                continue  # a card for a deadline already past (a clock started late): the breach says it
            if alert.level == BREACHED and alert.leg == ACCEPTANCE:
                acceptance = self._running(ACCEPTANCE)
                assert acceptance is not None
                self._deem_accepted(acceptance)
                alert = replace(alert, consequence=DEEMED_ACCEPTED)
            given.append(alert)

    def next_alert_at(self, calendar: WorkingCalendar, policy: SlaPolicy) -> datetime | None:
        return min((a.at for a in self._alerts(calendar, policy) if a.key not in self.sent), default=None)

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict[str, Any]:
        """Plain data for the state store: dates as ISO strings."""
        return {
            "submitted_on": self.submitted_on.isoformat(), "received_on": self.received_on.isoformat(),
            "deemed_accepted_on": _iso(self.deemed_accepted_on), "supplement_notices": self.supplement_notices,
            "sent": list(self.sent), "ended": self.ended, "originals_tracked": self.originals_tracked,
            "parcels": list(self.parcels),
            "clocks": [{"leg": c.leg, "party": c.party, "limit": c.limit, "step": c.step,
                        "starts_on": _iso(c.starts_on), "status": c.status, "extension": c.extension,
                        "ended_on": _iso(c.ended_on),
                        "stops": [{"kind": i.kind, "start": i.start.isoformat(), "end": _iso(i.end)}
                                  for i in c.stops]}
                       for c in self.clocks],
        }

    @classmethod
    def from_state(cls, doc: dict[str, Any]) -> Ledger:
        clocks = [Clock(c["leg"], c["party"], c["limit"], c["step"], _date(c["starts_on"]), c["status"],
                        c["extension"], [Interval(i["kind"], date.fromisoformat(i["start"]), _date(i["end"]))
                                         for i in c["stops"]], _date(c["ended_on"]))
                  for c in doc["clocks"]]
        return cls(date.fromisoformat(doc["submitted_on"]), date.fromisoformat(doc["received_on"]), clocks,
                   _date(doc["deemed_accepted_on"]), doc["supplement_notices"], list(doc["sent"]), doc["ended"],
                   # ledgers stored before 资料寄递 was tracked have neither
                   doc.get("originals_tracked", False), list(doc.get("parcels", [])))


def _iso(d: date | None) -> str | None:
    return d.isoformat() if d is not None else None


def _date(s: str | None) -> date | None:
    return date.fromisoformat(s) if s is not None else None
