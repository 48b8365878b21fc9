"""The simulated carrier's 资料寄递 (sim/carrier.py `originals`): which routed applications it
collects originals for, and what it writes. Routing refuses a parcel for an application whose
ledger has no transit clock, so the carrier must follow routing's own rule exactly."""

import pytest

from services.routing.catalogue import FULLY_ONLINE, RECEIVE_HERE_HANDLE_THERE, Catalogue
from services.routing.ledger import originals_travel
from sim.carrier import originals
from tongban import topics

CATALOGUE = Catalogue.load()


def routed(matter: str, mode: str = RECEIVE_HERE_HANDLE_THERE, application_id: str = "TB1",
           authority: str = "440000") -> dict:
    return {"application_id": application_id, "matter_code": matter, "mode": mode, "deciding_partner": authority,
            "deciding_division": "440300", "legs": [], "promised_working_days": 5, "due_at": None}


def test_originals_of_a_file_decided_elsewhere_are_dispatched_then_signed_for_by_the_deciding_authority():
    replies = originals(CATALOGUE)(topics.APPLICATION_ROUTED_EVENT, routed("KSTB-MKT-01"))
    assert [(r.topic, r.event_type) for r in replies] == [
        (topics.POSTAL_ORIGINALS, topics.MATERIALS_DISPATCHED_EVENT),
        (topics.POSTAL_ORIGINALS, topics.MATERIALS_RECEIVED_EVENT)]
    dispatched, received = (r.payload for r in replies)
    assert dispatched["tracking_number"] == received["tracking_number"]
    assert dispatched["tracking_number"].startswith("EMS")
    assert (dispatched["to_party"], received["received_by"]) == ("440000", "440000")
    assert received["received_at"] >= dispatched["dispatched_at"]
    assert {r.payload["application_id"] for r in replies} == {"TB1"}


def test_one_parcel_per_application_even_when_routed_again():
    respond = originals(CATALOGUE)
    first = respond(topics.APPLICATION_ROUTED_EVENT, routed("KSTB-MKT-01"))[0].payload["tracking_number"]
    again = respond(topics.APPLICATION_ROUTED_EVENT, routed("KSTB-MKT-01", authority="420000"))[0]
    other = respond(topics.APPLICATION_ROUTED_EVENT, routed("KSTB-MKT-01", application_id="TB2"))[0]
    assert again.payload["tracking_number"] == first
    assert again.payload["to_party"] == "420000"
    assert other.payload["tracking_number"] != first


@pytest.mark.parametrize("mode", [RECEIVE_HERE_HANDLE_THERE, FULLY_ONLINE, "JOINT"])
def test_the_carrier_collects_exactly_when_routing_tracks_originals(mode):
    respond = originals(CATALOGUE)
    posted = {m.code for m in CATALOGUE.all() if respond(topics.APPLICATION_ROUTED_EVENT, routed(m.code, mode))}
    # routing: originals posted in 收受分离 mode, tracked when a material is not shared (services/routing/handlers.py)
    tracked = {m.code for m in CATALOGUE.all()
               if mode == RECEIVE_HERE_HANDLE_THERE and originals_travel(m.required_materials)}
    assert posted == tracked
    assert bool(posted) == (mode == RECEIVE_HERE_HANDLE_THERE)


def test_no_parcel_for_a_matter_data_sharing_covers_an_unknown_matter_or_other_events():
    respond = originals(CATALOGUE)
    assert not originals_travel(CATALOGUE.get("KSTB-SOC-04").required_materials)
    assert respond(topics.APPLICATION_ROUTED_EVENT, routed("KSTB-SOC-04")) == []
    assert respond(topics.APPLICATION_ROUTED_EVENT, routed("KSTB-XXX-99")) == []
    assert respond(topics.REVIEW_RESOLVED_EVENT, routed("KSTB-MKT-01")) == []
