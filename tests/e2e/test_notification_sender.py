"""The notification sender over the real broker: intake's process sends each notice it
serves (here a 补正告知书) to its sender's sink exactly once, carrying nothing personal but
the application number, even when the notice reaches the sender twice (a redelivery)."""

import asyncio
import json
import secrets
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.intake import intake_pb2, intake_pb2_grpc, notify
from sim.samples import samples
from tests.support import KAFKA, REGISTRY, start_stack, submit
from tongban import topics
from tongban.grpc_tls import client_channel

pytestmark = pytest.mark.integration

PAUSED_MATTER, PAUSED_TITLE = "KSTB-SOC-02", "社会保障卡申领"  # the authorities ask for a 补正 first


@pytest.fixture(scope="module")
def stack(namespace, tmp_path_factory):
    sink = tmp_path_factory.mktemp("notify") / "messages.jsonl"
    stack = start_stack(namespace, env={notify.NOTIFY_FILE: str(sink)},
                        sim_args=("--supplement-matters", PAUSED_MATTER))
    stack.sink = sink
    yield stack
    stack.stop_all()


def messages(stack) -> list[dict]:
    return [json.loads(line) for line in stack.sink.read_text().splitlines()] if stack.sink.exists() else []


async def until(condition, within: float = 90):
    deadline = time.monotonic() + within
    while not (found := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError("not reached in time")
        await asyncio.sleep(0.2)
    return found


async def notice_record(namespace: str, application_id: str, kind: str):
    """The NoticeServed record of that kind for the application, as it is on the wire."""
    consumer = AIOKafkaConsumer(namespace + topics.APPLICATION_NOTICES, **KAFKA, isolation_level="read_committed",
                                auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    _, body = REGISTRY.decode(record.value)
                    if body["application_id"] == application_id and body["kind"] == kind:
                        return record
        raise TimeoutError("notice not on the topic")
    finally:
        await consumer.stop()


async def committed(namespace: str, partition: int) -> int:
    admin = AIOKafkaAdminClient(**KAFKA)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(namespace + notify.SENDER)
    finally:
        await admin.close()
    meta = offsets.get(TopicPartition(namespace + topics.APPLICATION_NOTICES, partition))
    return meta.offset if meta else -1


async def test_a_supplement_notice_reaches_the_sink_once_with_nothing_personal_but_the_number(stack, namespace):
    request = intake_pb2.SubmitRequest()
    request.CopyFrom(next(s.request for s in samples(secrets.token_hex(4)) if PAUSED_TITLE in s.title))
    await submit(stack, request)
    async with client_channel(stack.grpc_target("intake"), "hunan-portal") as channel:
        reply = await intake_pb2_grpc.IntakeStub(channel).Submit(request, timeout=20)
    number = reply.application_number
    await until(lambda: [m for m in messages(stack) if m["application_number"] == number and m["kind"] == "SUPPLEMENT"])

    # A redelivery: the same record once more on the notices topic; the sender commits past it.
    record = await notice_record(namespace, reply.application_id, "SUPPLEMENT")
    producer = AIOKafkaProducer(**KAFKA, acks="all")
    await producer.start()
    try:
        again = await producer.send_and_wait(record.topic, key=record.key, value=record.value,
                                             partition=record.partition)
    finally:
        await producer.stop()
    deadline = time.monotonic() + 60
    while await committed(namespace, again.partition) <= again.offset:
        assert time.monotonic() < deadline, "the sender did not read the redelivered notice"
        await asyncio.sleep(0.2)

    mine = [m for m in messages(stack) if m["application_number"] == number]
    assert sorted(m["kind"] for m in mine) == ["RECEIPT", "SUPPLEMENT"], "each notice exactly once"
    [supplement] = [m for m in mine if m["kind"] == "SUPPLEMENT"]
    assert set(supplement) == {"notice_id", "application_number", "kind", "text"}
    assert number in supplement["text"]
    assert "补正" in supplement["text"]
    for personal in (request.applicant.name, request.applicant.id_number, request.applicant.phone,
                     request.postal_address):
        if personal:
            assert personal not in json.dumps(mine, ensure_ascii=False)
