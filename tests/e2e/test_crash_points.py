"""Kill each service at each crash point (after its handlers ran, after producing inside the
open transaction, while restoring its state) and show that after a restart the application
is delivered exactly once: every event is on the wire exactly once for a read_committed
reader, and the simulated carrier, an independent party, was handed exactly one parcel."""

import asyncio
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
            "tongban.delivery.PostalDispatch",
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
    receipts = sorted(r["status"] for r in seen.events("tongban.delivery.PostalReceipt", application_id))
    assert receipts == ["ACCEPTED", "DELIVERED", "IN_TRANSIT"], "each of the carrier's tracking events once"
    assert carrier_parcels(stack, application_id) == 1, "the carrier was not handed exactly one parcel"


@pytest.mark.parametrize("point", IN_FLIGHT_POINTS)
@pytest.mark.parametrize("service", ["intake", "routing", "verification", "delivery"])
async def test_a_crash_in_flight_delivers_exactly_once(stack, namespace, service, point):
    await restart_with_crash_point(stack, service, point)
    request = samples(secrets.token_hex(4))[1].request  # licence by post: the carrier is a sink too
    # Submit answers once intake has numbered the application: when intake is the one that
    # crashes, the answer comes after its recovery.
    application_id, _ = await asyncio.gather(submit(stack, request), recover(stack, service))
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
    """A 好差评 rating as the ratings topic carries it, each for its own application (一事一评)."""
    application_id = f"TBCRASH{matter}{number:02d}"
    rating = {"rating_id": f"{matter}-{number}", "application_id": application_id, "matter_code": matter,
              "division_code": "430102", "party": "420000", "level": level, "channel": "ONLINE",
              "comment": None, "rated_at": now_utc()}
    _, value = encode_event(REGISTRY, "tongban.feedback.ServiceRating", rating, cause_id=f"test-{matter}-{number}",
                            correlation_id=application_id, source_system="test")
    await produce(namespace, "tongban.feedback.ratings", application_id.encode(), value)


@pytest.mark.parametrize("point", IN_FLIGHT_POINTS)
async def test_feedback_counts_each_rating_once_across_a_crash(stack, namespace, point):
    """Feedback dies while ratings are in flight. Each rating becomes exactly one counted fact
    on `tongban.feedback.facts` (the windows and flags count facts by their id); a rating
    counted twice, or lost, shows in the facts."""
    matter = f"KSTB-T{secrets.token_hex(3).upper()}"
    await restart_with_crash_point(stack, "feedback", point)
    for number, level in enumerate([5, 5, 1, 1, 4], start=1):
        await rate(namespace, matter, number, level)
    await recover(stack, "feedback")
    for number in range(6, 12):
        await rate(namespace, matter, number, 1)

    def mine(seen):
        return [f for f in seen.events("tongban.feedback.SupervisionFact") if f["matter_code"] == matter]

    async with Sink(namespace, ["tongban.feedback.facts"]) as sink:
        await sink.wait_for(lambda s: len(mine(s)) >= 11)
        seen = await settle(namespace, ["tongban.feedback.facts"], matter, sink)
    facts = mine(seen)
    assert sorted(f["fact_id"] for f in facts) == sorted(f"{matter}-{n}" for n in range(1, 12)), \
        "each rating exactly once"
    assert all(f["counted"] and f["kind"] == "RATING" for f in facts)
    assert sum(f["bad"] for f in facts) == 3, "levels 4 and 5 are the bad ones"
