"""Supervision rules: 好差评 ratings and 12345 complaints flag a matter in a division.

Ratings have five levels (GB/T 39734-2020), 1 very satisfied .. 5 very dissatisfied;
the last two are bad (差评).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

LEVELS = range(1, 6)
BAD_LEVELS = (4, 5)

FLAG = "FLAG"
CLEAR = "CLEAR"


class InvalidRating(ValueError):
    pass


@dataclass(frozen=True)
class ServiceRating:
    rating_id: str
    matter_code: str
    division_code: str
    party: str
    level: int
    rated_at: datetime

    @property
    def is_bad(self) -> bool:
        return self.level in BAD_LEVELS


@dataclass(frozen=True)
class FlagThresholds:
    """Flag at `bad_ratio` (once there are `min_ratings`) or at `complaints`; clear only
    below `clear_bad_ratio`. The gap between the two ratios is the hysteresis that keeps
    a matter hovering near the line from flapping between flagged and cleared."""

    min_ratings: int = 5
    bad_ratio: float = 0.3
    complaints: int = 3
    clear_bad_ratio: float = 0.1

    def __post_init__(self) -> None:
        if self.min_ratings < 1 or self.complaints < 1:
            raise ValueError("min_ratings and complaints must be at least 1")
        if not 0 <= self.clear_bad_ratio < self.bad_ratio <= 1:
            raise ValueError("need 0 <= clear_bad_ratio < bad_ratio <= 1")


@dataclass
class MatterScore:
    matter_code: str
    division_code: str
    party: str
    total_ratings: int = 0
    bad_ratings: int = 0
    complaints: int = 0
    flagged: bool = False

    @property
    def bad_ratio(self) -> float:
        return self.bad_ratings / self.total_ratings if self.total_ratings else 0.0

    def add_rating(self, rating: ServiceRating) -> None:
        # exact type: True and 4.0 compare equal to levels but are not levels
        if type(rating.level) is not int or rating.level not in LEVELS:
            raise InvalidRating(f"rating level must be 1..5, got {rating.level!r}")
        self.total_ratings += 1
        self.bad_ratings += rating.is_bad

    def add_complaint(self) -> None:
        self.complaints += 1


def evaluate(score: MatterScore, thresholds: FlagThresholds) -> str | None:
    """FLAG when the score newly reaches a threshold, CLEAR when a flagged score is back
    under the clearing ratio with complaints below their threshold, else None. Updates
    score.flagged so the same state is never reported twice."""
    over_ratings = score.total_ratings >= thresholds.min_ratings and score.bad_ratio >= thresholds.bad_ratio
    too_many_complaints = score.complaints >= thresholds.complaints
    if not score.flagged and (over_ratings or too_many_complaints):
        score.flagged = True
        return FLAG
    if score.flagged and score.bad_ratio < thresholds.clear_bad_ratio and not too_many_complaints:
        score.flagged = False
        return CLEAR
    return None
