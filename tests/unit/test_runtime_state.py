"""The contract of a task's local state store (tongban.runtime.state), one suite for both
implementations: `MemoryStore` (tests, benchmarks) and `RocksStore` (deployments, here in a
tmp_path). The store is a cache of the task's changelog: what the core relies on is that
a write applies its puts and deletes together with the changelog offset they reach, that
reads by key and by prefix see exactly the committed entries, and (RocksDB) that all of it
is still there after a reopen, so a restart replays the changelog from the checkpoint only."""

import pytest

from tongban.runtime.state import MemoryStore, RocksStore, discard, open_store

ENTRY, DEDUPE = b"a:", b"d:"  # the prefixes the core uses (tongban.runtime.core)


class Stores:
    """Opens the store under test; `reopen` is what a restart does (RocksDB only)."""

    def __init__(self, kind: str, path) -> None:
        self.kind = kind
        self.path = path / "state" / "routing" / "p0"  # one folder per task, its parents not made yet

    def open(self):
        return MemoryStore() if self.kind == "memory" else RocksStore(self.path)

    def reopen(self, store):
        store.close()
        return RocksStore(self.path)


@pytest.fixture(params=["memory", "rocksdb"])
def stores(request, tmp_path):
    return Stores(request.param, tmp_path)


@pytest.fixture
def store(stores):
    opened = stores.open()
    yield opened
    opened.close()


def test_an_empty_store_has_nothing_and_its_checkpoint_is_the_start_of_the_changelog(store):
    assert store.get(ENTRY + b"TB1") is None
    assert list(store.items(ENTRY)) == []
    assert store.checkpoint == 0


def test_a_write_puts_values_and_records_the_changelog_offset_reached(store):
    store.write({ENTRY + b"TB1": b"one", DEDUPE + b"e1": b"mark"}, 2)
    assert store.get(ENTRY + b"TB1") == b"one"
    assert store.get(DEDUPE + b"e1") == b"mark"
    assert store.checkpoint == 2


def test_a_later_write_replaces_a_value_and_a_none_deletes_it(store):
    store.write({ENTRY + b"TB1": b"one", ENTRY + b"TB2": b"two"}, 2)
    store.write({ENTRY + b"TB1": b"newer", ENTRY + b"TB2": None}, 4)
    assert store.get(ENTRY + b"TB1") == b"newer"
    assert store.get(ENTRY + b"TB2") is None
    assert list(store.items(ENTRY)) == [(ENTRY + b"TB1", b"newer")]


def test_deleting_a_key_that_is_not_there_is_not_an_error(store):
    store.write({DEDUPE + b"never-written": None}, 1)
    assert store.get(DEDUPE + b"never-written") is None
    assert store.checkpoint == 1


def test_items_are_exactly_the_entries_under_a_prefix(store):
    store.write({ENTRY + b"TB1": b"1", ENTRY + b"TB2": b"2", DEDUPE + b"e1": b"m", b"b:TB3": b"x",
                 b"a;": b"next prefix up"}, 5)
    assert sorted(store.items(ENTRY)) == [(ENTRY + b"TB1", b"1"), (ENTRY + b"TB2", b"2")]
    assert list(store.items(DEDUPE)) == [(DEDUPE + b"e1", b"m")]


def test_the_checkpoint_never_goes_back(store):
    """A commit without changelog records passes the current checkpoint; an older offset
    (a restore racing a commit) must not make a restart replay what is already applied."""
    store.write({ENTRY + b"TB1": b"1"}, 7)
    store.write({ENTRY + b"TB2": b"2"}, 3)
    assert store.checkpoint == 7
    assert store.get(ENTRY + b"TB2") == b"2"


def test_open_store_gives_a_memory_store_or_a_rocksdb_store_in_the_tasks_folder(tmp_path):
    assert isinstance(open_store("memory", None), MemoryStore)
    rocks = open_store("rocksdb", tmp_path / "g" / "p1")
    rocks.write({ENTRY + b"TB1": b"1"}, 1)
    rocks.close()
    assert (tmp_path / "g" / "p1").is_dir()
    with pytest.raises(AssertionError, match=r"^a RocksDB store needs a directory$"):
        open_store("rocksdb", None)


# ----------------------------------------------------------------------------- RocksDB: sizing and restarts
@pytest.fixture
def rocks(tmp_path):
    return Stores("rocksdb", tmp_path)


def test_a_rocksdb_store_is_sized_for_many_small_tasks(rocks):
    """An instance holds one store per task on a 2-core machine: 8 MiB write buffers, at most
    two of them, one background job (as RocksDB records them in the store's OPTIONS file)."""
    rocks.open().close()
    options = max(rocks.path.glob("OPTIONS-*")).read_text().splitlines()
    settings = dict(line.strip().split("=", 1) for line in options if "=" in line)
    assert settings["write_buffer_size"] == str(8 * 1024 * 1024)
    assert settings["max_write_buffer_number"] == "2"
    assert settings["max_background_jobs"] == "1"


def test_entries_and_checkpoint_survive_a_reopen(rocks):
    store = rocks.open()
    store.write({ENTRY + b"TB1": b"one", ENTRY + b"TB2": b"two", DEDUPE + b"e1": b"m"}, 3)
    store.write({ENTRY + b"TB2": None}, 4)
    store = rocks.reopen(store)
    assert store.checkpoint == 4
    assert store.get(ENTRY + b"TB1") == b"one"
    assert store.get(ENTRY + b"TB2") is None
    assert list(store.items(ENTRY)) == [(ENTRY + b"TB1", b"one")]
    assert list(store.items(DEDUPE)) == [(DEDUPE + b"e1", b"m")]
    store.close()


def test_a_reopened_store_keeps_counting_from_its_checkpoint(rocks):
    store = rocks.open()
    store.write({ENTRY + b"TB1": b"1"}, 9)
    store = rocks.reopen(store)
    store.write({ENTRY + b"TB2": b"2"}, 5)  # an older offset does not move it back
    store = rocks.reopen(store)
    assert store.checkpoint == 9
    store.close()


def test_a_write_that_fails_changes_neither_the_entries_nor_the_checkpoint(rocks):
    """Changes and checkpoint are one atomic write: a failure leaves the store as it was,
    in memory too (a checkpoint reported past changes that were never stored would make
    the next commit persist it, and a restore would skip those changes)."""
    store = rocks.open()
    store.write({ENTRY + b"TB1": b"1"}, 2)
    with pytest.raises(ValueError, match="bytes"):  # one value of the batch cannot be written
        store.write({ENTRY + b"TB2": b"2", ENTRY + b"TB3": "not bytes"}, 5)
    assert store.checkpoint == 2
    assert store.get(ENTRY + b"TB2") is None
    store.close()
    with pytest.raises(Exception, match="closed"):  # RocksDB fails the write (as on an I/O error)
        store.write({ENTRY + b"TB4": b"4"}, 6)
    assert store.checkpoint == 2
    store = RocksStore(rocks.path)
    assert store.checkpoint == 2
    assert list(store.items(ENTRY)) == [(ENTRY + b"TB1", b"1")]
    store.close()


def test_a_discarded_store_starts_empty_and_discarding_twice_is_harmless(rocks):
    store = rocks.open()
    store.write({ENTRY + b"TB1": b"1"}, 4)
    store.close()
    discard(rocks.path)
    assert not rocks.path.exists()
    discard(rocks.path)
    store = rocks.open()
    assert store.checkpoint == 0
    assert store.get(ENTRY + b"TB1") is None
    store.close()
