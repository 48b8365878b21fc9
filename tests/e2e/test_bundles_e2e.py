"""一件事一次办 over the real broker: routing holds each application of a bundle until the
bundle's matters are all in, then routes them together; when one of them cannot be routed,
none is, and all wait in the review queue.

Routing runs as a process; the test writes what intake would (ApplicationReceived v2 with a
bundle id, sealed as intake seals it) and reads the routed topic with its own consumer."""

import secrets

import pytest

from services.intake import intake_pb2
from services.intake.api import received_body
from services.routing import bundles
from sim.samples import resident_id
from tests.pii_parties import sealed_by
from tests.support import REGISTRY, Sink, produce, start_stack
from tongban import topics
from tongban.events import encode_event

pytestmark = pytest.mark.integration

RETIREMENT = ("KSTB-HPF-02", "KSTB-SOC-04")  # 退休一件事 (BUNDLE-RETIREMENT)


@pytest.fixture(scope="module")
def stack(namespace):
    stack = start_stack(namespace, only=("routing",))
    yield stack
    stack.stop_all()


async def receive(namespace: str, matter: str, bundle_id: str, home_division: str = "440103") -> str:
    """An application of the bundle, received online in Changsha, for an authority in Guangzhou."""
    application_id = "TBBND" + secrets.token_hex(6).upper()
    request = intake_pb2.SubmitRequest(
        matter_code=matter, channel="PORTAL", receiving_division="430102", home_division=home_division,
        applicant=intake_pb2.Applicant(kind="PERSON", name="示例甲",
                                       id_number=resident_id("420106", "19850612", "341")),
        materials=[intake_pb2.Material(code="RESIDENT_ID", name="居民身份证", provided=True)],
        delivery_method="ELECTRONIC")
    body = {**received_body(application_id, request), "bundle_id": bundle_id}
    _, value = encode_event(REGISTRY, topics.APPLICATION_RECEIVED_EVENT, body,
                            cause_id=f"received:{application_id}", correlation_id=application_id,
                            source_system="tongban-intake", **sealed_by("intake", topics.APPLICATION_RECEIVED))
    await produce(namespace, topics.APPLICATION_RECEIVED, application_id.encode(), value)
    return application_id


async def test_a_bundle_s_applications_are_routed_together_once_both_are_in(stack, namespace):
    bundle_id = "TBB" + secrets.token_hex(10).upper()
    first = await receive(namespace, RETIREMENT[1], bundle_id)
    async with Sink(namespace, [topics.APPLICATION_ROUTED]) as sink:
        seen = await sink.wait_for(lambda s: s.events(topics.BUNDLE_MEMBER_HELD_EVENT, first))
        assert not seen.events(topics.APPLICATION_ROUTED_EVENT, first), "held while the bundle waits"
        second = await receive(namespace, RETIREMENT[0], bundle_id)
        seen = await sink.wait_for(lambda s: all(s.events(topics.APPLICATION_ROUTED_EVENT, a) for a in (first, second)))
    released = {e["_key"]: e for e in seen.events(topics.BUNDLE_RELEASED_EVENT)}
    assert {a: (released[a]["bundle_code"], released[a]["release"], released[a]["applications"])
            for a in (first, second)} == {a: ("BUNDLE-RETIREMENT", bundles.ROUTE, [second, first])
                                          for a in (first, second)}
    # on the routed topic (one partition per application): held, released, then routed
    for application_id in (first, second):
        own = sorted((r for r in seen.records if r.key == application_id.encode()), key=lambda r: r.offset)
        assert [REGISTRY.decode(r.value)[0] for r in own] == [
            topics.BUNDLE_MEMBER_HELD_EVENT, topics.BUNDLE_RELEASED_EVENT, topics.APPLICATION_ROUTED_EVENT]
    [routed] = seen.events(topics.APPLICATION_ROUTED_EVENT, second)
    assert (routed["matter_code"], routed["deciding_partner"]) == (RETIREMENT[0], "440000")


async def test_one_application_no_rule_routes_sends_its_whole_bundle_to_review(stack, namespace):
    bundle_id = "TBB" + secrets.token_hex(10).upper()
    first = await receive(namespace, RETIREMENT[0], bundle_id)
    second = await receive(namespace, RETIREMENT[1], bundle_id, home_division="370102")  # 济南: not from Changsha
    async with Sink(namespace, [topics.APPLICATION_ROUTED]) as sink:
        seen = await sink.wait_for(lambda s: all(s.events(topics.APPLICATION_UNDER_REVIEW_EVENT, a)
                                                 for a in (first, second)))
    for application_id in (first, second):
        [review] = seen.events(topics.APPLICATION_UNDER_REVIEW_EVENT, application_id)
        assert review["reason"].startswith(f"bundle BUNDLE-RETIREMENT: {RETIREMENT[1]} cannot be routed: ")
        assert not seen.events(topics.APPLICATION_ROUTED_EVENT, application_id)
