"""好差评 in 异地代收代办 over the real broker: the Changsha window that received a Guangdong
company registration and the Guangdong authority that decided it are each rated through
intake's Rate, each against its own party and division taken from the application; a
second online rating of the window is refused with the reason."""

import secrets

import grpc
import pytest

from services.intake import intake_pb2, intake_pb2_grpc
from sim.samples import samples
from tests.support import Sink, submit, wait_terminal
from tongban import topics
from tongban.grpc_tls import client_channel

pytestmark = pytest.mark.integration

WINDOW_CALLER, WINDOW = "changsha-window", "HN-430103-KSTB-01"


async def rate(stack, application_id: str, role: str, reference: str) -> intake_pb2.RateReply:
    async with client_channel(stack.grpc_target("intake"), WINDOW_CALLER) as channel:
        return await intake_pb2_grpc.IntakeStub(channel).Rate(intake_pb2.RateRequest(
            application_id=application_id, level=4, channel="ONLINE", rating_reference=reference,
            rated_role=role), timeout=20)


async def test_both_parties_of_a_receive_here_handle_there_case_are_rated_each_against_its_own_division(
        stack, namespace):
    request = intake_pb2.SubmitRequest()
    request.CopyFrom(next(s.request for s in samples(secrets.token_hex(4)) if "公司设立登记" in s.title))
    request.source_system = ""  # the window system's certificate names it
    application_id = await submit(stack, request, caller=WINDOW_CALLER)
    progress = await wait_terminal(stack, application_id, within=120, caller=WINDOW_CALLER)
    assert progress.stage == "DELIVERED"

    receiving = await rate(stack, application_id, "RECEIVING", "window-1")
    deciding = await rate(stack, application_id, "DECIDING", "authority-1")
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await rate(stack, application_id, "RECEIVING", "window-2")
    assert again.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "一事一评" in again.value.details()

    async with Sink(namespace, [topics.FEEDBACK_RATINGS]) as sink:
        seen = await sink.wait_for(lambda s: len(s.events(topics.SERVICE_RATING_EVENT, application_id)) >= 2)
        by_id = {r["rating_id"]: r for r in seen.events(topics.SERVICE_RATING_EVENT, application_id)}
    assert set(by_id) == {receiving.rating_id, deciding.rating_id}
    window, authority = by_id[receiving.rating_id], by_id[deciding.rating_id]
    assert (window["rated_role"], window["party"], window["division_code"]) == ("RECEIVING", WINDOW, "430103")
    assert (authority["rated_role"], authority["party"]) == ("DECIDING", progress.deciding_partner)
    assert authority["division_code"].startswith("44"), "the Guangdong authority's own division"
