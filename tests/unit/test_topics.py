"""tongban.topics agrees with infra/topics.toml and schemas/, every topic has one writer and
declares the event types it carries, and what services emit and read is declared there.

The writers are found by reading services/*/handlers.py: the first argument of every
`Emit(...)` must be a name from tongban.topics (a constant, a template function, or a
module-level alias of one), so the topics each service writes can be read off its code.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from tongban import handling, topic_events, topics
from tongban.ops import render
from tongban.ops.topics import DEFAULT_FILE, load_declared

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
SERVICES = sorted(p.parent.name for p in (ROOT / "services").glob("*/handlers.py"))
# Writers that are neither a service, a partner nor a consumer group.
OTHER_WRITERS = {"partner-12345": "the 12345 hotline", "any": "every writer", "operator": "an operator's tool"}
# Declared for a service that does not write them yet; the test fails once it does, to be removed here.
NOT_WRITTEN_YET: dict[str, str] = {}
# Modules besides handlers.py whose Emit(...) calls a service's wiring runs.
OTHER_EMITTERS = {"routing": ["publishing.py"],  # the catalogue's MatterChanged
                  "delivery": ["channels/base.py", "channels/electronic.py"]}  # the result channels
PLACEHOLDERS = {"partner": topics.PARTNER_STREAMS, "group": topics.GROUP_STREAMS}


def declaration() -> dict:
    with open(DEFAULT_FILE, "rb") as fh:
        return tomllib.load(fh)


def test_every_declared_topic_has_a_name_and_every_name_is_declared():
    doc = declaration()
    assert sorted(topics.TOPICS) == sorted(t["name"] for t in doc["topic"])
    # A template may be declared more than once, for partners whose streams carry different types.
    partner_streams = sorted({t["name"] for t in doc["partner_stream"]})
    assert sorted(fn("{partner}") for fn in topics.PARTNER_STREAMS) == partner_streams
    assert sorted(fn("{group}") for fn in topics.GROUP_STREAMS) == sorted({t["name"] for t in doc["group_stream"]})
    assert len(set(topics.TOPICS)) == len(topics.TOPICS)
    assert topics.CARRIER in doc["partners"]


def test_the_module_holds_nothing_undeclared():
    """Every public name in tongban.topics is a declared topic, template or event type."""
    declared = {spec.declared_name for spec in load_declared("")}
    templates = {*topics.PARTNER_STREAMS, *topics.GROUP_STREAMS}
    for name, value in vars(topics).items():
        if name.startswith("_") or name in ("annotations",):
            continue
        if callable(value):
            assert value in templates, f"topics.{name} is a function but not a declared template"
        elif isinstance(value, str) and name.endswith("_EVENT"):
            assert value in topics.EVENT_TYPES, f"topics.{name} is missing from EVENT_TYPES"
        elif isinstance(value, str) and value.startswith("tongban."):
            assert value in declared, f"topics.{name} = {value!r} is not declared in infra/topics.toml"


def test_runtime_streams_per_group_are_declared_as_the_runtime_needs_them():
    specs = {spec.declared_name: spec for spec in load_declared("")}
    for group, service in declaration()["groups"].items():
        changelog = specs[topics.changelog(group)]
        assert changelog.config["cleanup.policy"] == "compact"
        assert changelog.config["retention.ms"] == "-1"
        for fn in (topics.dlq, topics.changelog, topics.commands, topics.repartition):
            assert specs[fn(group)].writer == group, fn.__name__
        assert group == f"tongban-{service}"


# ---------------------------------------------------------------------------- event types


def schema_files() -> dict[str, dict]:
    """File name -> parsed schema, for every released schema file."""
    released = {line.split()[0] for line in (SCHEMAS / "released.lock").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    files = {p.name: json.loads(p.read_text()) for p in SCHEMAS.glob("*.avsc")}
    assert set(files) == released, "every schema file is released (schemas/released.lock)"
    return files


def full_name(schema: dict) -> str:
    return f"{schema['namespace']}.{schema['name']}"


def is_event(schema: dict) -> bool:
    fields = schema.get("fields") or [{}]
    return fields[0].get("name") == "envelope"


def test_record_full_names_are_namespace_dot_name_and_match_the_file():
    for file, schema in schema_files().items():
        assert "." not in schema["name"], file
        assert re.fullmatch(re.escape(full_name(schema)) + r"\.v[1-9]\d*\.avsc", file), file


def test_every_event_type_has_a_released_event_schema_and_every_event_schema_a_name():
    events = {full_name(s) for s in schema_files().values() if is_event(s)}
    assert len(set(topics.EVENT_TYPES)) == len(topics.EVENT_TYPES)
    assert sorted(set(topics.EVENT_TYPES) - events) == [], "event types without a released event schema"
    assert sorted(events - set(topics.EVENT_TYPES)) == [], "event schemas without a name in tongban.topics"


def test_the_runtime_timer_is_the_one_in_topics():
    assert handling.TIMER_FIRED == topics.TIMER_FIRED_EVENT


# ---------------------------------------------------------------------------- one writer per topic


class HandlerModule:
    """Resolves the expressions in one handlers module to tongban.topics values."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tree = ast.parse(path.read_text(), str(path))
        self.module_aliases: set[str] = set()  # names bound to the tongban.topics module
        self.imported: dict[str, str] = {}  # local name -> attribute of tongban.topics
        self.assigned: dict[str, list[ast.expr]] = {}  # name -> every value assigned to it
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom) and node.module == "tongban":
                self.module_aliases |= {a.asname or a.name for a in node.names if a.name == "topics"}
            elif isinstance(node, ast.ImportFrom) and node.module == "tongban.topics":
                self.imported |= {a.asname or a.name: a.name for a in node.names}
            elif isinstance(node, ast.Import):
                self.module_aliases |= {a.asname for a in node.names if a.name == "tongban.topics" and a.asname}
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                self.assigned.setdefault(node.targets[0].id, []).append(node.value)

    def where(self, node: ast.AST) -> str:
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{path}:{node.lineno}"

    def _topics_attr(self, node: ast.expr) -> object | None:
        if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) in self.module_aliases:
            return getattr(topics, node.attr)
        if isinstance(node, ast.Name) and node.id in self.imported:
            return getattr(topics, self.imported[node.id])
        return None

    def resolve(self, node: ast.expr, seen: frozenset[str] = frozenset()) -> str | None:
        """The topics value (a template for template calls) or None if it is not one."""
        value = self._topics_attr(node)
        if isinstance(value, str):
            return value
        if isinstance(node, ast.Call):
            fn = self._topics_attr(node.func)
            for placeholder, templates in PLACEHOLDERS.items():
                if fn in templates:
                    return fn("{" + placeholder + "}")
            return None
        if isinstance(node, ast.Name) and node.id not in seen and len(self.assigned.get(node.id, [])) == 1:
            return self.resolve(self.assigned[node.id][0], seen | {node.id})
        return None

    def emits(self) -> list[tuple[ast.Call, str | None, str | None]]:
        """Every Emit(...) call with its resolved topic and event type."""
        out = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call) and _called(node.func) == "Emit":
                args = {**dict(enumerate(node.args)), **{k.arg: k.value for k in node.keywords}}
                topic = args.get(0, args.get("topic"))
                event_type = args.get(1, args.get("event_type"))
                out.append((node, topic and self.resolve(topic), event_type and self.resolve(event_type)))
        return out


def _called(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _matcher(template: str) -> Callable[[str], bool]:
    pattern = re.escape(template)
    for placeholder in PLACEHOLDERS:
        pattern = pattern.replace(re.escape("{" + placeholder + "}"), r"[^.]+")
    return re.compile(pattern).fullmatch


def service_emits() -> dict[str, set[str]]:
    """Service -> the topic names (or templates) its handlers emit to."""
    return {service: {topic for topic, _ in pairs} for service, pairs in service_emit_pairs().items()}


def service_emit_pairs() -> dict[str, set[tuple[str, str]]]:
    """Service -> (topic name or template, event type) of every Emit in its handlers."""
    out: dict[str, set[tuple[str, str]]] = {}
    for service in SERVICES:
        handlers = HandlerModule(ROOT / "services" / service / "handlers.py")
        assert handlers.emits(), f"services/{service}/handlers.py emits nothing?"
        others = [HandlerModule(ROOT / "services" / service / name) for name in OTHER_EMITTERS.get(service, [])]
        for module in (handlers, *others):
            for call, topic, event_type in module.emits():
                where = module.where(call)
                assert topic is not None, f"{where}: name the topic with tongban.topics"
                assert event_type in topics.EVENT_TYPES, f"{where}: name the event type with tongban.topics"
                out.setdefault(service, set()).add((topic, event_type))
    return out


def test_handlers_emit_only_to_declared_topics():
    declared = [spec.declared_name for spec in load_declared("")]
    for service, emitted in service_emits().items():
        for topic in emitted:
            assert any(map(_matcher(topic), declared)), f"{service} emits to undeclared {topic}"


def test_one_writer_per_topic():
    """Each declared topic's writer is the only service whose handlers emit to it; topics
    written by partners, the runtime (per group) or operators get nothing from handlers."""
    emits = service_emits()
    for spec in load_declared(""):
        writers = {s for s, emitted in emits.items() if any(_matcher(t)(spec.declared_name) for t in emitted)}
        expected = {spec.writer} if spec.writer in SERVICES and spec.declared_name not in NOT_WRITTEN_YET else set()
        assert writers == expected, f"{spec.declared_name}: declared writer {spec.writer}, handlers of {writers}"


def test_every_writer_is_known():
    doc = declaration()
    known = {*SERVICES, *doc["partners"], *doc.get("feeds", {}), *doc["groups"], *OTHER_WRITERS}
    for spec in load_declared(""):
        assert spec.writer in known, f"{spec.declared_name}: unknown writer {spec.writer!r}"


@pytest.mark.parametrize(("source", "expected"), [
    ("from tongban import topics\nX = topics.FEEDBACK_FLAGS\nEmit(X, topics.MATTER_FLAGGED_EVENT, k, b)",
     (topics.FEEDBACK_FLAGS, topics.MATTER_FLAGGED_EVENT)),
    ("from tongban.topics import partner_assignments as pa, MATTER_ASSIGNED_EVENT as E\n"
     "def f(p):\n    t = pa(p)\n    return Emit(t, E, k, b)",
     ("tongban.partner.{partner}.assignments", topics.MATTER_ASSIGNED_EVENT)),
    ('Emit("tongban.feedback.flags", "tongban.feedback.MatterFlagged", k, b)', (None, None)),
    ("from tongban import topics\nEmit(f'tongban.partner.{p}.assignments', topics.MATTER_ASSIGNED_EVENT, k, b)",
     (None, topics.MATTER_ASSIGNED_EVENT)),
])
def test_the_scan_resolves_names_and_refuses_literals(tmp_path, source, expected):
    path = tmp_path / "handlers.py"
    path.write_text(source)
    [(_, topic, event_type)] = HandlerModule(path).emits()
    assert (topic, event_type) == expected


# ---------------------------------------------------------------------------- what each topic carries


def test_every_topic_declares_the_event_types_it_carries_each_with_a_released_schema():
    entries = [*declaration()["topic"], *declaration()["partner_stream"], *declaration()["group_stream"]]
    for entry in entries:
        assert isinstance(entry.get("events"), list), f"{entry['name']}: declare `events` (the runtime refuses others)"
    released = {full_name(s) for s in schema_files().values() if is_event(s)}
    for spec in load_declared(""):
        assert len(set(spec.events)) == len(spec.events), f"{spec.declared_name}: an event type listed twice"
        unknown = set(spec.events) - released
        assert not unknown, f"{spec.declared_name}: {sorted(unknown)} have no released event schema"
        assert topics.TIMER_FIRED_EVENT not in spec.events, "timers fire from the schedule, never from a topic"


def test_every_topic_a_service_emits_to_carries_what_it_emits():
    specs = load_declared("")
    for service, pairs in service_emit_pairs().items():
        for topic, event_type in pairs:
            matching = [spec for spec in specs if _matcher(topic)(spec.declared_name)]
            assert matching, f"{service} emits to undeclared {topic}"
            for spec in matching:
                assert event_type in spec.events, \
                    f"{service} emits {event_type}, which {spec.declared_name} does not carry"


def service_inputs() -> dict[str, list[str]]:
    """Service -> the topics its wiring reads (delivery's depend on the declared authorities)."""
    from tongban.partners import authorities

    out = {}
    for service in SERVICES:
        module = importlib.import_module(f"services.{service}.handlers")
        inputs = module.inputs(authorities()) if hasattr(module, "inputs") else getattr(module, "INPUTS", None)
        if inputs is not None:
            out[service] = list(inputs)
    return out


def test_every_topic_a_service_reads_declares_what_it_carries():
    inputs = service_inputs()
    assert {"intake", "routing", "verification", "delivery", "feedback"} <= set(inputs)
    for service, read in inputs.items():
        for topic in read:
            assert topic_events.carries(topic), f"{service} reads {topic}, which declares no event types"


def test_the_loader_resolves_templates_and_names_the_partner_or_feed_that_writes():
    for spec in load_declared(""):
        found = topic_events.carriage(spec.declared_name)
        assert found is not None, spec.declared_name
        assert found.events == frozenset(spec.events), spec.declared_name
    assert topic_events.carriage(topics.partner_decisions("440000")).partner == "440000"
    assert topic_events.carriage(topics.POSTAL_ORIGINALS).partner == topics.CARRIER
    assert topic_events.carriage(topics.FEEDBACK_RATINGS_PORTAL).partner == "haochaping-portal"
    assert topic_events.carriage(topics.FEEDBACK_RATINGS).partner is None  # intake's Rate
    assert topic_events.carriage(topics.partner_assignments("440000")).partner is None  # delivery writes it
    assert topic_events.carriage(topics.FEEDBACK_CASEWORK).partner is None  # the operator


def test_the_partner_kit_lists_what_the_declarations_say_partners_and_feeds_exchange():
    """The AsyncAPI document's messages per channel (tongban.ops.render) are the declared ones."""
    specs = load_declared("")
    for template, listed in render.PARTNER_EVENTS.items():
        pattern = _matcher(template.replace("*", "{partner}"))
        declared = {e for spec in specs if pattern(spec.declared_name) for e in spec.events}
        assert declared == set(listed), template
