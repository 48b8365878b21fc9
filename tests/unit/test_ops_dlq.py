"""Dead letters as `tongban dlq` reads and replays them: real dead letters from the runtime
(the task harness of test_runtime_core), decoded and masked, chosen and turned into retry
records; and the runtime's side of the replay limit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from tests.unit.test_codec import application_received
from tests.unit.test_runtime_core import (
    INPUT,
    KEY,
    NS,
    PARTITION,
    REGISTRY,
    SETTINGS,
    UNROUTABLE,
    Harness,
    header,
    received_value,
)
from tongban.codec import MASK
from tongban.handling import Rejected
from tongban.ops import dlq
from tongban.ops.records import decode_masked
from tongban.runtime.core import MAX_REPLAYS, ORIGIN_TOPIC_HEADER, REPLAY_COUNT_HEADER

GROUP = SETTINGS.group_name
NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class OnTopic:
    """A dead letter as a consumer of the dead-letter topic reads it."""

    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple


async def dead_letter(reason: str = "matter unknown", *, extra_headers=(), topic: str = NS + INPUT,
                      value: bytes | None = None) -> OnTopic:
    async def refuse(event, state):
        raise Rejected(reason)

    h = Harness(handlers={UNROUTABLE: refuse})
    await h.feed(h.rec(value or received_value(), topic=topic, headers=extra_headers))
    out, = h.dead_letters()
    return OnTopic(1, 7, int(NOW.timestamp() * 1000), out.key, out.value, tuple(out.headers))


async def test_a_dead_letter_is_read_with_its_origin_group_class_and_reason():
    dl = dlq.parse(await dead_letter(), GROUP, REGISTRY)
    assert (dl.ref, dl.at, dl.key, dl.group) == ("1:7", NOW, KEY, GROUP)
    assert (dl.origin_topic, dl.origin_partition, dl.error_class, dl.reason) == \
        (NS + INPUT, PARTITION, "Rejected", "matter unknown")
    assert (dl.replays, dl.decoded.event_type, dl.decoded.body["application_id"]) == (0, UNROUTABLE, KEY)
    assert dl.as_json()["origin"] == {"topic": NS + INPUT, "partition": PARTITION, "offset": 1}


def test_personal_data_is_masked_whether_it_came_sealed_or_not():
    record = application_received()
    decoded = decode_masked(REGISTRY, REGISTRY.encode("tongban.application.ApplicationReceived", record))
    assert decoded.body["applicant"]["name"] == MASK
    assert decoded.body["applicant"]["id_number"] == MASK
    assert decoded.body["postal_address"] == MASK
    assert decoded.body["application_id"] == "A1"
    assert "张三" not in str(decoded.body)


def test_a_value_that_does_not_decode_says_why_without_a_body():
    decoded = decode_masked(REGISTRY, b"garbage")
    assert decoded.body is None
    assert decoded.event_type is None
    assert decoded.problem


async def test_a_replay_record_carries_the_original_record_its_first_origin_and_one_more_replay():
    original = received_value()
    dl = dlq.parse(await dead_letter(extra_headers=[("traceparent", b"00-abc-01")], value=original), GROUP, REGISTRY)
    key, value, headers, partition = dlq.replay_record(dl, retry_partitions=3)
    assert (key, value, partition) == (KEY.encode(), original, PARTITION)
    assert dict(headers) == {"traceparent": b"00-abc-01", ORIGIN_TOPIC_HEADER: (NS + INPUT).encode(),
                             REPLAY_COUNT_HEADER: b"1"}


async def test_a_record_that_failed_again_on_the_retry_topic_is_replayed_to_its_first_origin_counting_on():
    again = await dead_letter(topic=SETTINGS.retry_topic, extra_headers=[
        (ORIGIN_TOPIC_HEADER, (NS + INPUT).encode()), (REPLAY_COUNT_HEADER, b"2")])
    dl = dlq.parse(again, GROUP, REGISTRY)
    assert (dl.origin_topic, dl.replay_origin, dl.replays) == (SETTINGS.retry_topic, NS + INPUT, 2)
    _, _, headers, _ = dlq.replay_record(dl, retry_partitions=3)
    assert [v for k, v in headers if k == REPLAY_COUNT_HEADER] == [b"3"]
    assert [v for k, v in headers if k == ORIGIN_TOPIC_HEADER] == [(NS + INPUT).encode()]


@pytest.mark.parametrize(("selection", "selected"), [
    (dlq.Selection(), True),
    (dlq.Selection(since=NOW), True),
    (dlq.Selection(since=NOW + timedelta(seconds=1)), False),
    (dlq.Selection(reason="UNKNOWN"), True),
    (dlq.Selection(reason="rejected"), True),  # the error class
    (dlq.Selection(reason="timeout"), False),
])
async def test_a_replay_selects_by_time_and_reason(selection, selected):
    assert selection.selects(dlq.parse(await dead_letter(), GROUP, REGISTRY)) is selected


@pytest.mark.parametrize(("replays", "refused"), [(0, None), (MAX_REPLAYS - 1, None),
                                                  (MAX_REPLAYS, f"at the replay limit ({MAX_REPLAYS} of")])
async def test_a_dead_letter_at_the_replay_limit_is_refused(replays, refused):
    letter = await dead_letter(topic=SETTINGS.retry_topic, extra_headers=[
        (ORIGIN_TOPIC_HEADER, (NS + INPUT).encode()), (REPLAY_COUNT_HEADER, str(replays).encode())])
    why = dlq.Selection().refusal(dlq.parse(letter, GROUP, REGISTRY), NS)
    assert why == refused or (refused is not None and why is not None and why.startswith(refused))


async def test_a_reduced_value_and_a_request_are_not_replayed():
    too_large = await dead_letter(value=b"x" * 1_100_000)  # the runtime keeps only its digest
    reduced = dlq.parse(too_large, GROUP, REGISTRY)
    assert reduced.reduced
    assert reduced.decoded.event_type is None
    assert "digest" in (dlq.Selection().refusal(reduced, NS) or "")
    command = await dead_letter(topic=SETTINGS.commands_topic)
    assert "caller retries" in (dlq.Selection().refusal(dlq.parse(command, GROUP, REGISTRY), NS) or "")


# ------------------------------------------------------------------------------ the runtime's side


@pytest.mark.parametrize("replays", [1, MAX_REPLAYS])
async def test_the_runtime_handles_a_replay_up_to_the_limit(replays):
    h = Harness()
    await h.feed(h.rec(received_value(), topic=SETTINGS.retry_topic, headers=[
        (ORIGIN_TOPIC_HEADER, (NS + INPUT).encode()), (REPLAY_COUNT_HEADER, str(replays).encode())]))
    assert h.state() == {"n": 1}
    assert not h.dead_letters()


@pytest.mark.parametrize(("count", "reason"), [
    (str(MAX_REPLAYS + 1).encode(), f"replayed {MAX_REPLAYS + 1} times; at most {MAX_REPLAYS} replays are handled"),
    (b"many", f"{REPLAY_COUNT_HEADER} is not a number"),
    (b"-1", f"{REPLAY_COUNT_HEADER} is negative"),
])
async def test_the_runtime_dead_letters_a_replay_beyond_the_limit_keeping_its_count(count, reason):
    h = Harness()
    await h.feed(h.rec(received_value(), topic=SETTINGS.retry_topic, headers=[
        (ORIGIN_TOPIC_HEADER, (NS + INPUT).encode()), (REPLAY_COUNT_HEADER, count)]))
    dead, = h.dead_letters()
    assert header(dead, "tongban.dlq.error.message") == reason
    assert header(dead, REPLAY_COUNT_HEADER) == count.decode()  # so `dlq replay` sees it is at the limit
    assert h.calls == []


async def test_the_count_means_nothing_on_an_ordinary_input():
    h = Harness()
    await h.feed(h.rec(received_value(), headers=[(REPLAY_COUNT_HEADER, b"99")]))
    assert h.state() == {"n": 1}
