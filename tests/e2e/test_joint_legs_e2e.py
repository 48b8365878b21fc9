"""多地联办 over the real broker: routing orders a joint matter's legs, delivery assigns them
in turn to each leg's party, the simulated authorities answer each leg, and the result goes
out only after the last one. A failed second leg ends the application denied and tells the
first leg's party to undo its part.

Routing, delivery and the partner simulator run as processes; the test writes what intake
and verification would (ApplicationReceived v2 with the insured places, sealed as intake
seals it, and the verification). The simulated authorities deny the second leg (COMPLETION)
of 城乡居民基本养老保险关系转移 (KSTB-SOC-05)."""

import secrets

import pytest

from services.intake import intake_pb2
from services.intake.api import received_body
from sim.samples import resident_id
from tests.pii_parties import sealed_by
from tests.support import REGISTRY, Sink, produce, start_stack
from tongban import topics
from tongban.events import encode_event

pytestmark = pytest.mark.integration

PENSION = "KSTB-SOC-01"  # 企业职工基本养老保险关系转移接续: three legs
RESIDENTS = "KSTB-SOC-05"  # 城乡居民基本养老保险关系转移: two legs, the second denied here
NEW_PLACE, OLD_PLACE = ("440000", "440103"), ("420000", "420106")  # 广东 and 湖北
WATCHED = [topics.APPLICATION_ROUTED, topics.APPLICATION_ACCEPTED, topics.APPLICATION_DECIDED,
           topics.APPLICATION_DELIVERED, topics.partner_assignments("440000"), topics.partner_assignments("420000")]


@pytest.fixture(scope="module")
def stack(namespace):
    stack = start_stack(namespace, only=("routing", "delivery", "sim"),
                        sim_args=("--deny-legs", f"{RESIDENTS}:COMPLETION"))
    yield stack
    stack.stop_all()


async def write(namespace: str, topic: str, event_type: str, body: dict, writer: str) -> None:
    sealing = sealed_by(writer, topic) if writer == "intake" else {}
    _, value = encode_event(REGISTRY, event_type, body, cause_id=f"{event_type}:{secrets.token_hex(4)}",
                            correlation_id=body["application_id"], source_system=f"tongban-{writer}", **sealing)
    await produce(namespace, topic, body["application_id"].encode(), value)


async def apply(namespace: str, matter: str) -> str:
    """A transfer to Guangdong of a pension insured in Hubei, applied for online in Changsha."""
    application_id = "TBLEG" + secrets.token_hex(6).upper()
    request = intake_pb2.SubmitRequest(
        matter_code=matter, channel="PORTAL", receiving_division="430102", home_division=NEW_PLACE[1],
        applicant=intake_pb2.Applicant(kind="PERSON", name="示例辛",
                                       id_number=resident_id("420106", "19700101", "321")),
        materials=[intake_pb2.Material(code="TRANSFER_APPLICATION", name="转移申请表", provided=True)],
        delivery_method="ELECTRONIC")
    received = {**received_body(application_id, request),
                "places": {"INSURED_BEFORE": OLD_PLACE[1], "INSURED_AFTER": NEW_PLACE[1]}}
    await write(namespace, topics.APPLICATION_RECEIVED, topics.APPLICATION_RECEIVED_EVENT, received, "intake")
    await write(namespace, topics.APPLICATION_VERIFIED, topics.APPLICATION_VERIFIED_EVENT,
                {"application_id": application_id, "checks": []}, "verification")
    return application_id


async def test_a_three_leg_pension_transfer_runs_every_leg_in_order_and_is_decided_by_the_last(stack, namespace):
    application_id = await apply(namespace, PENSION)
    async with Sink(namespace, WATCHED) as sink:
        seen = await sink.wait_for(lambda s: s.events(topics.APPLICATION_DELIVERED_EVENT, application_id), within=90)
    [routed] = seen.events(topics.APPLICATION_ROUTED_EVENT, application_id)
    assert [(leg["partner_id"], leg["step"]) for leg in routed["legs"]] == [
        ("440000", "CONTACT_LETTER"), ("420000", "FUND_TRANSFER"), ("440000", "COMPLETION")]
    assigned = seen.events(topics.MATTER_ASSIGNED_EVENT, application_id)
    assert sorted((a["leg"], a["_topic"], a["step"], a["assignment_id"]) for a in assigned) == [
        (1, topics.partner_assignments("440000"), "CONTACT_LETTER", f"{application_id}:440000:1"),
        (2, topics.partner_assignments("420000"), "FUND_TRANSFER", f"{application_id}:420000:2"),
        (3, topics.partner_assignments("440000"), "COMPLETION", f"{application_id}:440000:3")]
    # on the decided topic (one partition per application): leg 1 done, leg 2 done, then the decision
    decided_topic = [r for r in seen.records if r.topic == namespace + topics.APPLICATION_DECIDED
                     and r.key == application_id.encode()]
    kinds = [REGISTRY.decode(r.value)[0] for r in sorted(decided_topic, key=lambda r: r.offset)]
    assert kinds == [topics.LEG_COMPLETED_EVENT, topics.LEG_COMPLETED_EVENT, topics.APPLICATION_DECIDED_EVENT]
    assert [e["step"] for e in seen.events(topics.LEG_COMPLETED_EVENT, application_id)] == [
        "CONTACT_LETTER", "FUND_TRANSFER"]
    [decided] = seen.events(topics.APPLICATION_DECIDED_EVENT, application_id)
    assert (decided["outcome"], decided["deciding_partner"]) == ("APPROVED", "440000")
    assert len(seen.events(topics.APPLICATION_ACCEPTED_EVENT, application_id)) == 1  # accepted once, by leg 1
    assert not seen.events(topics.ASSIGNMENT_CANCELLED_EVENT, application_id)


async def test_a_failed_second_leg_ends_the_application_denied_and_tells_the_first_leg(stack, namespace):
    application_id = await apply(namespace, RESIDENTS)
    async with Sink(namespace, WATCHED) as sink:
        seen = await sink.wait_for(lambda s: s.events(topics.APPLICATION_DECIDED_EVENT, application_id)
                                   and s.events(topics.ASSIGNMENT_CANCELLED_EVENT, application_id), within=90)
    [completed] = seen.events(topics.LEG_COMPLETED_EVENT, application_id)
    assert (completed["step"], completed["partner_id"]) == ("FUND_TRANSFER", "420000")
    [failed] = seen.events(topics.LEG_FAILED_EVENT, application_id)
    assert (failed["leg"], failed["legs"], failed["step"], failed["partner_id"]) == (2, 2, "COMPLETION", "440000")
    assert failed["compensated"] == [{"assignment_id": f"{application_id}:420000:1", "partner_id": "420000",
                                      "step": "FUND_TRANSFER"}]
    [undo] = seen.events(topics.ASSIGNMENT_CANCELLED_EVENT, application_id)
    assert (undo["_topic"], undo["assignment_id"]) == (topics.partner_assignments("420000"),
                                                       f"{application_id}:420000:1")
    [decided] = seen.events(topics.APPLICATION_DECIDED_EVENT, application_id)
    assert decided["outcome"] == "DENIED"
    assert decided["reason"].startswith("leg 2 of 2 (COMPLETION) failed: ")
    assert not seen.events(topics.APPLICATION_DELIVERED_EVENT, application_id)
