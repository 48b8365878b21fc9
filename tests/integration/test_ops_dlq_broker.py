"""`tongban dlq`, `lag` and `tail` against the real broker, in a namespace of their own.

Dead letters are written as the runtime writes them (in a transaction, with the
``tongban.dlq.*`` headers, docs/runtime.md); the replays are read back from the retry topic
with a read_committed consumer to the end, so a duplicate or a missing replay shows."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner

from tests.support import KAFKA, REGISTRY
from tests.unit.test_codec import application_received
from tongban import topics
from tongban.events import encode_event
from tongban.ops import dlq
from tongban.ops.cli import cli
from tongban.ops.records import consumer, partitions_of
from tongban.runtime.core import MAX_REPLAYS, ORIGIN_TOPIC_HEADER, REPLAY_COUNT_HEADER

pytestmark = pytest.mark.integration

UNROUTABLE = "tongban.application.ApplicationUnroutable"
ROUTING, VERIFICATION = "tongban-routing", "tongban-verification"


def tongban(namespace: str, *args: str):
    result = CliRunner().invoke(cli, ["--namespace", namespace, *args], catch_exceptions=False)
    return result.exit_code, result.output


def unroutable(application_id: str) -> bytes:
    return encode_event(REGISTRY, UNROUTABLE, {"application_id": application_id, "matter_code": "M", "reason": "r"},
                        cause_id=f"cause-{application_id}", correlation_id=application_id, source_system="test")[1]


async def write_dead_letters(namespace: str, group: str, letters: list[tuple[str, str, int]]) -> None:
    """(application id, reason, times replayed before) each, as the group's runtime dead-letters them."""
    producer = AIOKafkaProducer(**KAFKA, acks="all", enable_idempotence=True,
                                transactional_id=f"{namespace}test-dlq-{group}")
    await producer.start()
    try:
        async with producer.transaction():
            for n, (application_id, reason, replays) in enumerate(letters):
                origin = namespace + (topics.APPLICATION_RECEIVED if replays == 0 else topics.retry(group))
                headers = [("tongban.dlq.origin.topic", origin.encode()),
                           ("tongban.dlq.origin.partition", str(n % 3).encode()),
                           ("tongban.dlq.origin.offset", str(100 + n).encode()),
                           ("tongban.dlq.group", (namespace + group).encode()),
                           ("tongban.dlq.error.class", b"Rejected"),
                           ("tongban.dlq.error.message", reason.encode())]
                if replays:
                    headers += [(ORIGIN_TOPIC_HEADER, (namespace + topics.APPLICATION_RECEIVED).encode()),
                                (REPLAY_COUNT_HEADER, str(replays).encode())]
                await producer.send(namespace + topics.dlq(group), unroutable(application_id),
                                    key=application_id.encode(), headers=headers)
    finally:
        await producer.stop()


async def read_to_end(topic: str, within: float = 30) -> list:
    """Every committed record of `topic` now there (read_committed, up to the end offsets)."""
    client = consumer(None, group_id=None)
    await client.start()
    try:
        tps = await partitions_of(topic)
        client.assign(tps)
        await client.seek_to_beginning(*tps)
        ends = await client.end_offsets(tps)
        records: list = []
        deadline = time.monotonic() + within
        while any([await client.position(tp) < ends[tp] for tp in tps]):
            assert time.monotonic() < deadline, "did not reach the end of the topic"
            for batch in (await client.getmany(*tps, timeout_ms=300)).values():
                records += batch
        return records
    finally:
        await client.stop()


def replayed(namespace: str, group: str) -> list[tuple[str, dict[str, bytes]]]:
    return [(r.key.decode(), dict(r.headers)) for r in asyncio.run(read_to_end(namespace + topics.retry(group)))]


LETTERS = [("A1", "matter unknown", 0), ("A2", "matter unknown", 0), ("A3", "partner timeout", 0),
           ("A4", "matter unknown", 1), ("A5", "matter unknown", MAX_REPLAYS)]


@pytest.fixture(scope="module")
def routing_letters(namespace):
    asyncio.run(write_dead_letters(namespace, ROUTING, LETTERS))
    return namespace


def test_dlq_list_and_show_decode_with_origin_group_class_and_reason(routing_letters):
    namespace = routing_letters
    code, output = tongban(namespace, "dlq", "list", ROUTING, "--json")
    rows = json.loads(output)
    assert code == 0
    assert [(r["key"], r["reason"], r["replays"], r["event_type"]) for r in rows] == \
        [(a, reason, n, UNROUTABLE) for a, reason, n in LETTERS]
    assert rows[0]["origin"] == {"topic": namespace + topics.APPLICATION_RECEIVED, "partition": 0, "offset": 100}
    assert {r["error_class"] for r in rows} == {"Rejected"}
    assert json.loads(tongban(namespace, "dlq", "list", ROUTING, "--reason", "timeout", "--json")[1])[0]["key"] == "A3"

    code, output = tongban(namespace, "dlq", "show", ROUTING, rows[2]["ref"], "--json")
    shown = json.loads(output)
    assert (code, shown["key"], shown["body"]["application_id"]) == (0, "A3", "A3")


def test_a_dry_run_writes_and_moves_nothing(routing_letters):
    namespace = routing_letters
    code, output = tongban(namespace, "dlq", "replay", ROUTING, "--dry-run", "--json")
    summary = json.loads(output)
    assert (code, summary["replayed"], summary["finished"]) == (0, 4, True)
    assert summary["refused"] == {f"at the replay limit ({MAX_REPLAYS} of {MAX_REPLAYS})": 1}
    assert replayed(namespace, ROUTING) == []


def test_an_interrupted_replay_resumes_without_duplicates_and_the_record_at_the_limit_stays(routing_letters,
                                                                                             monkeypatch):
    namespace = routing_letters
    real = AIOKafkaProducer.send_offsets_to_transaction
    calls = []

    async def dies_in_the_second_transaction(self, offsets, group_id):
        calls.append(offsets)
        if len(calls) == 2:
            raise ConnectionError("the operator's laptop went to sleep")
        return await real(self, offsets, group_id)

    monkeypatch.setattr(AIOKafkaProducer, "send_offsets_to_transaction", dies_in_the_second_transaction)
    with pytest.raises(ConnectionError):
        asyncio.run(dlq.replay(ROUTING, namespace, REGISTRY, dlq.Selection(), batch=2))
    monkeypatch.undo()
    # The first transaction committed; the second, aborted, left nothing; the rest never ran.
    first = [key for key, _ in replayed(namespace, ROUTING)]
    assert len(calls) == 2
    assert len(first) < 4
    assert len(set(first)) == len(first)

    code, output = tongban(namespace, "dlq", "replay", ROUTING, "--json")
    summary = json.loads(output)
    assert code == 0
    assert summary["finished"]

    records = replayed(namespace, ROUTING)
    assert sorted(key for key, _ in records) == ["A1", "A2", "A3", "A4"]  # each once; A5 not at all
    by_key = dict(records)
    assert by_key["A1"][REPLAY_COUNT_HEADER] == b"1"
    assert by_key["A4"][REPLAY_COUNT_HEADER] == b"2"
    assert {h[ORIGIN_TOPIC_HEADER] for h in by_key.values()} == {(namespace + topics.APPLICATION_RECEIVED).encode()}
    assert not any(name.startswith("tongban.dlq.") for h in by_key.values() for name in h)

    # Done is done: another run finds nothing new, and the replay's group has no lag.
    again = json.loads(tongban(namespace, "dlq", "replay", ROUTING, "--json")[1])
    assert (again["replayed"], again["finished"]) == (0, True)
    assert len(replayed(namespace, ROUTING)) == 4
    lag = json.loads(tongban(namespace, "lag", "--group", f"tongban-operator-replay-{ROUTING}", "--json")[1])
    assert lag["totals"] == {f"{namespace}tongban-operator-replay-{ROUTING}": {
        namespace + topics.dlq(ROUTING): 0, "*": 0}}


def test_a_limited_replay_goes_on_from_where_it_stopped_and_lag_shows_what_is_left(namespace):
    asyncio.run(write_dead_letters(namespace, VERIFICATION, [(f"V{n}", "check failed", 0) for n in range(3)]))
    code, output = tongban(namespace, "dlq", "replay", VERIFICATION, "--limit", "1")
    assert code == 0
    assert "1 replayed" in output
    assert "more remain" in output

    group = f"tongban-operator-replay-{VERIFICATION}"
    left = json.loads(tongban(namespace, "lag", "--group", group, "--json")[1])["totals"][namespace + group]["*"]
    assert left >= 2  # two dead letters (and a transaction marker per partition written)

    code, output = tongban(namespace, "dlq", "replay", VERIFICATION)
    assert code == 0
    assert "2 replayed" in output
    assert sorted(key for key, _ in replayed(namespace, VERIFICATION)) == ["V0", "V1", "V2"]
    assert json.loads(tongban(namespace, "lag", "--group", group, "--json")[1])["totals"][namespace + group]["*"] == 0


def test_tail_prints_records_decoded_with_personal_data_masked(namespace):
    record = application_received()

    async def write() -> None:
        producer = AIOKafkaProducer(**KAFKA, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            await producer.send_and_wait(namespace + topics.FEEDBACK_CASEWORK,
                                         REGISTRY.encode("tongban.application.ApplicationReceived", record), key=b"A1")
        finally:
            await producer.stop()

    asyncio.run(write())
    code, output = tongban(namespace, "tail", topics.FEEDBACK_CASEWORK, "--from-beginning", "--count", "1",
                           "--timeout", "30", "--json")
    printed = json.loads(output)
    assert (code, printed["key"], printed["event_type"]) == (0, "A1", "tongban.application.ApplicationReceived")
    assert printed["body"]["applicant"]["name"] == "***"
    assert printed["body"]["postal_address"] == "***"
    for secret in ("张三", "11010519491231002X", "江岸区"):
        assert secret not in output
