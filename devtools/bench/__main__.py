"""python -m devtools.bench [--quick] [--history N] [--only STEP,...]

Measures, in one run on the local broker and store (`make up topics` first; `make bench`
does that), in this order:

  codec     codec_ratio: tongban.codec against bare fastavro on the same records
  chains    raw_chain_msgs_per_s, faust and runtime_msgs_per_s over five hops, each hop its
            own process; then cProfile of the runtime and raw chains in one process
  pipeline  pipeline_apps_per_s, p50/p95/p99 at half of saturation (and per stage), the
            latency curve, pipeline_apps_per_s_with_history after --history applications,
            restore_s, idle_cpu_pct, max_service_rss_mb

and writes var/bench/latest.json, var/bench/latency-vs-load.png and the generated section of
docs/benchmarks.md. The whole run keeps within --budget seconds (default 840): the history
phase stops early, and says so, when pushing --history applications would not fit.
Exit status: 0 when every step ran (a missed target is a finding, not a failure), 1 if a
step failed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from typing import Any

from devtools.bench import chain, codec, report
from devtools.bench.common import OUT, ROOT, rounded, say
from devtools.bench.pipeline import Pipeline, Plan
from devtools.bench.profiling import summarise

STEPS = ("codec", "chains", "pipeline")
# Seconds the phases after history take at most (saturation again, restore, idle, clean-up).
AFTER_HISTORY_S = {"full": 170.0, "quick": 90.0}
CLEAN_UP_S = 30.0  # stopping the stack, dropping the namespace, writing the results


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="short windows and small counts (history 500, chains 3,000 records): a check, not figures")
    parser.add_argument("--history", type=int, default=None,
                        help="applications handled before the second saturation run (default 50,000; quick 500)")
    parser.add_argument("--chain-records", type=int, default=None,
                        help="records through each five-hop chain (default 20,000; quick 3,000)")
    parser.add_argument("--only", default=",".join(STEPS), help=f"steps to run, of {','.join(STEPS)}")
    parser.add_argument("--budget", type=float, default=840.0,
                        help="seconds the whole run may take (default 840: make bench stays under 15 minutes)")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiles (cProfile and py-spy)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; choose from {','.join(STEPS)}")
    return args


def plan_for(args: argparse.Namespace, deadline: float) -> Plan:
    mode = "quick" if args.quick else "full"
    history = args.history if args.history is not None else (500 if args.quick else 50_000)
    history_deadline = deadline - AFTER_HISTORY_S[mode]
    run_deadline = deadline - CLEAN_UP_S
    if args.quick:
        return Plan(levels=(128, 512), inflight=256, warmup_s=3, first_warmup_s=10, saturation_s=8, profile_s=5,
                    curve=(0.25, 0.5, 0.9), curve_s=8, drain_s=30, history=history,
                    history_deadline=history_deadline, probes=5, restore_timeout_s=60, idle_s=5,
                    run_deadline=run_deadline,
                    profile=not args.no_profile)
    return Plan(levels=(256, 512, 1024), inflight=256, warmup_s=5, saturation_s=15, profile_s=10,
                curve=(0.25, 0.5, 0.75, 0.9), curve_s=15, drain_s=30, history=history,
                history_deadline=history_deadline, probes=20, restore_timeout_s=120, idle_s=10,
                run_deadline=run_deadline,
                profile=not args.no_profile)


def clean_outputs() -> None:
    """Forget the previous run's logs, profiles and leftovers (var/bench is the bench's own)."""
    OUT.mkdir(parents=True, exist_ok=True)
    for folder in ("logs", "faust", "state"):
        shutil.rmtree(OUT / folder, ignore_errors=True)
    for pattern in ("pyspy-*.txt", "profile-*.txt", "profile-*.prof"):
        for path in OUT.glob(pattern):
            path.unlink()


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


async def run_chains(n: int, profile: bool, result: dict[str, Any], errors: dict[str, str]) -> None:
    chains: dict[str, Any] = {}
    result["details"]["chains"] = chains
    missing = chain.runtime_missing()
    for kind in chain.KINDS:
        if kind == "runtime" and missing:
            chains[kind] = {"skipped": missing}
            say(f"runtime chain skipped: {missing}")
            continue
        say(f"{kind} chain: {n:,} records through five hops")
        try:
            if kind == "raw":  # its windows are short (1-3 s), so the median of three runs
                runs = sorted([await chain.run_chain(kind, n) for _ in range(3)], key=lambda r: r["msgs_per_s"])
                chains[kind] = {**runs[1], "runs_msgs_per_s": [r["msgs_per_s"] for r in runs]}
            else:
                chains[kind] = await chain.run_chain(kind, n)
            say(f"{kind} chain: {chains[kind]['msgs_per_s']:,} msgs/s")
        except Exception as exc:
            errors[f"{kind} chain"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
    if not profile:
        return
    for kind, count in (("runtime", max(n // 4, 1000)), ("raw", n)):
        if kind == "runtime" and missing:
            continue
        say(f"{kind} chain in one process under cProfile ({count:,} records)")
        profiler = cProfile.Profile()
        try:
            figures = await chain.run_chain(kind, count, inprocess=True, profile=profiler)
            chains[f"{kind}_inprocess_profiled"] = figures
            result["details"]["profiles"][f"{kind}_chain"] = summarise(
                profiler, OUT / f"profile-{kind}-chain.txt",
                f"{kind} chain, five hops in one process, {count:,} records, {figures['msgs_per_s']:,} msgs/s "
                "under the profiler")
        except Exception as exc:
            errors[f"{kind} chain profile"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()


def figures_of(result: dict[str, Any]) -> None:
    """The headline figures, at the top level of the result."""
    details = result["details"]
    codec_result = details.get("codec") or {}
    chains = details.get("chains") or {}
    pipeline = details.get("pipeline") or {}

    def rate(kind: str) -> float | None:
        value = chains.get(kind) or {}
        return value.get("msgs_per_s")

    runtime, raw, faust = rate("runtime"), rate("raw"), rate("faust")
    sat = (pipeline.get("saturation") or {}).get("apps_per_s")
    sat_history = (pipeline.get("saturation_with_history") or {}).get("apps_per_s")
    half: dict[str, Any] = next((p for p in pipeline.get("curve", []) if p.get("fraction_of_saturation") == 0.5), {})
    result.update({
        "pipeline_apps_per_s": sat,
        "pipeline_apps_per_s_with_history": sat_history,
        "history_applications": (pipeline.get("history") or {}).get("reached"),
        "history_ratio": rounded(sat_history / sat, 3) if sat and sat_history is not None else None,
        "p50_ms": half.get("p50_ms"), "p95_ms": half.get("p95_ms"), "p99_ms": half.get("p99_ms"),
        "stages_at_half_saturation": half.get("stages"),
        "runtime_msgs_per_s": runtime, "raw_chain_msgs_per_s": raw, "faust_msgs_per_s": faust,
        "ratio_runtime_vs_raw": rounded(runtime / raw, 3) if runtime and raw else None,
        "ratio_runtime_vs_faust": rounded(runtime / faust, 3) if runtime and faust else None,
        "codec_ratio": codec_result.get("codec_ratio"),
        "restore_s": (pipeline.get("restore") or {}).get("restore_s"),
        "idle_cpu_pct": (pipeline.get("idle") or {}).get("total_pct"),
        "max_service_rss_mb": pipeline.get("max_service_rss_mb"),
    })
    figures = {k: v for k, v in result.items() if k in report.TARGETS}
    result["targets"] = {name: label for name, (_op, _t, label) in report.TARGETS.items()}
    result["met"] = report.verdicts(figures)
    history = pipeline.get("history") or {}
    if history and not history.get("complete"):
        result["run"]["history_note"] = (f"{history['reached']:,} of the {history['target']:,} applications wanted "
                                         "fitted in the time budget; the 'with history' figures are after that many")
    elif history:
        result["run"]["history_note"] = f"after {history['reached']:,} applications"


async def main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    deadline = started + args.budget
    steps = args.only.split(",")
    n = args.chain_records or (3_000 if args.quick else 20_000)
    mode = "quick" if args.quick else "full"
    command = "make bench" if os.environ.get("MAKELEVEL") else "python -m devtools.bench " + " ".join(sys.argv[1:])
    result: dict[str, Any] = {
        "run": {"started": datetime.now(UTC).isoformat(timespec="seconds"), "mode": mode, "command": command.strip(),
                "commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "--porcelain")),
                "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
                "steps": steps, "chain_records": n, "load_average_at_start": [round(v, 2) for v in os.getloadavg()]},
        "details": {"profiles": {}},
    }
    errors: dict[str, str] = {}
    clean_outputs()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    if os.getloadavg()[0] > 1.5:
        say(f"the machine is busy (load average {os.getloadavg()[0]:.1f}): figures will be low; "
            "run when nothing else does (`var/bench/latest.json` notes the load and the other CPU use)")
    if "codec" in steps:
        say("codec: tongban.codec against bare fastavro")
        try:
            seconds = 0.6 if args.quick else 1.5
            result["details"]["codec"] = codec.run(seconds, None if args.no_profile else str(OUT / "profile-codec.txt"))
            if "profile" in result["details"]["codec"]:
                result["details"]["profiles"]["codec"] = result["details"]["codec"].pop("profile")
            say(f"codec_ratio {result['details']['codec']['codec_ratio']}")
        except Exception as exc:
            errors["codec"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
    if "chains" in steps:
        await run_chains(n, not args.no_profile, result, errors)
    if "pipeline" in steps:
        missing = chain.runtime_missing()
        if missing:
            result["details"]["pipeline"] = {"skipped": f"the services need the runtime v2: {missing}"}
            say(f"pipeline skipped: {missing}")
        else:
            try:
                pipeline = Pipeline(plan_for(args, deadline))
                result["details"]["pipeline"] = pipeline.result
                await pipeline.run()
            except Exception as exc:
                errors["pipeline"] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            for phase, error in (result["details"]["pipeline"].get("errors") or {}).items():
                errors[f"pipeline {phase}"] = error

    result["run"]["duration_s"] = round(time.monotonic() - started)
    if errors:
        result["errors"] = errors
    figures_of(result)
    path = report.write_json(result)
    png = report.plot_curve(result)
    if not args.no_docs:
        report.write_docs(result)
    say(f"wrote {path.relative_to(ROOT)}" + (f", {png.relative_to(ROOT)}" if png else "")
        + ("" if args.no_docs else f", {report.DOCS.relative_to(ROOT)}"))
    for name in report.FIGURES:
        verdict = result["met"].get(name)
        mark = "" if verdict is None else ("  ok" if verdict else "  MISSED " + report.TARGETS[name][2])
        print(f"{name:<34} {report._fmt(result.get(name)):>12}{mark}")
    for step, error in errors.items():
        print(f"FAILED {step}: {error}")
    return 1 if errors else 0


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so a SIGTERM still stops the services and hops and drops the namespaces


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupted)
    sys.exit(asyncio.run(main(parse(None))))
