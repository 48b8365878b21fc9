"""Supervision over the real broker: the feedback service and the faust flags app in one
namespace, fed ratings, 12345 work orders, casework and facts as their writers would.

- a matter flagged when a threshold is crossed and cleared when its window recovers;
- no double count under replay, and after the faust worker is killed mid-stream;
- a second 一事一评 rating refused (dead letter with its reason); both parties of a 代收代办
  case rated, each against its own division;
- an appealed rating excluded (withdrawn with its reason) and the flag it raised cleared;
- duplicate work orders merged, a reassigned order counted against its final unit;
- overdue rectifications found under a controlled clock (ratings given a month ago).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from devtools import report
from devtools.launcher import ROOT, Stack
from sim import hotline
from tests.support import KAFKA, REGISTRY, Seen, Sink
from tongban import topics
from tongban.config import load_settings
from tongban.events import encode_event, now_utc
from tongban.pii import PiiCipher
from tongban.pii_policy import HOTLINE, party_keyring

NOW = now_utc()
FLAGGED, CLEARED = topics.MATTER_FLAGGED_EVENT, topics.MATTER_FLAG_CLEARED_EVENT
FACT, OVERDUE = topics.SUPERVISION_FACT_EVENT, topics.RECTIFICATION_OVERDUE_EVENT
WINDOWS = "feedback.windows"  # the faust app, python -m services.feedback.windows


@pytest.fixture(scope="module")
def stack(namespace):
    log_dir = ROOT / "var" / "test" / namespace.rstrip("-")
    stack = Stack({"TONGBAN_NAMESPACE": namespace, "TONGBAN_SESSION_TIMEOUT_MS": "6000",
                   "TONGBAN_LOG_LEVEL": "INFO"}, log_dir)
    stack.start("feedback")
    stack.start(WINDOWS)
    try:
        asyncio.run(stack.wait_healthy(("feedback",)))
        yield stack
    finally:
        stack.stop_all()


def token() -> str:
    return secrets.token_hex(3)


def rating(rating_id: str, application: str, matter: str, level: int, *, party: str = "420000",
           division: str = "420100", channel: str = "ONLINE", role: str = "SERVICE", at=NOW) -> tuple[str, bytes]:
    body = {"rating_id": rating_id, "application_id": application, "matter_code": matter, "division_code": division,
            "party": party, "level": level, "channel": channel, "comment": None, "rated_at": at,
            "rated_role": role, "interaction_id": None, "indicator_set": "GB/T 39735-2020:v1"}
    _, value = encode_event(REGISTRY, topics.SERVICE_RATING_EVENT, body, cause_id=rating_id,
                            correlation_id=application, source_system="test")
    return application, value


def supervision_fact(fact_id: str, group: str, kind: str = "COMPLAINT") -> tuple[str, bytes]:
    matter, division, party = group.split("|")
    body = {"fact_id": fact_id, "kind": kind, "matter_code": matter, "division_code": division, "party": party,
            "rated_role": "SERVICE", "bad": False, "counted": True, "reason": None, "occurred_at": NOW}
    _, value = encode_event(REGISTRY, FACT, body, cause_id=fact_id, correlation_id=group, source_system="test")
    return group, value


def sla_breached(application: str, matter: str, party: str) -> tuple[str, bytes]:
    body = {"application_id": application, "matter_code": matter, "party": party, "leg": "DECISION",
            "step": "DECIDE", "deadline": NOW - timedelta(days=1), "consequence": ""}
    _, value = encode_event(REGISTRY, topics.SLA_BREACHED_EVENT, body, cause_id=f"breach-{application}",
                            correlation_id=application, source_system="test")
    return application, value


def appeal(rating_id: str, application: str) -> tuple[str, bytes]:
    body = {"rating_id": rating_id, "application_id": application, "upheld": True,
            "reason": "恶意差评: the rater rated a matter he never applied for", "decided_at": NOW}
    _, value = encode_event(REGISTRY, topics.APPEAL_DECIDED_EVENT, body, cause_id=f"appeal-{rating_id}",
                            correlation_id=application, source_system="test")
    return application, value


async def send(namespace: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(**KAFKA, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(namespace + topic, key=key.encode(), value=value)
    finally:
        await producer.stop()


async def group_empty(group: str, within: float = 60) -> None:
    """Wait until the consumer group has no members (the broker's session timeout expired)."""
    admin = AIOKafkaAdminClient(**KAFKA)
    await admin.start()
    try:
        deadline = time.monotonic() + within
        while True:
            [response] = await admin.describe_consumer_groups([group])
            state = response.groups[0][2]  # (error_code, group, state, ...) in every version
            if state in ("Empty", "Dead"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{group} is still {state}")
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


def verdicts(seen: Seen, event_type: str, matter: str) -> list[dict]:
    return [e for e in seen.events(event_type) if e["matter_code"] == matter]


def header(record, name: str) -> str:
    return dict(record.headers)[name].decode()


# ---------------------------------------------------------------------------- flags


async def test_a_matter_is_flagged_when_bad_ratings_cross_the_line_and_cleared_when_the_window_recovers(
        stack, namespace):
    matter = f"M-{token()}"
    async with Sink(namespace, [topics.FEEDBACK_FLAGS]) as sink:
        await send(namespace, topics.FEEDBACK_RATINGS,
                   [rating(f"R{n}-{matter}", f"A{n}-{matter}", matter, 5) for n in range(5)])
        seen = await sink.wait_for(lambda s: len(verdicts(s, FLAGGED, matter)) == 2, within=120)
        flags = {f["window"]: f for f in verdicts(seen, FLAGGED, matter)}
        assert set(flags) == {"7d", "30d-hop7d"}
        weekly = flags["7d"]
        assert (weekly["division_code"], weekly["party"], weekly["rule"]) == ("420100", "420000", "bad-ratings")
        assert (weekly["bad_ratings"], weekly["total_ratings"], weekly["bad_rating_rate"]) == (5, 5, 1.0)
        assert weekly["window_end"] - weekly["window_start"] == timedelta(days=7)

        # 5 bad of 51: under the clearing line of 10 %
        await send(namespace, topics.FEEDBACK_RATINGS,
                   [rating(f"R{n}-{matter}", f"A{n}-{matter}", matter, 1) for n in range(5, 51)])
        seen = await sink.wait_for(lambda s: len(verdicts(s, CLEARED, matter)) == 2, within=120)
    assert {c["flag_id"] for c in verdicts(seen, CLEARED, matter)} == {f["flag_id"] for f in flags.values()}


async def test_no_double_count_under_replay_or_after_the_worker_is_killed_mid_stream(stack, namespace):
    group = f"M-{token()}|430102|unit-a"
    matter = group.split("|")[0]
    first_two = [supervision_fact(f"WO-1-{matter}", group), supervision_fact(f"WO-2-{matter}", group)]
    changelog = "tongban.changelog.tongban-flags"

    def counted_both(seen: Seen) -> bool:
        """The worker has written the group's windows holding both facts to its table."""
        return any(r.topic.endswith(changelog) and r.key == json.dumps(group).encode() and r.value
                   and all(f"WO-{n}-{matter}" in r.value.decode() for n in (1, 2)) for r in seen.records)

    async with Sink(namespace, [topics.FEEDBACK_FLAGS, changelog]) as sink:
        await send(namespace, topics.FEEDBACK_FACTS, first_two * 3)  # each fact three times: 6 records, 2 facts
        await sink.wait_for(counted_both, within=120)
        # SIGKILL as soon as it counted them: its input offsets are most likely not committed
        # yet (faust commits every 2.8 s), so the restarted worker reads the records again
        stack.processes[WINDOWS].kill()
        stack.processes[WINDOWS].wait()
        # restarted as a supervisor would, once the broker has dropped the dead member: a worker
        # joining beside it can be left not fetching a partition (faust-streaming issue 629)
        await group_empty(namespace + "tongban-flags")
        stack.start(WINDOWS)
        await send(namespace, topics.FEEDBACK_FACTS, [*first_two, supervision_fact(f"WO-3-{matter}", group)])
        seen = await sink.wait_for(lambda s: {f["window"] for f in verdicts(s, FLAGGED, matter)} == {
            "7d", "30d-hop7d"}, within=180)
    flags = verdicts(seen, FLAGGED, matter)
    assert {f["complaints"] for f in flags} == {3}, "flagged at the third distinct complaint, not before"
    assert len({f["envelope"]["event_id"] for f in flags}) == 2, "one flag per window spec (resends share an id)"


async def test_a_record_that_is_no_event_is_dead_lettered_by_the_flags_app_and_counting_goes_on(stack, namespace):
    group = f"M-{token()}|430102|unit-a"
    async with Sink(namespace, ["tongban.dlq.tongban-flags", topics.FEEDBACK_FLAGS]) as sink:
        await send(namespace, topics.FEEDBACK_FACTS, [(group, b"not an event"),
                                                      *(supervision_fact(f"WO-{n}", group) for n in range(3))])
        seen = await sink.wait_for(lambda s: verdicts(s, FLAGGED, group.split("|")[0])
                                   and any(r.topic.endswith("dlq.tongban-flags") for r in s.records))
    [dead] = [r for r in seen.records if r.topic.endswith("dlq.tongban-flags")]
    assert (dead.value, header(dead, "tongban.dlq.error.class")) == (b"not an event", "MalformedRecord")
    assert header(dead, "tongban.dlq.origin.topic") == namespace + topics.FEEDBACK_FACTS


# ---------------------------------------------------------------------------- 好差评 rules


async def test_a_second_online_rating_of_an_application_is_refused_with_the_reason(stack, namespace):
    matter, application = f"M-{token()}", f"A-{token()}"
    async with Sink(namespace, ["tongban.dlq.tongban-feedback", topics.FEEDBACK_FACTS]) as sink:
        await send(namespace, topics.FEEDBACK_RATINGS, [rating(f"R1-{matter}", application, matter, 2),
                                                        rating(f"R2-{matter}", application, matter, 5,
                                                               channel="MOBILE")])
        seen = await sink.wait_for(lambda s: any(r.topic.endswith("dlq.tongban-feedback") for r in s.records))
    [refused] = [r for r in seen.records if r.topic.endswith("dlq.tongban-feedback")]
    assert header(refused, "tongban.dlq.error.class") == "Rejected"
    assert "一事一评" in header(refused, "tongban.dlq.error.message")
    assert f"rating R1-{matter}" in header(refused, "tongban.dlq.error.message")
    assert [f["fact_id"] for f in seen.events(FACT) if f["matter_code"] == matter] == [f"R1-{matter}"]


async def test_both_parties_of_a_dai_shou_dai_ban_case_are_rated_against_their_own_divisions(stack, namespace):
    matter, application = f"M-{token()}", f"A-{token()}"
    async with Sink(namespace, [topics.FEEDBACK_FACTS]) as sink:
        await send(namespace, topics.FEEDBACK_RATINGS, [
            rating(f"R1-{matter}", application, matter, 1, role="RECEIVING", division="431200", party="431200"),
            rating(f"R2-{matter}", application, matter, 4, role="DECIDING", division="420100", party="420000")])
        seen = await sink.wait_for(lambda s: len([f for f in s.events(FACT) if f["matter_code"] == matter]) == 2)
    assert sorted((f["_key"], f["rated_role"], f["bad"]) for f in seen.events(FACT) if f["matter_code"] == matter) == [
        (f"{matter}|420100|420000", "DECIDING", True), (f"{matter}|431200|431200", "RECEIVING", False)]


async def test_an_appealed_rating_is_excluded_with_its_reason_and_its_flag_cleared(stack, namespace):
    matter = f"M-{token()}"
    levels = [5, 5, 1, 1, 1]  # 40 % bad: flagged
    async with Sink(namespace, [topics.FEEDBACK_FLAGS, topics.FEEDBACK_FACTS]) as sink:
        await send(namespace, topics.FEEDBACK_RATINGS,
                   [rating(f"R{n}-{matter}", f"A{n}-{matter}", matter, level) for n, level in enumerate(levels)])
        await sink.wait_for(lambda s: len(verdicts(s, FLAGGED, matter)) == 2, within=120)
        await send(namespace, topics.FEEDBACK_CASEWORK, [appeal(f"R{n}-{matter}", f"A{n}-{matter}") for n in (0, 1)])
        seen = await sink.wait_for(lambda s: len(verdicts(s, CLEARED, matter)) == 2, within=120)
    withdrawn = [f for f in seen.events(FACT) if f["matter_code"] == matter and not f["counted"]]
    assert sorted(f["fact_id"] for f in withdrawn) == [f"R0-{matter}", f"R1-{matter}"]
    assert {f["reason"] for f in withdrawn} == {
        "申诉复核 upheld: 恶意差评: the rater rated a matter he never applied for"}


async def test_overdue_rectifications_are_reported_under_a_controlled_clock(stack, namespace):
    matter = f"M-{token()}"
    month_ago = NOW - timedelta(days=30)  # both deadlines (1 and 15 working days) have passed
    async with Sink(namespace, [topics.FEEDBACK_FACTS]) as sink:
        await send(namespace, topics.FEEDBACK_RATINGS, [rating(f"R1-{matter}", f"A-{matter}", matter, 4, at=month_ago)])
        seen = await sink.wait_for(lambda s: len([o for o in s.events(OVERDUE) if o["matter_code"] == matter]) == 2)
    assert sorted(o["step"] for o in seen.events(OVERDUE) if o["matter_code"] == matter) == ["CALLED_BACK", "RESOLVED"]


# ---------------------------------------------------------------------------- 12345


async def test_duplicates_are_merged_and_a_reassigned_order_counts_against_its_final_unit(stack, namespace):
    matter, division = f"M-{token()}", "430102"
    settings = load_settings(hotline.PRINCIPAL, {"TONGBAN_NAMESPACE": namespace})
    cipher = PiiCipher(party_keyring(HOTLINE))
    caller = "13912345678"
    first = hotline.complaint(f"WO1-{matter}", caller, matter, division, "unit-a", reassigned_to="unit-b")
    again = hotline.complaint(f"WO2-{matter}", caller, matter, division, "unit-a")  # the same caller, next day
    first_records = hotline.work_order_records(REGISTRY, cipher, first, NOW)
    # 受理 and 派单 of the first, the whole duplicate, then the first's 退单, 改派 and the rest; on one
    # partition the hotline's order is kept, so the 改派 is handled after the duplicate
    records = [*first_records[:2], *hotline.work_order_records(REGISTRY, cipher, again, NOW + timedelta(days=1)),
               *first_records[2:]]
    async with Sink(namespace, [topics.FEEDBACK_FACTS]) as sink:
        await hotline.publish(settings, records, partition=0)
        seen = await sink.wait_for(lambda s: any(f["party"] == "unit-b" for f in s.events(FACT)
                                                 if f["matter_code"] == matter))
    facts = [(f["fact_id"], f["party"], f["counted"]) for f in seen.events(FACT) if f["matter_code"] == matter]
    assert [f for f in facts if f[1] == "unit-a"] == [(f"WO1-{matter}", "unit-a", True),
                                                      (f"WO1-{matter}", "unit-a", False)]
    assert [f for f in facts if f[1] == "unit-b"] == [(f"WO1-{matter}", "unit-b", True)]
    assert not [f for f in facts if f[0] == f"WO2-{matter}"], "the duplicate is merged into WO1"


# ---------------------------------------------------------------------------- the report

CHROMIUM = ("/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync")


def rendered_dom(page: Path, profile: Path) -> str:
    """The page's DOM after its scripts ran in headless Chromium (Debian's, `make chromium`)."""
    done = subprocess.run([*CHROMIUM, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


async def test_an_sla_breach_counts_against_the_party_the_ledger_names(stack, namespace):
    matter = f"M-{token()}"
    async with Sink(namespace, [topics.FEEDBACK_FACTS]) as sink:
        await send(namespace, topics.SLA_BREACHED, [sla_breached(f"A-{matter}", matter, "420000")])
        seen = await sink.wait_for(lambda s: [f for f in s.events(FACT) if f["matter_code"] == matter])
    [counted] = [f for f in seen.events(FACT) if f["matter_code"] == matter]
    assert (counted["_key"], counted["kind"], counted["fact_id"]) == (
        f"{matter}|420000|420000", "SLA_BREACH", f"A-{matter}|DECISION|DECIDE")


async def test_the_html_report_renders_its_charts_in_headless_chromium(stack, namespace, tmp_path):
    matter = f"M-{token()}"
    group = f"{matter}|420100|420000"
    async with Sink(namespace, [topics.FEEDBACK_FACTS]) as sink:
        await send(namespace, topics.FEEDBACK_RATINGS, [rating(f"R1-{matter}", f"A-{matter}", matter, 5,
                                                               at=NOW - timedelta(days=30))])
        await send(namespace, topics.FEEDBACK_FACTS, [supervision_fact(f"WO-{matter}", group)])
        await send(namespace, topics.SLA_BREACHED, [sla_breached(f"A-{matter}", matter, "420000")])
        await sink.wait_for(lambda s: len([o for o in s.events(OVERDUE) if o["matter_code"] == matter]) == 2
                            and [f for f in s.events(FACT) if f["matter_code"] == matter and f["kind"] == "SLA_BREACH"])
    out = tmp_path / "supervision.html"
    report.write_html(await report.build(namespace), out)
    dom = rendered_dom(out, tmp_path / "chromium-profile")
    charts = re.findall(r'<figure class="chart"[^>]*data-ranking="([^"]+)"[^>]*data-drawn="(\d+)"[^>]*>(.*?)</figure>',
                        dom, re.S)
    assert {name for name, _, _ in charts} == {"bad-rating rate", "complaints", "SLA breaches",
                                               "overdue rectifications"}
    for name, drawn, body in charts:
        assert int(drawn) >= 1, f"chart {name} drew no bar"
        assert body.count("<rect") == int(drawn), f"chart {name}: one bar per ranked party"
    assert "420000 (420100)" in dom
