"""The in-memory schedule of a task's timers (tongban.runtime.timers.Schedule): it says when
to look and which timers are due; the timers themselves live in the aggregates' entries."""

from tongban.runtime.timers import Schedule


def test_an_empty_schedule_has_nothing_due():
    schedule = Schedule()
    assert schedule.next_due() is None
    assert len(schedule) == 0
    assert schedule.pop_due(10**15) == []


def test_next_due_is_the_earliest_due_time_whatever_the_order_timers_were_added():
    schedule = Schedule()
    schedule.add(3_000, "TB1:b:3000", "TB1")
    schedule.add(1_000, "TB2:a:1000", "TB2")
    schedule.add(2_000, "TB1:c:2000", "TB1")
    assert schedule.next_due() == 1_000
    assert len(schedule) == 3


def test_a_timer_is_due_at_its_due_time_not_a_millisecond_before():
    schedule = Schedule()
    schedule.add(1_000, "TB1:a:1000", "TB1")
    assert schedule.pop_due(999) == []
    assert schedule.pop_due(1_000) == [("TB1", "TB1:a:1000")]
    assert schedule.next_due() is None
    assert len(schedule) == 0


def test_every_due_timer_comes_out_once_earliest_first_and_later_ones_stay():
    schedule = Schedule()
    schedule.add(3_000, "TB1:b:3000", "TB1")
    schedule.add(1_000, "TB2:a:1000", "TB2")
    schedule.add(2_000, "TB1:c:2000", "TB1")
    assert schedule.pop_due(2_500) == [("TB2", "TB2:a:1000"), ("TB1", "TB1:c:2000")]
    assert schedule.pop_due(2_500) == []
    assert schedule.next_due() == 3_000
    assert len(schedule) == 1
