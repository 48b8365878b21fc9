"""The running services take mutual TLS only, and intake answers each caller for its own
applications, over the real broker and store (the rules themselves are tested in-process in
tests/unit/test_intake_api_auth.py). Certificates come from the local CA (`make setup`)."""

import secrets

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devtools.launcher import MONITOR, SERVICES
from services.intake import intake_pb2, intake_pb2_grpc
from sim.samples import samples
from tests.support import submit, track, wait_terminal
from tongban.grpc_tls import client_channel
from tongban.ops import certs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def foreign_ca(tmp_path_factory):
    """Another CA issuing certificates with the very names and roles of our callers."""
    directory = tmp_path_factory.mktemp("foreign-ca")
    certs.setup(directory, callers={"hunan-portal": "portal", MONITOR: "monitor"})
    return directory


async def health_check(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return reply.status


@pytest.mark.parametrize("service", SERVICES)
async def test_every_service_refuses_plaintext_and_another_cas_certificate_and_answers_ours(stack, foreign_ca,
                                                                                            service):
    target = stack.grpc_target(service)
    for channel in (grpc.aio.insecure_channel(target), client_channel(target, MONITOR, foreign_ca)):
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health_check(channel)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    async with client_channel(target, MONITOR) as channel:
        assert await health_check(channel) == health_pb2.HealthCheckResponse.SERVING


async def test_intake_refuses_submits_without_our_certificate_a_role_or_the_callers_own_source_system(stack,
                                                                                                      foreign_ca):
    target = stack.grpc_target("intake")
    request = samples(secrets.token_hex(4))[0].request  # names hunan-portal as its source system
    cases = [(client_channel(target, "hunan-portal", foreign_ca), grpc.StatusCode.UNAVAILABLE),
             (grpc.aio.insecure_channel(target), grpc.StatusCode.UNAVAILABLE),
             (client_channel(target, MONITOR), grpc.StatusCode.PERMISSION_DENIED),
             (client_channel(target, "changsha-window"), grpc.StatusCode.PERMISSION_DENIED)]  # spoofing
    for channel, code in cases:
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await intake_pb2_grpc.IntakeStub(channel).Submit(request, timeout=10)
            assert refused.value.code() == code, refused.value.details()
    # None of them was recorded: the same request from its own system is new.
    assert await submit(stack, request, caller="hunan-portal")


async def test_a_window_systems_application_is_tracked_by_it_and_operators_only_also_once_archived(stack):
    request = samples(secrets.token_hex(4))[2].request  # 社会保障卡申领 at a window
    request.source_system = ""  # the certificate names it
    application_id = await submit(stack, request, caller="changsha-window")
    progress = await wait_terminal(stack, application_id, caller="changsha-window")
    assert progress.stage == "DELIVERED"  # concluded: its view now comes from the archive
    assert (await track(stack, application_id, "tongban-operator")).stage == "DELIVERED"
    for caller in ("xiangxi-window", "hunan-portal", "partner-420000"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await track(stack, application_id, caller)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, caller
    async with client_channel(stack.grpc_target("intake"), "xiangxi-window") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await intake_pb2_grpc.IntakeStub(channel).Rate(intake_pb2.RateRequest(
                application_id=application_id, level=1, channel="ONSITE", rating_reference="r1"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_portals_application_is_followed_on_any_portal_but_not_by_a_window(stack):
    application_id = await submit(stack, samples(secrets.token_hex(4))[0].request, caller="hunan-portal")
    progress = await wait_terminal(stack, application_id, caller="gov-portal")
    assert progress.application_id == application_id
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await track(stack, application_id, "changsha-window")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
