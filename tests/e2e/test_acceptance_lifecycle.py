"""The acceptance lifecycle over the real broker (issue 10): a 补正 round trip, a missed
supplement deadline, a withdrawal that cancels the authority's work, 不予受理 served with
its reason and remedy, a result held for a 容缺 material until it arrives, and a 告知承诺
check that fails and revokes the result.

Delivery and the partner simulator run as processes; the test writes what intake, routing
and verification would (ApplicationReceived sealed as intake seals it, the routing
decision, the verification, then intake's SupplementSubmitted and ApplicationWithdrawn), so
what is tested is delivery's side and the authority's answers. The simulated authorities
ask for a 补正 on 公司设立登记, do not accept 社会保障卡申领 and find the commitments made
for 个体工商户变更登记 broken; delivery gives applicants 20 s to supplement and has a
告知承诺 checked 3 s after the approval."""

import secrets
from datetime import UTC, datetime, timedelta

import pytest

from services.intake.api import received_body
from sim.partners import REFUSAL
from sim.samples import SUPPLEMENT_MATTER, samples
from tests.pii_parties import sealed_by
from tests.support import MARKER, REGISTRY, Sink, produce, settle, start_stack
from tongban.events import encode_event

pytestmark = pytest.mark.integration

REFUSED_MATTER = "KSTB-SOC-02"
LATER_MATTER = "KSTB-MKT-02"  # 个体工商户变更登记: 容缺 and 告知承诺 (the result goes by post)
CHECK_AFTER = timedelta(seconds=3)
PERIOD = timedelta(seconds=20)
AUTHORITY = "440000"  # decides 公司设立登记 for 440300
ASSIGNMENTS = f"tongban.partner.{AUTHORITY}.assignments"
ACCEPTED_TOPIC = "tongban.application.accepted"
WATCHED = [ACCEPTED_TOPIC, "tongban.application.decided", "tongban.application.delivered", ASSIGNMENTS,
           "tongban.partner.360000.assignments"]
REQUESTED, SUPPLEMENTED = "tongban.application.SupplementRequested", "tongban.application.MaterialsSupplemented"
CLOSED, CANCELLED = "tongban.application.ApplicationClosed", "tongban.partner.AssignmentCancelled"
DECIDED, DELIVERED = "tongban.application.ApplicationDecided", "tongban.application.ApplicationDelivered"
ROUTES = {SUPPLEMENT_MATTER: (AUTHORITY, "440300"), LATER_MATTER: (AUTHORITY, "440300"),
          REFUSED_MATTER: ("360000", "360102")}
DISPATCH = "tongban.delivery.PostalDispatch"
DEAD_LETTERS = "tongban.dlq.tongban-delivery"


@pytest.fixture(scope="module")
def stack(namespace):
    env = {"TONGBAN_SUPPLEMENT_PERIOD_SECONDS": str(PERIOD.total_seconds()),
           "TONGBAN_COMMITMENT_CHECK_AFTER_SECONDS": str(CHECK_AFTER.total_seconds())}
    stack = start_stack(namespace, env, only=("delivery", "sim"), sim_args=(
        "--supplement-matters", SUPPLEMENT_MATTER, "--refuse-matters", REFUSED_MATTER,
        "--broken-commitment-matters", LATER_MATTER))
    yield stack
    stack.stop_all()


async def write(namespace: str, topic: str, event_type: str, body: dict, writer: str) -> None:
    application_id = body["application_id"]
    sealing = sealed_by(writer, topic) if writer == "intake" else {}
    _, value = encode_event(REGISTRY, event_type, body, cause_id=f"{event_type}:{secrets.token_hex(4)}",
                            correlation_id=application_id, source_system=f"tongban-{writer}", **sealing)
    await produce(namespace, topic, application_id.encode(), value)


async def hand_over(namespace: str, matter: str, **received: object) -> str:
    """An application received (the sample of its matter, or the company's by post with
    `received` changes), routed to its deciding authority and verified, as intake, routing and
    verification would write it: delivery assigns it to the authority."""
    batch = samples(secrets.token_hex(4))
    request = next((s.request for s in batch if s.request.matter_code == matter), batch[1].request)
    application_id = "TBACC" + secrets.token_hex(6).upper()
    partner, division = ROUTES[matter]
    await write(namespace, "tongban.application.received", "tongban.application.ApplicationReceived",
                {**received_body(application_id, request), "matter_code": matter, **received}, "intake")
    await write(namespace, "tongban.application.routed", "tongban.application.ApplicationRouted", {
        "application_id": application_id, "matter_code": matter, "mode": "RECEIVE_HERE_HANDLE_THERE",
        "deciding_partner": partner, "deciding_division": division, "legs": [], "promised_working_days": 5,
        "due_at": datetime.now(UTC) + timedelta(days=7)}, "routing")
    await write(namespace, "tongban.application.verified", "tongban.application.ApplicationVerified",
                {"application_id": application_id, "checks": []}, "verification")
    return application_id


async def intake_says(namespace: str, event_type: str, body: dict) -> None:
    await write(namespace, "tongban.application.received", event_type, body, "intake")


async def supplement_notice(namespace: str, sink: Sink) -> tuple[str, dict]:
    application_id = await hand_over(namespace, SUPPLEMENT_MATTER)
    seen = await sink.wait_for(lambda s: s.events(REQUESTED, application_id))
    return application_id, seen.events(REQUESTED, application_id)[0]


def written(seen, namespace: str, application_id: str, topic: str) -> list[str]:
    """The event types for the application on one topic, in the order written (one key, one
    partition), without settle's markers."""
    types = [REGISTRY.decode(r.value)[0] for r in seen.records
             if r.topic == namespace + topic and r.key == application_id.encode()]
    return [t for t in types if t != MARKER]


async def test_a_supplement_round_trip_is_accepted_decided_and_delivered(stack, namespace):
    async with Sink(namespace, [*WATCHED, "tongban.partner.ems.dispatches"]) as sink:
        application_id, notice = await supplement_notice(namespace, sink)
        assert (notice["deciding_partner"], notice["cause"]) == (AUTHORITY, "AUTHORITY")
        assert notice["missing_materials"] == {"ARTICLES": "复印件不清晰 (simulated)"}
        assert notice["supplement_by"] - notice["requested_at"] == PERIOD

        await intake_says(namespace, "tongban.application.SupplementSubmitted", {
            "application_id": application_id, "materials": ["ARTICLES"], "submitted_at": datetime.now(UTC)})
        seen = await sink.wait_for(lambda s: s.events(DELIVERED, application_id))

    back = seen.events(SUPPLEMENTED, application_id)
    assert {e["_topic"] for e in back} == {ACCEPTED_TOPIC, ASSIGNMENTS}, "the authority's copy and the lifecycle's"
    assert all(e["materials"] == ["ARTICLES"] for e in back)
    assert written(seen, namespace, application_id, ACCEPTED_TOPIC) == [
        REQUESTED, SUPPLEMENTED, "tongban.application.ApplicationAccepted"]
    assert written(seen, namespace, application_id, ASSIGNMENTS) == ["tongban.partner.MatterAssigned", SUPPLEMENTED]
    [decided] = seen.events(DECIDED, application_id)
    assert decided["outcome"] == "APPROVED"
    [delivered] = seen.events(DELIVERED, application_id)
    assert delivered["method"] == "POST"
    assert seen.events(CLOSED, application_id) == []


async def test_a_missed_supplement_deadline_closes_the_application_and_stops_the_authority(stack, namespace):
    async with Sink(namespace, [*WATCHED, DEAD_LETTERS]) as sink:
        application_id, notice = await supplement_notice(namespace, sink)
        seen = await sink.wait_for(lambda s: s.events(CLOSED, application_id), within=PERIOD.total_seconds() + 60)
        [closed] = seen.events(CLOSED, application_id)
        assert closed["status"] == "SUPPLEMENT_EXPIRED"
        assert closed["closed_at"] == notice["supplement_by"]
        assert closed["envelope"]["occurred_at"] >= notice["supplement_by"], "not before the deadline"
        [cancelled] = seen.events(CANCELLED, application_id)
        assert cancelled["_topic"] == ASSIGNMENTS
        # A supplement after the deadline goes nowhere: dead-lettered with the reason.
        await intake_says(namespace, "tongban.application.SupplementSubmitted", {
            "application_id": application_id, "materials": ["ARTICLES"], "submitted_at": datetime.now(UTC)})
        seen = await sink.wait_for(lambda s: [e for e in s.events("tongban.application.SupplementSubmitted",
                                                                  application_id) if e["_topic"] == DEAD_LETTERS])
        [refused] = [r for r in seen.records
                     if r.topic == namespace + DEAD_LETTERS and r.key == application_id.encode()]
        assert dict(refused.headers)["tongban.dlq.error.message"].decode() == (
            "this application closed when its deadline for supplementing passed; it takes no supplement")
        seen = await settle(namespace, WATCHED, application_id, sink)
    assert seen.events(SUPPLEMENTED, application_id) == []
    assert seen.events(DECIDED, application_id) == []


async def test_a_withdrawal_before_the_decision_cancels_the_authoritys_work(stack, namespace):
    async with Sink(namespace, WATCHED) as sink:
        application_id, _ = await supplement_notice(namespace, sink)  # paused: no decision can come meanwhile
        await intake_says(namespace, "tongban.application.ApplicationWithdrawn", {
            "application_id": application_id, "reason": "不再需要", "withdrawn_at": datetime.now(UTC)})
        seen = await sink.wait_for(lambda s: s.events(CLOSED, application_id) and s.events(CANCELLED, application_id))
        [cancelled] = seen.events(CANCELLED, application_id)
        assert cancelled["_topic"] == ASSIGNMENTS
        assert cancelled["assignment_id"] == f"{application_id}:{AUTHORITY}"
        [closed] = seen.events(CLOSED, application_id)
        assert (closed["status"], closed["reason"]) == ("WITHDRAWN", "withdrawn by the applicant before the decision")
        seen = await settle(namespace, WATCHED, application_id, sink)
    assert seen.events(DECIDED, application_id) == []
    assert written(seen, namespace, application_id, ASSIGNMENTS) == ["tongban.partner.MatterAssigned", CANCELLED]


async def test_non_acceptance_is_served_with_reason_and_remedy(stack, namespace):
    async with Sink(namespace, WATCHED) as sink:
        application_id = await hand_over(namespace, REFUSED_MATTER)
        seen = await sink.wait_for(lambda s: s.events("tongban.application.ApplicationRefused", application_id))
        [refused] = seen.events("tongban.application.ApplicationRefused", application_id)
        assert (refused["deciding_partner"], refused["reason"], refused["remedy"]) == ("360000", *REFUSAL)
        seen = await settle(namespace, WATCHED, application_id, sink)
    assert seen.events(DECIDED, application_id) == []


async def test_a_result_waits_for_a_deferred_material_and_goes_out_when_it_arrives(stack, namespace):
    async with Sink(namespace, [*WATCHED, "tongban.partner.ems.dispatches"]) as sink:
        application_id = await hand_over(namespace, LATER_MATTER, deferred_materials={"BUSINESS_LICENCE": "2099-12-31"})
        seen = await sink.wait_for(lambda s: s.events(DECIDED, application_id))
        assert seen.events(DECIDED, application_id)[0]["outcome"] == "APPROVED", "容缺 did not stop acceptance"
        seen = await settle(namespace, ["tongban.partner.ems.dispatches"], application_id, sink)
        assert seen.events(DISPATCH, application_id) == [], "the result waits for the material"

        await intake_says(namespace, "tongban.application.SupplementSubmitted", {
            "application_id": application_id, "materials": ["BUSINESS_LICENCE"], "submitted_at": datetime.now(UTC)})
        seen = await sink.wait_for(lambda s: s.events(DELIVERED, application_id))
    assert {e["_topic"] for e in seen.events(SUPPLEMENTED, application_id)} == {ACCEPTED_TOPIC, ASSIGNMENTS}
    assert len(seen.events(DISPATCH, application_id)) == 1


async def test_a_failed_commitment_check_revokes_the_result(stack, namespace):
    async with Sink(namespace, WATCHED) as sink:
        application_id = await hand_over(namespace, LATER_MATTER, commitments=["CHANGE_PROOF"])
        seen = await sink.wait_for(lambda s: s.events("tongban.application.ResultRevoked", application_id))
    [decided] = seen.events(DECIDED, application_id)
    assert decided["outcome"] == "APPROVED"
    [asked] = seen.events("tongban.partner.CommitmentCheckRequested", application_id)
    assert (asked["_topic"], asked["commitments"]) == (ASSIGNMENTS, ["CHANGE_PROOF"])
    assert asked["requested_at"] >= decided["decided_at"] + CHECK_AFTER, "checked when due, not before"
    [revoked] = seen.events("tongban.application.ResultRevoked", application_id)
    assert revoked["reason"] == "核查发现承诺不实，依法撤销 (simulated)"
    assert list(revoked["failed_commitments"]) == ["CHANGE_PROOF"]
