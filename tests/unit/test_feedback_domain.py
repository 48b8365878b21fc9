"""Windowed flags, table-driven and without a broker: windows a fact falls in, idempotent
counting by business id, flag and clear with hysteresis and minimum volume, verdict ids
derived from window and rule (services.feedback.domain and windows.apply_fact)."""

import copy
from datetime import UTC, datetime, timedelta

import pytest

from services.feedback.domain import DuplicateRule, FlagRule, WindowCounts, WindowSpec
from services.feedback.windows import FlagConfig, apply_fact, process, verdict_event
from tongban.codec import SchemaRegistry

T0 = datetime(2026, 11, 5, 9, 0, tzinfo=UTC)  # a Thursday; epoch weeks start on Thursdays
GROUP = "KSTB-MKT-01|430102|420000"
CONFIG = FlagConfig.load()


def fact(n: int, kind: str = "RATING", bad: bool = False, counted: bool = True, at: datetime = T0) -> dict:
    return {"fact_id": f"F{n}", "kind": kind, "bad": bad, "counted": counted, "occurred_at": at}


def run(table: dict, *facts: dict) -> list[tuple[str, str]]:
    """Facts through apply_fact, the group's state kept in `table` as the faust table keeps it."""
    out = []
    for f in facts:
        table[GROUP], verdicts = apply_fact(table.get(GROUP), GROUP, f, CONFIG)
        out += [(v.kind, v.flag_id) for v, _ in verdicts]
    return out


@pytest.mark.parametrize(("spec", "at", "starts"), [
    (WindowSpec("7d", 7, 7), T0, ["2026-11-05"]),
    (WindowSpec("7d", 7, 7), T0 - timedelta(hours=10), ["2026-10-29"]),
    (WindowSpec("30d-hop7d", 30, 7), T0, ["2026-10-08", "2026-10-15", "2026-10-22", "2026-10-29", "2026-11-05"]),
    (WindowSpec("30d-hop7d", 30, 7), T0 + timedelta(days=2), ["2026-10-15", "2026-10-22", "2026-10-29", "2026-11-05"]),
])
def test_a_fact_falls_in_every_window_that_contains_it(spec, at, starts):
    assert [f"{s:%Y-%m-%d}" for s in spec.windows(at)] == starts
    assert all(s <= at < s + spec.size() for s in spec.windows(at))


def test_the_configured_windows_and_rules_load():
    config = FlagConfig.load()  # loaded here, not only at import, so mutation testing sees this test run it
    assert [(w.name, w.size_days, w.step_days) for w in config.windows] == [("7d", 7, 7), ("30d-hop7d", 30, 7)]
    assert {r.name for r in config.rules} == {"bad-ratings", "complaints", "sla-breaches", "sla-breach-rate"}
    with pytest.raises(ValueError, match="clear_below <= threshold"):
        FlagRule("x", "complaints", threshold=1, clear_below=2, volume="complaints")


def test_metrics_of_a_window():
    counts = WindowCounts({"a": ("RATING", True), "b": ("RATING", False), "c": ("COMPLAINT", False),
                           "d": ("SLA_BREACH", False)})
    assert counts.metrics() == {"ratings": 2, "bad_ratings": 1, "bad_rating_rate": 0.5, "complaints": 1,
                                "sla_breaches": 1, "decided": 0, "sla_breach_rate": 0.0, "facts": 4}


def test_bad_ratings_flag_once_the_minimum_volume_is_there_in_both_windows():
    table: dict = {}
    assert run(table, *(fact(n, bad=True) for n in range(4))) == [], "4 ratings: under the minimum of 5"
    verdicts = run(table, fact(4, bad=True))
    assert verdicts == [("FLAG", f"{GROUP}|7d|2026-11-05|bad-ratings#1"),
                        ("FLAG", f"{GROUP}|30d-hop7d|2026-10-08|bad-ratings#1")], "one flag per window spec"
    assert run(table, fact(5, bad=True)) == [], "a standing flag is not raised again"


def test_the_stored_state_is_never_changed_in_place():
    stored: dict = {}
    run(stored, fact(1, bad=True))
    before = copy.deepcopy(stored[GROUP])
    apply_fact(stored[GROUP], GROUP, fact(2, bad=True), CONFIG)
    assert stored[GROUP] == before


def test_windows_a_longest_window_older_than_the_newest_fact_are_dropped():
    table: dict = {}
    run(table, fact(1), fact(2, at=T0 + timedelta(days=70)))
    hopping = [f"30d-hop7d|{d}T00:00:00+00:00" for d in ("2026-12-17", "2026-12-24", "2026-12-31", "2027-01-07",
                                                          "2027-01-14")]
    assert sorted(table[GROUP]["windows"]) == [*hopping, "7d|2027-01-14T00:00:00+00:00"], "the first fact's are gone"


def test_a_replayed_fact_changes_nothing():
    table: dict = {}
    run(table, *(fact(n, bad=True) for n in range(5)))
    before = dict(table)
    assert run(table, *(fact(n, bad=True) for n in range(5))) == []
    assert table == before


def test_the_flag_clears_when_the_window_recovers_and_only_then():
    table: dict = {}
    run(table, *(fact(n, bad=True) for n in range(5)))
    assert run(table, *(fact(n) for n in range(5, 20))) == [], "5 of 20 bad: 25 %, between the two lines"
    cleared = run(table, *(fact(n) for n in range(20, 60)))
    assert ("CLEAR", f"{GROUP}|7d|2026-11-05|bad-ratings#1") in cleared


def test_a_later_window_with_enough_good_ratings_clears_the_flags():
    table: dict = {}
    run(table, *(fact(n, bad=True) for n in range(5)))
    next_week = T0 + timedelta(days=7)
    assert run(table, *(fact(n, at=next_week) for n in range(10, 14))) == [], "too few to judge the new week"
    assert run(table, fact(14, at=next_week)) == [("CLEAR", f"{GROUP}|7d|2026-11-05|bad-ratings#1"),
                                                  ("CLEAR", f"{GROUP}|30d-hop7d|2026-10-08|bad-ratings#1")]


def test_a_withdrawn_fact_leaves_the_window_and_can_clear_a_flag():
    table: dict = {}
    run(table, *(fact(n, kind="COMPLAINT") for n in range(3)))
    assert table[GROUP]["windows"]["7d|2026-11-05T00:00:00+00:00"] == {f"F{n}": ["COMPLAINT", False] for n in range(3)}
    assert run(table, fact(0, kind="COMPLAINT", counted=False)) == [], "2 complaints: flag stands (clears at 0)"
    assert run(table, fact(7, kind="COMPLAINT", counted=False)) == [], "never counted: nothing to withdraw"
    run(table, fact(1, kind="COMPLAINT", counted=False))
    cleared = run(table, fact(2, kind="COMPLAINT", counted=False))
    assert ("CLEAR", f"{GROUP}|7d|2026-11-05|complaints#1") in cleared


def test_the_sla_breach_rate_flags_breaches_per_decision_once_enough_were_decided_and_clears_when_diluted():
    table: dict = {}
    assert run(table, fact(100, kind="SLA_BREACH"), *(fact(n, kind="DECISION") for n in range(4))) == [], \
        "4 decisions: under the minimum of 5"
    assert table[GROUP]["windows"]["7d|2026-11-05T00:00:00+00:00"]["F100"] == ["SLA_BREACH", False]
    assert run(table, fact(4, kind="DECISION")) == [("FLAG", f"{GROUP}|7d|2026-11-05|sla-breach-rate#1"),
                                                    ("FLAG", f"{GROUP}|30d-hop7d|2026-10-08|sla-breach-rate#1")], \
        "1 breach in 5 decisions: 20 %"
    assert run(table, *(fact(n, kind="DECISION") for n in range(5, 20))) == [], "1 in 20: 5 %, not under 5 % yet"
    assert ("CLEAR", f"{GROUP}|7d|2026-11-05|sla-breach-rate#1") in run(table, fact(20, kind="DECISION"))


@pytest.mark.parametrize(("breaches", "decided", "rate"), [(0, 0, 0.0), (3, 0, 0.0), (1, 4, 0.25), (3, 2, 1.5)])
def test_the_breach_rate_is_breaches_per_decision(breaches, decided, rate):
    counts = WindowCounts({**{f"b{n}": ("SLA_BREACH", False) for n in range(breaches)},
                           **{f"d{n}": ("DECISION", False) for n in range(decided)}})
    assert (counts.metrics()["sla_breach_rate"], counts.metrics()["decided"]) == (rate, decided)


def test_flagged_again_in_the_same_window_is_a_new_flag_id():
    table: dict = {}
    run(table, *(fact(n, kind="COMPLAINT") for n in range(3)))
    for n in range(3):
        run(table, fact(n, kind="COMPLAINT", counted=False))
    again = run(table, *(fact(n, kind="COMPLAINT") for n in range(10, 13)))
    assert ("FLAG", f"{GROUP}|7d|2026-11-05|complaints#2") in again


def test_a_verdict_event_has_an_id_derived_from_window_and_rule():
    registry = SchemaRegistry.load()
    state = None
    for n in range(5):
        state, results = apply_fact(state, GROUP, fact(n, bad=True), CONFIG)
    verdict, counts = results[0]
    first = verdict_event(registry, GROUP, verdict, counts, fact(4), CONFIG.windows[0])
    again = verdict_event(registry, GROUP, verdict, counts, fact(4), CONFIG.windows[0])
    assert first.event_id == again.event_id
    assert first.key == "KSTB-MKT-01"
    event_type, body = registry.decode(first.value)
    assert event_type == "tongban.feedback.MatterFlagged"
    assert (body["rule"], body["window"], body["bad_ratings"], body["total_ratings"]) == ("bad-ratings", "7d", 5, 5)
    assert body["window_end"] - body["window_start"] == timedelta(days=7)


@pytest.mark.parametrize(("first", "later", "merged"), [
    (T0, T0, True), (T0, T0 + timedelta(days=7), True), (T0, T0 + timedelta(days=7, seconds=1), False),
    (T0, T0 - timedelta(seconds=1), False)])
def test_the_duplicate_rule(first, later, merged):
    assert DuplicateRule(days=7).merges(first, later) is merged


class Crash(Exception):
    pass


async def test_verdicts_lost_to_a_crash_before_sending_go_out_when_the_fact_is_replayed():
    registry = SchemaRegistry.load()
    table: dict = {}
    sent: list[bytes] = []

    async def send(key: bytes, value: bytes) -> None:
        sent.append(value)

    async def crash(key: bytes, value: bytes) -> None:
        raise Crash

    for n in range(4):
        assert await process(table, GROUP, fact(n, bad=True), CONFIG, registry, send) == 0
    with pytest.raises(Crash):
        await process(table, GROUP, fact(4, bad=True), CONFIG, registry, crash)
    assert len(table[GROUP]["outbox"]) == 2, "counted, the verdicts wait in the outbox"
    assert await process(table, GROUP, fact(4, bad=True), CONFIG, registry, send) == 2
    assert table[GROUP]["outbox"] == []
    assert await process(table, GROUP, fact(4, bad=True), CONFIG, registry, send) == 0
    ids = [registry.decode(v)[1]["envelope"]["event_id"] for v in sent]
    assert len(ids) == len(set(ids)) == 2
