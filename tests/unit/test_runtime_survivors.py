"""Runtime rules that the mutation run of issue 7 found unguarded, one test each, through the
real core (tongban.runtime.core) over the in-memory edges of test_runtime_core.py; the
RocksDB store where the rule is about it (tongban.runtime.state)."""

import asyncio
from datetime import timedelta

from tests.unit.test_runtime_core import (
    INPUT,
    KEY,
    NEIGHBOUR,
    NS,
    PARTITION,
    SETTINGS,
    UNROUTABLE,
    Harness,
    entry,
    envelope_of,
    finish,
    finish_seen,
    received_value,
    unroutable,
    value_of,
)
from tongban.events import millis, now_utc
from tongban.handling import Outcome, Timer
from tongban.runtime import core
from tongban.runtime.core import (
    DEDUPE,
    ENTRY,
    EVICTION_ROUND_MS,
    KEEP_FINISHED,
    ORIGIN_TOPIC_HEADER,
    REPLAY_COUNT_HEADER,
    SWEEP_CHUNK,
    Task,
    pack,
)
from tongban.runtime.state import CHECKPOINT_KEY, RocksStore


# ----------------------------------------------------------------------------- replays
async def test_a_replay_count_of_zero_is_a_valid_count_and_the_replay_is_handled():
    """Only a count that is not a non-negative number is malformed; 0 is one."""
    h = Harness()
    await h.feed(h.rec(received_value(), topic=SETTINGS.retry_topic, headers=[
        (ORIGIN_TOPIC_HEADER, (NS + INPUT).encode()), (REPLAY_COUNT_HEADER, b"0")]))
    assert h.dead_letters() == []
    assert h.state() == {"n": 1}


# ----------------------------------------------------------------------------- the sweep
async def test_the_sweep_gives_the_event_loop_one_turn_after_every_thousand_entries_it_scans(monkeypatch):
    """The scan runs without the task's lock and must not hold the event loop (records of
    other tasks, heartbeats) for a whole store: it yields once per `SWEEP_CHUNK` entries, and
    only yields (no pause)."""
    h = Harness()
    count = 2 * SWEEP_CHUNK + 1
    now = now_utc()
    h.store.write({DEDUPE + f"e{i:05}".encode(): pack({"at": now, "key": KEY}) for i in range(count)}, 0)
    turns = 0  # how often the rest of the service ran so far
    seen: list[int] = []  # `turns` when the sweep read each entry
    items = h.store.items

    def watched(prefix):
        for pair in items(prefix):
            seen.append(turns)
            yield pair

    monkeypatch.setattr(h.store, "items", watched)

    async def rest_of_the_service():
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(rest_of_the_service())
    try:
        assert await h.task.sweep(now) == 0  # nothing has expired: a scan only
    finally:
        other.cancel()
    assert len(seen) == count
    changed = [(i, seen[i] - seen[i - 1]) for i in range(1, count) if seen[i] != seen[i - 1]]
    assert changed == [(SWEEP_CHUNK, 1), (2 * SWEEP_CHUNK, 1)]


async def test_the_sweep_forgets_only_expired_marks_and_markers_never_the_rocksdb_stores_checkpoint(tmp_path):
    """RocksDB keeps the store's checkpoint among the entries the sweep scans (`items(b"")`):
    it is neither a dedupe mark nor an entry, so the sweep leaves it alone and writes nothing
    for it to the changelog."""
    h = Harness(handlers={UNROUTABLE: finish})
    store = RocksStore(tmp_path / "routing" / "p0")
    h.store, h.task = store, Task(h.ctx, PARTITION, store, h.bus)
    try:
        record = h.rec(received_value())
        await h.feed(record)
        commits = h.bus.commits
        assert await h.task.sweep(now_utc()) == 0
        assert h.bus.commits == commits, "nothing has expired: nothing is written"
        assert await h.task.sweep(now_utc() + h.ctx.horizon + timedelta(minutes=1)) == 2
        tombstones = sorted(r.key for r in h.bus.on(SETTINGS.changelog_topic) if r.value is None)
        assert tombstones == sorted([ENTRY + KEY.encode(), DEDUPE + envelope_of(record.value)["event_id"].encode()])
        assert store.get(CHECKPOINT_KEY) == str(store.checkpoint).encode()
        assert store.checkpoint == len(h.bus.on(SETTINGS.changelog_topic))
    finally:
        store.close()


# ----------------------------------------------------------------------------- finished work
async def test_a_restarted_task_does_not_evict_again_what_already_left_the_hot_state():
    """Only a finished entry that still holds its state gets an eviction in the rebuilt
    schedule: a marker would cost an archive read and a transaction that change nothing."""
    h = Harness(handlers={UNROUTABLE: finish})
    await h.feed(h.rec(received_value()))
    assert await h.task.fire_due(millis(now_utc() + KEEP_FINISHED) + EVICTION_ROUND_MS) == 1
    assert entry(h)["state"] is None
    restarted = Task(h.ctx, PARTITION, h.store, h.bus)
    restarted.rebuild_schedule()
    assert len(restarted.schedule) == 0
    commits, loads = h.bus.commits, h.archive.loads
    assert await restarted.fire_due(millis(now_utc() + h.ctx.horizon)) == 0
    assert (h.bus.commits, h.archive.loads) == (commits, loads), "no archive read, no transaction"


async def test_each_aggregate_that_left_the_hot_state_is_loaded_from_the_archive_once_in_a_batch():
    h = Harness(handlers={UNROUTABLE: finish_seen})

    def late(key: str, reason: str):
        return h.rec(value_of(UNROUTABLE, unroutable(key, reason), f"{key}-{reason}", key), key=key.encode())

    await h.feed(late(KEY, "a"), late(NEIGHBOUR, "b"))
    assert await h.task.fire_due(millis(now_utc() + KEEP_FINISHED) + EVICTION_ROUND_MS) == 2
    assert h.archive.loads == 0
    await h.feed(late(KEY, "c"), late(NEIGHBOUR, "d"), late(KEY, "e"), late(NEIGHBOUR, "f"))
    assert h.archive.loads == 2, "once per aggregate: not once per event, nor once for the whole batch"
    assert h.state() == {"seen": ["a", "c", "e"]}
    assert h.state(NEIGHBOUR) == {"seen": ["b", "d", "f"]}


async def finished_with_a_reminder_after_its_eviction(event, state):
    # Eviction falls due on the minute grid at most 11 minutes after the finish; this is later.
    return Outcome(state={"done": True}, finished=True,
                   timers=[Timer("reminder", now_utc() + KEEP_FINISHED + timedelta(minutes=2))])


async def test_a_timer_of_finished_work_falling_due_in_its_eviction_round_still_fires():
    """A timer loop that looks late (after a restart or an outage) finds the eviction and a
    later timer of the same aggregate due together: both are handled in that round."""
    fired = []

    async def remind(event, state):
        fired.append(event.payload["name"])
        return Outcome()

    h = Harness(handlers={UNROUTABLE: finished_with_a_reminder_after_its_eviction}, timers={"reminder": remind})
    await h.feed(h.rec(received_value()))
    assert len(h.task.schedule) == 2
    assert await h.task.fire_due(millis(now_utc() + KEEP_FINISHED + timedelta(minutes=3))) == 2
    assert fired == ["reminder"]
    assert h.dead_letters() == []
    assert entry(h)["finished"]
    assert entry(h)["timers"] == []


def reminded() -> tuple[Harness, list]:
    """A harness whose aggregate finishes with a reminder due after its eviction, and the
    states that reminder is given."""
    states: list = []

    async def remind(event, state):
        states.append(state)
        return Outcome()

    return Harness(handlers={UNROUTABLE: finished_with_a_reminder_after_its_eviction},
                   timers={"reminder": remind}), states


async def test_a_timer_firing_in_the_round_that_evicts_its_aggregate_gets_the_aggregates_state():
    h, states = reminded()
    await h.feed(h.rec(received_value()))
    await h.task.fire_due(millis(now_utc() + KEEP_FINISHED + timedelta(minutes=3)))
    assert states == [{"done": True}]


async def test_a_timer_firing_after_its_aggregate_left_the_hot_state_does_not_bring_the_state_back(monkeypatch):
    h, states = reminded()
    await h.feed(h.rec(received_value()))
    assert await h.task.fire_due(millis(now_utc() + KEEP_FINISHED) + EVICTION_ROUND_MS) == 1  # the eviction
    assert entry(h)["state"] is None
    due = now_utc() + KEEP_FINISHED + timedelta(minutes=3)
    monkeypatch.setattr(core, "now_utc", lambda: due)  # the clock the timer fires by
    assert await h.task.fire_due(millis(due)) == 1
    assert states == [{"done": True}], "the timer still gets the state, from the archive"
    assert entry(h)["timers"] == []
    assert entry(h)["state"] is None, "no eviction is due any more: the state stays in the archive only"


async def test_a_timer_firing_in_its_aggregates_eviction_round_leaves_the_state_out_of_the_hot_state_too(
        monkeypatch):
    h, _ = reminded()
    await h.feed(h.rec(received_value()))
    late = now_utc() + KEEP_FINISHED + timedelta(minutes=3)
    monkeypatch.setattr(core, "now_utc", lambda: late)  # a timer loop that looks late, after an outage
    assert await h.task.fire_due(millis(late)) == 2
    assert entry(h)["timers"] == []
    assert entry(h)["state"] is None


async def test_an_input_that_changes_only_the_timers_of_finished_work_keeps_the_state_hot_only_in_its_time(
        monkeypatch):
    async def finish_then_remind(event, state):
        if state is None:
            return Outcome(state={"done": True}, finished=True)
        return Outcome(timers=[Timer(f"reminder-{event.payload['reason']}", now_utc() + timedelta(days=1))])

    h = Harness(handlers={UNROUTABLE: finish_then_remind})
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "finish"), "c1")))
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "soon"), "c2")))
    assert entry(h)["state"] == {"done": True}, "within its ten minutes it stays hot"
    later = now_utc() + KEEP_FINISHED + timedelta(minutes=2)
    monkeypatch.setattr(core, "now_utc", lambda: later)  # the eviction round has not run yet
    await h.feed(h.rec(value_of(UNROUTABLE, unroutable(KEY, "late"), "c3")))
    assert len(entry(h)["timers"]) == 2
    assert entry(h)["state"] is None, "past its time the hot state keeps no state, as the eviction would"
    assert h.archive.docs[KEY]["state"] == {"done": True}


# ----------------------------------------------------------------------------- the RocksDB store
def test_a_rocksdb_store_counts_its_index_and_filter_blocks_in_the_shared_block_cache(tmp_path):
    """Memory stays within the process's one block cache however much a task holds: index
    and filter blocks are cached there, not kept outside it; and a key that is not there (a
    new event's dedupe mark) is answered by a whole-key bloom filter, not by reading data
    blocks into that cache (as RocksDB records it in the store's OPTIONS file)."""
    path = tmp_path / "routing" / "p0"
    RocksStore(path).close()
    text = max(path.glob("OPTIONS-*")).read_text()
    table = text.split('[TableOptions/BlockBasedTable "default"]', 1)[1].split("\n[", 1)[0]
    options = dict(line.strip().split("=", 1) for line in table.splitlines() if "=" in line)
    assert options["cache_index_and_filter_blocks"] == "true"
    assert (options["filter_policy"], options["whole_key_filtering"]) == ("bloomfilter", "true")
