"""The simulated 12345 platform (sim.hotline): work orders as the hotline writes them."""

import random
from datetime import UTC, datetime, timedelta

from sim import hotline
from tongban import topics
from tongban.codec import SchemaRegistry
from tongban.ops import pii as ops
from tongban.pii import PiiCipher
from tongban.pii_policy import HOTLINE, party_keyring

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
NUMBER = "13912345678"


def test_the_callers_number_never_leaves_the_platform_and_what_they_said_is_sealed(tmp_path):
    env = {"TONGBAN_PII_KEY_DIR": str(tmp_path)}  # the hotline's own key, made for the test
    ops.ensure_keys(env)
    registry = SchemaRegistry.load()
    case = hotline.complaint("WO1", NUMBER, "KSTB-MKT-01", "430102", "unit-a", reassigned_to="unit-b")
    records = hotline.work_order_records(registry, PiiCipher(party_keyring(HOTLINE, env)), case, T0)
    bodies = [registry.decode(value)[1] for _, value in records]
    assert [b["stage"] for b in bodies] == ["RECEIVED", "DISPATCHED", "RETURNED", "REASSIGNED", "HANDLING",
                                            "ANSWERED", "CLOSED", "REVISITED", "EVALUATED"]
    assert [b["handling_unit"] for b in bodies if b["handling_unit"]] == ["unit-a", "unit-b"]
    assert {b["caller_hash"] for b in bodies} == {hotline.caller_hash(NUMBER)}
    assert all(NUMBER.encode() not in value and "办理太慢".encode() not in value for _, value in records)
    assert {key for key, _ in records} == {"WO1"}
    assert bodies[3]["occurred_at"] - bodies[0]["occurred_at"] == timedelta(hours=4)
    assert registry.decode(records[0][1])[0] == topics.HOTLINE_WORK_ORDER_EVENT


def test_the_same_caller_hashes_the_same_and_others_differently():
    assert hotline.caller_hash(NUMBER) == hotline.caller_hash(NUMBER) != hotline.caller_hash("13800000000")
    assert hotline.caller_hash(NUMBER) != hotline.caller_hash(NUMBER, salt=b"another platform")


def test_the_demo_has_repeat_callers_reassignments_and_an_answer_on_the_call():
    cases = hotline.demo_cases(hotline.DEMO_MATTERS, 8, random.Random(1))
    complaints = [c for c in cases if c.category == "COMPLAINT"]
    assert len(complaints) == 8
    assert len({c.caller for c in complaints}) == 6, "the last two callers call again"
    assert sum(any(s.name == "REASSIGNED" for s in c.stages) for c in complaints) == 2
    assert [s.name for s in cases[-1].stages] == ["RECEIVED", "ANSWERED_ON_CALL"]
