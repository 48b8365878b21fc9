"""`tongban stuck` against the real broker: an application whose deciding authority never
answers is found, waiting for that partner; one that was delivered, and one still young, are not."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner

from tests.support import KAFKA, REGISTRY
from tests.unit.test_codec import sample
from tongban import topics
from tongban.ops.cli import cli

pytestmark = pytest.mark.integration

HOUR_MS = 3600 * 1000
PARTNER = "420000"


def event(event_type: str, application_id: str, **fields) -> bytes:
    record = sample(REGISTRY.latest(event_type))
    record.update(application_id=application_id, **fields)
    return REGISTRY.encode(event_type, record)


async def write(namespace: str, steps: list[tuple[str, str, str, dict, float]]) -> None:
    """(topic, application id, event type, fields, hours ago) each, with that record time."""
    producer = AIOKafkaProducer(**KAFKA, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        now_ms = int(time.time() * 1000)
        for topic, application_id, event_type, fields, hours_ago in steps:
            await producer.send_and_wait(namespace + topic, event(event_type, application_id, **fields),
                                         key=application_id.encode(), timestamp_ms=now_ms - int(hours_ago * HOUR_MS))
    finally:
        await producer.stop()


def lifecycle(application_id: str, hours_ago: float) -> list:
    return [
        (topics.APPLICATION_RECEIVED, application_id, topics.APPLICATION_RECEIVED_EVENT, {}, hours_ago + 0.2),
        (topics.APPLICATION_ROUTED, application_id, topics.APPLICATION_ROUTED_EVENT,
         {"deciding_partner": PARTNER}, hours_ago + 0.1),
        (topics.APPLICATION_VERIFIED, application_id, topics.APPLICATION_VERIFIED_EVENT, {}, hours_ago + 0.05),
        (topics.partner_assignments(PARTNER), application_id, topics.MATTER_ASSIGNED_EVENT, {}, hours_ago),
    ]


def test_stuck_finds_the_application_whose_partner_never_answers(namespace):
    delivered = [*lifecycle("DONE-1", 5),
                 (topics.partner_decisions(PARTNER), "DONE-1", topics.AUTHORITY_DECISION_EVENT,
                  {"outcome": "APPROVED"}, 4),
                 (topics.APPLICATION_DECIDED, "DONE-1", topics.APPLICATION_DECIDED_EVENT, {"outcome": "APPROVED"}, 4),
                 (topics.APPLICATION_DELIVERED, "DONE-1", topics.APPLICATION_DELIVERED_EVENT, {}, 3.5)]
    asyncio.run(write(namespace, lifecycle("SILENT-1", 3) + delivered + lifecycle("YOUNG-1", 0)))

    result = CliRunner().invoke(cli, ["--namespace", namespace, "stuck", "--older-than", "2h", "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0
    group, = json.loads(result.output)
    assert (group["stage"], group["waiting_for"], group["count"]) == \
        ("assigned to the deciding authority", f"partner-{PARTNER}", 1)
    silent, = group["applications"]
    assert silent["application_id"] == "SILENT-1"
    assert 3 * 3600 - 60 < silent["idle_seconds"] < 3 * 3600 + 600
    assert set(silent) == {"application_id", "stage", "waiting_for", "since", "idle_seconds"}  # nothing personal


def test_app_shows_one_application_s_events_masked_and_the_partner_it_waits_for(namespace):
    asyncio.run(write(namespace, lifecycle("SILENT-3", 3)))
    result = CliRunner().invoke(cli, ["--namespace", namespace, "app", "SILENT-3", "--json"], catch_exceptions=False)
    assert result.exit_code == 0
    shown = json.loads(result.output)
    assert (shown["stage"], shown["waiting_for"], shown["finished"]) == \
        ("assigned to the deciding authority", f"partner-{PARTNER}", False)
    assert [e["event_type"] for e in shown["events"]] == [topics.APPLICATION_RECEIVED_EVENT,
                                                          topics.APPLICATION_ROUTED_EVENT,
                                                          topics.APPLICATION_VERIFIED_EVENT,
                                                          topics.MATTER_ASSIGNED_EVENT]
    assert shown["events"][0]["body"]["applicant"]["name"] == "***"
    assert shown["events"][3]["body"]["applicant"]["id_number"] == "***"
    missing = CliRunner().invoke(cli, ["--namespace", namespace, "app", "NOBODY"], catch_exceptions=False)
    assert missing.exit_code == 2
