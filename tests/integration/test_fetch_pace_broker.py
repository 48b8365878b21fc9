"""On the real broker: once idle, a paced consumer's fetches ask the broker to hold them for
the long wait, the first record after that still arrives at once (a held fetch returns as
soon as a record is there), and the fetches after it ask for the short wait again."""

from __future__ import annotations

import secrets
import time

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.protocol.fetch import FetchRequest

from tongban.bus import BUSY_FETCH_WAIT_MS, IDLE_AFTER_S, IDLE_FETCH_WAIT_MS, PacedConsumer
from tongban.ops import topics

pytestmark = pytest.mark.integration


@pytest.fixture
async def topic():
    name = f"t{secrets.token_hex(4)}-fetch-pace"
    admin = AIOKafkaAdminClient(**topics.kafka_client_settings())
    await admin.start()
    await admin.create_topics([NewTopic(name, 1, 1)])
    yield name
    await admin.delete_topics([name])
    await admin.close()


async def test_an_idle_consumer_asks_for_the_long_wait_and_still_gets_the_next_record_at_once(topic):
    now = [time.monotonic()]
    consumer = PacedConsumer(group_id=None, enable_auto_commit=False, isolation_level="read_committed",
                             clock=lambda: now[0], **topics.kafka_client_settings())
    producer = AIOKafkaProducer(**topics.kafka_client_settings())
    await consumer.start()
    await producer.start()
    waits: list[int] = []  # max wait of each fetch request the broker receives, in order
    send = consumer._client.send

    async def spied(node_id, request, *args, **kwargs):
        if isinstance(request, FetchRequest):
            waits.append(request._max_wait_ms)
        return await send(node_id, request, *args, **kwargs)

    consumer._client.send = spied
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.getmany(timeout_ms=200)
        now[0] += IDLE_AFTER_S  # no record for the idle time
        deadline = time.monotonic() + 15
        while IDLE_FETCH_WAIT_MS not in waits:  # the fetch in flight ends within the short wait
            assert time.monotonic() < deadline, f"no fetch asked for the idle wait: {waits[-5:]}"
            assert not any((await consumer.getmany(timeout_ms=200)).values())
        held_from = len(waits)

        sent = time.monotonic()
        await producer.send_and_wait(topic, b"first after idle")
        got: list = []
        while not got:
            got = (await consumer.getmany(timeout_ms=IDLE_FETCH_WAIT_MS)).get(tp, [])
        waited = time.monotonic() - sent
        assert [r.value for r in got] == [b"first after idle"]
        # taken from a fetch held for the long wait, well before that wait ran out
        assert waited < IDLE_FETCH_WAIT_MS / 1000 / 2, waited

        taken_at = len(waits)
        while len(waits) == taken_at:  # the next fetch after the record
            await consumer.getmany(timeout_ms=200)
        assert waits[held_from - 1] == IDLE_FETCH_WAIT_MS
        assert waits[taken_at] == BUSY_FETCH_WAIT_MS
    finally:
        await producer.stop()
        await consumer.stop()
