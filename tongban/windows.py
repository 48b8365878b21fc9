"""The registry of 跨省通办 windows and what each is authorised to do.

Shared by intake (is this window allowed to receive this matter today?) and routing (the
registry behind its queries). Pure data and rules; the data file is `windows.toml` next to
this module and is checked at load (unknown divisions, windows, acts, inverted dates).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tongban import divisions

RECEIVE = "RECEIVE"  # 收件 and the formal check
CHECK_ORIGINALS = "CHECK_ORIGINALS"  # 核验原件 for the deciding authority
HAND_OVER = "HAND_OVER"  # 发证: the result handed to the applicant
ACTS = (RECEIVE, CHECK_ORIGINALS, HAND_OVER)
EVERY = "*"
CHANNELS = ("WINDOW", "TERMINAL")  # a staffed counter, a self-service terminal
SHANGHAI = ZoneInfo("Asia/Shanghai")
DEFAULT_PATH = Path(__file__).with_name("windows.toml")


@dataclass(frozen=True)
class Window:
    window_id: str
    division: str  # 6 digits, or 12 for a township, village or park service point
    host_authority: str
    channels: tuple[str, ...]
    systems: tuple[str, ...]  # the callers (certificate names) that speak for the window


@dataclass(frozen=True)
class Authorisation:
    window_id: str
    acts: tuple[str, ...]
    matters: tuple[str, ...]  # matter codes, or "*"
    on_behalf_of: str  # a partner id, or "*"
    valid_from: date
    valid_until: date

    def permits(self, matter_code: str, act: str, on: date) -> bool:
        return (act in self.acts and (EVERY in self.matters or matter_code in self.matters)
                and self.valid_from <= on <= self.valid_until)


@dataclass(frozen=True)
class Verdict:
    """Whether a window may do an act; when not, `reason` says why (no personal data: it
    names only the window, the matter and the act)."""

    allowed: bool
    reason: str = ""
    on_behalf_of: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.allowed


class WindowRegistry:
    def __init__(self, windows: list[Window], authorisations: list[Authorisation]) -> None:
        self._windows: dict[str, Window] = {}
        for window in windows:
            if window.window_id in self._windows:
                raise ValueError(f"window {window.window_id} appears twice")
            if not divisions.is_known(window.division):
                raise ValueError(f"window {window.window_id}: division is not a known GB/T 2260 code")
            if not window.channels or any(c not in CHANNELS for c in window.channels):
                raise ValueError(f"window {window.window_id}: channels must be a non-empty subset of {CHANNELS}")
            if not window.systems or not all(isinstance(name, str) and name for name in window.systems):
                raise ValueError(f"window {window.window_id}: systems must name at least one caller")
            self._windows[window.window_id] = window
        for grant in authorisations:
            where = f"authorisation of window {grant.window_id}"
            if grant.window_id not in self._windows:
                raise ValueError(f"{where}: no such window")
            if not grant.acts or any(act not in ACTS for act in grant.acts):
                raise ValueError(f"{where}: acts must be a non-empty subset of {ACTS}")
            if grant.valid_until < grant.valid_from:
                raise ValueError(f"{where}: valid_until is before valid_from")
        self._authorisations = list(authorisations)

    @classmethod
    def load(cls, path: Path | None = None) -> WindowRegistry:
        path = path or DEFAULT_PATH
        with open(path, "rb") as f:
            data = tomllib.load(f)
        try:
            windows = [Window(raw["window_id"], raw["division"], raw["host_authority"], tuple(raw["channels"]),
                              tuple(raw["systems"])) for raw in data.get("window", [])]
            grants = [_authorisation(raw) for raw in data.get("authorisation", [])]
            return cls(windows, grants)
        except KeyError as exc:
            raise ValueError(f"{path}: an entry lacks field {exc.args[0]}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from None

    def window(self, window_id: str) -> Window | None:
        return self._windows.get(window_id)

    def windows(self) -> list[Window]:
        return list(self._windows.values())

    def authorisations(self) -> list[Authorisation]:
        return list(self._authorisations)

    def speaks_for(self, caller: str, window_id: str) -> bool:
        """Whether `caller` (its client certificate's name) is one of the window's systems."""
        window = self._windows.get(window_id)
        return window is not None and caller in window.systems

    def authorised(self, window_id: str, matter_code: str, act: str, on: date) -> Verdict:
        """May the window do `act` for the matter on that day (Asia/Shanghai)?"""
        if act not in ACTS:
            return Verdict(False, f"act must be one of {', '.join(ACTS)}")
        if window_id not in self._windows:
            return Verdict(False, "the window is not a registered 跨省通办 window")
        grants = [g for g in self._authorisations if g.window_id == window_id]
        valid = [g for g in grants if g.permits(matter_code, act, on)]
        if valid:
            return Verdict(True, on_behalf_of=tuple(sorted({g.on_behalf_of for g in valid})))
        if any(g.permits(matter_code, act, g.valid_until) for g in grants):
            return Verdict(False, f"the window's authorisation to {act} this matter is not valid on {on.isoformat()}")
        return Verdict(False, f"the window holds no authorisation to {act} this matter")

    def may_receive(self, window_id: str, matter_code: str, division: str, at: datetime | None = None) -> bool:
        """Intake's check at 收件: the window is authorised to receive the matter today and
        the application says it was received in the window's own division."""
        window = self._windows.get(window_id)
        today = (at or datetime.now(SHANGHAI)).astimezone(SHANGHAI).date()
        return (window is not None and divisions.is_known(division)
                and divisions.county(window.division) == divisions.county(division)
                and self.authorised(window_id, matter_code, RECEIVE, today).allowed)


def _authorisation(raw: dict[str, Any]) -> Authorisation:
    valid_from, valid_until = raw["valid_from"], raw["valid_until"]
    if not (isinstance(valid_from, date) and isinstance(valid_until, date)):
        raise ValueError(f"authorisation of window {raw['window_id']}: valid_from and valid_until must be dates")
    return Authorisation(raw["window_id"], tuple(raw["acts"]), tuple(raw["matters"]), raw["on_behalf_of"],
                         valid_from, valid_until)


@cache
def registry() -> WindowRegistry:
    """The registry from the shipped data file, loaded once."""
    return WindowRegistry.load()


def authorised(window_id: str, matter_code: str, act: str, on: date) -> Verdict:
    """The shipped registry's answer: may the window do `act` for the matter on that day?"""
    return registry().authorised(window_id, matter_code, act, on)
