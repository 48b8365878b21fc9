"""Routing rules: which mode an application takes, who decides it, and by when.

Pure rules over the catalogue (services.routing.catalogue), the partner registry, the
GB/T 2260 division list (tongban.divisions) and the working calendar; the data files sit
next to this module.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from pathlib import Path

from services.routing.catalogue import (
    ANYWHERE,
    FULLY_ONLINE,
    JOINT,
    MODES,
    RECEIVE_HERE_HANDLE_THERE,
    SUBJECTS,
    Catalogue,
    LegTemplate,
    MaterialRequirement,
    Matter,
)
from tongban import divisions
from tongban.workdays import SHANGHAI, WorkingCalendar

__all__ = ["FULLY_ONLINE", "JOINT", "MODES", "RECEIVE_HERE_HANDLE_THERE", "SUBJECTS", "Catalogue",
           "LegTemplate", "MaterialRequirement", "Matter"]

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

# The single leg of a matter that is not joint: the authority at the place decides it.
DECISION_STEP = "DECIDE"

_HERE = Path(__file__).parent


PARTNER_KINDS = ("PROVINCE", "CITY", "COUNTY", "MINISTRY", "HUB")


@dataclass(frozen=True)
class Partner:
    partner_id: str
    division_code: str
    name: str
    # another province, a city or county under a point-to-point agreement, a ministry
    # system, or the national platform's hub
    kind: str = "PROVINCE"


@dataclass(frozen=True)
class PartnerAgreement:
    """A partner and the files it takes: divisions under its own division code, and, for
    a point-to-point agreement, only files received in `received_in`."""

    partner: Partner
    received_in: tuple[str, ...] = ()
    agreement: str = ""  # the agreement Tongban exchanges work under

    def covers(self, division_code: str) -> bool:
        return divisions.contains(self.partner.division_code, division_code)

    def admits(self, receiving_division: str) -> bool:
        return not self.received_in or any(divisions.contains(code, receiving_division) for code in self.received_in)


class PartnerRegistry:
    def __init__(self, agreements: Iterable[PartnerAgreement]) -> None:
        self._agreements: dict[str, PartnerAgreement] = {}
        for agreement in agreements:
            partner = agreement.partner
            if partner.partner_id in self._agreements:
                raise ValueError(f"partner {partner.partner_id} appears twice")
            for code in (partner.division_code, *agreement.received_in):
                if not divisions.is_known(code):
                    raise ValueError(f"partner {partner.partner_id}: unknown division {code}")
            if partner.kind not in PARTNER_KINDS:
                raise ValueError(f"partner {partner.partner_id}: kind must be one of {PARTNER_KINDS}")
            self._agreements[partner.partner_id] = agreement

    @classmethod
    def load(cls, path: Path | None = None) -> PartnerRegistry:
        path = path or _HERE / "partners.toml"
        with open(path, "rb") as f:
            data = tomllib.load(f)
        try:
            return cls(
                PartnerAgreement(
                    Partner(raw["partner_id"], raw["division_code"], raw["name"], raw.get("kind", "PROVINCE")),
                    tuple(raw.get("received_in", ())),
                    raw.get("agreement", ""),
                )
                for raw in data.get("partner", [])
            )
        except KeyError as exc:
            raise ValueError(f"{path}: a partner lacks field {exc.args[0]}") from None
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def deciding_partner(self, division_code: str, receiving_division: str) -> Partner | None:
        """The most specific partner covering the division that takes files received where
        this one was."""
        return self._most_specific(
            a for a in self._agreements.values() if a.covers(division_code) and a.admits(receiving_division)
        )

    def partner_for_division(self, division_code: str) -> Partner | None:
        """The most specific partner covering a division, whatever the agreement says
        about where files are received: the party that works at that place."""
        return self._most_specific(a for a in self._agreements.values() if a.covers(division_code))

    def get(self, partner_id: str) -> Partner | None:
        agreement = self._agreements.get(partner_id)
        return agreement.partner if agreement else None

    def all(self) -> list[Partner]:
        return [a.partner for a in self._agreements.values()]

    @staticmethod
    def _most_specific(agreements: Iterable[PartnerAgreement]) -> Partner | None:
        # a longer code without its trailing "00" pairs is a smaller division
        best = max(agreements, key=lambda a: len(a.partner.division_code.rstrip("0")), default=None)
        return best.partner if best else None


@dataclass(frozen=True)
class ApplicationFacts:
    application_id: str
    matter_code: str
    channel: str
    receiving_division: str
    home_division: str
    received_at: datetime
    # ApplicationReceived v2: division by place kind (HOUSEHOLD, RESIDENCE, ...); empty
    # from v1 writers, whose home division then stands for the matter's place
    places: Mapping[str, str] = field(default_factory=dict)

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
    """No rule applies; the file goes to the operators' review queue, unless no operator could
    route it either (`reviewable` False: the matter is not in the catalogue), when it is
    refused at once. The reason never echoes unvalidated input, which could hold personal data
    typed in the wrong field."""

    def __init__(self, reason: str, reviewable: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reviewable = reviewable


# Last millisecond of the day: survives Avro timestamp-millis unchanged.
_END_OF_DAY = time(23, 59, 59, 999000, tzinfo=SHANGHAI)


@dataclass(frozen=True)
class Place:
    """A division the matter's rule names, and what to call it in a reason."""

    division: str
    label: str


def place_of_handling(kind: str, facts: ApplicationFacts, matter: Matter) -> Place:
    """The division whose authority handles `kind` of the matter for this application.

    ANYWHERE (全国通办) is the receiving division. A v2 application names its places; a v1
    one names only the home division, which stands for the matter's own place and, in a
    joint matter, the receiving division for the other leg's place (the old rule: the
    facts named no third place)."""
    if kind == ANYWHERE:
        place = Place(facts.receiving_division, "receiving division")
    elif facts.places:
        if not facts.places.get(kind):
            raise Unroutable(f"the matter is handled at the {kind} place; the application names no {kind} division")
        place = Place(facts.places[kind], f"{kind} division")
    elif kind == matter.place:
        place = Place(facts.home_division, "home division")
    else:
        place = Place(facts.receiving_division, "receiving division")
    if not divisions.is_known(place.division):
        raise Unroutable(f"{place.label} is not a known GB/T 2260 code")
    return place


def decide_route(
    facts: ApplicationFacts,
    catalogue: Catalogue,
    partners: PartnerRegistry,
    calendar: WorkingCalendar,
) -> RoutingDecision:
    matter = catalogue.get(facts.matter_code)
    if matter is None:
        raise Unroutable("matter code is not in the catalogue", reviewable=False)
    preference = CHANNEL_MODES.get(facts.channel)
    if preference is None:
        raise Unroutable(f"channel is not one of {sorted(CHANNEL_MODES)}")
    if not divisions.is_known(facts.receiving_division):
        raise Unroutable("receiving division is not a known GB/T 2260 code")
    receiving_division = divisions.county(facts.receiving_division)

    # Decision rights never move: the authority at the matter's place decides, in every mode.
    place = place_of_handling(matter.place, facts, matter)
    deciding_division = divisions.county(place.division)
    decider = partners.deciding_partner(place.division, facts.receiving_division)
    if decider is None:
        raise Unroutable(
            f"no partner agreement covers {place.label} {deciding_division} for files received in {receiving_division}"
        )

    if matter.is_joint:
        mode = JOINT
        legs = tuple(_joint_leg(leg, facts, matter, partners) for leg in matter.legs)
    else:
        # never empty: a matter that is not joint has one of the two (Matter checks)
        mode = next(m for m in preference if m in matter.modes)
        legs = (RoutingLeg(decider.partner_id, deciding_division, DECISION_STEP, matter.promised_working_days),)

    due = calendar.add_working_days(facts.received_at, matter.promised_working_days)
    return RoutingDecision(
        mode=mode,
        deciding_partner=decider.partner_id,
        deciding_division=deciding_division,
        legs=legs,
        promised_working_days=matter.promised_working_days,
        due_at=datetime.combine(due, _END_OF_DAY).astimezone(UTC),
    )


def _joint_leg(leg: LegTemplate, facts: ApplicationFacts, matter: Matter, partners: PartnerRegistry) -> RoutingLeg:
    """A leg runs where its place is, by the party that works there (a pension transfer's
    old insured place moves the fund whoever received the file)."""
    place = place_of_handling(matter.leg_place(leg), facts, matter)
    division = divisions.county(place.division)
    partner = partners.partner_for_division(place.division)
    if partner is None:
        raise Unroutable(f"no partner works at {place.label} {division}")
    return RoutingLeg(partner.partner_id, division, leg.step, leg.working_days)
