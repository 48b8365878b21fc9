"""Everything an end-to-end run wrote is scanned for the personal data it submitted, and none of
it is found in the clear: service and simulator logs, the exported spans with their events,
every topic's bytes in the namespace (dead letters, changelogs, commands included, aborted
transactions too), every stored document in the namespace's databases, the services' local
state files, Track answers and gRPC error details.

The applications are made to leak: material names, a withdrawal reason and a rating comment
repeat the applicant's name, ID number and phone; one submission carries a value that looks
sealed."""

import json
import secrets
from dataclasses import dataclass

import bson
import grpc
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient

from devtools.launcher import ROOT
from services.intake import intake_pb2, intake_pb2_grpc
from sim.samples import DENIED_MATTER, credit_code, resident_id
from tests.pii_parties import stack_cipher
from tests.support import KAFKA, REGISTRY, Sink, start_stack, submit, track, wait_progress, wait_terminal
from tongban.grpc_tls import client_channel
from tongban.pii import PiiError, open_record, sealed_for

pytestmark = pytest.mark.integration

RARE = "甲乙丙丁戊己庚辛壬癸鹤鹭鸥鹞鹂鹃鹊鹏鹦鹉"
# The authorities ask for a 补正 on this matter, so its application waits for the applicant
# and is withdrawn while it waits (no race with a decision).
WAITING_MATTER = "KSTB-MED-02"


@pytest.fixture(scope="module")
def stack(namespace):
    stack = start_stack(namespace, sim_args=("--supplement-matters", WAITING_MATTER))
    yield stack
    stack.stop_all()


@dataclass(frozen=True)
class Person:
    """One applicant's personal data, made up for this run (valid check characters)."""

    name: str
    id_number: str
    phone: str
    address: str

    @classmethod
    def made_up(cls, company: bool = False) -> "Person":
        tag = "".join(secrets.choice(RARE) for _ in range(3))
        if company:
            body = f"91430100MA{secrets.token_hex(4).upper().replace('I', 'J').replace('O', 'P')[:7]}"
            return cls(f"长沙{tag}科技有限公司", credit_code(body), f"0731-8{secrets.randbelow(10**7):07d}",
                       f"湖南省长沙市天心区{tag}路{secrets.randbelow(900) + 100}号")
        birth = f"19{secrets.randbelow(12) + 88}0{secrets.randbelow(9) + 1}1{secrets.randbelow(9)}"
        return cls(f"测{tag}", resident_id("420106", birth, f"{secrets.randbelow(900) + 100}"),
                   f"139{secrets.randbelow(10**8):08d}", f"湖北省武汉市{tag}街{secrets.randbelow(90) + 10}号")

    def values(self) -> dict[str, str]:
        return {"name": self.name, "id_number": self.id_number, "phone": self.phone, "address": self.address}


def material(code: str, name: str, provided: bool = True) -> intake_pb2.Material:
    return intake_pb2.Material(code=code, name=name, provided=provided, original_checked=provided)


def request(ref: str, matter: str, home: str, who: Person, materials: list, delivery: str = "ELECTRONIC",
            kind: str = "PERSON") -> intake_pb2.SubmitRequest:
    applicant = intake_pb2.Applicant(kind=kind, name=who.name, id_number=who.id_number, phone=who.phone)
    return intake_pb2.SubmitRequest(
        client_reference=ref, source_system="hunan-portal", matter_code=matter, channel="PORTAL",
        receiving_division="430102", home_division=home, applicant=applicant, materials=materials,
        delivery_method=delivery, postal_address=who.address if delivery == "POST" else "")


def careless(who: Person) -> str:
    """Free text an applicant or a partner writes about itself."""
    return f"{who.name}（身份证{who.id_number}，电话{who.phone}）"


# ------------------------------------------------------------------------------ what was written
async def topic_bytes(namespace: str) -> dict[str, bytes]:
    """Every record of every topic in the namespace, from the start, committed or not."""
    admin = AIOKafkaAdminClient(**KAFKA)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(namespace)]
        partitions = [TopicPartition(d["topic"], p["partition"]) for d in await admin.describe_topics(names)
                      for p in d["partitions"]]
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(**KAFKA, isolation_level="read_uncommitted", enable_auto_commit=False,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    out: dict[str, bytearray] = {name: bytearray() for name in names}
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                for r in records:
                    out[tp.topic] += (r.key or b"") + b"\0" + (r.value or b"") + b"\0"
                    out[tp.topic] += b"".join(k.encode() + b"=" + (v or b"") + b"\0" for k, v in r.headers or ())
    finally:
        await consumer.stop()
    return {name: bytes(data) for name, data in out.items()}


async def stored_documents(namespace: str) -> dict[str, bytes]:
    import os

    client = AsyncMongoClient(os.environ.get("TONGBAN_MONGO_URI", "mongodb://127.0.0.1:27217/"))
    out = {}
    try:
        for db_name in await client.list_database_names():
            if not db_name.startswith(namespace.replace("-", "_")):
                continue
            for collection in await client[db_name].list_collection_names():
                docs = await client[db_name][collection].find({}).to_list(None)
                out[f"{db_name}.{collection}"] = b"".join(bson.encode(d) for d in docs)
    finally:
        await client.close()
    return out


def files_under(*folders) -> dict[str, bytes]:
    return {str(p.relative_to(ROOT)): p.read_bytes() for folder in folders for p in sorted(folder.rglob("*"))
            if p.is_file()}


def forms(text: str) -> list[bytes]:
    """How a value can look in bytes: UTF-8 or JSON-escaped."""
    shapes = {text.encode(), json.dumps(text)[1:-1].encode()}
    return sorted(shapes)


def people_index(people: list[Person], person: Person) -> int:
    return people.index(person)


def leaks(written: dict[str, bytes], people: list[Person]) -> list[str]:
    found = []
    for person in people:
        for kind, value in person.values().items():
            for shape in forms(value):
                found += [f"{kind} of applicant {people_index(people, person)} in {where}"
                          for where, data in written.items() if shape in data]
    return found


# ------------------------------------------------------------------------------ the run
async def test_an_end_to_end_run_writes_no_personal_data_in_the_clear_anywhere(stack, namespace):
    run = secrets.token_hex(4)
    posted, online, failing, company, refused = (Person.made_up(), Person.made_up(), Person.made_up(),
                                                 Person.made_up(company=True), Person.made_up())
    people = [posted, online, failing, company, refused]
    submissions = {
        "DELIVERED:post": request(f"{run}-post", "KSTB-SOC-02", "360102", posted,
                                  [material("RESIDENT_ID", "居民身份证"), material("PHOTO", careless(posted))],
                                  delivery="POST"),
        "DELIVERED:online": request(f"{run}-online", "KSTB-MED-01", "420106", online,
                                    [material("RESIDENT_ID", f"{online.name}的居民身份证"),
                                     material("RESIDENCE_PROOF", "异地居住证明")]),
        "WITHDRAWN": request(f"{run}-withdrawn", WAITING_MATTER, "420106", failing,
                             [material("RESIDENT_ID", "居民身份证"), material("CHANGE_PROOF", careless(failing))]),
        "DENIED": request(f"{run}-denied", DENIED_MATTER, "440100", company,
                          [material("APPLICATION_FORM", careless(company)), material("COMMITMENT_LETTER", "告知承诺书"),
                           material("INSPECTION_REPORT", "产品检验合格报告")], kind="COMPANY"),
    }
    ids = {expected: await submit(stack, req) for expected, req in submissions.items()}

    # Input that looks sealed is refused at the edge, naming the field and nothing of the person.
    sealed_looking = request(f"{run}-sealed", "KSTB-MED-01", "420106", refused, [material("RESIDENT_ID", "居民身份证")])
    sealed_looking.applicant.id_number = f"pii:v2:aes256gcm:x:applicant.id_number:{refused.id_number}:a.b.c:d"
    with pytest.raises(grpc.aio.AioRpcError) as refusal:
        await submit(stack, sealed_looking)
    assert refusal.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "applicant.id_number: looks sealed" in refusal.value.details()
    details = {"gRPC error details": refusal.value.details().encode()}

    # Withdrawn while it waits for the 补正, with a reason in the applicant's own careless words.
    await wait_progress(stack, ids["WITHDRAWN"], lambda p: p.stage == "SUPPLEMENT_REQUESTED")
    async with client_channel(stack.grpc_target("intake")) as channel:
        await intake_pb2_grpc.IntakeStub(channel).Withdraw(intake_pb2.WithdrawRequest(
            application_id=ids["WITHDRAWN"], reason=f"不办了，{careless(failing)}"), timeout=10)

    answers = {}
    for expected, application_id in ids.items():
        progress = await wait_terminal(stack, application_id, within=90)
        assert progress.stage == expected.split(":")[0], (expected, [h.stage for h in progress.history])
    async with client_channel(stack.grpc_target("intake")) as channel:
        await intake_pb2_grpc.IntakeStub(channel).Rate(intake_pb2.RateRequest(
            application_id=ids["DELIVERED:post"], level=5, channel="ONLINE", comment=careless(posted),
            rating_reference="r1"))
    await wait_terminal(stack, ids["DELIVERED:post"], until=lambda p: p.ratings)
    for expected, application_id in ids.items():
        progress = await track(stack, application_id)
        answers[f"Track {expected}"] = progress.SerializeToString() + str(progress).encode()

    # The free text was there to leak: Track says who withdrew, and not in their words.
    withdrawn = await track(stack, ids["WITHDRAWN"])
    assert withdrawn.stage == "WITHDRAWN"
    assert "withdrawn by the applicant" in [h.detail for h in withdrawn.history]

    # Personal data did travel, sealed for who may read it: the carrier opens the dispatch, the
    # assigned authority its assignment; no other partner opens either, and a value moved to
    # another application opens nowhere.
    topics = ["tongban.partner.ems.dispatches", "tongban.feedback.ratings", "tongban.partner.360000.assignments",
              "tongban.feedback.facts"]

    def rating_counted(s) -> bool:
        """Feedback's fact for the rating is committed: the rating's trip, the last one of the
        run, has written its spans and log lines (the scan below must see them)."""
        rated = s.events("tongban.feedback.ServiceRating", ids["DELIVERED:post"])
        return bool(rated) and any(f["fact_id"] == rated[0]["rating_id"]
                                   for f in s.events("tongban.feedback.SupervisionFact"))

    async with Sink(namespace, topics) as sink:
        seen = await sink.wait_for(lambda s: s.events("tongban.delivery.PostalDispatch", ids["DELIVERED:post"])
                                   and rating_counted(s)
                                   and s.events("tongban.partner.MatterAssigned", ids["DELIVERED:post"]))
    assigned = seen.events("tongban.partner.MatterAssigned", ids["DELIVERED:post"])[0]["applicant"]["id_number"]
    where = {"record": "tongban.partner.MatterAssigned", "path": "applicant.id_number"}
    assert sealed_for(assigned) == ["360000"]
    assert stack_cipher("360000").open(assigned, **where, subject=ids["DELIVERED:post"]) == posted.id_number
    for other in ("420000", "440000", "ems"):
        with pytest.raises(PiiError, match="not for"):
            stack_cipher(other).open(assigned, **where, subject=ids["DELIVERED:post"])
    with pytest.raises(PiiError, match="another field or application"):
        stack_cipher("360000").open(assigned, **where, subject=ids["DELIVERED:online"])
    dispatch = seen.events("tongban.delivery.PostalDispatch", ids["DELIVERED:post"])[0]
    assert sealed_for(dispatch["address"]) == ["ems"]
    opened = open_record(REGISTRY, "tongban.delivery.PostalDispatch",
                         {k: v for k, v in dispatch.items() if not k.startswith("_") and k != "envelope"},
                         stack_cipher("ems"), ids["DELIVERED:post"])
    assert (opened["recipient_name"], opened["address"], opened["phone"]) == (posted.name, posted.address,
                                                                              posted.phone)
    assert sealed_for(seen.events("tongban.feedback.ServiceRating", ids["DELIVERED:post"])[0]["comment"]) == ["intake"]

    written = {
        **{f"topic {k}": v for k, v in (await topic_bytes(namespace)).items()},
        **{f"store {k}": v for k, v in (await stored_documents(namespace)).items()},
        **files_under(stack.log_dir),
        **files_under(*sorted((ROOT / "var" / "state").glob(f"{namespace}tongban-*"))),
        **answers,
        **details,
    }
    # The scan saw what it should: sealed values on the topics, stored work, logs, spans with events.
    assert any(b"pii:v2:" in v for k, v in written.items() if k.endswith("tongban.application.received"))
    assert any(k.startswith(f"topic {namespace}tongban.dlq.") for k in written)
    assert any(k.startswith("store ") and ".archive_" in k and v for k, v in written.items())
    spans = [json.loads(line) for line in (stack.log_dir / "traces.jsonl").read_text().splitlines()]
    assert spans
    assert all("events" in s for s in spans)
    assert {"intake.log", "verification.log", "delivery.log", "sim.log"} <= {p.name for p in stack.log_dir.iterdir()}

    found = leaks(written, people)
    assert not found, "personal data in the clear:\n" + "\n".join(found)
