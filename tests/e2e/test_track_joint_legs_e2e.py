"""Track shows a joint matter's legs (多地联办) over the real broker: an application submitted
through intake's API is routed into legs, delivery runs them in turn against the simulated
authorities, and intake's Track names each leg's party, step, state and times. A failed
second leg shows the leg FAILED and the done first leg CANCELLED (undone).

The whole stack runs as processes; the simulated authorities deny the second leg
(COMPLETION) of 城乡居民基本养老保险关系转移 (KSTB-SOC-05)."""

import secrets

import pytest

from services.intake import intake_pb2
from sim.samples import resident_id
from tests.support import Sink, start_stack, submit, wait_terminal
from tongban import topics

pytestmark = pytest.mark.integration

PENSION = "KSTB-SOC-01"  # three legs: CONTACT_LETTER (new place), FUND_TRANSFER (old place), COMPLETION (new place)
RESIDENTS = "KSTB-SOC-05"  # two legs, the second denied here


@pytest.fixture(scope="module")
def stack(namespace):
    stack = start_stack(namespace, sim_args=("--deny-legs", f"{RESIDENTS}:COMPLETION"))
    yield stack
    stack.stop_all()


def transfer(matter: str) -> intake_pb2.SubmitRequest:
    """A pension insured in Hubei moved to Guangzhou, applied for online: without named places
    the matter's own place (the new insured place) is the home division and the other leg's
    (the old insured place) the receiving division."""
    return intake_pb2.SubmitRequest(
        client_reference="legs-" + secrets.token_hex(6), matter_code=matter, channel="PORTAL",
        receiving_division="420106", home_division="440103",
        applicant=intake_pb2.Applicant(kind="PERSON", name="示例甲",
                                       id_number=resident_id("420106", "19850612", "341")),
        materials=[intake_pb2.Material(code="RESIDENT_ID", name="居民身份证", provided=True, original_checked=True),
                   intake_pb2.Material(code="TRANSFER_APPLICATION", name="转移申请表", provided=True,
                                       original_checked=True)],
        delivery_method="ELECTRONIC")


async def test_track_shows_each_leg_of_a_three_leg_transfer_done_in_order_with_its_party_and_times(stack, namespace):
    application_id = await submit(stack, transfer(PENSION))
    progress = await wait_terminal(stack, application_id, within=120)
    assert progress.stage == "DELIVERED", [(s.stage, s.detail) for s in progress.history]
    async with Sink(namespace, [topics.APPLICATION_DECIDED]) as sink:  # what delivery published, read apart
        seen = await sink.wait_for(lambda s: len(s.events(topics.LEG_COMPLETED_EVENT, application_id)) == 2)
    assert [(leg.number, leg.step, leg.party, leg.state) for leg in progress.legs] == [
        (1, "CONTACT_LETTER", "440000", "COMPLETED"), (2, "FUND_TRANSFER", "420000", "COMPLETED"),
        (3, "COMPLETION", "440000", "COMPLETED")]
    completed = {e["leg"]: e for e in seen.events(topics.LEG_COMPLETED_EVENT, application_id)}
    for leg in progress.legs[:2]:
        assert leg.completed_at_millis == int(completed[leg.number]["completed_at"].timestamp() * 1000)
        assert leg.result_reference == (completed[leg.number]["result_reference"] or "")
    # each leg assigned before it completed, and the next one assigned as the one before completed
    assert all(0 < leg.assigned_at_millis <= leg.completed_at_millis for leg in progress.legs)
    assert [leg.assigned_at_millis for leg in progress.legs[1:]] == [
        leg.completed_at_millis for leg in progress.legs[:2]]
    steps = [(s.stage, s.leg, s.party) for s in progress.history if s.leg]
    assert [s for s in steps if s[0] == "LEG_COMPLETED"] == [
        ("LEG_COMPLETED", 1, "440000"), ("LEG_COMPLETED", 2, "420000"), ("LEG_COMPLETED", 3, "440000")]


async def test_track_shows_a_failed_second_leg_and_the_first_one_undone(stack, namespace):
    application_id = await submit(stack, transfer(RESIDENTS))
    progress = await wait_terminal(stack, application_id, within=120)
    assert progress.stage == "DENIED", [(s.stage, s.detail) for s in progress.history]
    async with Sink(namespace, [topics.APPLICATION_DECIDED]) as sink:
        seen = await sink.wait_for(lambda s: s.events(topics.LEG_FAILED_EVENT, application_id))
    assert [(leg.number, leg.step, leg.party, leg.state) for leg in progress.legs] == [
        (1, "FUND_TRANSFER", "420000", "CANCELLED"), (2, "COMPLETION", "440000", "FAILED")]
    [failed] = seen.events(topics.LEG_FAILED_EVENT, application_id)
    first, second = progress.legs
    failed_at = int(failed["failed_at"].timestamp() * 1000)
    assert (second.failed_at_millis, first.cancelled_at_millis) == (failed_at, failed_at)
    assert 0 < first.completed_at_millis <= failed_at  # done before it was undone
    assert second.detail == failed["reason"]
    assert first.detail == "undone: leg 2 failed"
