"""资料寄递 in intake's progress view, through its handlers: the carrier's MaterialsDispatched and
MaterialsReceived are steps of the timeline with the parcel's tracking number, never a stage.
No broker."""

from datetime import UTC, datetime, timedelta

from services.intake import domain, handlers
from tongban import topics
from tongban.handling import Event

APP = "TBORIGINALS"
T0 = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
PARCEL = "EMS0123456789"


def event(event_type: str, payload: dict, minutes: int) -> Event:
    return Event(f"id-{minutes}-{event_type}", event_type, APP, payload,
                 {"occurred_at": T0 + timedelta(minutes=minutes), "correlation_id": APP}, topics.POSTAL_ORIGINALS)


DISPATCHED = (topics.MATERIALS_DISPATCHED_EVENT, {
    "application_id": APP, "tracking_number": PARCEL, "from_party": "430000", "to_party": "440000",
    "dispatched_at": T0})
RECEIVED = (topics.MATERIALS_RECEIVED_EVENT, {
    "application_id": APP, "tracking_number": PARCEL, "received_by": "440000", "received_at": T0})


async def test_the_parcel_is_in_the_timeline_and_the_stage_stays():
    view = domain.advance(None, APP, "ACCEPTED", T0, deciding_partner="440000")
    for minutes, (event_type, payload) in enumerate((DISPATCHED, RECEIVED), start=1):
        outcome = await handlers.HANDLERS[event_type](event(event_type, payload, minutes), view)
        assert outcome.state is not None
        assert (outcome.finished, outcome.emits) == (False, [])
        view = outcome.state
    assert (view["stage"], view["terminal"]) == ("ACCEPTED", False)
    assert [(h["stage"], h["detail"]) for h in domain.timeline(view)] == [
        ("ACCEPTED", ""), ("ORIGINALS_DISPATCHED", f"{PARCEL} to 440000"),
        ("ORIGINALS_RECEIVED", f"{PARCEL} signed for by 440000")]


async def test_a_signature_after_delivery_is_recorded_and_the_application_stays_delivered():
    view = domain.advance(None, APP, "DELIVERED", T0)
    outcome = await handlers.HANDLERS[RECEIVED[0]](event(*RECEIVED, 5), view)
    assert outcome.state is not None
    assert outcome.finished
    assert (outcome.state["stage"], outcome.state["terminal"]) == ("DELIVERED", True)
    assert outcome.state["history"][-1]["stage"] == "ORIGINALS_RECEIVED"


def test_intake_reads_the_carriers_originals_topic():
    assert topics.POSTAL_ORIGINALS in handlers.INPUTS
