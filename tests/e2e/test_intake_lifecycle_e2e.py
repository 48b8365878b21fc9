"""Intake's side of the acceptance lifecycle over the real broker and store: a retried
Submit with another payload is refused naming the fields, an application is withdrawn
before its decision, and Watch streams every step of an application in order and resumes
after a reconnect."""

import asyncio
import secrets

import grpc
import pytest

from services.intake import domain, intake_pb2, intake_pb2_grpc
from sim.samples import samples
from tests.pii_parties import stack_cipher
from tests.support import Sink, start_stack, submit, track, wait_terminal
from tongban.grpc_tls import client_channel
from tongban.pii import sealed_for

pytestmark = pytest.mark.integration

# The simulated authorities answer this matter with a 补正 notice first, so an application
# of it is never decided before the test withdraws it (whether or not delivery handles the
# notice yet).
PAUSED_MATTER, PAUSED_MATTER_TITLE = "KSTB-SOC-02", "社会保障卡申领"
INTAKE_TOPICS = ["tongban.application.received", "tongban.application.notices"]


@pytest.fixture(scope="module")
def stack(namespace):
    stack = start_stack(namespace, sim_args=("--supplement-matters", PAUSED_MATTER))
    yield stack
    stack.stop_all()


def sample(title_part: str) -> intake_pb2.SubmitRequest:
    return next(s.request for s in samples(secrets.token_hex(4)) if title_part in s.title)


async def call(stack, method: str, message):
    async with client_channel(stack.grpc_target("intake"), "hunan-portal") as channel:
        return await getattr(intake_pb2_grpc.IntakeStub(channel), method)(message, timeout=20)


async def submit_reply(stack, request) -> intake_pb2.SubmitReply:
    await submit(stack, request)  # waits out a starting intake
    return await call(stack, "Submit", request)


async def test_the_same_key_with_another_payload_is_refused_naming_the_fields_not_the_values(stack):
    request = sample("就医备案")
    first = await submit_reply(stack, request)
    assert domain.is_valid_number(first.application_number)
    assert first.application_number.startswith(request.receiving_division[:6] + "-")
    again = await call(stack, "Submit", request)
    assert (again.application_id, again.application_number) == (first.application_id, first.application_number)

    changed = intake_pb2.SubmitRequest()
    changed.CopyFrom(request)
    changed.applicant.phone = "13900000000"
    changed.materials[0].original_checked = not changed.materials[0].original_checked
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(stack, "Submit", changed)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert refused.value.details().endswith("differs in: applicant.phone, materials")
    assert "13900000000" not in refused.value.details()
    progress = await track(stack, first.application_id, "hunan-portal")
    assert progress.application_number == first.application_number


async def test_an_application_is_withdrawn_before_its_decision_and_not_after(stack, namespace):
    request = sample(PAUSED_MATTER_TITLE)
    reply = await submit_reply(stack, request)
    withdrawn = await call(stack, "Withdraw", intake_pb2.WithdrawRequest(application_id=reply.application_id,
                                                                         reason="不再需要"))
    assert withdrawn.stage == "WITHDRAWN"
    async with Sink(namespace, INTAKE_TOPICS) as sink:
        seen = await sink.wait_for(lambda s: s.events("tongban.application.ApplicationWithdrawn",
                                                      reply.application_id))
        [event] = seen.events("tongban.application.ApplicationWithdrawn", reply.application_id)
        # the applicant's own words travel sealed, for verification and delivery only
        assert sorted(sealed_for(event["reason"])) == ["delivery", "verification"]
        assert stack_cipher("delivery").open(event["reason"], record="tongban.application.ApplicationWithdrawn",
                                             path="reason", subject=reply.application_id) == "不再需要"
        [receipt] = [n for n in seen.events("tongban.application.NoticeServed", reply.application_id)
                     if n["kind"] == "RECEIPT"]
        assert receipt["application_number"] == reply.application_number
    progress = await wait_terminal(stack, reply.application_id, caller="hunan-portal")
    assert progress.stage == "WITHDRAWN"
    assert "DECIDED" not in [h.stage for h in progress.history]
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await call(stack, "Withdraw", intake_pb2.WithdrawRequest(application_id=reply.application_id))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def watch(stack, application_id: str, after: int = 0, take: int | None = None) -> list:
    """Steps from Watch: all of them until the stream ends, or the first `take` (then hang up)."""
    steps = []
    async with client_channel(stack.grpc_target("intake"), "hunan-portal") as channel:
        stream = intake_pb2_grpc.IntakeStub(channel).Watch(
            intake_pb2.WatchRequest(application_id=application_id, after_sequence=after), timeout=60)
        async for step in stream:
            steps.append(step)
            if take is not None and len(steps) == take:
                stream.cancel()
                break
    return steps


async def test_watch_streams_every_step_in_order_and_resumes_after_a_reconnect(stack):
    reply = await submit_reply(stack, sample(PAUSED_MATTER_TITLE))
    first = await watch(stack, reply.application_id, take=2)
    assert [(s.sequence, s.stage) for s in first] == [(1, "RECEIVED"), (2, "NUMBERED")]
    assert first[1].notice == "RECEIPT"
    # Reconnect after the last step seen, then change the application while the stream is open.
    resumed = asyncio.create_task(watch(stack, reply.application_id, after=first[-1].sequence))
    await call(stack, "Withdraw", intake_pb2.WithdrawRequest(application_id=reply.application_id))
    rest = await resumed
    streamed = first + rest
    assert [s.sequence for s in streamed] == list(range(1, len(streamed) + 1)), "in order, none twice, none missed"
    assert "WITHDRAWN" in [s.stage for s in rest], "the change made while the stream was open"
    progress = await track(stack, reply.application_id, "hunan-portal")
    learned = sorted(progress.history, key=lambda h: h.sequence)
    assert [(s.sequence, s.stage, s.detail) for s in streamed] == \
        [(h.sequence, h.stage, h.detail) for h in learned][:len(streamed)]
    assert [n.kind for n in progress.notices][:1] == ["RECEIPT"]


async def test_the_formal_check_knows_the_catalogue_routing_publishes(stack):
    """Intake learns the catalogue from tongban.catalogue.changes: an essential material
    missing is refused at 收件, with the field named (retried until intake has learned it)."""
    deadline = asyncio.get_running_loop().time() + 60
    refusal = None
    while refusal is None:
        assert asyncio.get_running_loop().time() < deadline, "intake never learned the catalogue"
        request = sample("公司设立登记")
        [form] = [m for m in request.materials if m.code == "APPLICATION_FORM"]
        request.materials.remove(form)
        try:
            await submit_reply(stack, request)
        except grpc.aio.AioRpcError as refused:
            refusal = refused
    assert refusal.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refusal.details() == "materials: essential material(s) missing: APPLICATION_FORM"


async def test_a_supplement_round_trip_through_intake_serves_each_notice_and_ends_delivered(stack, namespace):
    """The authority asks for a 补正 (the simulator's answer for this matter); the applicant
    supplements through SupplementMaterials; the application is accepted, decided and
    delivered, and every notice was served on the notices topic and is listed by Track."""
    request = sample(PAUSED_MATTER_TITLE)
    reply = await submit_reply(stack, request)
    paused = await wait_stage(stack, reply.application_id, "SUPPLEMENT_REQUESTED")
    assert paused.responsible == "APPLICANT"
    assert paused.deadline_millis > 0
    asked = paused.notices[-1]
    assert asked.kind == "SUPPLEMENT"
    codes = [reason.split(":")[0] for reason in asked.reasons]
    supplied = await call(stack, "SupplementMaterials", intake_pb2.SupplementRequest(
        application_id=reply.application_id,
        materials=[intake_pb2.Material(code=code, provided=True) for code in codes]))
    assert supplied.stage == "SUPPLEMENTED"
    done = await wait_terminal(stack, reply.application_id, within=90, caller="hunan-portal")
    assert done.stage == "DELIVERED"
    assert [n.kind for n in done.notices] == ["RECEIPT", "SUPPLEMENT", "ACCEPTANCE"]
    async with Sink(namespace, INTAKE_TOPICS) as sink:
        seen = await sink.wait_for(lambda s: len(s.events("tongban.application.NoticeServed",
                                                          reply.application_id)) == 3)
        assert [e["materials"] for e in seen.events("tongban.application.SupplementSubmitted",
                                                    reply.application_id)] == [codes]
    assert {n["application_number"] for n in seen.events("tongban.application.NoticeServed",
                                                         reply.application_id)} == {reply.application_number}


async def wait_stage(stack, application_id: str, stage: str, within: float = 60) -> intake_pb2.Progress:
    deadline = asyncio.get_running_loop().time() + within
    while (progress := await track(stack, application_id, "hunan-portal")).stage != stage:
        assert not progress.terminal, f"ended {progress.stage} before {stage}"
        assert asyncio.get_running_loop().time() < deadline, f"not {stage} after {within}s"
        await asyncio.sleep(0.3)
    return progress
