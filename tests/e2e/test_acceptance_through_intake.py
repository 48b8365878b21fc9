"""The acceptance lifecycle as the applicant lives it, all five services and the partner
simulator over the real broker: a 补正 notice, the supplement through intake's
SupplementMaterials, acceptance, decision and delivery; a withdrawal through Withdraw that
cancels the authority's work; a non-acceptance served with its reason and remedy. Each is
checked on the topics and in Track (stages and notices)."""

import secrets

import pytest

from services.intake import intake_pb2, intake_pb2_grpc
from sim.partners import REFUSAL
from sim.samples import SUPPLEMENT_MATTER, samples
from tests.support import Sink, start_stack, submit, wait_terminal
from tongban.grpc_tls import client_channel

pytestmark = pytest.mark.integration

REFUSED_MATTER = "KSTB-SOC-02"
AUTHORITY = "440000"
WATCHED = ["tongban.application.accepted", "tongban.application.delivered", f"tongban.partner.{AUTHORITY}.assignments"]
REQUESTED = "tongban.application.SupplementRequested"


@pytest.fixture(scope="module")
def stack(namespace):
    # Long enough a supplement period for a slow machine, short of anything a test waits for.
    stack = start_stack(namespace, {"TONGBAN_SUPPLEMENT_PERIOD_SECONDS": "120"},
                        sim_args=("--supplement-matters", SUPPLEMENT_MATTER, "--refuse-matters", REFUSED_MATTER))
    yield stack
    stack.stop_all()


def request(matter: str) -> intake_pb2.SubmitRequest:
    return next(s.request for s in samples(secrets.token_hex(4)) if s.request.matter_code == matter)


async def asked_to_supplement(stack, sink: Sink) -> str:
    application_id = await submit(stack, request(SUPPLEMENT_MATTER))
    await sink.wait_for(lambda s: s.events(REQUESTED, application_id))
    return application_id


async def test_a_supplement_through_intake_is_accepted_decided_and_delivered(stack, namespace):
    async with Sink(namespace, WATCHED) as sink:
        application_id = await asked_to_supplement(stack, sink)
        [notice] = sink.seen.events(REQUESTED, application_id)
        async with client_channel(stack.grpc_target("intake")) as channel:
            await intake_pb2_grpc.IntakeStub(channel).SupplementMaterials(intake_pb2.SupplementRequest(
                application_id=application_id,
                materials=[intake_pb2.Material(code=code, provided=True) for code in notice["missing_materials"]]),
                timeout=10)
        seen = await sink.wait_for(lambda s: s.events("tongban.application.ApplicationDelivered", application_id))
    assert {e["_topic"] for e in seen.events("tongban.application.MaterialsSupplemented", application_id)} == {
        "tongban.application.accepted", f"tongban.partner.{AUTHORITY}.assignments"}
    progress = await wait_terminal(stack, application_id)
    assert progress.stage == "DELIVERED"
    stages = [h.stage for h in progress.history]
    assert stages.index("SUPPLEMENT_REQUESTED") < stages.index("ACCEPTED") < stages.index("DECIDED")
    [served] = [n for n in progress.notices if n.kind == "SUPPLEMENT"]
    assert list(served.reasons) == ["ARTICLES: 复印件不清晰 (simulated)"]


async def test_a_withdrawal_through_intake_cancels_the_authoritys_work(stack, namespace):
    async with Sink(namespace, WATCHED) as sink:
        application_id = await asked_to_supplement(stack, sink)
        async with client_channel(stack.grpc_target("intake")) as channel:
            await intake_pb2_grpc.IntakeStub(channel).Withdraw(intake_pb2.WithdrawRequest(
                application_id=application_id, reason="不再需要"), timeout=10)
        seen = await sink.wait_for(lambda s: s.events("tongban.partner.AssignmentCancelled", application_id)
                                   and s.events("tongban.application.ApplicationClosed", application_id))
    assert seen.events("tongban.application.ApplicationClosed", application_id)[0]["status"] == "WITHDRAWN"
    assert (await wait_terminal(stack, application_id)).stage == "WITHDRAWN"


async def test_a_non_acceptance_is_served_with_reason_and_remedy(stack, namespace):
    application_id = await submit(stack, request(REFUSED_MATTER))
    progress = await wait_terminal(stack, application_id)
    assert progress.stage == "REJECTED"
    [served] = [n for n in progress.notices if n.kind == "NON_ACCEPTANCE"]
    assert (list(served.reasons), served.remedy) == ([REFUSAL[0]], REFUSAL[1])
