"""Profiler evidence: cProfile of in-process code, py-spy samples of running processes.

Each profile is written in full to var/bench/ and summarised as its top functions, which
go into latest.json and docs/benchmarks.md."""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devtools.bench.common import ROOT, say

PY_SPY_VERSION = "0.4.2"
TOP = 15


def _where(path: str) -> str:
    """A short module path: repository-relative, or from site-packages on."""
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path.rsplit("/", 1)[-1]


def _rel(path: Path) -> str:
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(resolved)


def summarise(profile: cProfile.Profile, path: Path, title: str) -> dict[str, Any]:
    """Write the full statistics (text and .prof) and return the top functions by own time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile.dump_stats(str(path.with_suffix(".prof")))
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(40)
    path.write_text(f"{title}\n\n{text.getvalue()}")
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1e-9
    rows = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:TOP]
    top = [{"function": f"{_where(file)}:{line}({name})", "calls": nc, "own_s": round(tt, 3),
            "own_pct": round(100 * tt / total, 1), "cumulative_s": round(ct, 3)}
           for (file, line, name), (_cc, nc, tt, ct, _callers) in rows]
    ours = [kv for kv in raw.items() if any(m in kv[0][0] for m in ("/tongban/", "/aiokafka/", "/fastavro/"))]
    cumulative = [{"function": f"{_where(file)}:{line}({name})", "calls": nc, "cumulative_s": round(ct, 3),
                   "cumulative_pct": round(100 * ct / total, 1)}
                  for (file, line, name), (_cc, nc, _tt, ct, _callers)
                  in sorted(ours, key=lambda kv: kv[1][3], reverse=True)[:TOP]]
    return {"title": title, "file": _rel(path), "total_s": round(total, 3), "top": top, "cumulative": cumulative}


def profile_call(work: Callable[[], None], path: str, title: str) -> dict[str, Any]:
    profile = cProfile.Profile()
    profile.enable()
    try:
        work()
    finally:
        profile.disable()
    return summarise(profile, Path(path), title)


# ------------------------------------------------------------------------------- py-spy


def py_spy() -> str | None:
    """The py-spy binary: the venv's, the PATH's, or installed into the venv now (once)."""
    local = Path(sys.executable).parent / "py-spy"
    if local.exists():
        return str(local)
    found = shutil.which("py-spy")
    if found:
        return found
    say(f"installing py-spy=={PY_SPY_VERSION} into the venv for the pipeline profiles")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"py-spy=={PY_SPY_VERSION}"],
                          capture_output=True, text=True)
    if done.returncode != 0 or not local.exists():
        say(f"py-spy unavailable ({done.stderr.strip()[-200:]}); pipeline profiles skipped")
        return None
    return str(local)


async def sample_processes(pids: dict[str, int], seconds: float, out_dir: Path, tag: str,
                           rate: int = 100) -> dict[str, Any]:
    """Sample several processes at once with py-spy (on-CPU stacks only) for `seconds`."""
    binary = py_spy()
    if binary is None:
        return {}
    _make_dir(out_dir)
    procs: dict[str, tuple[asyncio.subprocess.Process, Path]] = {}
    for name, pid in pids.items():
        target = out_dir / f"pyspy-{tag}-{name}.txt"
        proc = await asyncio.create_subprocess_exec(
            binary, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate),
            "--format", "raw", "--nonblocking", "--full-filenames", "--output", str(target),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        procs[name] = (proc, target)
    result: dict[str, Any] = {}
    for name, (proc, target) in procs.items():
        try:
            _, err = await asyncio.wait_for(proc.communicate(), seconds + 30)
        except TimeoutError:
            proc.kill()
            continue
        if target.exists():
            result[name] = summarise_collapsed(target, f"py-spy {tag}: {name}")
        else:
            result[name] = {"error": err.decode(errors="replace").strip()[-300:]}
    return result


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def summarise_collapsed(path: Path, title: str) -> dict[str, Any]:
    """Top functions of py-spy's raw (collapsed) output: inclusive and own share of samples."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    total = total or 1
    return {
        "title": title, "file": _rel(path), "samples": total,
        "inclusive": [{"function": f, "pct": round(100 * c / total, 1)} for f, c in inclusive.most_common()
                      if not plumbing(f)][:TOP],
        "own": [{"function": f, "pct": round(100 * c / total, 1)} for f, c in own.most_common(TOP)],
    }


def plumbing(function: str) -> bool:
    """Frames nearly every sample has: interpreter start-up, entry points, the event loop."""
    return any(p in function for p in (
        "runpy", "<module>", "run_until_complete (", "run_forever (", "_run_once (", "_run (events.py)",
        "run (runners.py)", "main (app.py)", "main (__main__.py)", "run (threading.py)", "_bootstrap",
        "main (core.py)", "invoke (core.py)", "__call__ (base.py)", "execute_from_commandline"))


def _frame(frame: str) -> str:
    """`func (path:line)` -> `func (short/path)`, dropping the line so a function counts once."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({_where(where)})" if where else name
