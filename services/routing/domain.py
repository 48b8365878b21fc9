"""Routing rules: which mode an application takes, who decides it, and by when.

Pure rules over the catalogue, the partner registry and the working calendar; the data
files sit next to this module.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time
from itertools import cycle
from pathlib import Path

from services.routing.workdays import SHANGHAI, WorkingCalendar

FULLY_ONLINE = "FULLY_ONLINE"
RECEIVE_HERE_HANDLE_THERE = "RECEIVE_HERE_HANDLE_THERE"
JOINT = "JOINT"
MODES = (FULLY_ONLINE, RECEIVE_HERE_HANDLE_THERE, JOINT)
SUBJECTS = ("PERSON", "COMPANY")

# Channel -> modes in order of preference. At a window, a terminal or a partner's
# counter the applicant is away from home, so the file is received here and handled
# there; online channels go fully online. Either falls back to the other mode.
CHANNEL_MODES = {
    "WINDOW": (RECEIVE_HERE_HANDLE_THERE, FULLY_ONLINE),
    "TERMINAL": (RECEIVE_HERE_HANDLE_THERE, FULLY_ONLINE),
    "PARTNER": (RECEIVE_HERE_HANDLE_THERE, FULLY_ONLINE),
    "PORTAL": (FULLY_ONLINE, RECEIVE_HERE_HANDLE_THERE),
    "MOBILE": (FULLY_ONLINE, RECEIVE_HERE_HANDLE_THERE),
}

# The single leg of a matter that is not joint: the home authority decides it.
DECISION_STEP = "DECIDE"

_HERE = Path(__file__).parent


@dataclass(frozen=True)
class MaterialRequirement:
    code: str
    name: str
    essential: bool


@dataclass(frozen=True)
class LegTemplate:
    step: str
    working_days: int


@dataclass(frozen=True)
class Matter:
    code: str
    name: str
    subject: str
    modes: tuple[str, ...]
    promised_working_days: int
    statutory_working_days: int
    postal_delivery: bool
    required_materials: tuple[MaterialRequirement, ...]
    legs: tuple[LegTemplate, ...]

    def __post_init__(self) -> None:
        problems = []
        if self.subject not in SUBJECTS:
            problems.append(f"subject must be one of {SUBJECTS}")
        if not self.modes or any(m not in MODES for m in self.modes):
            problems.append(f"modes must be a non-empty subset of {MODES}")
        if not 0 <= self.promised_working_days <= self.statutory_working_days:
            problems.append("need 0 <= promised_working_days <= statutory_working_days")
        codes = [m.code for m in self.required_materials]
        if len(codes) != len(set(codes)):
            problems.append("material codes repeat")
        if self.is_joint:
            # joint handling does not depend on the channel, so no other mode applies
            if self.modes != (JOINT,):
                problems.append("a JOINT matter lists JOINT alone")
            # legs run one after another, so together they make the promise
            if sum(leg.working_days for leg in self.legs) != self.promised_working_days:
                problems.append("legs must add up to promised_working_days")
        elif self.legs:
            problems.append("only JOINT matters have legs")
        if problems:
            raise ValueError(f"matter {self.code}: " + "; ".join(problems))

    @property
    def is_joint(self) -> bool:
        return JOINT in self.modes


class Catalogue:
    def __init__(self, matters: Iterable[Matter]) -> None:
        self._matters: dict[str, Matter] = {}
        for matter in matters:
            if matter.code in self._matters:
                raise ValueError(f"matter code {matter.code} appears twice")
            self._matters[matter.code] = matter

    @classmethod
    def load(cls, path: Path | None = None) -> Catalogue:
        with open(path or _HERE / "catalogue.toml", "rb") as f:
            data = tomllib.load(f)
        return cls(_matter_from_toml(raw) for raw in data.get("matter", []))

    def get(self, code: str) -> Matter | None:
        return self._matters.get(code)

    def all(self) -> list[Matter]:
        return list(self._matters.values())


def _matter_from_toml(raw: dict) -> Matter:
    return Matter(
        code=raw["code"],
        name=raw["name"],
        subject=raw["subject"],
        modes=tuple(raw["modes"]),
        promised_working_days=raw["promised_working_days"],
        statutory_working_days=raw["statutory_working_days"],
        postal_delivery=raw["postal_delivery"],
        required_materials=tuple(
            MaterialRequirement(m["code"], m["name"], m["essential"])
            for m in raw.get("required_materials", [])
        ),
        legs=tuple(
            LegTemplate(leg["step"], leg["working_days"]) for leg in raw.get("legs", [])
        ),
    )


@dataclass(frozen=True)
class Partner:
    partner_id: str
    division_code: str
    name: str


@dataclass(frozen=True)
class PartnerAgreement:
    """A partner and the files it takes: home divisions under its own division code,
    and, for a point-to-point agreement, only files received in `received_in`."""

    partner: Partner
    received_in: tuple[str, ...] = ()

    def covers(self, division_code: str) -> bool:
        return _county(division_code).startswith(_prefix(self.partner.division_code))

    def admits(self, receiving_division: str) -> bool:
        receiving = _county(receiving_division)
        return not self.received_in or any(
            receiving.startswith(_prefix(code)) for code in self.received_in
        )


class PartnerRegistry:
    def __init__(
        self, agreements: Iterable[PartnerAgreement], divisions: Mapping[str, str]
    ) -> None:
        self._divisions = dict(divisions)
        self._agreements: dict[str, PartnerAgreement] = {}
        for agreement in agreements:
            partner = agreement.partner
            if partner.partner_id in self._agreements:
                raise ValueError(f"partner {partner.partner_id} appears twice")
            for code in (partner.division_code, *agreement.received_in):
                if not self.is_known_division(code):
                    raise ValueError(
                        f"partner {partner.partner_id}: unknown division {code}"
                    )
            self._agreements[partner.partner_id] = agreement

    @classmethod
    def load(cls, path: Path | None = None) -> PartnerRegistry:
        with open(path or _HERE / "partners.toml", "rb") as f:
            data = tomllib.load(f)
        agreements = (
            PartnerAgreement(
                Partner(raw["partner_id"], raw["division_code"], raw["name"]),
                tuple(raw.get("received_in", ())),
            )
            for raw in data.get("partner", [])
        )
        return cls(agreements, data.get("divisions", {}))

    def deciding_partner(
        self, home_division: str, receiving_division: str
    ) -> Partner | None:
        """The most specific partner covering the home division that takes files
        received where this one was."""
        return self._most_specific(
            a
            for a in self._agreements.values()
            if a.covers(home_division) and a.admits(receiving_division)
        )

    def partner_for_division(self, division_code: str) -> Partner | None:
        """The most specific partner covering a division, whatever the agreement says
        about where files are received: the party that works at that place."""
        return self._most_specific(
            a for a in self._agreements.values() if a.covers(division_code)
        )

    def get(self, partner_id: str) -> Partner | None:
        agreement = self._agreements.get(partner_id)
        return agreement.partner if agreement else None

    def is_known_division(self, code: str) -> bool:
        """A 6-digit GB/T 2260 code or a 12-digit statistical code whose province exists;
        the table is province-level, so deeper levels are checked for shape only."""
        if not (code.isascii() and code.isdigit() and len(code) in (6, 12)):
            return False
        return code[:2] + "0000" in self._divisions

    @staticmethod
    def _most_specific(agreements: Iterable[PartnerAgreement]) -> Partner | None:
        best = max(
            agreements,
            key=lambda a: len(_prefix(a.partner.division_code)),
            default=None,
        )
        return best.partner if best else None


def _county(division_code: str) -> str:
    """The county-level code: 12-digit statistical codes extend it by 6 digits."""
    return division_code[:6]


def _prefix(division_code: str) -> str:
    """The digits a division's descendants share: 430000 -> 43, 370100 -> 3701."""
    code = _county(division_code)
    while code.endswith("00"):
        code = code[:-2]
    return code


@dataclass(frozen=True)
class ApplicationFacts:
    application_id: str
    matter_code: str
    channel: str
    receiving_division: str
    home_division: str
    received_at: datetime

    def __post_init__(self) -> None:
        if self.received_at.tzinfo is None:
            raise ValueError("received_at must be timezone-aware")


@dataclass(frozen=True)
class RoutingLeg:
    partner_id: str
    division_code: str
    step: str
    working_days: int


@dataclass(frozen=True)
class RoutingDecision:
    mode: str
    deciding_partner: str
    deciding_division: str
    legs: tuple[RoutingLeg, ...]
    promised_working_days: int
    due_at: datetime


class Unroutable(Exception):
    """No rule applies; the file goes to the operators' review queue. The reason never
    echoes unvalidated input, which could hold personal data typed in the wrong field."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Last millisecond of the day: survives Avro timestamp-millis unchanged.
_END_OF_DAY = time(23, 59, 59, 999000, tzinfo=SHANGHAI)


def decide_route(
    facts: ApplicationFacts,
    catalogue: Catalogue,
    partners: PartnerRegistry,
    calendar: WorkingCalendar,
) -> RoutingDecision:
    matter = catalogue.get(facts.matter_code)
    if matter is None:
        raise Unroutable("matter code is not in the catalogue")
    preference = CHANNEL_MODES.get(facts.channel)
    if preference is None:
        raise Unroutable(f"channel is not one of {sorted(CHANNEL_MODES)}")
    if not partners.is_known_division(facts.home_division):
        raise Unroutable("home division is not a known GB/T 2260 code")
    if not partners.is_known_division(facts.receiving_division):
        raise Unroutable("receiving division is not a known GB/T 2260 code")

    home_division = _county(facts.home_division)
    receiving_division = _county(facts.receiving_division)
    # Decision rights never move: the home division's partner decides, in every mode.
    home = partners.deciding_partner(facts.home_division, facts.receiving_division)
    if home is None:
        raise Unroutable(
            f"no partner agreement covers home division {home_division}"
            f" for files received in {receiving_division}"
        )

    if matter.is_joint:
        mode = JOINT
        receiving = partners.partner_for_division(facts.receiving_division)
        if receiving is None:
            raise Unroutable(
                f"no partner works at receiving division {receiving_division}"
            )
        # Legs alternate, starting at home: in a pension transfer the home (new
        # insured place) writes the contact letter and completes, the other place
        # moves the record and fund. Facts name no third place, so the other party
        # is the receiving division's partner.
        parties = cycle(((home, home_division), (receiving, receiving_division)))
        legs = tuple(
            RoutingLeg(partner.partner_id, division, leg.step, leg.working_days)
            for leg, (partner, division) in zip(matter.legs, parties, strict=False)
        )
    else:
        # never empty: a matter that is not joint has one of the two (Matter checks)
        mode = next(m for m in preference if m in matter.modes)
        legs = (
            RoutingLeg(
                home.partner_id,
                home_division,
                DECISION_STEP,
                matter.promised_working_days,
            ),
        )

    due = calendar.add_working_days(facts.received_at, matter.promised_working_days)
    return RoutingDecision(
        mode=mode,
        deciding_partner=home.partner_id,
        deciding_division=home_division,
        legs=legs,
        promised_working_days=matter.promised_working_days,
        due_at=datetime.combine(due, _END_OF_DAY).astimezone(UTC),
    )
