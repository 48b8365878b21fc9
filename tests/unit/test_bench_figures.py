"""Figures make bench derives: what the broker appended per finished application, per topic,
the rate of transaction log appends, and how much finished work left the hot state during the
idle window."""

from devtools.bench.pipeline import evictions_due, offsets_per_app, per_second, wait_between_rounds


def test_growth_per_application_largest_first_with_the_total():
    before = {"tongban.application.received": 100, "tongban-intake-changelog": 50, "tongban.application.routed": 7}
    after = {"tongban.application.received": 140, "tongban-intake-changelog": 130, "tongban.application.routed": 7}
    assert offsets_per_app(before, after, 20) == {
        "total": 6.0, "tongban-intake-changelog": 4.0, "tongban.application.received": 2.0}


def test_a_topic_first_seen_at_the_end_counts_from_zero_and_no_application_gives_nothing():
    dead_letters = "tongban.dlq.tongban-intake"
    assert offsets_per_app({}, {dead_letters: 3}, 3) == {"total": 1.0, dead_letters: 1.0}
    assert offsets_per_app({"t": 1}, {"t": 5}, 0) == {}


def test_evictions_due_in_a_window_are_those_finished_ten_minutes_before_on_the_minute_grid():
    # finished at 0 s is due at 600 s; at 1 s, due at 660 s (the next grid point)
    assert evictions_due([0.0, 1.0, 59.0, 61.0], 600.0, 660.0) == 1
    assert evictions_due([0.0, 1.0, 59.0, 61.0], 600.0, 661.0) == 3
    assert evictions_due([0.0], 601.0, 700.0) == 0


def test_the_idle_window_sits_between_two_eviction_rounds_of_the_minute_grid():
    # rounds at every whole minute; their work is taken to last 20 s; a 10 s window
    assert wait_between_rounds(6_000.0 + 25, 10) == 0  # 25..35: between rounds already
    assert wait_between_rounds(6_000.0 + 5, 10) == 15  # too close after a round
    assert wait_between_rounds(6_000.0 + 55, 10) == 25  # would cross the next round
    assert wait_between_rounds(6_000.0 + 50, 10) == 0  # ends on the next round, not past it
    assert wait_between_rounds(6_000.0 + 55, 45) == 0  # no window that long fits: measured as is


def test_transaction_log_appends_per_second_and_none_where_the_log_could_not_be_read():
    assert per_second(1000, 1900, 30.0) == 30.0
    assert per_second(None, 1900, 30.0) is None  # an external broker that hides its internal topics
    assert per_second(1000, None, 30.0) is None
