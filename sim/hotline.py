"""The simulated 12345 platform: work orders with their lifecycle (国办发[2020]53号), written
as the hotline (principal partner-12345) on tongban.feedback.workorders.

    python -m sim.hotline [--complaints N] [--seed S]        (devtools.demo runs it once)

Each scripted case is a list of stages: 受理 RECEIVED, 派单 DISPATCHED, 办理 HANDLING, 答复
ANSWERED, 督办 SUPERVISED, 办结 CLOSED, 回访 REVISITED, 评价 EVALUATED, 退单 RETURNED, 改派
REASSIGNED, 延期 EXTENDED, 重办 REOPENED, and ANSWERED_ON_CALL. The caller's number never
leaves the platform: work orders carry a keyed hash of it (with the platform's own salt:
HMAC-SHA256, or HMAC-SM3 under TONGBAN_PII_CIPHER=sm4-gcm), and what the caller said is
sealed for the hotline itself.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from tongban import topics
from tongban.codec import SchemaRegistry
from tongban.config import Settings, load_settings
from tongban.events import encode_event, now_utc
from tongban.pii import DEFAULT_SUITE, PiiCipher, keyed_digest
from tongban.pii_policy import HOTLINE, party_keyring

PRINCIPAL = f"partner-{HOTLINE}"
SALT = b"tongban-sim-12345"  # the simulated platform's hashing salt (a real one keeps its own secret)


def caller_hash(number: str, salt: bytes = SALT, suite: str = DEFAULT_SUITE) -> str:
    """The suite's keyed hash (tongban.pii.keyed_digest) of the caller's number."""
    return keyed_digest(salt, number.encode(), suite).hex()[:32]


@dataclass(frozen=True)
class Stage:
    """One stage a work order reaches; `unit` for 派单 and 改派."""

    name: str
    after: timedelta = timedelta(0)
    unit: str | None = None


@dataclass(frozen=True)
class Case:
    work_order_id: str
    caller: str  # a phone number: hashed before anything leaves the platform
    category: str
    matter_code: str | None
    division_code: str
    content: str
    stages: tuple[Stage, ...]


def complaint(work_order_id: str, caller: str, matter: str, division: str, unit: str,
              reassigned_to: str | None = None) -> Case:
    """A complaint through its whole lifecycle; with `reassigned_to`, 退单 and 改派 first."""
    detour = (Stage("RETURNED", timedelta(hours=3)), Stage("REASSIGNED", timedelta(hours=4), reassigned_to)) \
        if reassigned_to else ()
    return Case(work_order_id, caller, "COMPLAINT", matter, division, "办理太慢, 材料反复提交", (
        Stage("RECEIVED"), Stage("DISPATCHED", timedelta(hours=1), unit), *detour,
        Stage("HANDLING", timedelta(days=1)), Stage("ANSWERED", timedelta(days=2)), Stage("CLOSED", timedelta(days=2)),
        Stage("REVISITED", timedelta(days=3)), Stage("EVALUATED", timedelta(days=3))))


def consultation(work_order_id: str, caller: str, matter: str, division: str) -> Case:
    return Case(work_order_id, caller, "CONSULTATION", matter, division, "咨询办理材料",
                (Stage("RECEIVED"), Stage("ANSWERED_ON_CALL")))


def work_order_records(registry: SchemaRegistry, cipher: PiiCipher, case: Case,
                       received_at: datetime) -> list[tuple[str, bytes]]:
    """(key, framed event) for every stage of a case, in order."""
    out = []
    for stage in case.stages:
        body: dict[str, Any] = {
            "work_order_id": case.work_order_id, "stage": stage.name, "matter_code": case.matter_code,
            "division_code": case.division_code, "application_id": None, "category": case.category,
            "content": case.content, "occurred_at": received_at + stage.after,
            "caller_hash": caller_hash(case.caller, suite=cipher.suite.name), "handling_unit": stage.unit}
        cause = f"{case.work_order_id}|{stage.name}|{stage.unit}"
        _, value = encode_event(registry, topics.HOTLINE_WORK_ORDER_EVENT, body, cause_id=cause,
                                correlation_id=case.work_order_id, source_system="12345",
                                source_partner=HOTLINE, cipher=cipher, recipients=(HOTLINE,))
        out.append((case.work_order_id, value))
    return out


def demo_cases(matters: list[tuple[str, str]], complaints: int, rng: random.Random) -> list[Case]:
    """Complaints about some matter × division (some reassigned, some from one caller
    twice: duplicates), and a consultation answered on the call."""
    cases = []
    for n in range(complaints):
        matter, division = rng.choice(matters)
        caller = f"1390000{n % max(1, complaints - 2):04d}"  # the last two callers call again
        reassigned = f"{division}-unit-b" if n % 4 == 3 else None
        cases.append(complaint(f"WO-{rng.randrange(16**8):08x}", caller, matter, division,
                               f"{division}-unit-a", reassigned))
    matter, division = matters[0]
    cases.append(consultation(f"WO-{rng.randrange(16**8):08x}", "13900009999", matter, division))
    return cases


async def publish(settings: Settings, records: Iterable[tuple[str, bytes]], *, partition: int | None = None) -> int:
    """Write records in order as the hotline; `partition` pins them to one (tests)."""
    producer = AIOKafkaProducer(**settings.as_principal(PRINCIPAL).kafka_client_options(), acks="all",
                                enable_idempotence=True)
    await producer.start()
    count = 0
    try:
        for key, value in records:
            await producer.send_and_wait(settings.topic(topics.FEEDBACK_WORKORDERS), key=key.encode(), value=value,
                                         partition=partition)
            count += 1
    finally:
        await producer.stop()
    return count


DEMO_MATTERS = [("KSTB-MKT-01", "430102"), ("KSTB-EDU-03", "431200")]


async def feed_demo(complaints: int = 8, seed: int | None = None) -> int:
    """The demo's work orders (TONGBAN_* environment, as the hotline); the stages written."""
    settings = load_settings(PRINCIPAL)
    registry = SchemaRegistry.load()
    cipher = PiiCipher(party_keyring(HOTLINE))
    start = now_utc()
    records = [r for case in demo_cases(DEMO_MATTERS, complaints, random.Random(seed))
               for r in work_order_records(registry, cipher, case, start)]
    return await publish(settings, records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--complaints", type=int, default=8)
    parser.add_argument("--seed", type=int, help="repeat a run's work orders (the same ids: counted once)")
    args = parser.parse_args()
    print(f"12345: {asyncio.run(feed_demo(args.complaints, args.seed))} work-order stages written")


if __name__ == "__main__":
    main()
