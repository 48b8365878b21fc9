"""Chinese working days for the statutory and promised clocks.

Counting convention (行政许可法: the day a period starts is not counted): day 1 of a
limit is the first working day *after* the start date, so a file received on a Friday
with a 1-day limit is due on Monday. A limit of 0 (即办) is due on the start date itself.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import holidays

SHANGHAI = ZoneInfo("Asia/Shanghai")
DEFAULT_OVERRIDES = Path(__file__).with_name("workday_overrides.toml")


class WorkingCalendar:
    """`holidays` China (statutory holidays and 调休 make-up days) plus local overrides."""

    def __init__(
        self, working: Iterable[date] = (), non_working: Iterable[date] = ()
    ) -> None:
        self._working = frozenset(working)
        self._non_working = frozenset(non_working)
        clash = self._working & self._non_working
        if clash:
            raise ValueError(
                f"dates declared both working and non-working: {sorted(clash)}"
            )
        # expand=True (the default) fills in each year on first lookup.
        self._china = holidays.China()

    @classmethod
    def load(cls, path: Path | None = None) -> WorkingCalendar:
        with open(path or DEFAULT_OVERRIDES, "rb") as f:
            data = tomllib.load(f)
        return cls(
            working=_dates(data.get("working", []), "working"),
            non_working=_dates(data.get("non_working", []), "non_working"),
        )

    def is_working_day(self, d: date) -> bool:
        if d in self._working:
            return True
        if d in self._non_working:
            return False
        return self._china.is_working_day(d)

    def add_working_days(self, start: datetime | date, n: int) -> date:
        """The date of the n-th working day after `start` (see the module docstring)."""
        if n < 0:
            raise ValueError("n must not be negative")
        d = _local_date(start)
        while n:
            d += timedelta(days=1)
            if self.is_working_day(d):
                n -= 1
        return d

    def first_working_day(self, moment: datetime | date) -> date:
        """The day a submission counts from: its Beijing date, or the next working day
        when it was made on a day off (an online submission on a Saturday counts from
        Monday, or from a make-up Sunday before it)."""
        d = _local_date(moment)
        while not self.is_working_day(d):
            d += timedelta(days=1)
        return d

    def working_days_before(self, d: date, n: int) -> date:
        """The working day n working days before `d`: the inverse of add_working_days
        for a working day `d` (used to warn ahead of a deadline)."""
        if n < 0:
            raise ValueError("n must not be negative")
        while n:
            d -= timedelta(days=1)
            if self.is_working_day(d):
                n -= 1
        return d

    def working_days_between(self, a: datetime | date, b: datetime | date) -> int:
        """Working days d with a < d <= b (negative when b is before a), so that
        working_days_between(a, add_working_days(a, n)) == n."""
        start, end = _local_date(a), _local_date(b)
        if end < start:
            return -self.working_days_between(end, start)
        return sum(
            self.is_working_day(start + timedelta(days=i))
            for i in range(1, (end - start).days + 1)
        )


def _local_date(moment: datetime | date) -> date:
    """Working days are Beijing-time days; an instant must say which instant it is."""
    if not isinstance(moment, datetime):
        return moment
    if moment.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    return moment.astimezone(SHANGHAI).date()


def _dates(values: list, key: str) -> list[date]:
    for v in values:
        if not isinstance(v, date) or isinstance(v, datetime):
            raise TypeError(f"{key}: {v!r} is not a TOML local date")
    return values
