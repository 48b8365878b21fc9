"""Windowed problem-matter flags: a faust-streaming app (`python -m services.feedback.windows`).

Reads SupervisionFact on tongban.feedback.facts (keyed by matter|division|party), keeps per
group and window the facts counted in it, by business id, in a faust table on RocksDB
(rocksdict) whose changelog is the group's `tongban.changelog.tongban-flags`, and writes
MatterFlagged / MatterFlagCleared on tongban.feedback.flags.

Counting is idempotent: a window's value holds the ids it counted, so a replayed fact (a
restart, a rebalance, a killed worker under faust's at-least-once) changes nothing, and a
withdrawn fact (appeal upheld, 退单/改派) removes its id. A verdict's event id derives from
the window, the rule and how often that rule flagged that window, so a verdict sent again
after a crash is a duplicate that consumers drop. Faust's exactly-once mode is not used:
faust-streaming 0.15 has open duplicate and crash bugs there (see the shared platform notes).

Runs as its own principal, `tongban-flags` (consumer group `<ns>tongban-flags`), with no
topic creation (infra/topics.toml declares every topic it uses) and no leader topic.
Environment: TONGBAN_* as every service; TONGBAN_FLAGS_WEB_PORT (0 = no web server, the
default), TONGBAN_FLAGS_CONFIG (rules, default services/feedback/flags.toml).
"""

from __future__ import annotations

import base64
import copy
import logging
import os
import sys
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import faust

from services.feedback.domain import FlagRule, Verdict, WindowCounts, WindowSpec, evaluate, load_rules
from tongban import topics
from tongban.codec import CodecError, SchemaRegistry
from tongban.config import Settings, load_settings
from tongban.events import encode_event
from tongban.runtime.core import safe_reason

SERVICE = "flags"
DEFAULT_CONFIG = Path(__file__).with_name("flags.toml")
# RocksDB sized to stay well under 200 MB: faust's defaults (a 2 GB block cache, 3 × 64 MB
# write buffers) are sized for large hosts.
ROCKSDB_OPTIONS = {"write_buffer_size": 8 << 20, "max_write_buffer_number": 2, "target_file_size_base": 16 << 20,
                   "block_cache_size": 32 << 20, "block_cache_compressed_size": 8 << 20, "max_open_files": 256}
log = logging.getLogger("tongban.flags")


@dataclass(frozen=True)
class FlagConfig:
    windows: tuple[WindowSpec, ...]
    rules: tuple[FlagRule, ...]

    @classmethod
    def load(cls, path: Path | None = None) -> FlagConfig:
        with open(path or DEFAULT_CONFIG, "rb") as fh:
            doc = tomllib.load(fh)
        windows = tuple(WindowSpec(name, **spec) for name, spec in doc["windows"].items())
        return cls(windows, tuple(load_rules(doc["rules"])))


@dataclass(frozen=True)
class Sent:
    """A verdict ready to send: its key on the flags topic and the framed event."""

    key: str
    event_type: str
    event_id: str
    value: bytes


GroupState = dict[str, Any]  # {"windows": {spec|start: {fact id: [kind, bad]}}, "flags": {spec: ...}, "outbox": [...]}


def apply_fact(state: GroupState | None, group: str, fact: dict[str, Any],
               config: FlagConfig) -> tuple[GroupState, list[tuple[Verdict, WindowCounts]]]:
    """Count (or withdraw) one fact in every window it falls in: the group's new state and
    the verdicts that follow. One group's windows and flags are one plain-JSON value, so
    the faust table writes them (and the outbox beside them) in one changelog record."""
    state = {"windows": {}, "flags": {}, "outbox": [], **copy.deepcopy(state or {})}
    out = []
    for spec in config.windows:
        flags = state["flags"].setdefault(spec.name, {"standing": {}, "raised": {}})
        for start in spec.windows(fact["occurred_at"]):
            wkey = f"{spec.name}|{start.isoformat()}"
            counts = WindowCounts({k: (v[0], v[1]) for k, v in state["windows"].get(wkey, {}).items()})
            before = dict(counts.facts)
            if fact["counted"]:
                counts.facts[fact["fact_id"]] = (fact["kind"], fact["bad"])
            else:
                counts.facts.pop(fact["fact_id"], None)
            if counts.facts == before:
                continue  # a replay or a withdrawal of what was never counted: nothing changes
            state["windows"][wkey] = {k: list(v) for k, v in counts.facts.items()}
            standing = {rule: (fid, datetime.fromisoformat(at)) for rule, (fid, at) in flags["standing"].items()}
            for verdict in evaluate(group, spec, start, counts, config.rules, standing):
                if verdict.kind == "FLAG":
                    times = flags["raised"].get(verdict.flag_id, 0) + 1
                    flags["raised"][verdict.flag_id] = times
                    # flagged, cleared and flagged again in one window: a new flag, not a resend
                    verdict = Verdict("FLAG", verdict.rule, verdict.window, verdict.window_start,
                                      f"{verdict.flag_id}#{times}")
                    flags["standing"][verdict.rule.name] = [verdict.flag_id, start.isoformat()]
                else:
                    flags["standing"].pop(verdict.rule.name)
                out.append((verdict, counts))
    _expire(state, fact["occurred_at"], config)
    return state, out


def _expire(state: GroupState, at: datetime, config: FlagConfig) -> None:
    """Windows that ended a whole longest window before the newest fact are dropped (a
    fact that late no longer changes a verdict anyone acts on); the value stays small."""
    longest = max(spec.size() for spec in config.windows)
    newest = max(at, datetime.fromisoformat(state.get("newest") or at.isoformat()))
    state["newest"] = newest.isoformat()
    sizes = {spec.name: spec.size() for spec in config.windows}
    for wkey in list(state["windows"]):
        name, start = wkey.split("|", 1)
        if datetime.fromisoformat(start) + sizes.get(name, longest) + longest < newest:
            del state["windows"][wkey]


def verdict_event(registry: SchemaRegistry, group: str, verdict: Verdict, counts: WindowCounts,
                  fact: dict[str, Any], spec: WindowSpec) -> Sent:
    matter, division, party = group.split("|")
    common = {"flag_id": verdict.flag_id, "matter_code": matter, "division_code": division, "party": party}
    if verdict.kind == "FLAG":
        m = counts.metrics()
        event_type = topics.MATTER_FLAGGED_EVENT
        body = {**common, "reason": f"rule {verdict.rule.name}: {verdict.rule.metric} {m[verdict.rule.metric]:.3g} "
                                    f">= {verdict.rule.threshold:g} in window {verdict.window}",
                "bad_ratings": m["bad_ratings"], "total_ratings": m["ratings"], "complaints": m["complaints"],
                "window_start": verdict.window_start, "window_end": verdict.window_start + spec.size(),
                "rule": verdict.rule.name, "window": verdict.window, "bad_rating_rate": m["bad_rating_rate"],
                "sla_breaches": m["sla_breaches"]}
    else:
        event_type = topics.MATTER_FLAG_CLEARED_EVENT
        body = {**common, "cleared_at": fact["occurred_at"]}  # the fact that cleared it: a resend is identical
    event_id, value = encode_event(registry, event_type, body, cause_id=verdict.flag_id, correlation_id=group,
                                   source_system=f"tongban-{SERVICE}")
    return Sent(matter, event_type, event_id, value)


async def process(table: MutableMapping[str, Any], group: str, fact: dict[str, Any], config: FlagConfig,
                  registry: SchemaRegistry, send: Callable[[bytes, bytes], Awaitable[None]]) -> int:
    """One fact through the group's state in `table` (the faust table); returns the verdicts sent.

    The verdicts go into the outbox in the same write as the counts that caused them, and
    the outbox is emptied once they are sent. A crash in between leaves them there: the
    replayed fact (a no-op for the counts) sends them again, under the same event ids."""
    by_name = {spec.name: spec for spec in config.windows}
    stored = table.get(group)
    state, verdicts = apply_fact(stored, group, fact, config)
    state["outbox"] += [[sent.key, base64.b64encode(sent.value).decode()] for sent in (
        verdict_event(registry, group, verdict, counts, fact, by_name[verdict.window]) for verdict, counts in verdicts)]
    if state != stored:
        table[group] = state
    for key, value in state["outbox"]:
        await send(key.encode(), base64.b64decode(value))
    if state["outbox"]:
        log.info("flags: %d verdict(s) for %s sent", len(state["outbox"]), group)
        table[group] = {**state, "outbox": []}
    return len(state["outbox"])


def make_app(settings: Settings, config: FlagConfig, *, web_port: int = 0) -> faust.App:
    options = settings.kafka_client_options()
    credentials = None
    if "sasl_plain_username" in options:
        credentials = faust.SASLCredentials(username=options["sasl_plain_username"],
                                            password=options["sasl_plain_password"],
                                            mechanism=options["sasl_mechanism"], ssl_context=options.get("ssl_context"))
    datadir = settings.state_dir / settings.group  # as the services: <ns>tongban-flags
    app = faust.App(
        settings.group, broker=f"kafka://{settings.kafka_bootstrap}", broker_credentials=credentials,
        processing_guarantee="at_least_once", store="rocksdb://", datadir=str(datadir),
        topic_allow_declare=False, topic_disable_leader=True, topic_partitions=3,
        web_enabled=web_port > 0, web_port=web_port or 6066, web_host="127.0.0.1",
        consumer_auto_offset_reset="earliest", producer_acks=-1, table_standby_replicas=0,
        # a killed worker's partitions move on after the same session timeout as the services'
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_ms / 3000),
        key_serializer="json", value_serializer="json",  # the table's; the topics carry raw Avro
    )
    registry = SchemaRegistry.load()
    facts = app.topic(settings.topic(topics.FEEDBACK_FACTS), key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")
    flags = app.topic(settings.topic(topics.FEEDBACK_FLAGS), key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")
    changelog = app.topic(settings.changelog_topic, key_type=str, value_type=None, key_serializer="json",
                          value_serializer="json", partitions=3, compacting=True, deleting=False)
    table = app.Table("windows", default=None, key_type=str, partitions=3, changelog_topic=changelog,
                      options=ROCKSDB_OPTIONS)

    dlq = app.topic(settings.dlq_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                    value_serializer="raw")

    async def dead_letter(message: Any, exc: Exception) -> None:
        """A record that is no event goes to the group's dead letters, as the runtime's do."""
        reason = safe_reason(exc)
        headers = [("tongban.dlq.origin.topic", message.topic.encode()),
                   ("tongban.dlq.origin.partition", str(message.partition).encode()),
                   ("tongban.dlq.origin.offset", str(message.offset).encode()),
                   ("tongban.dlq.group", settings.group.encode()),
                   ("tongban.dlq.error.class", type(exc).__name__.encode()),
                   ("tongban.dlq.error.message", reason.encode()[:2000])]
        await (await dlq.send(key=message.key, value=message.value, headers=headers))
        log.warning("flags: dead-lettered %s/%s@%s: %s", message.topic, message.partition, message.offset, reason)

    async def send(key: bytes, value: bytes) -> None:
        # wait for the broker's ack: the outbox is emptied only after the verdict is stored
        await (await flags.send(key=key, value=value))

    async def count(stream: AsyncIterator[Any]) -> AsyncIterator[None]:
        async for event in stream.events():  # type: ignore[attr-defined]
            try:
                event_type, body = registry.decode(event.value)
            except CodecError as exc:
                await dead_letter(event.message, exc)
                yield None
                continue
            if event_type == topics.SUPERVISION_FACT_EVENT:
                await process(table, event.key.decode(), body, config, registry, send)
            yield None

    app.agent(facts, name="count")(count)  # type: ignore[arg-type]
    return app


def main() -> None:
    settings = load_settings(SERVICE)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    config_path = os.environ.get("TONGBAN_FLAGS_CONFIG")
    web_port = int(os.environ.get("TONGBAN_FLAGS_WEB_PORT") or 0)
    app = make_app(settings, FlagConfig.load(Path(config_path) if config_path else None), web_port=web_port)
    faust_level = {"WARNING": "warn", "CRITICAL": "crit"}.get(settings.log_level, settings.log_level.lower())
    sys.argv = [sys.argv[0], "worker", "--loglevel", faust_level]
    if not web_port:
        sys.argv.append("--without-web")
    app.main()


if __name__ == "__main__":
    main()
