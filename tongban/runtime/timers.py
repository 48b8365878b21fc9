"""The in-memory schedule of a task's durable timers.

Timers are stored in their aggregate's state entry (so they commit with it); this heap only
says when to look. It is rebuilt from the store on restore, and entries that were replaced
or cancelled meanwhile are skipped when they come up (the entry no longer holds that id).
Nothing polls a store.
"""

from __future__ import annotations

import heapq


class Schedule:
    def __init__(self) -> None:
        self._heap: list[tuple[int, str, str]] = []  # (due millis, timer id, aggregate key)

    def add(self, due_ms: int, timer_id: str, key: str) -> None:
        heapq.heappush(self._heap, (due_ms, timer_id, key))

    def next_due(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ms: int) -> list[tuple[str, str]]:
        """(key, timer id) of every timer due by `now_ms`, earliest first."""
        due = []
        while self._heap and self._heap[0][0] <= now_ms:
            _, timer_id, key = heapq.heappop(self._heap)
            due.append((key, timer_id))
        return due

    def __len__(self) -> int:
        return len(self._heap)
