"""The supervision report: who is rated badly, complained about, late, and slow to rectify.

    python -m devtools.report [--namespace NS] [--out FILE] [--window-days N]   (make report, after make demo)

Reads tongban.feedback.facts (ratings, complaints, SLA breaches and decisions counted against a
matter × division × party, their withdrawals, overdue rectifications) and tongban.feedback.flags
from the start, as the operator, and prints rankings, standing flags, the draft 通报 list,
public figures and the SLA breach rate (breaches ÷ applications decided) per matter ×
division × party over the last `--window-days`, as terminal tables (rich); writes the same
as one self-contained HTML page whose charts are drawn in the browser from the data
embedded in it (inline SVG, no network).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.table import Table

from services.feedback.domain import sla_breach_rate
from tongban import topics
from tongban.codec import CodecError, SchemaRegistry
from tongban.ops.topics import kafka_client_settings, load_declared

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "var" / "report" / "supervision.html"
TOP = 10  # rows per ranking
# What the report reads: supervision's facts and flags; the catalogue for the rollout;
# received and decided applications for volumes and handling time (their envelopes only).
SOURCES = (topics.FEEDBACK_FACTS, topics.FEEDBACK_FLAGS, topics.CATALOGUE_CHANGES, topics.APPLICATION_RECEIVED,
           topics.APPLICATION_DECIDED)
# The plan's timetable: 国办发[2020]35号 lists each matter's deadline in its `source` (the catalogue's words).
PLAN_DUES = (("2020年底前", "2020-12-31"), ("2021年底前", "2021-12-31"))
BREACH_WINDOW = timedelta(days=30)  # the SLA breach rate's window, as the flags' longest (flags.toml)


@dataclass
class PartyFigures:
    party: str
    division_code: str
    ratings: int = 0
    bad_ratings: int = 0
    complaints: int = 0
    sla_breaches: int = 0
    decided: int = 0  # applications decided with this party holding a leg of them
    overdue_rectifications: int = 0
    flags: int = 0  # standing

    @property
    def bad_rating_rate(self) -> float:
        return self.bad_ratings / self.ratings if self.ratings else 0.0

    @property
    def sla_breach_rate(self) -> float:
        return sla_breach_rate(self.sla_breaches, self.decided)


@dataclass
class Supervision:
    parties: list[PartyFigures]
    standing_flags: list[dict[str, Any]]
    excluded: list[dict[str, Any]]  # withdrawn ratings with the appeal's reason
    public: dict[str, Any]
    rankings: dict[str, list[PartyFigures]] = field(default_factory=dict)
    rollout: list[dict[str, Any]] = field(default_factory=list)  # per plan deadline and mode
    notice: list[str] = field(default_factory=list)  # draft 通报: units that missed targets
    # per matter × division × party over the window: breaches, decisions, their rate (None: nothing decided)
    breach_rates: list[dict[str, Any]] = field(default_factory=list)
    window: tuple[datetime, datetime] | None = None  # the breach rate's window, when there were facts


def breach_rates(facts: Iterable[dict[str, Any]], end: datetime, window: timedelta) -> list[dict[str, Any]]:
    """SLA breaches ÷ applications decided per matter × division × party, counting the facts
    that occurred in (end - window, end]: the worst first, then those with nothing decided."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for f in facts:
        if f["kind"] not in ("SLA_BREACH", "DECISION") or not end - window < f["occurred_at"] <= end:
            continue
        row = groups.setdefault((f["matter_code"], f["division_code"], f["party"]), {
            "matter_code": f["matter_code"], "division_code": f["division_code"], "party": f["party"],
            "sla_breaches": 0, "decided": 0})
        row["sla_breaches" if f["kind"] == "SLA_BREACH" else "decided"] += 1
    rows = [{**r, "rate": sla_breach_rate(r["sla_breaches"], r["decided"]) if r["decided"] else None}
            for r in groups.values()]
    return sorted(rows, key=lambda r: (r["rate"] is None, -(r["rate"] or 0), -r["sla_breaches"],
                                       r["matter_code"], r["division_code"], r["party"]))


def figures(events: Iterable[tuple[str, dict[str, Any]]], *, end: datetime | None = None,
            window: timedelta = BREACH_WINDOW) -> Supervision:
    """Figures from the facts and flags topics' events, in log order: a withdrawn fact no
    longer counts anywhere; a flag stands until it is cleared. The SLA breach rate per group
    is over `window` up to `end` (default: the latest fact)."""
    counted: dict[tuple[str, str], dict[str, Any]] = {}  # (group, fact id) -> fact
    excluded: list[dict[str, Any]] = []
    overdue: dict[tuple[str, str], int] = defaultdict(int)
    flags: dict[str, dict[str, Any]] = {}
    matters: set[str] = set()
    catalogue: dict[str, dict[str, Any]] = {}  # matter -> latest entry, with when it first went live
    received: dict[str, datetime] = {}
    decided: dict[str, datetime] = {}
    for event_type, e in events:
        if event_type == topics.MATTER_CHANGED_EVENT:
            first = catalogue.get(e["matter_code"], {}).get("live_since", e["envelope"]["occurred_at"])
            catalogue[e["matter_code"]] = {**e, "live_since": first}
        elif event_type == topics.APPLICATION_RECEIVED_EVENT:
            received[e["application_id"]] = e["envelope"]["occurred_at"]
        elif event_type == topics.APPLICATION_DECIDED_EVENT:
            decided[e["application_id"]] = e["envelope"]["occurred_at"]
        if event_type == topics.SUPERVISION_FACT_EVENT:
            key = (f"{e['matter_code']}|{e['division_code']}|{e['party']}", e["fact_id"])
            if e["kind"] != "DECISION":
                matters.add(e["matter_code"])
            if e["counted"]:
                counted[key] = e
            elif counted.pop(key, None) is not None and e["kind"] == "RATING":
                excluded.append({"rating_id": e["fact_id"], "matter_code": e["matter_code"],
                                 "party": e["party"], "reason": e["reason"]})
        elif event_type == topics.RECTIFICATION_OVERDUE_EVENT:
            overdue[(e["party"], e["division_code"])] += 1
        elif event_type == topics.MATTER_FLAGGED_EVENT:
            flags[e["flag_id"]] = e
        elif event_type == topics.MATTER_FLAG_CLEARED_EVENT:
            flags.pop(e["flag_id"], None)
    parties: dict[tuple[str, str], PartyFigures] = {}

    def of(party: str, division: str) -> PartyFigures:
        return parties.setdefault((party, division), PartyFigures(party, division))

    for fact in counted.values():
        p = of(fact["party"], fact["division_code"])
        if fact["kind"] == "RATING":
            p.ratings += 1
            p.bad_ratings += fact["bad"]
        elif fact["kind"] == "COMPLAINT":
            p.complaints += 1
        elif fact["kind"] == "SLA_BREACH":
            p.sla_breaches += 1
        elif fact["kind"] == "DECISION":
            p.decided += 1
    for (party, division), n in overdue.items():
        of(party, division).overdue_rectifications = n
    for flag in flags.values():
        of(flag["party"], flag["division_code"]).flags += 1
    ratings = sum(p.ratings for p in parties.values())
    bad = sum(p.bad_ratings for p in parties.values())
    live = [m for m in catalogue.values() if m["change"] != "WITHDRAWN"]
    handled = [decided[a] - received[a] for a in decided if a in received]
    public = {"matters live (catalogue)": len(live), "applications received": len(received),
              "applications decided": len(decided),
              "average handling time (received to decided)":
                  f"{sum(handled, timedelta()) / len(handled)}".split(".")[0] if handled else "-",
              "matters rated or complained about": len(matters), "ratings": ratings,
              "satisfaction (ratings 1-3)": f"{(ratings - bad) / ratings:.1%}" if ratings else "-",
              "12345 complaints counted": sum(p.complaints for p in parties.values()),
              "SLA breaches": sum(p.sla_breaches for p in parties.values()),
              "ratings excluded on appeal": len(excluded), "matters flagged now": len(flags)}
    report = Supervision(sorted(parties.values(), key=lambda p: (p.party, p.division_code)),
                         sorted(flags.values(), key=lambda f: f["flag_id"]), excluded, public)
    report.rankings = {
        "bad-rating rate": sorted((p for p in report.parties if p.ratings), key=lambda p: -p.bad_rating_rate)[:TOP],
        "complaints": sorted((p for p in report.parties if p.complaints), key=lambda p: -p.complaints)[:TOP],
        "SLA breaches": sorted((p for p in report.parties if p.sla_breaches), key=lambda p: -p.sla_breaches)[:TOP],
        "overdue rectifications": sorted((p for p in report.parties if p.overdue_rectifications),
                                         key=lambda p: -p.overdue_rectifications)[:TOP]}
    report.rollout = rollout(catalogue.values())
    if counted:
        end = end or max(f["occurred_at"] for f in counted.values())
        report.window = (end - window, end)
        report.breach_rates = breach_rates(counted.values(), end, window)
    report.notice = [f"{p.party} ({p.division_code}): {p.flags} standing flag(s), "
                     f"{p.overdue_rectifications} overdue rectification(s)"
                     for p in report.parties if p.flags or p.overdue_rectifications]
    return report


def rollout(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Matters planned and live per plan deadline and mode, and how many went live in time
    (the first time the catalogue published them, against the deadline their source names)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for m in entries:
        due = next((d for words, d in PLAN_DUES if words in m["source"]), "")
        for mode in m["modes"]:
            row = rows.setdefault((due, mode), {"due": due or "no deadline", "mode": mode, "planned": 0, "live": 0,
                                                "live_in_time": 0})
            row["planned"] += 1
            if m["change"] != "WITHDRAWN":
                row["live"] += 1
                row["live_in_time"] += bool(due) and m["live_since"].date().isoformat() <= due
    return [rows[k] for k in sorted(rows, key=lambda k: (k[0] or "~", k[1]))]  # no deadline last


# ---------------------------------------------------------------------------- reading


async def read_all(namespace: str, registry: SchemaRegistry) -> list[tuple[str, dict[str, Any]]]:
    """Every decodable event on the report's topics (SOURCES), up to their current ends."""
    consumer = AIOKafkaConsumer(**kafka_client_settings(), group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest")
    await consumer.start()
    try:
        existing = await consumer.topics()
        wanted = {namespace + t for t in SOURCES}
        partitions = [TopicPartition(spec.name, p) for spec in load_declared(namespace)
                      if spec.name in wanted & existing for p in range(spec.partitions)]
        events: list[tuple[str, dict[str, Any]]] = []
        if not partitions:
            return events  # nothing declared in this namespace yet
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    try:
                        events.append(registry.decode(record.value))
                    except CodecError:
                        continue  # not an event (a test's marker of another kind is still decodable)
        return events
    finally:
        await consumer.stop()


# ---------------------------------------------------------------------------- rendering

COLUMNS = (("party", "party"), ("division", "division_code"), ("ratings", "ratings"), ("bad", "bad_ratings"),
           ("bad rate", "bad_rating_rate"), ("complaints", "complaints"), ("SLA breaches", "sla_breaches"),
           ("decided", "decided"), ("breach rate", "sla_breach_rate"), ("overdue rectif.", "overdue_rectifications"),
           ("flags", "flags"))
RATE_COLUMNS = (("matter", "matter_code"), ("division", "division_code"), ("party", "party"),
                ("SLA breaches", "sla_breaches"), ("decided", "decided"), ("breach rate", "rate"))


def rate_cell(row: dict[str, Any], column: str) -> str:
    value = row[column]
    if column == "rate":
        return "-" if value is None else f"{value:.0%}"  # nothing decided in the window: no rate
    return str(value)


def window_title(report: Supervision) -> str:
    if report.window is None:
        return "SLA breach rate per matter × division × party"
    start, end = report.window
    return f"SLA breach rate per matter × division × party, {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"


def cell(p: PartyFigures, attribute: str) -> str:
    value = getattr(p, attribute)
    return f"{value:.0%}" if isinstance(value, float) else str(value)


def print_report(report: Supervision, console: Console) -> None:
    public = Table(title="Public figures")
    public.add_column("figure")
    public.add_column("value", justify="right")
    for name, value in report.public.items():
        public.add_row(name, str(value))
    console.print(public)
    for title, metric, _ in CHARTS:
        table = Table(title=f"Ranking by {title}")
        for header in ("#", "party", "division", title):
            table.add_column(header)
        for rank, p in enumerate(report.rankings[title], 1):
            table.add_row(str(rank), p.party, p.division_code, cell(p, metric))
        console.print(table)
    every = Table(title="Every party")
    for header, _ in COLUMNS:
        every.add_column(header)
    for p in report.parties:
        every.add_row(*(cell(p, a) for _, a in COLUMNS))
    console.print(every)
    rates = Table(title=window_title(report))
    for header, _ in RATE_COLUMNS:
        rates.add_column(header)
    for row in report.breach_rates:
        rates.add_row(*(rate_cell(row, c) for _, c in RATE_COLUMNS))
    console.print(rates)
    flags = Table(title="Standing flags")
    for header in ("matter", "division", "party", "rule", "window", "since"):
        flags.add_column(header)
    for f in report.standing_flags:
        since = f["window_start"].date().isoformat() if f.get("window_start") else ""
        flags.add_row(f["matter_code"], f["division_code"], f["party"], f.get("rule", ""), f.get("window", ""), since)
    console.print(flags)
    plan = Table(title="Rollout against the plan (国办发[2020]35号)")
    for header in ("deadline", "mode", "planned", "live", "live in time"):
        plan.add_column(header)
    for row in report.rollout:
        plan.add_row(row["due"], row["mode"], str(row["planned"]), str(row["live"]), str(row["live_in_time"]))
    console.print(plan)
    console.print("[bold]Draft 通报 (units that missed targets)[/bold]")
    for line in report.notice or ["none"]:
        console.print(f"  {line}")


CHARTS = (("bad-rating rate", "bad_rating_rate", "%"), ("complaints", "complaints", ""),
          ("SLA breaches", "sla_breaches", ""), ("overdue rectifications", "overdue_rectifications", ""))

# Draws one horizontal bar chart per <figure class="chart"> from the embedded data, as inline
# SVG, and marks the figure with how many bars it drew (the browser test reads that mark).
SCRIPT = """
const data = JSON.parse(document.getElementById('figures').textContent);
const NS = 'http://www.w3.org/2000/svg';
for (const fig of document.querySelectorAll('figure.chart')) {
  const rows = data.rankings[fig.dataset.ranking] || [];
  const metric = fig.dataset.metric, pct = fig.dataset.unit === '%';
  const max = Math.max(1e-9, ...rows.map(r => r[metric]));
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('width', 640); svg.setAttribute('height', 24 * rows.length + 8);
  rows.forEach((r, i) => {
    const bar = document.createElementNS(NS, 'rect');
    bar.setAttribute('x', 220); bar.setAttribute('y', 4 + 24 * i); bar.setAttribute('height', 18);
    bar.setAttribute('width', Math.max(1, 360 * r[metric] / max)); bar.setAttribute('fill', '#b03a2e');
    const label = document.createElementNS(NS, 'text');
    label.setAttribute('x', 0); label.setAttribute('y', 18 + 24 * i);
    label.textContent = r.party + ' (' + r.division_code + ')';
    const value = document.createElementNS(NS, 'text');
    value.setAttribute('x', 590); value.setAttribute('y', 18 + 24 * i);
    value.textContent = pct ? Math.round(100 * r[metric]) + '%' : r[metric];
    svg.append(bar, label, value);
  });
  fig.append(svg);
  fig.dataset.drawn = rows.length;
}
"""


def html_report(report: Supervision) -> str:
    def rows(parties: list[PartyFigures]) -> list[dict[str, Any]]:
        return [{**asdict(p), "bad_rating_rate": p.bad_rating_rate, "sla_breach_rate": p.sla_breach_rate}
                for p in parties]

    # the embedded JSON must not close its own <script> element
    data = json.dumps({"rankings": {name: rows(ps) for name, ps in report.rankings.items()}},
                      ensure_ascii=False).replace("</", "<\\/")
    esc = html.escape
    public = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in report.public.items())
    charts = "".join(f'<figure class="chart" data-ranking="{esc(name)}" data-metric="{metric}" data-unit="{unit}">'
                     f"<figcaption>Ranking by {esc(name)}</figcaption></figure>" for name, metric, unit in CHARTS)
    table = "".join("<tr>" + "".join(f"<td>{esc(cell(p, a))}</td>" for _, a in COLUMNS) + "</tr>"
                    for p in report.parties)
    flags = "".join(f"<li>{esc(f['matter_code'])} · {esc(f['division_code'])} · {esc(f['party'])}: "
                    f"{esc(f['reason'])}</li>" for f in report.standing_flags) or "<li>none</li>"
    excluded = "".join(f"<li>{esc(x['rating_id'])} ({esc(x['party'])}): {esc(x['reason'] or '')}</li>"
                       for x in report.excluded) or "<li>none</li>"
    notice = "".join(f"<li>{esc(line)}</li>" for line in report.notice) or "<li>none</li>"
    head = "".join(f"<th>{esc(h)}</th>" for h, _ in COLUMNS)
    rate_head = "".join(f"<th>{esc(h)}</th>" for h, _ in RATE_COLUMNS)
    rates = "".join("<tr>" + "".join(f"<td>{esc(rate_cell(r, c))}</td>" for _, c in RATE_COLUMNS) + "</tr>"
                    for r in report.breach_rates)
    plan = "".join(f"<tr><td>{esc(r['due'])}</td><td>{esc(r['mode'])}</td><td>{r['planned']}</td><td>{r['live']}</td>"
                   f"<td>{r['live_in_time']}</td></tr>" for r in report.rollout)
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>Tongban supervision report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}} figure.chart{{margin:1em 0}}
svg text{{font-size:12px}}</style></head><body>
<h1>跨省通办 supervision report</h1>
<h2>Public figures</h2><table>{public}</table>
<h2>Rankings</h2>{charts}
<h2>Every party</h2><table><tr>{head}</tr>{table}</table>
<h2>{esc(window_title(report))}</h2><table><tr>{rate_head}</tr>{rates}</table>
<h2>Standing flags</h2><ul>{flags}</ul>
<h2>Rollout against the plan (国办发[2020]35号)</h2>
<table><tr><th>deadline</th><th>mode</th><th>planned</th><th>live</th><th>live in time</th></tr>{plan}</table>
<h2>Draft 通报 (units that missed targets)</h2><ul>{notice}</ul>
<h2>Ratings excluded on appeal (申诉复核)</h2><ul>{excluded}</ul>
<script type="application/json" id="figures">{data}</script>
<script>{SCRIPT}</script>
</body></html>
"""


async def build(namespace: str, window: timedelta = BREACH_WINDOW) -> Supervision:
    return figures(await read_all(namespace, SchemaRegistry.load()), window=window)


def write_html(report: Supervision, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html_report(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--namespace", default=os.environ.get("TONGBAN_NAMESPACE", ""))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--window-days", type=int, default=BREACH_WINDOW.days,
                        help="the SLA breach rate's window, up to the latest fact")
    args = parser.parse_args()
    report = asyncio.run(build(args.namespace, timedelta(days=args.window_days)))
    write_html(report, args.out)
    console = Console()
    print_report(report, console)
    console.print(f"HTML report: {args.out}")


if __name__ == "__main__":
    main()
