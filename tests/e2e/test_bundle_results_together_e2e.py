"""一件事一次办, one result: the two matters of 退休一件事 submitted to intake under one bundle
reference are decided apart (the housing fund's authority asks for a 补正 first), and neither
result goes out before both are decided; then both go out and are delivered.

Every service and the simulator run as processes; the test submits and supplements over gRPC
like a portal, and watches the decided topic and the wallet's dispatches with its own consumer."""

import secrets

import pytest

from services.intake import intake_pb2, intake_pb2_grpc
from tests.e2e.test_bundle_through_intake_e2e import application
from tests.support import Sink, settle, start_stack, submit, wait_progress, wait_terminal
from tongban import topics
from tongban.grpc_tls import client_channel

pytestmark = pytest.mark.integration

LATE = "KSTB-HPF-02"  # its authority asks for a 补正 first: decided only once the test supplements
WATCHED = [topics.APPLICATION_ACCEPTED, topics.APPLICATION_DECIDED, topics.WALLET_ENTRIES]


@pytest.fixture(scope="module")
def stack(namespace):
    stack = start_stack(namespace, sim_args=("--supplement-matters", LATE))
    yield stack
    stack.stop_all()


async def test_neither_result_of_a_bundle_goes_out_before_both_are_decided(stack, namespace):
    reference = "retire-" + secrets.token_hex(4)
    async with Sink(namespace, WATCHED) as sink:
        first = await submit(stack, application("KSTB-SOC-04", reference))
        second = await submit(stack, application(LATE, reference))
        await sink.wait_for(lambda s: s.events(topics.BUNDLE_MEMBER_DECIDED_EVENT, first)
                            and s.events(topics.SUPPLEMENT_REQUESTED_EVENT, second), within=120)
        # Whatever delivery wrote with the first decision is behind this marker, on the
        # wallet's partition of the first application: its result is not among it.
        seen = await settle(namespace, [topics.WALLET_ENTRIES], first, sink)
        [decided] = seen.events(topics.APPLICATION_DECIDED_EVENT, first)
        assert decided["outcome"] == "APPROVED"
        assert not seen.events(topics.WALLET_ENTRY_EVENT, first), "held while the bundle's other matter is undecided"
        [told] = seen.events(topics.BUNDLE_MEMBER_DECIDED_EVENT, first)
        assert (told["outcome"], told["held"], sorted(told["applications"])) == ("APPROVED", True,
                                                                                 sorted([first, second]))
        assert not seen.events(topics.APPLICATION_DECIDED_EVENT, second)

        [notice] = seen.events(topics.SUPPLEMENT_REQUESTED_EVENT, second)
        await wait_progress(stack, second, lambda p: any(h.stage == "SUPPLEMENT_REQUESTED" for h in p.history))
        async with client_channel(stack.grpc_target("intake")) as channel:
            await intake_pb2_grpc.IntakeStub(channel).SupplementMaterials(intake_pb2.SupplementRequest(
                application_id=second,
                materials=[intake_pb2.Material(code=code, provided=True) for code in notice["missing_materials"]]),
                timeout=10)
        seen = await sink.wait_for(lambda s: all(s.events(topics.WALLET_ENTRY_EVENT, a) for a in (first, second)),
                                   within=120)

    for application_id in (first, second):
        progress = await wait_terminal(stack, application_id, within=120)
        assert progress.stage == "DELIVERED", [(s.stage, s.detail) for s in progress.history]
    # At the independent consumer: each result went out after the later of the two decisions,
    # once, and each release names both outcomes.
    decisions = [e["envelope"]["occurred_at"] for a in (first, second)
                 for e in seen.events(topics.APPLICATION_DECIDED_EVENT, a)]
    assert len(decisions) == 2
    for application_id in (first, second):
        [entry] = seen.events(topics.WALLET_ENTRY_EVENT, application_id)
        assert entry["envelope"]["occurred_at"] >= max(decisions)
        [release] = seen.events(topics.BUNDLE_RESULTS_RELEASED_EVENT, application_id)
        assert release["complete"] is True
        assert release["outcomes"] == {first: "APPROVED", second: "APPROVED"}
