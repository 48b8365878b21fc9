"""What a run writes: var/bench/latest.json, the latency curve (PNG) and the generated part
of docs/benchmarks.md (between its markers; the hand-written rest is kept)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devtools.bench.common import OUT, ROOT

DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- bench:results:begin (written by make bench; edits here are overwritten) -->"
END = "<!-- bench:results:end -->"
CURVE_PNG = OUT / "latency-vs-load.png"

# figure -> (comparison, target, label)
TARGETS: dict[str, tuple[str, float, str]] = {
    "pipeline_apps_per_s": (">=", 100, "≥ 100"),
    "history_ratio": (">=", 0.9, "≥ 0.9"),
    "p99_ms": ("<", 1000, "< 1,000 ms"),
    "ratio_runtime_vs_raw": (">=", 0.7, "≥ 0.7"),
    "ratio_runtime_vs_faust": (">", 1, "> 1"),
    "codec_ratio": (">=", 0.9, "≥ 0.9"),
    "restore_s": ("<", 30, "< 30 s"),
    "idle_cpu_pct": ("<", 5, "< 5 % (of one core)"),
    "max_service_rss_mb": ("<", 200, "< 200 MB per service"),
}
FIGURES = ["pipeline_apps_per_s", "pipeline_apps_per_s_with_history", "history_applications", "history_ratio",
           "p50_ms", "p95_ms", "p99_ms", "runtime_msgs_per_s", "raw_chain_msgs_per_s", "faust_msgs_per_s",
           "ratio_runtime_vs_raw", "ratio_runtime_vs_faust", "codec_ratio", "restore_s", "idle_cpu_pct",
           "max_service_rss_mb"]


def verdicts(figures: dict[str, Any]) -> dict[str, bool | None]:
    out: dict[str, bool | None] = {}
    for name, (op, target, _label) in TARGETS.items():
        value = figures.get(name)
        if value is None:
            out[name] = None
        elif op == ">=":
            out[name] = value >= target
        elif op == ">":
            out[name] = value > target
        else:
            out[name] = value < target
    return out


def write_json(result: dict[str, Any]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "latest.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n")
    return path


def plot_curve(result: dict[str, Any]) -> Path | None:
    """Latency percentiles against offered load, with the measured saturation marked."""
    curve = ((result.get("details") or {}).get("pipeline") or {}).get("curve") or []
    points = [p for p in curve if p.get("p50_ms") is not None]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offered = [p["offered_apps_per_s"] for p in points]
    fig, ax = plt.subplots(figsize=(8, 5))
    for key, style in (("p50_ms", "o-"), ("p95_ms", "s--"), ("p99_ms", "^:")):
        ax.plot(offered, [p[key] for p in points], style, label=key.removesuffix("_ms"))
    saturation = result.get("pipeline_apps_per_s")
    if saturation:
        ax.axvline(saturation, color="grey", linestyle="-.", label=f"saturation {saturation} apps/s")
    ax.axhline(1000, color="red", linewidth=0.8, linestyle=":", label="p99 target 1,000 ms")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (applications/s, Poisson arrivals)")
    ax.set_ylabel("submit → terminal (ms)")
    ax.set_title(f"Tongban pipeline: submit → terminal against offered load "
                 f"({result.get('run', {}).get('started', '')[:16].replace('T', ' ')} UTC)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(CURVE_PNG, dpi=110)
    plt.close(fig)
    return CURVE_PNG


# ------------------------------------------------------------------------------- markdown


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines


def _cprofile_block(profile: dict[str, Any] | None, rows: int = 12) -> list[str]:
    if not profile or "top" not in profile:
        return []
    lines = [f"cProfile, {profile['title']} (`{profile['file']}`, {profile['total_s']} s profiled). "
             "Own time:", ""]
    lines += _table(["function", "calls", "own s", "own %"],
                    [[f"`{r['function']}`", r["calls"], r["own_s"], r["own_pct"]] for r in profile["top"][:rows]])
    if profile.get("cumulative"):
        lines += ["", "Cumulative (tongban, aiokafka, fastavro frames):", ""]
        lines += _table(["function", "calls", "cumulative s", "% of profiled time"],
                        [[f"`{r['function']}`", r["calls"], r["cumulative_s"], r["cumulative_pct"]]
                         for r in profile["cumulative"][:rows]])
    return [*lines, ""]


def _pyspy_block(name: str, profile: dict[str, Any] | None, rows: int = 10) -> list[str]:
    if not profile or "inclusive" not in profile:
        return [f"py-spy {name}: {profile.get('error') if profile else 'no samples'}", ""]
    lines = [f"py-spy, {profile['title']} (`{profile['file']}`, {profile['samples']} on-CPU samples):", ""]
    inclusive = profile["inclusive"][:rows]
    own = profile["own"][:rows]
    lines += _table(["inclusive: function", "%", "own: function", "%"],
                    [[f"`{inclusive[i]['function']}`" if i < len(inclusive) else "",
                      inclusive[i]["pct"] if i < len(inclusive) else "",
                      f"`{own[i]['function']}`" if i < len(own) else "", own[i]["pct"] if i < len(own) else ""]
                     for i in range(max(len(inclusive), len(own)))])
    return [*lines, ""]


def _busiest(cpu: dict[str, float], candidates: dict[str, Any], n: int = 2) -> list[str]:
    return [name for name, _ in sorted(cpu.items(), key=lambda kv: -kv[1]) if name in candidates][:n]


def generated_section(result: dict[str, Any]) -> str:
    run = result.get("run", {})
    details = result.get("details", {})
    pipeline = details.get("pipeline") or {}
    chains = details.get("chains") or {}
    codec = details.get("codec") or {}
    met = result.get("met", {})
    out: list[str] = [BEGIN, "", f"## Latest run: {run.get('started', '?')}", ""]
    out += [f"`{run.get('command', 'make bench')}` on {run.get('machine', '?')}; commit `{run.get('commit', '?')}`"
            f"{' (uncommitted changes)' if run.get('dirty') else ''}; {run.get('duration_s', '?')} s in all. "
            f"Every figure below comes from this one run, on the same broker and store.", ""]
    noise = _noise(pipeline, run)
    if noise:
        out += [noise, ""]
    if run.get("history_note"):
        out += [f"**History:** {run['history_note']}.", ""]
    if result.get("errors"):
        out += ["**Steps that failed:**", ""] + [f"- {k}: {v}" for k, v in result["errors"].items()] + [""]

    out += ["### Figures against the targets", ""]
    rows = []
    for name in FIGURES:
        target = TARGETS.get(name)
        verdict = met.get(name)
        rows.append([f"`{name}`", result.get(name), target[2] if target else "",
                     "" if target is None else ("—" if verdict is None else ("met" if verdict else "**missed**"))])
    out += [*_table(["figure", "value", "target", ""], rows), ""]

    half = next((p for p in pipeline.get("curve", []) if p.get("fraction_of_saturation") == 0.5), None)
    if half:
        out += [f"### Latency at half of saturation ({half['offered_apps_per_s']} apps/s offered, "
                f"{half['count']} applications)", ""]
        out += _table(["stage", "count", "p50 ms", "p95 ms", "p99 ms", "max ms"],
                      [[stage, s["count"], s["p50_ms"], s["p95_ms"], s["p99_ms"], s["max_ms"]]
                       for stage, s in half.get("stages", {}).items()]
                      + [["**submit → terminal**", half["count"], half["p50_ms"], half["p95_ms"], half["p99_ms"],
                          half["max_ms"]]])
        out += ["", "Stages run from one lifecycle event's `occurred_at` to the next one's (submit: the "
                "client's clock before the call; observed: when the bench's own consumer read the terminal "
                "event), for applications that ended DELIVERED.", ""]
    if pipeline.get("curve"):
        out += ["### Latency against offered load", "",
                f"Plot: `{CURVE_PNG.relative_to(ROOT)}` (not committed; `make bench` draws it).", ""]
        out += _table(["fraction of saturation", "offered apps/s", "achieved apps/s", "count", "p50 ms",
                       "p95 ms", "p99 ms", "unfinished", "CPU % (of 200)", "txn log appends/s"],
                      [[p["fraction_of_saturation"], p["offered_apps_per_s"], p["achieved_apps_per_s"], p["count"],
                        p["p50_ms"], p["p95_ms"], p["p99_ms"], p["unfinished"], p.get("cpu_pct_system"),
                        p.get("txn_log_appends_per_s")] for p in pipeline["curve"]])
        out += ["", "CPU: the broker, the store, the services, the simulator and its providers while the "
                "applications arrive. Transaction log appends: what the broker's transaction coordinator wrote "
                "meanwhile; a transaction appends 3.", ""]
        out += [""] + [f"- {p['offered_apps_per_s']} apps/s: {p['note']}" for p in pipeline["curve"] if p.get("note")]
        out += [""]

    if chains:
        out += ["### Five-hop chains", ""]
        out += _table(["chain", "msgs/s", "records", "seconds", "layout", "duplicates at hop5",
                       "idle 5 hops p50 / p99 ms"],
                      [[kind, c.get("msgs_per_s"), c.get("records"), c.get("seconds"), c.get("layout"),
                        c.get("duplicates"),
                        f"{c['trickle']['p50_ms']} / {c['trickle']['p99_ms']}" if c.get("trickle") else ""]
                       for kind, c in chains.items() if isinstance(c, dict) and "records" in c])
        out += ["", "Idle 5 hops: after the measured run, records sent one at a time (20 a second, each "
                "acknowledged before the next) to hop0; from each send to its arrival at hop5."]
        out += [""]
    if codec.get("received"):
        out += ["### Codec", ""]
        out += _table(["records", "codec round trips/s", "bare fastavro round trips/s", "ratio", "encode ratio",
                       "decode ratio", "bytes"],
                      [[name, c["codec_round_trips_per_s"], c["fastavro_round_trips_per_s"], c["ratio"],
                        c["encode_ratio"], c["decode_ratio"], c["encoded_bytes_avg"]]
                       for name, c in (("ApplicationReceived", codec["received"]),
                                       ("ApplicationUnroutable", codec["unroutable"]))])
        out += [""]
    if pipeline:
        out += _pipeline_details(pipeline)
    out += _evidence(result)
    out += [END]
    return "\n".join(out)


def _noise(pipeline: dict[str, Any], run: dict[str, Any]) -> str:
    """How much else the machine was doing: the figures are only comparable on a quiet one."""
    windows = {"saturation": (pipeline.get("saturation") or {}).get("cpu_pct"),
               "saturation with history": (pipeline.get("saturation_with_history") or {}).get("cpu_pct"),
               "idle": (pipeline.get("idle") or {}).get("cpu_pct")}
    other = {k: v["other"] for k, v in windows.items() if v and "other" in v}
    load = (run.get("load_average_at_start") or [None])[0]
    if not other and load is None:
        return ""
    text = (f"Machine: load average {load} at the start; CPU used by processes outside the run: "
            + ", ".join(f"{v} % during {k}" for k, v in other.items()) + ".")
    if max(other.values(), default=0) > 10 or (load or 0) > 1.5:
        text = "**The machine was busy with other work during this run: the figures are low.** " + text
    return text


def _pipeline_details(pipeline: dict[str, Any]) -> list[str]:
    out = ["### Pipeline details", ""]
    steps = (pipeline.get("saturation") or {}).get("steps") or []
    if steps:
        out += ["Saturation search (applications open → apps/s): "
                + ", ".join(f"{s['inflight']} → {s['apps_per_s']}" for s in steps) + ".", ""]
    for key, label in (("saturation", "CPU % (of one core) at saturation"),
                       ("saturation_with_history", "CPU % at saturation with history")):
        sat = pipeline.get(key) or {}
        if sat.get("cpu_pct"):
            out += [f"{label} ({sat['apps_per_s']} apps/s, {sat['inflight']} applications open, after "
                    f"{sat['history_before']:,} applications): "
                    + ", ".join(f"{k} {v}" for k, v in sorted(sat["cpu_pct"].items(), key=lambda kv: -kv[1])), ""]
    history = pipeline.get("history") or {}
    if history:
        out += [f"History: {history['reached']:,} applications handled of {history['target']:,} wanted; the "
                f"history phase ran {history['seconds']} s at {history['apps_per_s']} apps/s.", ""]
        if history.get("timeline"):
            out += ["Throughput as history grew (every 30 s): " + ", ".join(
                f"{t['handled']:,} → {t['apps_per_s']}/s" for t in history["timeline"]) + ".", ""]
    restore = pipeline.get("restore") or {}
    if restore:
        out += [f"Restore: {restore['service']} stopped, {restore['probes']} probe applications queued in front "
                f"of it, its local state ({restore['local_state_deleted_mb']} MB) deleted, started again: healthy "
                f"(state restored from its changelog, {_fmt(restore.get('changelog_records_restored'))} records) "
                f"after {restore['healthy_s']} s, every probe terminal after {restore['restore_s']} s "
                f"({restore['probes_unfinished']} unfinished).", ""]
    idle = pipeline.get("idle") or {}
    if idle.get("cpu_pct"):
        out += [f"Idle CPU % over {idle['window_s']} s with {idle['history']:,} applications handled: "
                + ", ".join(f"{k} {v}" for k, v in sorted(idle["cpu_pct"].items(), key=lambda kv: -kv[1]))
                + f" (total {idle['total_pct']}). Applications whose finished state left the hot state in "
                f"that window (ten minutes after they finished): {_fmt(idle.get('evictions_due'))}; in the "
                f"eviction round before it, which the window waits out: "
                f"{_fmt(idle.get('evicted_in_the_round_before'))}.", ""]
        if idle.get("threads_pct"):
            out += ["Idle CPU % by thread (threads under 0.1 % left out; the interpreter's own thread "
                    "carries the process's name):", ""]
            out += _table(["process", "threads"],
                          [[name, ", ".join(f"{t} {v}" for t, v in threads.items())]
                           for name, threads in idle["threads_pct"].items()])
            out += [""]
    if pipeline.get("peak_rss_mb"):
        out += ["Peak RSS (VmHWM) in MB: " + ", ".join(f"{k} {v}" for k, v in pipeline["peak_rss_mb"].items())
                + ".", ""]
    out += [f"Outcomes seen: {pipeline.get('outcomes')}; submit errors: {pipeline.get('submit_errors') or 'none'}.",
            ""]
    return out


def _evidence(result: dict[str, Any]) -> list[str]:
    """Profiler output for every missed target."""
    met = result.get("met", {})
    details = result.get("details", {})
    pipeline = details.get("pipeline") or {}
    profiles = details.get("profiles") or {}
    out = ["### Where targets are missed: profiler evidence", ""]
    missed = [name for name, ok in met.items() if ok is False]
    saturation = (pipeline.get("saturation") or {}).get("apps_per_s") or 0
    stalls = [t for t in (pipeline.get("history") or {}).get("timeline") or []
              if t["apps_per_s"] < 0.5 * saturation]
    if stalls:  # not a target of its own, but what the history phase went through
        missed.append("stalls")
        out += [f"During the history phase throughput fell below half of saturation {len(stalls)} time(s) "
                "(30 s intervals); the evidence is under the pipeline below.", ""]
    if not missed:
        return [*out, "Every measured target is met.", ""]
    out += ["Missed: " + ", ".join(f"`{m}`" for m in missed if m != "stalls") + ".", ""]
    sections: list[tuple[set[str], str, Callable[[], list[str]]]] = [
        ({"pipeline_apps_per_s", "history_ratio", "p99_ms", "stalls"}, "Pipeline throughput, latency and stalls",
         lambda: _pipeline_evidence(pipeline)),
        ({"ratio_runtime_vs_raw", "ratio_runtime_vs_faust"}, "Runtime chain against raw aiokafka and faust",
         lambda: _cprofile_block(profiles.get("runtime_chain")) + _cprofile_block(profiles.get("raw_chain"), 8)),
        ({"codec_ratio"}, "Codec", lambda: _cprofile_block(profiles.get("codec"))),
        ({"idle_cpu_pct"}, "Idle CPU", lambda: _idle_evidence(pipeline)),
    ]
    for names, title, block in sections:
        if names & set(missed):
            out += [f"#### {title}", "", *block()]
    return out


def _top(cpu: dict[str, float], n: int = 4) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])[:n])


def _per_app_table(steps: list[dict[str, Any]], figure: str, title: str) -> list[str]:
    """One saturation figure per application (`total` first, then per topic, largest first)
    for each level: in all and the 6 largest topics."""
    levels = [(st["inflight"], st.get(figure) or {}) for st in steps]
    if not any(per for _, per in levels):
        return []
    return [f"{title}, in all and the 6 largest topics:", "",
            *_table(["open", "in all", "largest topics"],
                    [[level, per.get("total"), ", ".join(f"{t} {n}" for t, n in list(per.items())[1:7])]
                     for level, per in levels]), ""]


def _pipeline_evidence(pipeline: dict[str, Any]) -> list[str]:
    sat = pipeline.get("saturation") or {}
    profiles = sat.get("profiles") or {}
    out = []
    steps = sat.get("steps") or []
    if steps:
        out += ["Saturation search: CPU % of one core per process (the machine has 200 %), each service's "
                "backlog (records behind its inputs) and its resident set (MB) at the end of the window:", ""]
        out += _table(["open", "apps/s", "CPU (top 4)", "txn log appends/s", "backlog", "RSS MB (top 3)"],
                      [[st["inflight"], st["apps_per_s"], _top(st["cpu_pct"]), st.get("txn_log_appends_per_s"),
                        ", ".join(f"{k} {v}" for k, v in (st.get("backlog_at_end") or {}).items() if v),
                        _top(st.get("rss_mb") or {}, 3)]
                       for st in steps])
        out += [""]
        out += _per_app_table(steps, "log_offsets_per_app",
                              "Log offsets appended per finished application (records and transaction markers; "
                              "a commit writes one marker to each partition it touched)")
        out += _per_app_table(steps, "log_bytes_per_app",
                              "Log bytes written per finished application (the local broker's segments)")
    history = pipeline.get("history") or {}
    timeline = history.get("timeline") or []
    if timeline:
        out += ["History phase, every 30 s:", ""]
        out += _table(["handled", "apps/s", "CPU (top 4)", "backlog"],
                      [[t["handled"], t["apps_per_s"], _top(t.get("cpu_pct") or {}),
                        ", ".join(f"{k} {v}" for k, v in (t.get("backlog") or {}).items() if v)] for t in timeline])
        out += [""]
    cpu = sat.get("cpu_pct") or {}
    for name in _busiest(cpu, profiles, 3):
        out += _pyspy_block(name, profiles.get(name))
    for tag, stall in (history.get("stalls") or {}).items():
        out += [f"While throughput had fallen ({tag}, at {stall['handled']:,} applications):", ""]
        for name, profile in (stall.get("profiles") or {}).items():
            out += _pyspy_block(name, profile)
    return out


def _idle_evidence(pipeline: dict[str, Any]) -> list[str]:
    idle = pipeline.get("idle") or {}
    out = ["Idle CPU by process: " + ", ".join(f"{k} {v}" for k, v in sorted(
        (idle.get("cpu_pct") or {}).items(), key=lambda kv: -kv[1])), ""]
    for name, profile in (idle.get("profiles") or {}).items():
        out += _pyspy_block(name, profile)
    return out


TEMPLATE = """# Benchmarks

`make bench` measures the figures of issue 6 in one run on this machine's broker and store
and writes `var/bench/latest.json`, the latency curve `var/bench/latency-vs-load.png` and
the generated section below. `python -m devtools.bench --help` lists the options
(`--quick` for a short check, `--history N` for the history size).

{section}
"""


def write_docs(result: dict[str, Any], path: Path = DOCS) -> Path:
    section = generated_section(result)
    if path.exists():
        text = path.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            tail = rest.split(END, 1)[1]
            path.write_text(head + section + tail)
            return path
        path.write_text(text.rstrip() + "\n\n" + section + "\n")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TEMPLATE.format(section=section))
    return path
