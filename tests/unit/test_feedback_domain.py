from datetime import UTC, datetime

import pytest

from services.feedback.domain import (
    CLEAR,
    FLAG,
    FlagThresholds,
    InvalidRating,
    MatterScore,
    ServiceRating,
    evaluate,
)

THRESHOLDS = FlagThresholds()  # 5 ratings, 30 % bad, 3 complaints, clear under 10 %


def rating(level: int, n: int = 0) -> ServiceRating:
    return ServiceRating(f"R-{n}", "KSTB-MKT-01", "430102", "window-7", level, datetime.now(UTC))


def score() -> MatterScore:
    return MatterScore("KSTB-MKT-01", "430102", "window-7")


def rate(s: MatterScore, *levels: int) -> list[str | None]:
    """Add ratings one by one, evaluating after each as the stream does."""
    verdicts = []
    for level in levels:
        s.add_rating(rating(level))
        verdicts.append(evaluate(s, THRESHOLDS))
    return verdicts


@pytest.mark.parametrize(("level", "bad"), [(1, False), (3, False), (4, True), (5, True)])
def test_levels_four_and_five_are_bad(level, bad):
    assert rating(level).is_bad is bad


@pytest.mark.parametrize("level", [0, 6, -1, True, 4.0])
def test_level_outside_one_to_five_is_invalid(level):
    s = score()
    with pytest.raises(InvalidRating):
        s.add_rating(rating(level))
    assert s.total_ratings == 0


def test_invalid_rating_is_a_value_error():
    assert issubclass(InvalidRating, ValueError)


def test_counts():
    s = score()
    rate(s, 1, 4, 5, 2)
    s.add_complaint()
    assert (s.total_ratings, s.bad_ratings, s.complaints) == (4, 2, 1)
    assert s.bad_ratio == 0.5


def test_no_flag_before_min_ratings():
    s = score()
    assert rate(s, 5, 5, 5, 5) == [None] * 4
    assert not s.flagged


def test_flag_at_bad_ratio_with_min_ratings():
    s = score()
    # 5th rating: 2 of 5 bad = 40 %
    assert rate(s, 1, 1, 5, 1, 4) == [None, None, None, None, FLAG]
    assert s.flagged


def test_bad_ratio_exactly_at_threshold_flags():
    s = score()
    assert rate(s, 1, 1, 1, 1, 1, 1, 1, 4, 4, 4)[-1] == FLAG  # 3 of 10


def test_below_bad_ratio_does_not_flag():
    s = score()
    assert rate(s, 1, 1, 1, 1, 4) == [None] * 5  # 20 %


def test_flag_on_complaints_without_ratings():
    s = score()
    verdicts = []
    for _ in range(3):
        s.add_complaint()
        verdicts.append(evaluate(s, THRESHOLDS))
    assert verdicts == [None, None, FLAG]


def test_flag_reported_once():
    s = score()
    rate(s, 5, 5, 5, 5, 5)
    assert s.flagged
    assert rate(s, 5, 5) == [None, None]
    s.add_complaint()
    assert evaluate(s, THRESHOLDS) is None


def test_hysteresis_no_clear_between_ratios():
    s = score()
    rate(s, 4, 4, 1, 1, 1)  # 40 %: flagged
    assert s.flagged
    # good ratings bring the ratio down through 30 % and 20 % to just above 10 %
    verdicts = rate(s, *[1] * 14)  # 2 of 19
    assert verdicts == [None] * 14
    assert s.flagged
    assert rate(s, 1) == [None]  # 2 of 20 = 10 %, not yet under
    assert rate(s, 1) == [CLEAR]  # 2 of 21
    assert not s.flagged


def test_clear_only_when_strictly_under_clear_ratio():
    s = score()
    rate(s, 4, 1, 1, 1, 1)  # 20 %: not flagged
    assert not s.flagged
    s.flagged = True  # e.g. flagged earlier in the window
    assert rate(s, *[1] * 5) == [None] * 5  # 1 of 10 = 10 %
    assert rate(s, 1) == [CLEAR]  # 1 of 11


def test_no_flap_around_the_flag_line():
    s = score()
    verdicts = rate(s, 4, 4, 1, 1, 1, 1, 4, 1, 1, 4, 1, 1)
    assert verdicts.count(FLAG) == 1
    assert CLEAR not in verdicts


def test_complaints_hold_the_flag():
    s = score()
    for _ in range(3):
        s.add_complaint()
    assert evaluate(s, THRESHOLDS) == FLAG
    assert rate(s, *[1] * 20) == [None] * 20  # perfect ratings, complaints still there


def test_clear_needs_complaints_below_threshold():
    s = score()
    rate(s, 5, 5, 5, 5, 5)
    s.add_complaint()
    s.add_complaint()
    verdicts = rate(s, *[1] * 46)
    # clears at 5 of 51 (under 10 %) because 2 complaints are below 3
    assert verdicts.index(CLEAR) == 45
    assert verdicts.count(CLEAR) == 1


def test_unflagged_clean_score_reports_nothing():
    assert evaluate(score(), THRESHOLDS) is None


def test_custom_thresholds():
    strict = FlagThresholds(min_ratings=1, bad_ratio=0.5, complaints=1, clear_bad_ratio=0.0)
    s = score()
    s.add_rating(rating(4))
    assert evaluate(s, strict) == FLAG


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"min_ratings": 0}, "min_ratings and complaints must be at least 1"),
        ({"complaints": 0}, "min_ratings and complaints must be at least 1"),
        ({"clear_bad_ratio": 0.3}, "need 0 <= clear_bad_ratio < bad_ratio <= 1"),  # no hysteresis
        ({"clear_bad_ratio": 0.4}, "need 0 <= clear_bad_ratio < bad_ratio <= 1"),
        ({"bad_ratio": 1.5}, "need 0 <= clear_bad_ratio < bad_ratio <= 1"),
        ({"clear_bad_ratio": -0.1}, "need 0 <= clear_bad_ratio < bad_ratio <= 1"),
    ],
)
def test_invalid_thresholds_rejected(changes, problem):
    with pytest.raises(ValueError, match=problem):
        FlagThresholds(**changes)
