"""Verification through governed data sharing, over real gRPC and the real broker and store:
applications submitted through intake are verified by the provider processes' yes/no
answers; providers refuse queries without an approved demand and record them; a narrow
requester only gets yes/no; a provider down holds back only its own applications; the
audit chain holds, and an edited entry and a rewritten tail are both found."""

import asyncio
import os
import secrets
import time
from datetime import UTC, datetime

import grpc
import pytest
from pymongo import AsyncMongoClient
from stdnum.cn import ric

from services.datasharing.__main__ import check
from services.datasharing.audit import Access, Head, collection_of, new_entry
from services.intake import intake_pb2, intake_pb2_grpc
from sim.samples import samples
from tests.pii_parties import sealed_by
from tests.support import DEFAULT_CALLER, REGISTRY, Sink, submit, wait_progress
from tongban.bus import make_producer
from tongban.config import load_settings
from tongban.events import encode_event
from tongban.grpc_tls import client_channel
from tongban.sharing import datasharing_pb2, datasharing_pb2_grpc, endpoints
from tongban.sharing.access import consultations

pytestmark = pytest.mark.integration

VERIFIED_TOPIC = "tongban.application.verified"
VERIFIED = "tongban.application.ApplicationVerified"
FAILED = "tongban.application.ApplicationVerificationFailed"
AWAITED = "tongban.application.EvidenceAwaited"
# seeded in services/datasharing/records/: identity (hn_psb), household in 370102 (mps), a diploma (moe)
def resident_id(first17: str) -> str:
    return first17 + ric.calc_check_digit(first17 + "X")


TEST_1 = ("测试一", resident_id("43012119800101111"))
TEST_2 = ("测试二", resident_id("43012119810202222"))
EDUCATION_BASIS = "《公证程序规则》第二十七条"


def material(code: str, provided: bool = True, original_checked: bool = False) -> dict:
    return {"code": code, "name": code, "provided": provided, "original_checked": original_checked}


def household_move(who: tuple[str, str], materials: list[dict]) -> dict:
    """户口迁移 at a 湘西 window for 济南 (the point-to-point agreement), as in sim/samples.py."""
    return {"matter_code": "KSTB-PSB-01", "channel": "WINDOW", "receiving_division": "433101",
            "home_division": "370102", "who": who, "materials": materials,
            "places": {"HOUSEHOLD": "370102", "RESIDENCE": "370102"}}


def social_card(who: tuple[str, str]) -> dict:
    """社会保障卡申领 received here, handled in Jiangxi: needs identity only (hn_psb)."""
    return {"matter_code": "KSTB-SOC-02", "channel": "WINDOW", "receiving_division": "430104",
            "home_division": "360102", "who": who, "places": {},
            "materials": [material("RESIDENT_ID"), material("PHOTO", original_checked=True)]}


async def receive(namespace: str, application: dict) -> str:
    """Write an ApplicationReceived v2 as intake does (sealed for verification and delivery,
    bound to the application): verification's input, whatever intake's API does meanwhile."""
    application_id = "TBVS" + secrets.token_hex(6).upper()
    name, id_number = application["who"]
    body = {"application_id": application_id, "matter_code": application["matter_code"],
            "channel": application["channel"], "receiving_division": application["receiving_division"],
            "home_division": application["home_division"],
            "applicant": {"kind": "PERSON", "name": name, "id_number": id_number, "phone": "13800000000"},
            "materials": application["materials"], "delivery_method": "WINDOW", "postal_address": None,
            "submitted_at": datetime.now(UTC), "application_number": "", "window_id": "", "bundle_id": "",
            "places": application["places"], "commitments": [], "deferred_materials": {}}
    settings = load_settings("intake", {**os.environ, "TONGBAN_NAMESPACE": namespace})
    _, value = encode_event(REGISTRY, "tongban.application.ApplicationReceived", body, cause_id=application_id,
                            correlation_id=application_id, source_system="tongban-intake",
                            **sealed_by("intake", "tongban.application.received"))
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("tongban.application.received"), key=application_id.encode(),
                                     value=value)
    finally:
        await producer.stop()
    return application_id


async def outcome(sink: Sink, application_id: str, within: float = 60) -> tuple[str, dict]:
    seen = await sink.wait_for(lambda s: s.events(VERIFIED, application_id) or s.events(FAILED, application_id),
                               within)
    return next((t, e[0]) for t in (VERIFIED, FAILED) if (e := seen.events(t, application_id)))


async def query(stack, provider: str, caller: str, **fields) -> datasharing_pb2.EvidenceAnswer:
    async with client_channel(stack.grpc_target(provider), caller) as channel:
        return await datasharing_pb2_grpc.DataSharingStub(channel).Query(
            datasharing_pb2.EvidenceQuery(**{"requester": caller, "purpose": "公证核验", **fields}), timeout=5)


async def test_verified_through_yes_no_answers_without_originals(stack, namespace):
    application_id = await receive(namespace, household_move(TEST_1, [
        material("RESIDENT_ID"), material("HOUSEHOLD_REGISTER"), material("SETTLEMENT_PROOF", original_checked=True)]))
    async with Sink(namespace, [VERIFIED_TOPIC]) as sink:
        event_type, event = await outcome(sink, application_id)
    assert event_type == VERIFIED
    by = {m["code"]: m for m in event["materials"]}
    assert by["RESIDENT_ID"]["satisfied_by"] == "SHARED"
    assert by["RESIDENT_ID"]["evidence_reference"].startswith("hn_psb:")
    assert by["HOUSEHOLD_REGISTER"]["satisfied_by"] == "SHARED"
    assert by["SETTLEMENT_PROOF"]["satisfied_by"] == "ORIGINAL"
    # what the applicant sees through Track (PIPL §35): who consulted which record, and why
    ports = {endpoints.port_variable(p): str(stack.ports[p]) for p in endpoints.PROVIDERS}
    seen = await consultations(application_id, env=ports)
    assert sorted((c.requester, c.evidence_type, c.answer) for c in seen) == [
        ("tongban-verification", "HOUSEHOLD", "MATCH"), ("tongban-verification", "IDENTITY", "MATCH")]
    assert all(c.purpose and c.legal_basis for c in seen)


async def test_failed_with_the_reason_per_material_when_the_records_contradict(stack, namespace):
    impostor = ("测试贰", TEST_2[1])  # the number's record holds another name
    application_id = await receive(namespace, household_move(impostor, [
        material("RESIDENT_ID", original_checked=True), material("HOUSEHOLD_REGISTER", original_checked=True),
        material("SETTLEMENT_PROOF", original_checked=True)]))
    async with Sink(namespace, [VERIFIED_TOPIC]) as sink:
        event_type, event = await outcome(sink, application_id)
    assert event_type == FAILED
    assert event["outcome"] == "FAILED"
    assert [(m["code"], m["problem"]) for m in event["materials"]] == [
        ("RESIDENT_ID", "CONTRADICTED"), ("HOUSEHOLD_REGISTER", "CONTRADICTED")]
    assert "the IDENTITY record of hn_psb does not confirm the declared name" in event["materials"][0]["reason"]
    assert "测试" not in repr(event), "no personal data in reasons"


async def test_supplement_required_with_the_full_list_where_sharing_cannot_confirm(stack, namespace):
    nobody = ("无记录", resident_id("43012119990909999"))  # no record with any provider
    application_id = await receive(namespace, household_move(nobody, [
        material("RESIDENT_ID"), material("HOUSEHOLD_REGISTER", provided=False),
        material("SETTLEMENT_PROOF", provided=False)]))
    async with Sink(namespace, [VERIFIED_TOPIC]) as sink:
        event_type, event = await outcome(sink, application_id)
    assert event_type == FAILED
    assert event["outcome"] == "SUPPLEMENT_REQUIRED"
    assert event["missing_materials"] == ["RESIDENT_ID", "HOUSEHOLD_REGISTER", "SETTLEMENT_PROOF"]


async def test_a_query_without_an_approved_demand_is_refused_and_recorded(stack):
    application_id = f"TB-NODEMAND-{secrets.token_hex(3)}"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await query(stack, "hn_psb", "tongban-delivery", application_id=application_id, matter_code="KSTB-SOC-02",
                    evidence_type="IDENTITY", legal_basis="《社会保障卡管理办法》", subject_id=TEST_1[1],
                    declared={"name": TEST_1[0]})
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "no approved demand of tongban-delivery" in refused.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as posing:  # a requester may not pose as another
        await query(stack, "hn_psb", "tongban-delivery", requester="tongban-verification",
                    application_id=application_id, matter_code="KSTB-SOC-02", evidence_type="IDENTITY",
                    legal_basis="x", subject_id=TEST_1[1])
    assert posing.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with client_channel(stack.grpc_target("hn_psb"), "tongban-operator") as channel:
        log = await datasharing_pb2_grpc.DataSharingStub(channel).AccessLog(
            datasharing_pb2.AccessLogRequest(application_id=application_id), timeout=5)
    assert [(a.requester, a.answer) for a in log.accesses] == [("tongban-delivery", "DENIED")] * 2


async def test_a_notary_class_requester_only_ever_gets_yes_or_no(stack):
    ask = {"matter_code": "KSTB-JUS-01", "evidence_type": "EDUCATION", "legal_basis": EDUCATION_BASIS,
           "subject_id": TEST_1[1], "declared": {"name": TEST_1[0]}, "want_evidence": True}
    notary = await query(stack, "moe", "hunan-notary", application_id="TB-NOTARY", **ask)
    assert notary.verdict == datasharing_pb2.EvidenceAnswer.MATCH
    assert not notary.HasField("evidence"), "narrow: yes/no only, even when asking for the evidence"
    broad = await query(stack, "moe", "tongban-verification", application_id="TB-BROAD", **ask)
    assert broad.evidence.licence_id.startswith("DZZZ-MOE-"), "by its e-licence library id, never the file"
    assert "name" not in broad.evidence.fields, "what was declared is verified, not copied"


async def test_one_provider_down_holds_back_only_its_own_applications_and_loses_nothing(stack, namespace):
    stack.stop("mps")
    try:
        waiting = await receive(namespace, household_move(TEST_1, [
            material("RESIDENT_ID"), material("HOUSEHOLD_REGISTER"),
            material("SETTLEMENT_PROOF", original_checked=True)]))
        other = await receive(namespace, social_card(TEST_1))
        async with Sink(namespace, [VERIFIED_TOPIC]) as sink:
            event_type, _ = await outcome(sink, other)
            assert event_type == VERIFIED, "identity-only work goes on while mps is down"
            seen = await sink.wait_for(lambda s: s.events(AWAITED, waiting))
            awaited = seen.events(AWAITED, waiting)[0]
            assert (awaited["providers"], awaited["evidence_types"]) == (["mps"], ["HOUSEHOLD"])
            assert not seen.events(VERIFIED, waiting)
            assert not seen.events(FAILED, waiting)
    finally:
        stack.start("mps")
    back = time.monotonic()
    await stack.wait_healthy(("mps",))
    async with Sink(namespace, [VERIFIED_TOPIC]) as sink:
        event_type, event = await outcome(sink, waiting, within=90)
    print(f"\nverified {time.monotonic() - back:.1f}s after mps was started again")
    assert event_type == VERIFIED
    assert {m["code"]: m["satisfied_by"] for m in event["materials"]}["HOUSEHOLD_REGISTER"] == "SHARED"


async def wait_anchored(namespace: str, provider: str, within: float = 60) -> tuple[int, Head | None]:
    """Until the provider has anchored its current head (it anchors every 10 s)."""
    deadline = time.monotonic() + within
    while True:
        entries, anchor, broken = await check(provider, {"TONGBAN_NAMESPACE": namespace})
        assert broken is None, broken
        if anchor is not None and anchor.sequence == entries:
            return entries, anchor
        if time.monotonic() > deadline:
            raise TimeoutError(f"{provider} did not anchor its head ({entries} entries, anchor {anchor})")
        await asyncio.sleep(0.5)


async def test_the_audit_chain_holds_and_an_edited_entry_and_a_rewritten_tail_are_found(stack, namespace):
    ask = {"matter_code": "KSTB-JUS-01", "evidence_type": "EDUCATION", "legal_basis": EDUCATION_BASIS,
           "subject_id": TEST_1[1], "declared": {"name": TEST_1[0]}}
    for n in range(4):
        await query(stack, "moe", "hunan-notary", application_id=f"TB-AUDIT-{n}", **ask)
    entries, anchor = await wait_anchored(namespace, "moe")
    assert entries >= 4

    client = AsyncMongoClient("mongodb://127.0.0.1:27217/", tz_aware=True)
    audit = client[f"{namespace.replace('-', '_')}tongban_datasharing"][collection_of("moe", 1)]  # entries 1 to 1,000
    try:
        # an insider edits one entry in place: its own hash gives it away
        original = await audit.find_one({"chain": "moe", "sequence": 2})
        await audit.update_one({"_id": original["_id"]}, {"$set": {"requester": "nobody"}})
        _, _, broken = await check("moe", {"TONGBAN_NAMESPACE": namespace})
        assert (broken.sequence, broken.why) == (2, "its content does not match its hash (edited)")
        await audit.delete_one({"_id": original["_id"]})
        await audit.insert_one(original)

        # ... or rewrites the tail from entry 2 with fresh hashes: consistent, but not with the anchor
        kept = await audit.find({"chain": "moe", "sequence": {"$lt": 2}}, {"_id": 0}).sort("sequence", 1).to_list(None)
        tail = await audit.find({"chain": "moe", "sequence": {"$gte": 2}}).sort("sequence", 1).to_list(None)
        await audit.delete_many({"chain": "moe", "sequence": {"$gte": 2}})
        head = Head(kept[-1]["sequence"], kept[-1]["hash"])
        for old in tail:
            forged = new_entry("moe", head, _access_of({**old, "answer": "NOT_FOUND"}), _at(old))
            await audit.insert_one({"_id": old["_id"], **forged})
            head = Head(forged["sequence"], forged["hash"])
        _, _, broken = await check("moe", {"TONGBAN_NAMESPACE": namespace})
        assert broken is not None
        assert broken.sequence == anchor.sequence
        assert "anchored head" in broken.why
    finally:
        await client.close()


def _access_of(entry: dict) -> Access:
    return Access(entry["requester"], entry["application_id"], entry["matter_code"], entry["evidence_type"],
                  entry["purpose"], entry["legal_basis"], entry["answer"], entry["reason"])


def _at(entry: dict) -> datetime:
    return datetime.fromtimestamp(entry["at_millis"] / 1000, UTC)


async def test_a_disputed_record_starts_the_providers_correction_deadline(stack, namespace):
    answer = await query(stack, "mps", "tongban-verification", application_id="TB-DISPUTE",
                         matter_code="KSTB-PSB-01", evidence_type="HOUSEHOLD",
                         legal_basis="《中华人民共和国户口登记条例》第十条", subject_id=TEST_1[1],
                         declared={"name": TEST_1[0], "household_division": "370103"})
    assert answer.verdict == datasharing_pb2.EvidenceAnswer.NO_MATCH
    async with client_channel(stack.grpc_target("mps"), "hunan-portal") as channel:  # the applicant, via the portal
        stub = datasharing_pb2_grpc.DataSharingStub(channel)
        reply = await stub.Dispute(datasharing_pb2.DisputeRequest(
            application_id="TB-DISPUTE", evidence_type="HOUSEHOLD", audit_entry=answer.audit_entry,
            ground="RECORD_OUTDATED"), timeout=5)
        for free_text in ({"ground": "我已经迁到370103了"}, {"ground": "RECORD_WRONG", "audit_entry": TEST_1[1]}):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Dispute(datasharing_pb2.DisputeRequest(
                    application_id="TB-DISPUTE", evidence_type="HOUSEHOLD", **free_text), timeout=5)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, "no free text: it travels unsealed"
    assert reply.correction_working_days == 5
    async with Sink(namespace, ["tongban.datasharing.disputes"]) as sink:
        seen = await sink.wait_for(lambda s: s.events("tongban.datasharing.EvidenceDisputed", "TB-DISPUTE"))
    disputed = seen.events("tongban.datasharing.EvidenceDisputed", "TB-DISPUTE")[0]
    assert (disputed["dispute_id"], disputed["provider"], disputed["audit_entry"], disputed["ground"],
            disputed["disputed_by"], disputed["correction_working_days"]) == (
        reply.dispute_id, "mps", answer.audit_entry, "RECORD_OUTDATED", "hunan-portal/portal", 5)
    async with client_channel(stack.grpc_target("mps"), "hunan-portal") as channel:
        log = await datasharing_pb2_grpc.DataSharingStub(channel).AccessLog(
            datasharing_pb2.AccessLogRequest(application_id="TB-DISPUTE"), timeout=5)
    assert [(a.requester, a.answer) for a in log.accesses] == [
        ("tongban-verification", "NO_MATCH"), ("hunan-portal", "DISPUTED")], "what the applicant sees (PIPL §35)"


async def test_the_applicant_sees_through_intake_who_consulted_their_records_and_why(stack, namespace):
    """PIPL art. 35 as the applicant meets it: intake's Consultations, answered from the
    exchange's audit trail, for an application submitted through intake's API."""
    request = next(s.request for s in samples(secrets.token_hex(4)) if "户口迁移" in s.title)
    application_id = await submit(stack, request)
    await wait_progress(stack, application_id, lambda p: "VERIFIED" in [h.stage for h in p.history], within=90)
    async with client_channel(stack.grpc_target("intake"), DEFAULT_CALLER) as channel:
        reply = await intake_pb2_grpc.IntakeStub(channel).Consultations(
            intake_pb2.TrackRequest(application_id=application_id), timeout=10)
    assert reply.application_id == application_id
    assert "IDENTITY" in {c.evidence_type for c in reply.consultations}
    assert {c.requester for c in reply.consultations} == {"tongban-verification"}
    assert all(c.purpose and c.legal_basis and c.at_millis and c.answer for c in reply.consultations)

