"""一件事一次办 through the whole stack: the two matters of 退休一件事 submitted to intake under
one bundle reference are routed together once both are in, each runs to its own result,
and Track shows each application's bundle and every application of it.

Every service and the simulator run as processes; the test submits over gRPC like a portal."""

import secrets

import pytest

from services.intake import domain, intake_pb2
from sim.samples import resident_id
from tests.support import REGISTRY, Sink, start_stack, submit, wait_terminal
from tongban import topics
from tongban.grpc_tls import DEFAULT_CALLER

pytestmark = pytest.mark.integration

RETIREMENT = {"KSTB-HPF-02": ["RESIDENT_ID", "RETIREMENT_PROOF"], "KSTB-SOC-04": ["RESIDENT_ID"]}


@pytest.fixture(scope="module")
def stack(namespace):
    stack = start_stack(namespace)
    yield stack
    stack.stop_all()


def application(matter: str, bundle_reference: str) -> intake_pb2.SubmitRequest:
    return intake_pb2.SubmitRequest(
        client_reference="bundle-" + secrets.token_hex(6), matter_code=matter, channel="PORTAL",
        receiving_division="430102", home_division="440103", bundle_reference=bundle_reference,
        applicant=intake_pb2.Applicant(kind="PERSON", name="示例甲",
                                       id_number=resident_id("420106", "19850612", "341")),
        materials=[intake_pb2.Material(code=code, name=code, provided=True, original_checked=True)
                   for code in RETIREMENT[matter]],
        delivery_method="ELECTRONIC")


async def test_the_matters_of_a_bundle_submitted_apart_are_routed_together_and_each_tracked(stack, namespace):
    reference = "retire-" + secrets.token_hex(4)
    first = await submit(stack, application("KSTB-SOC-04", reference))
    async with Sink(namespace, [topics.APPLICATION_ROUTED]) as sink:
        await sink.wait_for(lambda s: s.events(topics.BUNDLE_MEMBER_HELD_EVENT, first))
        second = await submit(stack, application("KSTB-HPF-02", reference))
        seen = await sink.wait_for(lambda s: all(s.events(topics.APPLICATION_ROUTED_EVENT, a)
                                                 for a in (first, second)))
    [held] = seen.events(topics.BUNDLE_MEMBER_HELD_EVENT, first)
    bundle_id = domain.bundle_id_for(DEFAULT_CALLER, reference)
    assert held["bundle_id"] == bundle_id
    # the first application was released (naming the second) and then routed: on its own
    # partition, in order
    [released] = seen.events(topics.BUNDLE_RELEASED_EVENT, first)
    assert (released["release"], released["applications"]) == ("ROUTE", [second, first])
    own = sorted((r for r in seen.records if r.key == first.encode()), key=lambda r: r.offset)
    assert [REGISTRY.decode(r.value)[0] for r in own] == [
        topics.BUNDLE_MEMBER_HELD_EVENT, topics.BUNDLE_RELEASED_EVENT, topics.APPLICATION_ROUTED_EVENT]
    for application_id in (first, second):
        progress = await wait_terminal(stack, application_id, within=120)
        assert progress.stage == "DELIVERED", [(s.stage, s.detail) for s in progress.history]
        assert (progress.bundle_id, progress.bundle_code) == (bundle_id, "BUNDLE-RETIREMENT")
        assert list(progress.bundle_applications) == [second, first]  # in the bundle's order of matters
        steps = [s.stage for s in progress.history]
        assert steps.index("BUNDLE_WAITING") < steps.index("BUNDLE_RELEASED") < steps.index("ROUTED")
