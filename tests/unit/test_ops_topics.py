"""`tongban topics plan|apply`: what is changed and what is refused, from the declaration and
a described cluster (no broker: `compare` is pure), and the environment overlay."""

from __future__ import annotations

import pytest

from tongban.ops.topics import DEFAULT_FILE, LiveTopic, TopicSpec, compare, load_declared

CONFIG = {"cleanup.policy": "delete", "retention.ms": "604800000"}
KEYED = TopicSpec("ns-tongban.application.received", 3, 1, CONFIG, key="application_id",
                  declared_name="tongban.application.received")
UNKEYED = TopicSpec("ns-tongban.free", 3, 1, CONFIG, declared_name="tongban.free")


def live(partitions=3, replication=1, config=None, overrides=frozenset(CONFIG)) -> LiveTopic:
    return LiveTopic(partitions, replication, {**CONFIG, "segment.bytes": "1073741824", **(config or {})},
                     frozenset(overrides))


def bigger(spec: TopicSpec, partitions: int) -> TopicSpec:
    return TopicSpec(spec.name, partitions, spec.replication_factor, spec.config, key=spec.key,
                     declared_name=spec.declared_name)


@pytest.mark.parametrize(("spec", "topic", "force", "changes", "refused"), [
    (KEYED, live(), False, [], []),
    (KEYED, None, False, [("create", "partitions=3")], []),
    (KEYED, live(config={"retention.ms": "1000"}), False,
     [("alter_config", "retention.ms: declared 604800000, actual 1000")], []),
    (KEYED, live(config={"segment.bytes": "1024"}, overrides={*CONFIG, "segment.bytes"}), False,
     [("alter_config", "segment.bytes: set to 1024 on the topic, not declared")], []),
    (bigger(KEYED, 6), live(), False, [], ["keyed by application_id"]),
    (bigger(KEYED, 6), live(), True, [("add_partitions", "3 -> 6")], []),
    (bigger(UNKEYED, 6), live(), False, [("add_partitions", "3 -> 6")], []),
    (bigger(KEYED, 2), live(), True, [], ["Kafka cannot remove partitions"]),
    (KEYED, live(replication=3), False, [], ["partition reassignment"]),
], ids=["as declared", "missing", "config differs", "undeclared override", "keyed grows",
        "keyed grows forced", "unkeyed grows", "shrinks", "replication differs"])
def test_plan_changes_what_may_change_and_refuses_the_rest_saying_why(spec, topic, force, changes, refused):
    plan = compare([spec], {spec.name: topic} if topic else {}, force=force)
    assert [(c.action, c.topic) for c in plan.changes] == [(a, spec.name) for a, _ in changes]
    for change, (_, detail) in zip(plan.changes, changes, strict=True):
        assert detail in change.detail
    assert [r.topic for r in plan.refusals] == [spec.name] * len(refused)
    for refusal, why in zip(plan.refusals, refused, strict=True):
        assert why in refusal.reason
    assert plan.drift == bool(changes or refused)
    assert [d.action for d in plan.diffs] == ["ok" if not plan.drift else "create" if topic is None else "differs"]


def test_a_topic_no_longer_declared_is_refused_not_deleted():
    plan = compare([KEYED], {KEYED.name: live()}, undeclared=["ns-tongban.old"])
    assert plan.changes == []
    refusal, = plan.refusals
    assert (refusal.topic, "never deletes a topic" in refusal.reason) == ("ns-tongban.old", True)
    assert plan.drift


def test_the_production_overlay_replicates_three_times_and_needs_two_in_sync():
    base = {s.name: s for s in load_declared("")}
    production = load_declared("", overlay="production")
    assert {s.name for s in production} == set(base)
    for s in production:
        assert (s.replication_factor, s.config["min.insync.replicas"]) == (3, "2")
        # Everything else stays as declared (retention, cleanup, partitions).
        assert {k: v for k, v in s.config.items() if k != "min.insync.replicas"} == \
            {k: v for k, v in base[s.name].config.items() if k != "min.insync.replicas"}
        assert s.partitions == base[s.name].partitions


def test_an_overlay_can_change_one_topic_and_must_name_a_declared_one(tmp_path):
    overlay = tmp_path / "staging.toml"
    overlay.write_text('[topic."tongban.application.received"]\npartitions = 6\n'
                       'config = { "retention.ms" = "1000" }\n')
    specs = {s.declared_name: s for s in load_declared("", DEFAULT_FILE, overlay)}
    received = specs["tongban.application.received"]
    assert (received.partitions, received.config["retention.ms"]) == (6, "1000")
    assert received.config["cleanup.policy"] == "delete"
    assert specs["tongban.application.routed"].partitions == 3

    overlay.write_text('[topic."tongban.nowhere"]\npartitions = 6\n')
    with pytest.raises(ValueError, match=r"tongban\.nowhere"):
        load_declared("", DEFAULT_FILE, overlay)
