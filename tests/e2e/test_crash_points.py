"""Kill each service at each crash point (after its handlers ran, after producing inside the
open transaction, while restoring its state) and show that after a restart the application
is delivered exactly once: every event is on the wire exactly once for a read_committed
reader, and the simulated carrier, an independent party, was handed exactly one parcel."""

import secrets

import pytest

from sim.samples import samples
from tests.support import REGISTRY, Sink, carrier_parcels, produce, settle, submit, wait_terminal
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
IN_FLIGHT_POINTS = [p for p in CRASH_POINTS if p != "during_restore"]


async def restart_with_crash_point(stack, service: str, point: str) -> None:
    assert stack.stop(service) == 0, f"{service} did not stop cleanly on SIGTERM"
    stack.start(service, {"TONGBAN_CRASH_POINT": point})
    await stack.wait_healthy((service,))


async def recover(stack, service: str) -> None:
    assert await stack.wait_exit(service) == SIGKILL, f"{service} did not reach its crash point"
    stack.start(service)
    await stack.wait_healthy((service,))


async def assert_exactly_once(stack, namespace, application_id):
    async with Sink(namespace, TOPICS) as sink:
        await sink.wait_for(lambda s: s.events("tongban.application.ApplicationDelivered", application_id))
        seen = await settle(namespace, TOPICS, application_id, sink)
    for event_type in ONE_EACH:
        assert len(seen.events(event_type, application_id)) == 1, f"{event_type} is not on the wire exactly once"
    assert carrier_parcels(stack, application_id) == 1, "the carrier was not handed exactly one parcel"


@pytest.mark.parametrize("point", IN_FLIGHT_POINTS)
@pytest.mark.parametrize("service", ["intake", "routing", "verification", "delivery"])
async def test_a_crash_in_flight_delivers_exactly_once(stack, namespace, service, point):
    await restart_with_crash_point(stack, service, point)
    request = samples(secrets.token_hex(4))[1].request  # licence by post: the carrier is a sink too
    application_id = await submit(stack, request)  # durable on intake's command topic
    await recover(stack, service)
    progress = await wait_terminal(stack, application_id, within=90)
    assert progress.stage == "DELIVERED"
    assert [h.stage for h in progress.history].count("DELIVERED") == 1
    await assert_exactly_once(stack, namespace, application_id)


@pytest.mark.parametrize("service", ["intake", "routing", "verification", "delivery"])
async def test_a_crash_while_restoring_state_loses_nothing(stack, namespace, service):
    """The service dies in the middle of reading its changelog back; started again, it
    restores from the start of what it had not stored and carries on."""
    before = await submit(stack, samples(secrets.token_hex(4))[0].request)
    await wait_terminal(stack, before)  # so there is state to restore
    assert stack.stop(service) == 0, f"{service} did not stop cleanly on SIGTERM"
    stack.start(service, {"TONGBAN_CRASH_POINT": "during_restore", "TONGBAN_STATE_DIR": str(
        stack.log_dir / f"fresh-state-{secrets.token_hex(2)}")})  # an empty local store: a full restore
    await recover(stack, service)
    application_id = await submit(stack, samples(secrets.token_hex(4))[1].request)
    assert (await wait_terminal(stack, application_id, within=90)).stage == "DELIVERED"
    await assert_exactly_once(stack, namespace, application_id)


async def rate(namespace: str, matter: str, number: int, level: int) -> None:
    """A 好差评 rating as the ratings topic carries it; one key keeps the test's ratings in order."""
    application_id = f"TBCRASH{matter}"
    rating = {"rating_id": f"{matter}-{number}", "application_id": application_id, "matter_code": matter,
              "division_code": "430102", "party": "420000", "level": level, "channel": "ONLINE",
              "comment": None, "rated_at": now_utc()}
    _, value = encode_event(REGISTRY, "tongban.feedback.ServiceRating", rating, cause_id=f"test-{matter}-{number}",
                            correlation_id=application_id, source_system="test")
    await produce(namespace, "tongban.feedback.ratings", application_id.encode(), value)


@pytest.mark.parametrize("point", IN_FLIGHT_POINTS)
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
        seen = await settle(namespace, ["tongban.feedback.flags"], matter, sink)
    flags = mine(seen, "tongban.feedback.MatterFlagged")
    assert len(flags) == 1, "one flag record on the wire"
    assert (flags[0]["total_ratings"], flags[0]["bad_ratings"]) == (5, 2)
    assert len(mine(seen, "tongban.feedback.MatterFlagCleared")) == 1
