"""infra/alerts/tongban.rules.yml, checked without promtool (it could not be built here in
the time allowed: see docs/operations.md): the file's structure as Prometheus reads rule
files, and every metric and label its expressions and templates name, against what the
services and `tongban metrics` really export (their registries, scraped) and Prometheus's
own `up`. A misspelt metric or label fails."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tongban import telemetry
from tongban.ops import lag
from tongban.ops.metrics import Exporter, Snapshot

RULES = Path(__file__).resolve().parents[2] / "infra" / "alerts" / "tongban.rules.yml"
# PromQL words that are not metric names: the functions and operators the rules may use.
PROMQL_WORDS = {"sum", "rate", "increase", "deriv", "delta", "absent", "max", "min", "avg", "count",
                "histogram_quantile", "and", "or", "unless", "by", "without", "on", "ignoring", "bool", "offset"}
PROMETHEUS_LABELS = {"job", "instance"}  # added to every series by the scrape
RULE_KEYS = {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
DURATION = re.compile(r"^(\d+[smhdwy])+$")


def exported() -> dict[str, set[str]]:
    """metric name (as PromQL names it) -> its label names, from scrapes of the real registries."""
    provider, registry = telemetry.metrics_provider("intake")
    m = telemetry.RuntimeMetrics(provider.get_meter("rules"))
    m.count_records(["t"], "committed")
    m.handler_duration.record(0.1, {"kind": "event", "type": "T", "outcome": "ok"})
    m.emitted.add(1, {"event_type": "T"})
    m.committed([("dlq", [("tongban.dlq.origin.topic", b"t"), ("tongban.dlq.error.class", b"E")])], "dlq", str)
    m.aborted(TimeoutError())
    m.timers.add(1, {"timer": "t"})
    m.grpc_requests.add(1, {"method": "/a.B/C", "code": "OK"})
    m.grpc_duration.record(0.1, {"method": "/a.B/C"})
    m.store_duration.record(0.1, {"operation": "find", "collection": "archive"})
    m.set_lag({("t", 0): 1})
    ops = Exporter()
    ops.snapshot = Snapshot([lag.PartitionLag("g", "t", 0, 1, 2)], {"g": 1}, {("stage", "party"): 1}, up=True)
    names: dict[str, set[str]] = {"up": set()}
    for text in (generate_latest(registry).decode(), generate_latest(ops.registry).decode()):
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                names.setdefault(sample.name, set()).update(sample.labels)
    provider.shutdown()
    return names


EXPORTED = exported()


def references(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression uses."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    labels = set()
    for body in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", body))
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\boffset\s+\w+", " ", expr)
    for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        labels |= {name.strip() for name in clause.split(",") if name.strip()}
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return words - PROMQL_WORDS, labels


def problems(rule: dict) -> list[str]:
    found = []
    if set(rule) - RULE_KEYS:
        found.append(f"unknown keys {set(rule) - RULE_KEYS}")
    if not re.fullmatch(r"Tongban[A-Z][A-Za-z]+", rule.get("alert", "")):
        found.append("alert must be named TongbanSomething")
    if "for" in rule and not DURATION.match(rule["for"]):
        found.append(f"for {rule['for']!r} is not a duration")
    if rule.get("labels", {}).get("severity") not in ("critical", "warning"):
        found.append("severity must be critical or warning")
    if not rule.get("annotations", {}).get("summary"):
        found.append("no summary")
    expr = rule.get("expr", "")
    if expr.count("(") != expr.count(")"):
        found.append("unbalanced parentheses")
    metrics, labels = references(expr)
    if not metrics:
        found.append("names no metric")
    for name in sorted(metrics - set(EXPORTED)):
        found.append(f"metric {name} is not exported")
    known = PROMETHEUS_LABELS.union(*(EXPORTED.get(m, set()) for m in metrics))
    templated = set(re.findall(r"\$labels\.(\w+)", " ".join(map(str, rule.get("annotations", {}).values()))))
    for name in sorted((labels | templated) - known):
        found.append(f"label {name} is on none of {sorted(metrics)}")
    return found


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_the_rule_file_has_named_groups_of_uniquely_named_alerts():
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    names = [g["name"] for g in document["groups"]]
    assert len(names) == len(set(names))
    assert all(g["rules"] for g in document["groups"])
    alerts = [r["alert"] for r in rules()]
    assert len(alerts) == len(set(alerts))


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_each_rule_names_only_exported_metrics_and_their_labels(rule):
    assert problems(rule) == []


def test_the_issue_asks_for_these_alerts():
    assert {"TongbanServiceDown", "TongbanConsumerLagGrowing", "TongbanDeadLettersAppearing",
            "TongbanSlaBreachRate", "TongbanTransactionAborts", "TongbanApplicationsStuck"} <= {
        r["alert"] for r in rules()}


@pytest.mark.parametrize(("change", "problem"), [
    ({"expr": "sum(rate(tongban_record_total[5m])) > 0"}, "metric tongban_record_total is not exported"),
    ({"expr": "sum by (group) (tongban_input_lag) > 0"}, "label group is on none of ['tongban_input_lag']"),
    ({"expr": 'tongban_input_lag{partion="1"} > 0'}, "label partion is on none"),
    ({"annotations": {"summary": "{{ $labels.application_id }}"}}, "label application_id is on none"),
    ({"for": "ten minutes"}, "is not a duration"),
    ({"labels": {"severity": "page"}}, "severity must be"),
])
def test_the_checker_catches_a_wrong_rule(change, problem):
    rule = {"alert": "TongbanExample", "expr": "sum by (job, topic) (tongban_input_lag) > 0", "for": "5m",
            "labels": {"severity": "warning"}, "annotations": {"summary": "{{ $labels.topic }}"}}
    assert problems(rule) == []
    assert any(problem in p for p in problems({**rule, **change}))


def test_durations_in_the_rules_are_at_most_a_day():
    def seconds(text: str) -> float:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
        return sum(int(n) * unit[u] for n, u in re.findall(r"(\d+)([smhdwy])", text))

    for rule in rules():
        windows = [*re.findall(r"\[([^\]]+)\]", rule["expr"]), rule.get("for", "0s")]
        assert all(timedelta(seconds=seconds(w)) <= timedelta(days=1) for w in windows), rule["alert"]
