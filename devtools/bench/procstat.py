"""CPU and memory of processes, read from /proc (Linux)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from devtools.bench.common import ROOT

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads) so far; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 is fields[0]
    return (int(fields[11]) + int(fields[12])) / TICKS


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time so far of a process's threads, summed by thread name (RocksDB's
    `rocksdb:low`, gRPC's `grpc_global_tim`, the interpreter's own thread under the
    process's name, ...); empty if the process is gone."""
    out: dict[str, float] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            text = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICKS
    return out


class ThreadWindow:
    """CPU% of one core per thread name of each named process between start() and stop():
    which part of a process is busy (its Python code, RocksDB, gRPC, span export)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self._start: dict[str, dict[str, float]] = {}
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = {name: thread_cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self, at_least: float = 0.1) -> dict[str, dict[str, float]]:
        """Per process, its threads' CPU% (those using at least `at_least`), busiest first."""
        wall = max(time.monotonic() - self._t0, 1e-6)
        out = {}
        for name, pid in self.pids.items():
            before = self._start.get(name, {})
            used = {thread: round(100 * (seconds - before.get(thread, 0.0)) / wall, 2)
                    for thread, seconds in thread_cpu_seconds(pid).items()}
            busy = {t: pct for t, pct in sorted(used.items(), key=lambda kv: -kv[1]) if pct >= at_least}
            if busy:
                out[name] = busy
        return out


def memory_mb(pid: int, field: str = "VmRSS") -> float | None:
    """VmRSS (now) or VmHWM (peak) of a process in MB; None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def platform_pids() -> dict[str, int]:
    """The local broker and store, from `make up`'s pid files (absent when external)."""
    out = {}
    for name in ("kafka", "ferretdb"):
        try:
            pid = int((ROOT / "var" / "run" / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{pid}").exists():
            out[name] = pid
    return out


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICKS


class CpuWindow:
    """CPU% of named processes between start() and stop(), in percent of one core; `other`
    is what the rest of the machine used meanwhile (anything above ~5 % disturbs a run)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self._start: dict[str, float] = {}
        self._t0 = 0.0
        self._busy0 = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._busy0 = machine_busy_seconds()
        self._start = {name: s for name, pid in self.pids.items() if (s := cpu_seconds(pid)) is not None}

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._t0, 1e-6)
        out = {}
        for name, pid in self.pids.items():
            now = cpu_seconds(pid)
            if now is not None and name in self._start:
                out[name] = round(100 * (now - self._start[name]) / wall, 1)
        machine = 100 * (machine_busy_seconds() - self._busy0) / wall
        out["other"] = round(max(0.0, machine - sum(out.values())), 1)
        return out


async def cpu_percent(pids: dict[str, int], seconds: float) -> dict[str, float]:
    window = CpuWindow(pids)
    window.start()
    await asyncio.sleep(seconds)
    return window.stop()


class PeakMemory:
    """The highest VmHWM (peak resident set) seen for each named process."""

    def __init__(self) -> None:
        self.peak: dict[str, float] = {}

    def sample(self, pids: dict[str, int]) -> None:
        for name, pid in pids.items():
            value = memory_mb(pid, "VmHWM")
            if value is not None:
                self.peak[name] = round(max(self.peak.get(name, 0.0), value), 1)
