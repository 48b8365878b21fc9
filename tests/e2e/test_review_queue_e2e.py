"""The review queue over the real broker: routing runs as a process; an application no rule
routes is listed for operators over gRPC, re-routed to a named authority or rejected with a
reason, and leaves the queue. The test writes ApplicationReceived as intake would."""

import asyncio
import json
import secrets
import time

import grpc
import pytest
from click.testing import CliRunner

from services.intake import intake_pb2
from services.intake.api import received_body
from services.routing import routing_pb2, routing_pb2_grpc
from sim.samples import resident_id
from tests.pii_parties import sealed_by
from tests.support import REGISTRY, Sink, produce, start_stack
from tongban import topics
from tongban.events import encode_event
from tongban.grpc_tls import client_channel
from tongban.ops.cli import cli

pytestmark = pytest.mark.integration

OPERATOR = "tongban-operator"


@pytest.fixture(scope="module")
def stack(namespace):
    stack = start_stack(namespace, only=("routing",))
    yield stack
    stack.stop_all()


async def unroutable(namespace: str) -> str:
    """济南 (370102) takes only files received in 湘西: received in Changsha, no rule routes it."""
    application_id = "TBREV" + secrets.token_hex(6).upper()
    request = intake_pb2.SubmitRequest(
        matter_code="KSTB-MED-01", channel="PORTAL", receiving_division="430102", home_division="370102",
        applicant=intake_pb2.Applicant(kind="PERSON", name="示例壬",
                                       id_number=resident_id("370102", "19800101", "111")),
        materials=[], delivery_method="ELECTRONIC")
    _, value = encode_event(REGISTRY, topics.APPLICATION_RECEIVED_EVENT, received_body(application_id, request),
                            cause_id=application_id, correlation_id=application_id, source_system="tongban-intake",
                            **sealed_by("intake", topics.APPLICATION_RECEIVED))
    await produce(namespace, topics.APPLICATION_RECEIVED, application_id.encode(), value)
    return application_id


async def review(stack, method: str, message, retry_for: float = 60):
    """Call as an operator; retry while routing's instance does not serve the key yet (UNAVAILABLE)."""
    deadline = time.monotonic() + retry_for
    while True:
        try:
            async with client_channel(stack.grpc_target("routing"), OPERATOR) as channel:
                return await getattr(routing_pb2_grpc.ReviewStub(channel), method)(message, timeout=10)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def listed(stack, until, within: float = 60) -> list[str]:
    """The queue as the operator lists it, once `until(ids)` holds."""
    deadline = time.monotonic() + within
    while True:
        reply = await review(stack, "ListUnroutable", routing_pb2.ListUnroutableRequest())
        ids = [e.application_id for e in reply.entries]
        if until(ids):
            return ids
        if time.monotonic() > deadline:
            raise TimeoutError(f"the review queue did not show what was awaited: {ids}")
        await asyncio.sleep(0.3)


async def test_an_operator_reroutes_one_and_rejects_another_and_both_leave_the_queue(stack, namespace):
    rerouted, rejected = await unroutable(namespace), await unroutable(namespace)
    await listed(stack, lambda ids: {rerouted, rejected} <= set(ids))
    await review(stack, "Reroute", routing_pb2.RerouteRequest(application_id=rerouted, deciding_partner="370100",
                                                              reason="点对点协议外，经协调由济南办理"))
    await review(stack, "RejectUnroutable", routing_pb2.RejectUnroutableRequest(application_id=rejected,
                                                                                reason="不属跨省通办范围"))
    async with Sink(namespace, [topics.APPLICATION_ROUTED]) as sink:
        seen = await sink.wait_for(lambda s: len(s.events(topics.REVIEW_RESOLVED_EVENT)) >= 2, within=60)
    [routed] = seen.events(topics.APPLICATION_ROUTED_EVENT, rerouted)
    assert (routed["deciding_partner"], routed["deciding_division"]) == ("370100", "370100")
    assert len(seen.events(topics.APPLICATION_UNDER_REVIEW_EVENT, rejected)) == 1
    [ended] = seen.events(topics.APPLICATION_UNROUTABLE_EVENT, rejected)
    assert ended["reason"] == "rejected on review: 不属跨省通办范围"
    assert not seen.events(topics.APPLICATION_UNROUTABLE_EVENT, rerouted)
    resolutions = {e["application_id"]: (e["resolution"], e["operator"]) for e in seen.events(
        topics.REVIEW_RESOLVED_EVENT)}
    assert resolutions == {rerouted: ("REROUTED", OPERATOR), rejected: ("REJECTED", OPERATOR)}
    remaining = await listed(stack, lambda ids: not {rerouted, rejected} & set(ids))
    assert rerouted not in remaining


async def test_the_operator_command_lists_and_rejects_through_server_reflection(stack, namespace):
    """`tongban review` imports no service: it learns the Review API from routing itself."""
    application_id = await unroutable(namespace)
    await listed(stack, lambda ids: application_id in ids)
    target = ["--target", stack.grpc_target("routing")]
    runner = CliRunner()
    shown = runner.invoke(cli, ["review", "list", *target, "--json"])
    assert shown.exit_code == 0, shown.output
    [entry] = [e for e in json.loads(shown.output) if e["application_id"] == application_id]
    assert entry["matter_code"] == "KSTB-MED-01"
    unknown = runner.invoke(cli, ["review", "reject", "TB-NOT-WAITING", "--reason", "不属跨省通办范围", *target])
    assert unknown.exit_code == 2, "a request the state does not allow is a failure, with routing's reason"
    done = runner.invoke(cli, ["review", "reject", application_id, "--reason", "不属跨省通办范围", *target])
    assert done.exit_code == 0, done.output
    await listed(stack, lambda ids: application_id not in ids)
