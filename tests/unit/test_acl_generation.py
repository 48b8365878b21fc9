"""The ACLs, principals and quotas generated from infra/topics.toml, without a broker: each
principal gets exactly what its declaration says, namespaces keep apart, undeclared rights
of Tongban's principals are revoked and nobody else's are touched."""

from __future__ import annotations

import stat
import tomllib

import pytest

from tongban.config import read_kafka_secrets
from tongban.ops import acls, principals, quotas
from tongban.ops.topics import DEFAULT_FILE, load_declared

NS = "t1a2b3-"


def of(acl_set, name):
    return acls.for_principal(acl_set, name)


def topic_rights(acl_set, name, operation):
    return {a.name.removeprefix(NS) for a in of(acl_set, name)
            if a.resource_type == "TOPIC" and a.operation == operation}


@pytest.fixture(scope="module")
def granted():
    return acls.generate(NS)


def test_principals_are_the_admin_each_service_partner_feed_and_the_operator():
    names = [p.name for p in principals.declared()]
    assert names[0] == "admin"
    assert {"tongban-intake", "tongban-routing", "tongban-verification", "tongban-delivery", "tongban-feedback",
            "partner-420000", "partner-370100", "partner-ems", "partner-12345", "tongban-operator"} <= set(names)
    assert len(names) == len(set(names))


def test_every_grant_is_allow_on_a_namespaced_name_and_nobody_gets_cluster_rights(granted):
    assert granted
    for acl in granted:
        assert (acl.permission, acl.host) == ("ALLOW", "*")
        assert acl.resource_type != "CLUSTER"
        assert acl.name.startswith(NS), acl
        assert acls.in_scope(acl, NS), acl
        assert acl.principal != "User:admin"


def test_a_partner_writes_only_its_inbound_topics_and_reads_only_its_outbound_ones(granted):
    assert topic_rights(granted, "partner-420000", "WRITE") == {
        "tongban.partner.420000.decisions", "tongban.partner.420000.submissions", "tongban.schemas"}
    assert topic_rights(granted, "partner-420000", "READ") == {
        "tongban.partner.420000.assignments", "tongban.partner.420000.acknowledgements", "tongban.schemas"}
    assert topic_rights(granted, "partner-ems", "WRITE") == {"tongban.partner.ems.receipts",
                                                             "tongban.partner.ems.originals", "tongban.schemas"}
    # The carrier also reads the routing decisions: whose originals to collect (资料寄递).
    assert topic_rights(granted, "partner-ems", "READ") == {"tongban.partner.ems.dispatches",
                                                            "tongban.application.routed", "tongban.schemas"}
    assert topic_rights(granted, "partner-12345", "WRITE") == {"tongban.feedback.workorders", "tongban.schemas"}
    assert topic_rights(granted, "partner-12345", "READ") == set()
    others = {(a.resource_type, a.pattern, a.name.removeprefix(NS), a.operation)
              for a in of(granted, "partner-420000") if a.resource_type != "TOPIC"}
    assert others == {("GROUP", "LITERAL", "partner-420000", "READ"), ("GROUP", "PREFIXED", "partner-420000-", "READ"),
                      ("TRANSACTIONAL_ID", "LITERAL", "partner-420000", "WRITE"),
                      ("TRANSACTIONAL_ID", "PREFIXED", "partner-420000-", "WRITE")}


def test_a_service_has_its_topics_group_and_transactional_ids_only(granted):
    assert topic_rights(granted, "tongban-routing", "WRITE") == {
        "tongban.application.routed", "tongban.catalogue.changes", "tongban.sla.breached", "tongban.schemas",
        "tongban.dlq.tongban-routing", "tongban.changelog.tongban-routing", "tongban.commands.tongban-routing",
        "tongban.repartition.tongban-routing"}
    assert topic_rights(granted, "tongban-routing", "READ") == {
        "tongban.application.received", "tongban.application.accepted", "tongban.application.decided",
        "tongban.application.delivered", "tongban.schemas", "tongban.retry.tongban-routing",
        "tongban.changelog.tongban-routing", "tongban.commands.tongban-routing", "tongban.repartition.tongban-routing",
        "tongban.catalogue.changes",  # what it published, read back at start
        "tongban.application.routed",  # its own review events, for the review queue
        "tongban.partner.ems.originals"}  # 资料寄递: the transit clock
    rest = {(a.resource_type, a.pattern, a.name) for a in of(granted, "tongban-routing") if a.resource_type != "TOPIC"}
    assert rest == {("GROUP", "LITERAL", f"{NS}tongban-routing"),
                    ("TRANSACTIONAL_ID", "PREFIXED", f"{NS}tongban-routing-")}
    decisions = topic_rights(granted, "tongban-delivery", "READ")
    assert {"tongban.partner.420000.decisions", "tongban.partner.ems.receipts"} <= decisions


def test_only_the_operator_writes_retry_topics_and_reads_dead_letters(granted):
    for acl in granted:
        topic = acl.name.removeprefix(NS)
        if topic.startswith("tongban.retry.") and acl.operation == "WRITE":
            assert acl.principal == "User:tongban-operator"
        if topic.startswith("tongban.dlq.") and acl.operation == "READ":
            assert acl.principal == "User:tongban-operator"
    # besides retries, the operators' one topic: the supervision desk's casework (申诉复核, rectification steps)
    assert topic_rights(granted, "tongban-operator", "WRITE") == {s.declared_name for s in load_declared("")
                                                                   if s.declared_name.startswith("tongban.retry.")} | {
        "tongban.feedback.casework"}


def test_every_declared_topic_has_its_writer_and_readers(granted):
    for spec in load_declared(NS):
        writers = {a.principal for a in granted if a.name == spec.name and a.operation == "WRITE"}
        assert writers, f"{spec.name} has no writer"
        if spec.writer != "any":
            assert len(writers) == 1, f"{spec.name}: one writer, got {writers}"


def test_an_unknown_writer_or_reader_is_refused(tmp_path):
    doc = DEFAULT_FILE.read_text().replace('readers = ["feedback"]', 'readers = ["feedbak"]', 1)
    path = tmp_path / "topics.toml"
    path.write_text(doc)
    with pytest.raises(ValueError, match="feedbak"):
        acls.generate("", path)


def test_namespaces_keep_apart_and_only_tongbans_principals_are_revoked():
    assert acls.in_scope(acls.Acl("User:x", "TOPIC", "LITERAL", "tongban.schemas", "READ"), "")
    assert not acls.in_scope(acls.Acl("User:x", "TOPIC", "LITERAL", f"{NS}tongban.schemas", "READ"), "")
    assert acls.in_scope(acls.Acl("User:x", "TOPIC", "LITERAL", f"{NS}tongban.schemas", "READ"), NS)
    assert not acls.in_scope(acls.Acl("User:x", "TOPIC", "LITERAL", "tongban.schemas", "READ"), NS)
    assert not acls.in_scope(acls.Acl("User:x", "TOPIC", "LITERAL", "orders", "READ"), "")
    wanted = acls.generate("")
    keep = next(iter(wanted))
    stray = acls.Acl("User:partner-420000", "TOPIC", "LITERAL", "tongban.partner.360000.assignments", "READ")
    foreign = acls.Acl("User:auditor", "TOPIC", "LITERAL", "tongban.feedback.flags", "READ")
    elsewhere = acls.Acl("User:partner-420000", "TOPIC", "LITERAL", f"{NS}tongban.partner.420000.decisions", "WRITE")
    plan = acls.compare(wanted, {keep, stray, foreign, elsewhere}, "")
    assert (plan.revoke, plan.foreign, plan.unchanged) == ([stray], [foreign], 1)
    assert len(plan.create) == len(wanted) - 1
    with pytest.raises(ValueError, match="would be mistaken for a Tongban resource name"):
        acls.generate("tongban-x-")


def test_quotas_hold_for_partners_and_feeds_and_removed_ones_of_our_users_go():
    declared = quotas.generate()
    doc = tomllib.loads(DEFAULT_FILE.read_text())
    rate = float(doc["quotas"]["partners"]["producer_byte_rate"])
    assert declared["partner-420000"]["producer_byte_rate"] == rate
    assert declared["partner-12345"]["producer_byte_rate"] == rate
    assert not any(user.startswith("tongban-") or user == "admin" for user in declared)
    actual = {"partner-420000": {"producer_byte_rate": rate / 2}, "partner-gone": {"consumer_byte_rate": 1.0},
              "someone": {"producer_byte_rate": 5.0}}
    changes = quotas.compare({"partner-420000": {"producer_byte_rate": rate}}, actual)
    assert [(c.user, c.key, c.declared) for c in changes] == [
        ("partner-420000", "producer_byte_rate", rate), ("partner-gone", "consumer_byte_rate", None)]


def test_the_secrets_file_gets_a_secret_per_principal_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "kafka" / "principals.secrets"
    added = principals.init(path)
    assert added == [p.name for p in principals.declared()]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = read_kafka_secrets(path)
    assert len(set(first.values())) == len(first)
    assert all(len(s) >= 40 for s in first.values())
    assert principals.init(path) == []
    assert read_kafka_secrets(path) == first  # kept as they are
    args = principals.scram_args(path)
    assert args[0] == f"SCRAM-SHA-512=[name=admin,iterations=4096,password={first['admin']}]"
