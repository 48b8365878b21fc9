"""Applications submitted through intake's gRPC API travel through all five services and the
partner simulator over the real broker and store."""

import asyncio
import json
import secrets

import grpc
import pytest

from services.intake import intake_pb2, intake_pb2_grpc
from sim.samples import samples
from tests.support import Sink, submit, trace_file, wait_terminal

pytestmark = pytest.mark.integration

LIFECYCLE = ["tongban.application.received", "tongban.application.routed", "tongban.application.verified",
             "tongban.application.accepted", "tongban.application.decided", "tongban.application.delivered",
             "tongban.feedback.ratings", "tongban.partner.ems.dispatches"]


async def test_every_sample_reaches_its_terminal_state(stack):
    expected = {}
    for sample in samples(secrets.token_hex(4)):
        if sample.expected == "REJECTED_AT_INTAKE":
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await submit(stack, sample.request)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "postal_address is required" in refused.value.details()
            continue
        expected[await submit(stack, sample.request)] = sample
    for application_id, sample in expected.items():
        progress = await wait_terminal(stack, application_id)
        assert progress.stage == sample.expected, (sample.title, [h.stage for h in progress.history])


async def test_one_application_is_delivered_rated_and_traced_through_every_service(stack, namespace):
    request = samples(secrets.token_hex(4))[1].request  # 公司设立登记 with the licence by post
    application_id = await submit(stack, request)
    assert await submit(stack, request) == application_id, "a retried Submit is the same application"

    progress = await wait_terminal(stack, application_id)
    assert progress.stage == "DELIVERED"
    assert {"RECEIVED", "ROUTED", "VERIFIED", "ACCEPTED", "DECIDED", "DELIVERED"} <= {h.stage for h in
                                                                                      progress.history}
    assert progress.deciding_partner == "440000"
    assert progress.result_reference.startswith("LIC-")
    assert progress.tracking_number.startswith("EMS")

    async with grpc.aio.insecure_channel(stack.grpc_target("intake")) as channel:
        await intake_pb2_grpc.IntakeStub(channel).Rate(intake_pb2.RateRequest(
            application_id=application_id, level=1, channel="ONLINE", rating_reference="r1"))
    assert list((await wait_terminal(stack, application_id)).ratings) == [1]

    async with Sink(namespace, LIFECYCLE) as sink:
        seen = await sink.wait_for(lambda s: s.events("tongban.feedback.ServiceRating", application_id))
    assert len(seen.distinct_ids("tongban.application.ApplicationReceived", application_id)) == 1
    rating = seen.events("tongban.feedback.ServiceRating", application_id)[0]
    assert (rating["level"], rating["party"], rating["matter_code"]) == (1, "440000", "KSTB-MKT-01")
    dispatch = seen.events("tongban.delivery.PostalDispatch", application_id)[0]
    assert dispatch["address"] == request.postal_address

    # One trace follows the application through intake, routing, verification, delivery,
    # the partner authority, the carrier and, with the rating, feedback.
    services: set[str] = set()
    for _ in range(50):
        spans = [json.loads(line) for line in trace_file(stack).read_text().splitlines()]
        submit_span = next(s for s in spans if s["name"] == "intake.Submit"
                           and s["attributes"].get("tongban.application_id") == application_id)
        services = {s["service"] for s in spans if s["trace_id"] == submit_span["trace_id"]}
        if "tongban-feedback" in services:
            break
        await asyncio.sleep(0.2)
    assert {"tongban-intake", "tongban-routing", "tongban-verification", "tongban-delivery",
            "tongban-feedback", "tongban-partner-sim"} <= services
