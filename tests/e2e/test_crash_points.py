"""Kill each service at each crash point (after the store write, after produce, before
commit) and show that after a restart the application is delivered exactly once: never zero,
never two, as counted by independent consumers (the simulated carrier and this test's own)."""

import asyncio
import secrets

import grpc
import pytest

from services.intake import intake_pb2_grpc
from services.intake.domain import application_id_for
from sim.samples import samples
from tests.support import REGISTRY, Sink, produce, submit, wait_terminal
from tongban.config import CRASH_POINTS
from tongban.events import encode_event, now_utc

pytestmark = pytest.mark.integration

SIGKILL = -9
TOPICS = ["tongban.application.received", "tongban.application.routed", "tongban.application.verified",
          "tongban.partner.440000.assignments", "tongban.partner.440000.decisions", "tongban.application.accepted",
          "tongban.application.decided", "tongban.partner.ems.dispatches", "tongban.partner.ems.receipts",
          "tongban.application.delivered"]
ONE_EACH = ["tongban.application.ApplicationReceived", "tongban.application.ApplicationRouted",
            "tongban.application.ApplicationVerified", "tongban.partner.MatterAssigned",
            "tongban.application.ApplicationAccepted", "tongban.application.ApplicationDecided",
            "tongban.delivery.PostalDispatch", "tongban.delivery.PostalReceipt",
            "tongban.application.ApplicationDelivered"]


async def restart_with_crash_point(stack, service: str, point: str) -> None:
    assert stack.stop(service) == 0, f"{service} did not stop cleanly on SIGTERM"
    stack.start(service, {"TONGBAN_CRASH_POINT": point})
    await stack.wait_healthy((service,))


async def recover(stack, service: str) -> None:
    assert await stack.wait_exit(service) == SIGKILL, f"{service} did not reach its crash point"
    stack.start(service)
    await stack.wait_healthy((service,))


@pytest.mark.parametrize("point", CRASH_POINTS)
@pytest.mark.parametrize("service", ["intake", "routing", "verification", "delivery"])
async def test_a_crash_delivers_exactly_once(stack, namespace, service, point):
    await restart_with_crash_point(stack, service, point)
    request = samples(secrets.token_hex(4))[1].request  # licence by post: the carrier is a sink too
    if service == "intake":
        # Intake dies inside Submit or while following the application; the client retries.
        submitted = asyncio.create_task(submit(stack, request, timeout=120))
        await recover(stack, service)
        application_id = await submitted
    else:
        application_id = await submit(stack, request)
        await recover(stack, service)

    progress = await wait_terminal(stack, application_id, timeout=90)
    assert progress.stage == "DELIVERED"
    async with Sink(namespace, TOPICS) as sink:
        await sink.wait_for(lambda s: s.events("tongban.application.ApplicationDelivered", application_id))
        seen = await sink.poll(3)  # time for a late duplicate to show itself
    for event_type in ONE_EACH:
        assert len(seen.distinct_ids(event_type, application_id)) == 1, event_type
    assert len({d["dispatch_id"] for d in seen.events("tongban.delivery.PostalDispatch", application_id)}) == 1
    assert [h.stage for h in progress.history].count("DELIVERED") == 1


async def rate(namespace: str, matter: str, number: int, level: int) -> None:
    """A 好差评 rating as the ratings topic carries it; one key keeps the test's ratings in order."""
    application_id = f"TBCRASH{matter}"
    rating = {"rating_id": f"{matter}-{number}", "application_id": application_id, "matter_code": matter,
              "division_code": "430102", "party": "420000", "level": level, "channel": "ONLINE",
              "comment": None, "rated_at": now_utc()}
    _, value = encode_event(REGISTRY, "tongban.feedback.ServiceRating", rating, cause_id=f"test-{matter}-{number}",
                            correlation_id=application_id, source_system="test")
    await produce(namespace, "tongban.feedback.ratings", application_id.encode(), value)


@pytest.mark.parametrize("point", CRASH_POINTS)
async def test_feedback_counts_each_rating_once_across_a_crash(stack, namespace, point):
    """Feedback dies while the ratings that raise a flag are in flight. Counted once, 2 bad
    of 5 raise one flag and 16 more good ratings clear it (2 of 21 is under 10%); any rating
    counted twice shows in the flag's totals or keeps the flag from clearing."""
    matter = f"KSTB-T{secrets.token_hex(3).upper()}"
    await restart_with_crash_point(stack, "feedback", point)
    for number, level in enumerate([1, 1, 1, 5, 5], start=1):
        await rate(namespace, matter, number, level)
    await recover(stack, "feedback")
    for number in range(6, 22):
        await rate(namespace, matter, number, 1)

    def mine(seen, event_type):
        return [f for f in seen.events(event_type) if f["matter_code"] == matter]

    async with Sink(namespace, ["tongban.feedback.flags"]) as sink:
        await sink.wait_for(lambda s: mine(s, "tongban.feedback.MatterFlagCleared"))
        seen = await sink.poll(3)
    flags = mine(seen, "tongban.feedback.MatterFlagged")
    assert len({f["envelope"]["event_id"] for f in flags}) == 1
    assert (flags[0]["total_ratings"], flags[0]["bad_ratings"]) == (5, 2)
    assert len({c["envelope"]["event_id"] for c in mine(seen, "tongban.feedback.MatterFlagCleared")}) == 1


async def test_a_submit_abandoned_at_the_crash_is_still_sent_by_the_relay(stack):
    """Intake dies right after storing a Submit and the client never retries: the stored
    outbox entry is all there is, and the relay must send it."""
    await restart_with_crash_point(stack, "intake", "after_store_write")
    request = samples(secrets.token_hex(4))[0].request
    async with grpc.aio.insecure_channel(stack.grpc_target("intake")) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await intake_pb2_grpc.IntakeStub(channel).Submit(request, timeout=30)
    await recover(stack, "intake")
    application_id = application_id_for(request.source_system, request.client_reference)
    assert (await wait_terminal(stack, application_id, timeout=90)).stage == "DELIVERED"
