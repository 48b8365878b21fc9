"""Every way an application ends in delivery finishes its file: the applicant's personal
fields leave delivery's state, and nothing more is asked of the applicant."""

from services.delivery import acceptance as rules
from tests.unit.test_delivery_acceptance import with_deferred
from tests.unit.test_delivery_rules import APP, RECEIVED_STEP, ROUTED_STEP, acceptance, decision, feed
from tongban import topics

FAILED = (topics.APPLICATION_VERIFICATION_FAILED_EVENT,
          {"application_id": APP, "reasons": ["the identity number is invalid"], "missing_materials": [],
           "outcome": "FAILED", "materials": []}, topics.APPLICATION_VERIFIED)
UNROUTABLE = (topics.APPLICATION_UNROUTABLE_EVENT,
              {"application_id": APP, "matter_code": "KSTB-MKT-01", "reason": "matter not in the catalogue"},
              topics.APPLICATION_ROUTED)


async def test_a_denial_stops_the_watch_on_a_deferred_material_promise():
    _, outcomes = await feed(*with_deferred(), acceptance(), decision("DENIED"))
    assert outcomes[-1].finished
    assert rules.DEFERRED_PROMISE in outcomes[-1].cancel_timers


async def test_an_application_that_failed_verification_is_finished_without_the_applicant():
    state, outcomes = await feed(RECEIVED_STEP, ROUTED_STEP, FAILED)
    assert outcomes[-1].finished
    assert state["verification_failed"] is True
    assert "applicant" not in state["received"]
    assert "postal_address" not in state["received"]


async def test_an_application_that_ends_unroutable_is_finished_without_the_applicant():
    state, outcomes = await feed(RECEIVED_STEP, UNROUTABLE)
    assert outcomes[-1].finished
    assert "applicant" not in state["received"]


async def test_a_verification_asking_for_supplements_is_not_an_end():
    asked = (FAILED[0], {**FAILED[1], "outcome": "SUPPLEMENT_REQUIRED"}, FAILED[2])
    state, outcomes = await feed(RECEIVED_STEP, ROUTED_STEP, asked)
    assert not outcomes[-1].finished
    assert "applicant" in state["received"]
