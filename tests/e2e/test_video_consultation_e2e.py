"""异地视频会商收件 over the real broker and intake's gRPC: a Changsha window asks Jiangxi's
authority for a video consultation on an application's materials and records the agreed
checklist. Sinks: the test's own consumer of tongban.consultation.recorded and intake's Track."""

import secrets
import time

import grpc
import pytest

from services.intake import intake_pb2, intake_pb2_grpc
from sim.samples import samples
from tests.support import Sink, settle, start_stack, submit, wait_progress
from tongban import topics
from tongban.grpc_tls import client_channel

pytestmark = pytest.mark.integration

WINDOW_SYSTEM = "changsha-window"  # operates the sample's window (tongban/windows.toml)


@pytest.fixture(scope="module")
def stack(namespace):
    # Intake alone: the consultation is intake's; nothing else has to move the application.
    stack = start_stack(namespace, only=("intake",))
    yield stack
    stack.stop_all()


async def call(stack, method: str, request, caller: str = WINDOW_SYSTEM):
    async with client_channel(stack.grpc_target("intake"), caller) as channel:
        return await getattr(intake_pb2_grpc.IntakeStub(channel), method)(request, timeout=20)


async def refused(stack, method: str, request, caller: str = WINDOW_SYSTEM) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(stack, method, request, caller)
    return error.value.code()


async def test_a_window_records_the_checklist_agreed_with_the_deciding_authority(stack, namespace):
    application = samples(secrets.token_hex(4))[2].request  # 社会保障卡申领 at a Changsha window, decided in Jiangxi
    application.source_system = ""  # the certificate names it
    application_id = await submit(stack, application, caller=WINDOW_SYSTEM)
    ask = intake_pb2.RequestConsultationRequest(
        application_id=application_id, matter_code=application.matter_code, window_id=application.window_id,
        deciding_partner="360000", proposed_materials=["RESIDENT_ID", "PHOTO"],
        reason="照片不清晰，联系电话13812345678")
    async with Sink(namespace, [topics.CONSULTATIONS]) as sink:
        consultation_id = (await call(stack, "RequestConsultation", ask)).consultation_id
        assert (await call(stack, "RequestConsultation", ask)).consultation_id == consultation_id  # a retry
        assert await refused(stack, "RequestConsultation", ask, caller="hunan-portal") \
            == grpc.StatusCode.PERMISSION_DENIED  # windows only
        record = intake_pb2.RecordConsultationRequest(
            consultation_id=consultation_id, outcome="AGREED", agreed_materials=["PHOTO"],
            held_at_millis=int(time.time() * 1000), note="补交近期照片")
        assert (await call(stack, "RecordConsultation", record)).outcome == "AGREED"
        assert (await call(stack, "RecordConsultation", record)).outcome == "AGREED"  # a retry
        other = intake_pb2.RecordConsultationRequest(consultation_id=consultation_id, outcome="NOT_HELD")
        assert await refused(stack, "RecordConsultation", other) == grpc.StatusCode.FAILED_PRECONDITION
        unknown = intake_pb2.RecordConsultationRequest(consultation_id="CS" + "0" * 20, outcome="NOT_HELD")
        assert await refused(stack, "RecordConsultation", unknown) == grpc.StatusCode.NOT_FOUND

        await sink.wait_for(lambda s: s.events(topics.CONSULTATION_RECORDED_EVENT, consultation_id), within=60)
        seen = await settle(namespace, [topics.CONSULTATIONS], consultation_id, sink)
        # Once each on the wire, whatever the retries.
        [requested] = seen.events(topics.CONSULTATION_REQUESTED_EVENT, consultation_id)
        [recorded] = seen.events(topics.CONSULTATION_RECORDED_EVENT, consultation_id)
    assert (requested["application_id"], requested["proposed_materials"], requested["window_id"]) == (
        application_id, ["RESIDENT_ID", "PHOTO"], application.window_id)
    assert "13812345678" not in requested["reason"]
    assert (recorded["outcome"], recorded["agreed_materials"], recorded["note"]) == (
        "AGREED", ["PHOTO"], "补交近期照片")

    progress = await wait_progress(stack, application_id, lambda p: "CONSULTATION_RECORDED" in
                                   {h.stage for h in p.history}, caller=WINDOW_SYSTEM)
    steps = {h.stage: h.detail for h in progress.history}
    assert steps["CONSULTATION_REQUESTED"] == "360000: RESIDENT_ID, PHOTO"
    assert steps["CONSULTATION_RECORDED"] == "AGREED: PHOTO"
    assert progress.stage == "RECEIVED"  # a step, not a stage
