"""Partner isolation on the real broker, with SCRAM logins and the ACLs generated from
infra/topics.toml (applied to this test's namespace by tests.support.new_namespace).

For every ordered pair (a, b) among the test partners, a may not write b's topics, read b's
topics, join b's consumer group or use b's transactional ids, while each partner's own
traffic works. `make acl-matrix` runs every pair of declared partners and feeds
(TONGBAN_ACL_MATRIX=all); the default is a few (an authority, a city, the carrier, the
12345 feed). A client without credentials or with a wrong secret can do nothing; a service
cannot write another service's topic; only the operator writes retry topics; a plan right
after apply finds nothing to do, and rights no longer declared are revoked.
"""

from __future__ import annotations

import itertools
import os
import secrets

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from tests.support import KAFKA, KAFKA_ACLS, drop_namespace, new_namespace
from tongban.ops import acls, principals
from tongban.ops.kafka_admin import admin_client, ops_settings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not KAFKA_ACLS, reason="the broker does not authenticate (TONGBAN_KAFKA_SECURITY=PLAINTEXT)"),
]

OUTSIDERS = [p for p in principals.declared() if p.kind in ("partner", "feed")]
FEW = {"partner-420000", "partner-370100", "partner-ems", "partner-12345"}
CHOSEN = [p.name for p in OUTSIDERS if os.environ.get("TONGBAN_ACL_MATRIX") == "all" or p.name in FEW]
SCHEMAS = "tongban.schemas"


@pytest.fixture(scope="module")
def granted(namespace) -> set[acls.Acl]:
    return acls.generate(namespace)


def topics_of(granted: set[acls.Acl], principal: str, operation: str, namespace: str) -> list[str]:
    """The principal's own topics for an operation, without the shared schema topic."""
    return sorted(a.name for a in granted if a.principal == f"User:{principal}" and a.resource_type == "TOPIC"
                  and a.operation == operation and a.name != namespace + SCHEMAS)


def options(principal: str) -> dict:
    return ops_settings().as_principal(principal).kafka_client_options()


async def write(principal: str, topic: str, transactional_id: str | None = None) -> None:
    producer = AIOKafkaProducer(**options(principal), acks="all", enable_idempotence=True,
                                transactional_id=transactional_id, request_timeout_ms=15000)
    try:
        await producer.start()
        if transactional_id:
            async with producer.transaction():
                await producer.send_and_wait(topic, b"own", key=b"acl-test")
        else:
            await producer.send_and_wait(topic, b"own", key=b"acl-test")
    finally:
        await producer.stop()


async def read(principal: str, topic: str, group: str, want_records: int = 0) -> int:
    """Subscribe as `principal` in `group`, read until `want_records` arrived, commit."""
    consumer = AIOKafkaConsumer(topic, **options(principal), group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=False, request_timeout_ms=15000)
    try:
        await consumer.start()
        seen = 0
        for _ in range(60):
            batch = await consumer.getmany(timeout_ms=500)
            seen += sum(len(records) for records in batch.values())
            if seen >= want_records and consumer.assignment():
                break
        await consumer.commit()
        return seen
    finally:
        await consumer.stop()


async def admin_write(topic: str) -> None:
    producer = AIOKafkaProducer(**KAFKA, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"seed", key=b"acl-test")
    finally:
        await producer.stop()


# ------------------------------------------------------------------------------ partners


@pytest.mark.parametrize(("a", "b"), list(itertools.permutations(CHOSEN, 2)), ids=lambda p: p.removeprefix("partner-"))
async def test_a_partner_can_neither_write_nor_read_another_partners_topics(namespace, granted, a, b):
    theirs_written = set(topics_of(granted, b, "WRITE", namespace)) - set(topics_of(granted, a, "WRITE", namespace))
    theirs_read = set(topics_of(granted, b, "READ", namespace)) - set(topics_of(granted, a, "READ", namespace))
    assert theirs_written or theirs_read, f"{b} has no topics of its own?"
    for topic in sorted(theirs_written):
        with pytest.raises(TopicAuthorizationFailedError):
            await write(a, topic)
    for topic in sorted(theirs_read):
        with pytest.raises(TopicAuthorizationFailedError):
            await read(a, topic, f"{namespace}{a}")
    # b's consumer group, even on a's own topic; b's transactional ids.
    mine = topics_of(granted, a, "READ", namespace) or topics_of(granted, a, "WRITE", namespace)
    for group in (f"{namespace}{b}", f"{namespace}{b}-reports"):
        with pytest.raises(GroupAuthorizationFailedError):
            await read(a, mine[0], group)
    own_topic = topics_of(granted, a, "WRITE", namespace)
    if own_topic:
        with pytest.raises(TransactionalIdAuthorizationFailed):
            await write(a, own_topic[0], transactional_id=f"{namespace}{b}-0")


@pytest.mark.parametrize("partner", CHOSEN, ids=lambda p: p.removeprefix("partner-"))
async def test_a_partners_own_traffic_works(namespace, granted, partner):
    writes, reads = topics_of(granted, partner, "WRITE", namespace), topics_of(granted, partner, "READ", namespace)
    assert writes, f"{partner} writes nothing?"
    for topic in writes:
        await write(partner, topic)
    await write(partner, writes[0], transactional_id=f"{namespace}{partner}-0")
    await write(partner, namespace + SCHEMAS)  # every writer publishes its schemas (content not checked: README)
    for topic in reads:
        await admin_write(topic)
        assert await read(partner, topic, f"{namespace}{partner}", want_records=1) >= 1
        assert await read(partner, topic, f"{namespace}{partner}-audit", want_records=1) >= 1


# ------------------------------------------------------------------------------ everyone else


async def test_a_client_without_credentials_or_with_a_wrong_secret_can_do_nothing(namespace):
    bootstrap = KAFKA["bootstrap_servers"]
    topic = f"{namespace}tongban.partner.420000.decisions"
    anonymous = {"bootstrap_servers": bootstrap}  # no SASL at all, like a plain Java producer
    wrong = {**options("partner-420000"), "sasl_plain_password": secrets.token_urlsafe(16)}
    stranger = {**options("partner-420000"), "sasl_plain_username": "partner-999999"}

    async def forge(producer: AIOKafkaProducer) -> None:
        """Connect and write: the broker may refuse either step."""
        await producer.start()
        await producer.send_and_wait(topic, b"forged", key=b"TBFORGED")

    for settings in (anonymous, wrong, stranger):
        producer = AIOKafkaProducer(**settings, request_timeout_ms=5000)
        with pytest.raises(KafkaError):
            await forge(producer)
        await producer.stop()
        admin = AIOKafkaAdminClient(**settings, request_timeout_ms=5000)
        with pytest.raises(KafkaConnectionError):
            await admin.start()
        await admin.close()


async def test_a_service_cannot_write_or_read_another_services_topics(namespace):
    ns = namespace
    denied_writes = [("routing", "tongban.application.verified"), ("verification", "tongban.application.routed"),
                     ("intake", "tongban.partner.420000.assignments"), ("feedback", "tongban.application.received"),
                     ("delivery", "tongban.changelog.tongban-intake"), ("routing", "tongban.partner.420000.decisions")]
    for service, topic in denied_writes:
        with pytest.raises(TopicAuthorizationFailedError):
            await write(f"tongban-{service}", ns + topic)
    denied_reads = [("intake", "tongban.changelog.tongban-delivery"), ("routing", "tongban.partner.420000.assignments"),
                    ("feedback", "tongban.dlq.tongban-feedback")]
    for service, topic in denied_reads:
        with pytest.raises(TopicAuthorizationFailedError):
            await read(f"tongban-{service}", ns + topic, f"{ns}tongban-{service}")
    with pytest.raises(GroupAuthorizationFailedError):  # another service's group
        await read("tongban-routing", ns + "tongban.application.received", f"{ns}tongban-delivery")
    with pytest.raises(TransactionalIdAuthorizationFailed):  # another service's transactional ids
        await write("tongban-routing", ns + "tongban.application.routed", transactional_id=f"{ns}tongban-delivery-0")
    await write("tongban-routing", ns + "tongban.application.routed", transactional_id=f"{ns}tongban-routing-0")


async def test_only_the_operator_writes_retry_topics_and_reads_dead_letters(namespace):
    ns = namespace
    retry, dlq = f"{ns}tongban.retry.tongban-delivery", f"{ns}tongban.dlq.tongban-delivery"
    for principal in ("tongban-delivery", "tongban-intake", "partner-420000", "partner-ems"):
        with pytest.raises(TopicAuthorizationFailedError):
            await write(principal, retry)
    await write("tongban-operator", retry)
    await admin_write(dlq)
    assert await read("tongban-operator", dlq, f"{ns}tongban-operator", want_records=1) >= 1
    with pytest.raises(TopicAuthorizationFailedError):  # the operator replays; it does not forge dead letters
        await write("tongban-operator", dlq)
    with pytest.raises(TopicAuthorizationFailedError):
        await write("tongban-operator", f"{ns}tongban.partner.420000.decisions")


# ------------------------------------------------------------------------------ plan and apply


def test_plan_after_apply_finds_nothing_and_undeclared_rights_are_revoked(namespace):
    admin = admin_client()
    assert acls.plan(namespace, admin=admin).changes == 0
    other = new_namespace()
    try:
        stray = acls.Acl("User:partner-420000", "TOPIC", "LITERAL", f"{namespace}tongban.partner.360000.assignments",
                         "READ")
        foreign = acls.Acl("User:auditor", "TOPIC", "LITERAL", f"{namespace}tongban.feedback.flags", "READ")
        acls._execute(admin, acls.AclPlan(create=[stray, foreign]))
        acls._settle(admin, lambda now: {stray, foreign} <= now)
        plan = acls.plan(namespace, admin=admin)
        assert (plan.create, plan.revoke, plan.foreign) == ([], [stray], [foreign])
        assert acls.apply(namespace, admin=admin).revoke == [stray]
        after = acls.plan(namespace, admin=admin)
        assert (after.changes, after.foreign) == (0, [foreign])
        assert acls.plan(other, admin=admin).changes == 0, "another namespace was touched"
    finally:
        acls._execute(admin, acls.AclPlan(revoke=[foreign]))
        drop_namespace(other)
    assert [c for c in principals.plan() if c.action != "ok"] == []
