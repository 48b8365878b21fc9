"""资料寄递: the originals of a matter that needs them are the receiving window's transit clock
until the deciding authority signs for the carrier's parcel, not until the authority first acts
(it may accept on scanned copies while the paper is still on the road)."""

from datetime import date

import pytest

from services.routing.catalogue import Catalogue
from services.routing.ledger import (
    ACCEPTANCE,
    DONE,
    RUNNING,
    STOPPED,
    TRANSIT,
    ClockError,
    DecisionLeg,
    Ledger,
    SlaPolicy,
    originals_travel,
)
from tests.unit.test_routing_rules import (
    APP,
    BREACHED,
    RECEIVED,
    SLA_TOPIC,
    accepted,
    beijing,
    decided,
    feed,
    lifecycle,
    received,
)
from tongban import topics
from tongban.handling import Rejected
from tongban.workdays import WorkingCalendar

CATALOGUE = Catalogue.load()
CALENDAR = WorkingCalendar.load()
ORIGINALS = topics.POSTAL_ORIGINALS
# KSTB-MED-01 needs a residence proof data sharing cannot supply; every material of KSTB-MED-03 can be shared.
PAPER, PAPERLESS = "KSTB-MED-01", "KSTB-MED-03"


def at_window(matter: str) -> tuple:
    """Received at a window in 430102 (Monday 22 Sep 2025) for 420106: 异地代收代办, decided by 420000."""
    return RECEIVED, received(matter_code=matter, channel="WINDOW"), topics.APPLICATION_RECEIVED


def dispatched(tracking: str = "EMS-ORIG-1") -> tuple:
    return topics.MATERIALS_DISPATCHED_EVENT, {
        "application_id": APP, "tracking_number": tracking, "from_party": "430102", "to_party": "420000",
        "dispatched_at": beijing(date(2025, 9, 22), 16)}, ORIGINALS


def signed(by: str = "420000", tracking: str = "EMS-ORIG-1", d: date = date(2025, 9, 24)) -> tuple:
    return topics.MATERIALS_RECEIVED_EVENT, {
        "application_id": APP, "tracking_number": tracking, "received_by": by, "received_at": beijing(d)}, ORIGINALS


def transit_of(fed) -> dict:
    return next(c for c in fed.state["ledger"]["clocks"] if c["leg"] == TRANSIT)


def breaches(fed, leg: str) -> list[tuple]:
    return [(e.payload["party"], e.payload["deadline"].date()) for e in fed.emits
            if e.topic == SLA_TOPIC and e.event_type == BREACHED and e.payload["leg"] == leg]


# ---------------------------------------------------------------------------- the catalogue's rule

def test_originals_travel_when_a_required_material_cannot_be_shared():
    assert originals_travel(CATALOGUE.get(PAPER).required_materials) is True
    assert originals_travel(CATALOGUE.get(PAPERLESS).required_materials) is False
    assert originals_travel(()) is False


# ---------------------------------------------------------------------------- the ledger alone

def tracked_ledger() -> Ledger:
    return Ledger.open(beijing(date(2025, 9, 22)), window="WIN-430102-01", deciding_party="420000",
                       decision_legs=[DecisionLeg("420000", "DECIDE", 20)], delivery_party="ems",
                       originals_posted=True, originals_tracked=True, policy=SlaPolicy(), calendar=CALENDAR)


def test_the_authoritys_acceptance_does_not_end_tracked_transit_its_signature_does():
    book = tracked_ledger()
    book.accepted(beijing(date(2025, 9, 23)))
    assert (book.clock(ACCEPTANCE).status, book.clock(TRANSIT).status) == (DONE, RUNNING)
    book.originals_dispatched("EMS-ORIG-1")
    book.originals_dispatched("EMS-ORIG-1")  # the carrier's resend is one parcel
    assert book.parcels == ["EMS-ORIG-1"]
    book.originals_received("EMS-ORIG-1", "420000", beijing(date(2025, 9, 24)))
    transit = book.clock(TRANSIT)
    assert (transit.status, transit.ended_on, transit.party) == (DONE, date(2025, 9, 24), "WIN-430102-01")


@pytest.mark.parametrize(("tracking", "by", "why"), [
    ("EMS-OTHER", "420000", "the tracking number was not dispatched for this application"),
    ("EMS-ORIG-1", "360000", "the originals were signed for by a party that does not decide this application"),
])
def test_a_receipt_that_is_not_the_deciding_authoritys_for_the_parcel_is_refused(tracking, by, why):
    book = tracked_ledger()
    book.originals_dispatched("EMS-ORIG-1")
    with pytest.raises(ClockError, match=why):
        book.originals_received(tracking, by, beijing(date(2025, 9, 24)))
    assert book.clock(TRANSIT).status == RUNNING


def test_nothing_posted_means_no_parcel_to_track():
    book = Ledger.open(beijing(date(2025, 9, 22)), window="430102", deciding_party="420000",
                       decision_legs=[DecisionLeg("420000", "DECIDE", 20)], delivery_party="ems",
                       originals_posted=False, originals_tracked=True, policy=SlaPolicy(), calendar=CALENDAR)
    assert book.originals_tracked is False  # tracked only where something is posted
    with pytest.raises(ClockError, match="no originals are posted"):
        book.originals_dispatched("EMS-ORIG-1")


def test_the_state_keeps_the_parcels_and_reads_ledgers_stored_before_them():
    book = tracked_ledger()
    book.originals_dispatched("EMS-ORIG-1")
    again = Ledger.from_state(book.to_state())
    assert (again.originals_tracked, again.parcels) == (True, ["EMS-ORIG-1"])
    old = {k: v for k, v in book.to_state().items() if k not in ("originals_tracked", "parcels")}
    assert (Ledger.from_state(old).originals_tracked, Ledger.from_state(old).parcels) == (False, [])


# ---------------------------------------------------------------------------- routing's handlers

async def test_originals_never_signed_for_breach_the_windows_transit_clock_though_the_authority_accepted():
    fed = await feed(at_window(PAPER), accepted(date(2025, 9, 23)), beijing(date(2025, 9, 26), 9))
    # three working days from Monday 22 Sep: due Thursday 25 Sep; the window is its receiving division here
    assert breaches(fed, TRANSIT) == [("430102", date(2025, 9, 25))]
    assert transit_of(fed)["status"] == RUNNING


async def test_the_authoritys_signature_in_time_ends_transit_without_an_alert():
    fed = await feed(at_window(PAPER), accepted(date(2025, 9, 23)), dispatched(), signed(),
                     beijing(date(2025, 9, 26), 9))
    assert breaches(fed, TRANSIT) == []
    assert [e for e in fed.emits if e.topic == SLA_TOPIC and e.payload["leg"] == TRANSIT] == []
    assert (transit_of(fed)["status"], transit_of(fed)["ended_on"]) == (DONE, "2025-09-24")


async def test_without_originals_to_post_the_authoritys_first_act_still_ends_transit():
    fed = await feed(at_window(PAPERLESS), accepted(date(2025, 9, 23)), beijing(date(2025, 9, 26), 9))
    assert breaches(fed, TRANSIT) == []
    assert (transit_of(fed)["status"], transit_of(fed)["ended_on"]) == (DONE, "2025-09-23")


async def test_delivery_stops_a_transit_clock_whose_parcel_never_arrived():
    fed = await feed(at_window(PAPER), accepted(date(2025, 9, 23)), decided(date(2025, 9, 24)),
                     lifecycle("ApplicationDelivered", "tongban.application.delivered", method="POST",
                               dispatch_id="D1", tracking_number="EMS1", delivered_at=beijing(date(2025, 9, 24))))
    assert transit_of(fed)["status"] == STOPPED
    assert fed.outcomes[-1].finished is True


@pytest.mark.parametrize(("steps", "why"), [
    ((dispatched(), signed(by="360000")), "signed for by a party that does not decide"),
    ((signed(),), "tracking number was not dispatched"),
])
async def test_a_wrong_receipt_is_a_dead_letter_naming_no_parcel(steps, why):
    with pytest.raises(Rejected, match=why) as caught:
        await feed(at_window(PAPER), *steps)
    assert "EMS-ORIG-1" not in str(caught.value)


async def test_a_parcel_for_an_application_that_posts_nothing_is_a_dead_letter():
    with pytest.raises(Rejected, match="no originals are posted"):
        await feed((RECEIVED, received(matter_code=PAPER), topics.APPLICATION_RECEIVED), dispatched())  # online
