"""The local state store of one task (one partition of a service's inputs).

The store is a cache of the task's compacted changelog topic: every change is first
committed to the changelog inside the task's Kafka transaction and only then written here,
together with the changelog offset it reaches (the checkpoint), in one atomic write. A
restart replays the changelog from the checkpoint only. Two versions behind one small
interface: in memory (tests, benchmarks) and RocksDB through rocksdict (deployments).
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, cast

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteBufferManager

CHECKPOINT_KEY = b"\x00checkpoint"


class StateStore(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def write(self, changes: dict[bytes, bytes | None], checkpoint: int) -> None:
        """Apply puts (bytes) and deletes (None) and record the changelog offset reached, atomically."""

    def items(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: ...

    @property
    def checkpoint(self) -> int:
        """The next changelog offset to read on restore (0 for an empty store)."""

    def close(self) -> None: ...


class MemoryStore:
    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._checkpoint = 0

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def write(self, changes: dict[bytes, bytes | None], checkpoint: int) -> None:
        for key, value in changes.items():
            if value is None:
                self._data.pop(key, None)
            else:
                self._data[key] = value
        self._checkpoint = max(self._checkpoint, checkpoint)

    def items(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        # A snapshot: callers may write while they iterate.
        return iter([(k, v) for k, v in self._data.items() if k.startswith(prefix)])

    @property
    def checkpoint(self) -> int:
        return self._checkpoint

    def close(self) -> None:
        """Nothing to release: a memory store lives as long as its process."""


# One block cache and one write-buffer budget for every task of the process: memory stays
# the same however many partitions it owns, and RocksDB's index and filter blocks are
# counted in the cache instead of growing outside it with the data.
BLOCK_CACHE_BYTES = 16 * 1024 * 1024
WRITE_BUFFERS_BYTES = 16 * 1024 * 1024


@functools.cache
def _budget() -> tuple[Cache, WriteBufferManager]:
    # No stall: a write waits for no flush (writes run on the event loop); past the budget
    # RocksDB flushes the largest memtable early instead.
    return Cache(BLOCK_CACHE_BYTES), WriteBufferManager(WRITE_BUFFERS_BYTES, False)


class RocksStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        cache, buffers = _budget()
        options = Options(raw_mode=True)
        options.set_write_buffer_size(8 * 1024 * 1024)
        options.set_max_write_buffer_number(2)
        options.set_write_buffer_manager(buffers)
        table = BlockBasedOptions()
        table.set_block_cache(cache)
        table.set_cache_index_and_filter_blocks(True)
        # Most reads look for a key that is not there (a dedupe mark of a new event, a new
        # aggregate): a whole-key filter answers those without reading a data block.
        table.set_bloom_filter(10, False)
        options.set_block_based_table_factory(table)
        options.increase_parallelism(1)
        self._db = Rdict(str(path), options)
        raw = self._db.get(CHECKPOINT_KEY)
        self._checkpoint = int(raw) if raw is not None else 0

    def get(self, key: bytes) -> bytes | None:
        return self._db.get(key)

    def write(self, changes: dict[bytes, bytes | None], checkpoint: int) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in changes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        reached = max(self._checkpoint, checkpoint)
        batch.put(CHECKPOINT_KEY, str(reached).encode())
        self._db.write(batch)
        self._checkpoint = reached  # only once written: a failed write leaves the store as it was

    def items(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        # raw_mode: keys and values are bytes, which rocksdict's annotations cannot say.
        pairs = cast(Iterator[tuple[bytes, bytes]], self._db.items(from_key=prefix))
        for key, value in pairs:
            if not key.startswith(prefix):
                return
            yield key, value

    @property
    def checkpoint(self) -> int:
        return self._checkpoint

    def close(self) -> None:
        self._db.close()


def open_store(kind: str, directory: Path | None) -> StateStore:
    """`memory`, or `rocksdb` in `directory` (one folder per task)."""
    if kind == "memory":
        return MemoryStore()
    assert directory is not None, "a RocksDB store needs a directory"
    return RocksStore(directory)


def discard(directory: Path) -> None:
    """Forget a task's local copy (its changelog is the truth; the next owner restores it)."""
    shutil.rmtree(directory, ignore_errors=True)
