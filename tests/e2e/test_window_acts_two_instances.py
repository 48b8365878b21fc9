"""A window may call any delivery instance: with two in the group, an act made on the instance
that does not own the application's partition gets the owner's verdict, over the real broker.
Done once when it is right (one arrival, one delivery, however often it is retried, wherever),
refused with the owner's code and reason when it is not, and a refusal is an answer, not a
dead letter."""

import asyncio
import os
import time
from unittest import mock

import grpc
import pytest

from devtools.launcher import ROOT, Stack, instance
from services.delivery import delivery_pb2, delivery_pb2_grpc
from sim.samples import DENIED_MATTER
from tests.e2e.test_result_channels import (
    OTHER_CHANGSHA_WINDOW,
    POLICY,
    TEST_WINDOW,
    WINDOW_CALLER,
    delivered,
    hand_over,
    stages,
)
from tests.support import Sink, settle
from tongban.grpc_tls import client_channel, tls_dir
from tongban.ops import certs

pytestmark = pytest.mark.integration

DELIVERIES = ("delivery", instance("delivery", 2))
DLQ = "tongban.dlq.tongban-delivery"
TOPICS = ["tongban.application.delivered", "tongban.partner.ems.dispatches", DLQ]


@pytest.fixture(scope="module")
def stack(namespace):
    """Two delivery instances in one group and the partner simulator, which operates no window
    here: the test is the window."""
    log_dir = ROOT / "var" / "test" / namespace.rstrip("-")
    with mock.patch.dict(os.environ, POLICY):
        stack = Stack({"TONGBAN_NAMESPACE": namespace, "TONGBAN_SESSION_TIMEOUT_MS": "3000",
                       "TONGBAN_STATE_DIR": str(log_dir / "state")}, log_dir,
                      sim_args=("--deny-matters", DENIED_MATTER, "--windows", "NONE"))
    stack.add_instance("delivery", 2)
    certs.setup(tls_dir(stack.env), [stack.env.get("TONGBAN_GRPC_HOST", "")])
    for name in (*DELIVERIES, "sim"):
        stack.start(name)
    try:
        asyncio.run(stack.wait_healthy(DELIVERIES, timeout=120))
        yield stack
    finally:
        stack.stop_all()


async def act(stack: Stack, name: str, method: str, application_id: str, window_id: str = TEST_WINDOW):
    """One window act on instance `name`; UNAVAILABLE (the owner's verdict late) is asked again,
    as the window would, and nothing else."""
    request = delivery_pb2.WindowAct(application_id=application_id, window_id=window_id)
    async with client_channel(stack.grpc_target(name), WINDOW_CALLER) as channel:
        for _ in range(20):
            try:
                return await getattr(delivery_pb2_grpc.DeliveryStub(channel), method)(request, timeout=10)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
            await asyncio.sleep(0.5)
    raise TimeoutError(f"{method} on {name} never got a verdict")


async def owner_and_other(stack: Stack, application_id: str, within: float = 60) -> tuple[str, str]:
    """Which instance holds the file (its Pending answers) and which does not (UNAVAILABLE)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        answers = {}
        for name in DELIVERIES:
            async with client_channel(stack.grpc_target(name), WINDOW_CALLER) as channel:
                try:
                    await delivery_pb2_grpc.DeliveryStub(channel).Pending(
                        delivery_pb2.ResultRequest(application_id=application_id), timeout=10)
                    answers[name] = "OK"
                except grpc.aio.AioRpcError as exc:
                    answers[name] = exc.code().name
        if sorted(answers.values()) == ["OK", "UNAVAILABLE"]:
            owner = next(n for n, a in answers.items() if a == "OK")
            return owner, next(n for n in DELIVERIES if n != owner)
        await asyncio.sleep(0.5)  # a rebalance still settling: ask again
    raise TimeoutError("no single owner of the file")


async def test_an_act_on_the_instance_without_the_file_gets_the_owners_verdict_and_is_done_once(stack, namespace):
    application_id = await hand_over(namespace, "KSTB-SOC-02", "WINDOW", window_id=TEST_WINDOW)  # 社会保障卡申领
    async with Sink(namespace, TOPICS) as sink:
        seen = await sink.wait_for(lambda s: s.events("tongban.delivery.PostalDispatch", application_id), 90)
        [parcel] = seen.events("tongban.delivery.PostalDispatch", application_id)
        window_id = parcel["window_id"]
        owner, other = await owner_and_other(stack, application_id)

        # refused on the other instance with the owner's code and reason
        with pytest.raises(grpc.aio.AioRpcError) as early:
            await act(stack, other, "ConfirmPickUp", application_id, window_id)
        assert (early.value.code(), early.value.details()) == (
            grpc.StatusCode.FAILED_PRECONDITION, "the result has not arrived at a window yet")
        with pytest.raises(grpc.aio.AioRpcError) as elsewhere:
            await act(stack, other, "RecordArrival", application_id, OTHER_CHANGSHA_WINDOW)
        assert (elsewhere.value.code(), elsewhere.value.details()) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            f"the result was sent to window {window_id}, not to window {OTHER_CHANGSHA_WINDOW}")
        for name in DELIVERIES:
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await act(stack, name, "ConfirmPickUp", application_id + "X")
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as empty:
                await act(stack, name, "RecordArrival", "")
            assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        # done on the other instance, the arrival retried on the owner in between (the same
        # request: recorded once); the pick-up right after it, with no retry, since the owner
        # tries it after the arrival it was handed; then the pick-up retried on both instances
        await act(stack, other, "RecordArrival", application_id, window_id)
        await act(stack, owner, "RecordArrival", application_id, window_id)
        await act(stack, other, "ConfirmPickUp", application_id, window_id)
        await sink.wait_for(delivered(application_id), 60)
        for name in (owner, other):
            await act(stack, name, "ConfirmPickUp", application_id, window_id)
        seen = await settle(namespace, TOPICS, application_id, sink)

    [done] = seen.events("tongban.application.ApplicationDelivered", application_id)
    assert done["method"] == "WINDOW"
    assert done["dispatch_id"] == parcel["dispatch_id"]
    assert stages(seen, application_id).count("ARRIVED_AT_WINDOW") == 1
    dead = [r for r in seen.records if r.topic == namespace + DLQ and r.key == application_id.encode()
            and "tongban.dlq.group" in dict(r.headers)]  # not settle's marker
    assert not dead, "a refused act is answered, not dead-lettered"
