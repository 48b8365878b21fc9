from datetime import UTC, date, datetime

import pytest

from tongban.workdays import WorkingCalendar

FIXTURE = """
working = [2027-11-13]      # a Saturday declared a make-up working day
non_working = [2027-11-17]  # a Wednesday declared a day off
"""


@pytest.fixture
def calendar() -> WorkingCalendar:
    return WorkingCalendar()


@pytest.fixture
def fixture_calendar(tmp_path) -> WorkingCalendar:
    path = tmp_path / "overrides.toml"
    path.write_text(FIXTURE)
    return WorkingCalendar.load(path)


def test_national_day_is_not_a_working_day(calendar):
    assert not calendar.is_working_day(date(2025, 10, 1))
    # the extra day off in 2025 that pays back the 10-11 make-up Saturday
    assert not calendar.is_working_day(date(2025, 10, 8))


def test_make_up_weekend_days_are_working_days(calendar):
    assert calendar.is_working_day(date(2025, 9, 28))  # Sunday, 调休上班
    assert calendar.is_working_day(date(2025, 10, 11))  # Saturday, 调休上班


def test_ordinary_weekend_and_weekday(calendar):
    assert not calendar.is_working_day(date(2025, 10, 12))  # Sunday
    assert calendar.is_working_day(date(2025, 10, 9))  # Thursday


def test_add_working_days_across_national_day_week(calendar):
    # received Tuesday 30 Sep; 1-8 Oct off; 9 Oct Thu, 10 Fri, 11 Sat (make-up)
    assert calendar.add_working_days(date(2025, 9, 30), 1) == date(2025, 10, 9)
    assert calendar.add_working_days(date(2025, 9, 30), 3) == date(2025, 10, 11)
    assert calendar.add_working_days(date(2025, 9, 30), 4) == date(2025, 10, 13)


def test_start_day_is_not_counted_even_when_it_is_a_working_day(calendar):
    # Friday 26 Sep: Saturday is off, Sunday 28 Sep is a make-up working day
    assert calendar.add_working_days(date(2025, 9, 26), 1) == date(2025, 9, 28)


def test_zero_days_is_due_on_the_start_date(calendar):
    assert calendar.add_working_days(date(2025, 10, 3), 0) == date(2025, 10, 3)


def test_negative_days_rejected(calendar):
    with pytest.raises(ValueError, match="n must not be negative"):
        calendar.add_working_days(date(2025, 9, 30), -1)


def test_datetime_start_uses_the_beijing_date(calendar):
    # 16:30 UTC on 28 Sep is 00:30 on Monday 29 Sep in Beijing
    start = datetime(2025, 9, 28, 16, 30, tzinfo=UTC)
    assert calendar.add_working_days(start, 1) == date(2025, 9, 30)


def test_naive_datetime_rejected(calendar):
    with pytest.raises(ValueError, match="datetime must be timezone-aware"):
        calendar.add_working_days(datetime(2025, 9, 28, 12, 0), 1)


def test_working_days_between(calendar):
    assert calendar.working_days_between(date(2025, 9, 30), date(2025, 10, 13)) == 4
    assert calendar.working_days_between(date(2025, 10, 13), date(2025, 9, 30)) == -4
    assert calendar.working_days_between(date(2025, 10, 1), date(2025, 10, 1)) == 0


def test_between_inverts_add(calendar):
    start = date(2025, 9, 20)
    for n in range(30):
        assert (
            calendar.working_days_between(start, calendar.add_working_days(start, n))
            == n
        )


def test_overrides_win(fixture_calendar, calendar):
    # November has no Chinese public holidays, so only the overrides can change these
    assert not calendar.is_working_day(date(2027, 11, 13))
    assert fixture_calendar.is_working_day(date(2027, 11, 13))
    assert calendar.is_working_day(date(2027, 11, 17))
    assert not fixture_calendar.is_working_day(date(2027, 11, 17))
    assert fixture_calendar.add_working_days(date(2027, 11, 12), 1) == date(
        2027, 11, 13
    )
    assert (
        fixture_calendar.working_days_between(date(2027, 11, 12), date(2027, 11, 19))
        == 5
    )


def test_override_in_both_lists_rejected(tmp_path):
    path = tmp_path / "overrides.toml"
    path.write_text("working = [2027-10-09]\nnon_working = [2027-10-09]\n")
    with pytest.raises(ValueError, match="dates declared both working and non-working"):
        WorkingCalendar.load(path)


def test_override_must_be_a_date(tmp_path):
    path = tmp_path / "overrides.toml"
    path.write_text('working = ["2027-10-09"]\n')
    with pytest.raises(TypeError):
        WorkingCalendar.load(path)


def test_shipped_override_file_loads():
    WorkingCalendar.load()


# ---------------------------------------------------------------------------- the State Council's notices
def _days(first: date, last: date) -> list[date]:
    return [date.fromordinal(n) for n in range(first.toordinal(), last.toordinal() + 1)]


# Every day off and make-up working day of 国务院办公厅关于2025年部分节假日安排的通知
# (国办发明电[2024]12号) and 关于2026年部分节假日安排的通知 (2025-11-04), as announced; the
# package plus workday_overrides.toml must agree with each.
ANNOUNCED_OFF = [
    date(2025, 1, 1), *_days(date(2025, 1, 28), date(2025, 2, 4)), *_days(date(2025, 4, 4), date(2025, 4, 6)),
    *_days(date(2025, 5, 1), date(2025, 5, 5)), *_days(date(2025, 5, 31), date(2025, 6, 2)),
    *_days(date(2025, 10, 1), date(2025, 10, 8)),
    *_days(date(2026, 1, 1), date(2026, 1, 3)), *_days(date(2026, 2, 15), date(2026, 2, 23)),
    *_days(date(2026, 4, 4), date(2026, 4, 6)), *_days(date(2026, 5, 1), date(2026, 5, 5)),
    *_days(date(2026, 6, 19), date(2026, 6, 21)), *_days(date(2026, 9, 25), date(2026, 9, 27)),
    *_days(date(2026, 10, 1), date(2026, 10, 7)),
]
ANNOUNCED_MAKE_UP = [date(2025, 1, 26), date(2025, 2, 8), date(2025, 4, 27), date(2025, 9, 28), date(2025, 10, 11),
                     date(2026, 1, 4), date(2026, 2, 14), date(2026, 2, 28), date(2026, 5, 9), date(2026, 9, 20),
                     date(2026, 10, 10)]


@pytest.mark.parametrize("year", [2025, 2026])
def test_the_shipped_calendar_agrees_with_the_announced_year(year):
    shipped = WorkingCalendar.load()
    for d in _days(date(year, 1, 1), date(year, 12, 31)):
        expected = d in ANNOUNCED_MAKE_UP or (d.weekday() < 5 and d not in ANNOUNCED_OFF)
        assert shipped.is_working_day(d) == expected, d


@pytest.mark.parametrize(("moment", "counts_from"), [
    (date(2025, 11, 14), date(2025, 11, 14)),  # a Friday counts that day
    (date(2025, 11, 15), date(2025, 11, 17)),  # a Saturday counts from Monday
    (date(2025, 9, 27), date(2025, 9, 28)),  # ... or from the make-up Sunday after it
    (date(2026, 2, 14), date(2026, 2, 14)),  # a make-up Saturday is a working day
    (date(2026, 2, 15), date(2026, 2, 24)),  # Spring Festival counts from the first day back
    (datetime(2025, 11, 14, 17, 0, tzinfo=UTC), date(2025, 11, 17)),  # 01:00 Saturday in Beijing
])
def test_a_submission_on_a_day_off_counts_from_the_next_working_day(calendar, moment, counts_from):
    assert calendar.first_working_day(moment) == counts_from


def test_working_days_before_inverts_add(calendar):
    assert calendar.working_days_before(date(2025, 10, 9), 1) == date(2025, 9, 30)
    assert calendar.working_days_before(date(2025, 10, 13), 2) == date(2025, 10, 10)  # 11 Oct is a make-up day
    start = date(2025, 9, 22)
    for n in range(30):
        assert calendar.working_days_before(calendar.add_working_days(start, n), n) == start
    with pytest.raises(ValueError, match="n must not be negative"):
        calendar.working_days_before(start, -1)
