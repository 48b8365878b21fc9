"""Every way an application ends in delivery finishes its file: the applicant's personal
fields leave delivery's state, and nothing more is asked of the applicant."""

from services.delivery import acceptance as rules
from tests.unit import test_delivery_acceptance as acc
from tests.unit.test_delivery_acceptance import with_deferred
from tests.unit.test_delivery_rules import (
    APP,
    ASSIGNED,
    RECEIVED_STEP,
    ROUTED_STEP,
    acceptance,
    decision,
    event,
    feed,
    receipt,
    run,
)
from tests.unit.test_delivery_survivors_b import CHECK_RESULT, delivered_under_commitments, failed_check
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


async def asked_after_delivery() -> dict:
    delivered = await delivered_under_commitments()
    return (await run(rules.COMMITMENT_CHECK)(acc.timer(rules.COMMITMENT_CHECK), delivered)).state


async def test_a_delivered_file_under_commitments_keeps_only_the_sealed_name_until_its_check():
    state = await delivered_under_commitments()
    assert list(state["received"]["applicant"]) == ["name"]
    assert state["received"]["applicant"]["name"].startswith("pii:")
    assert "postal_address" not in state["received"]


async def test_a_revocation_after_delivery_is_scrubbed_of_the_applicants_name_which_then_goes_too():
    outcome = await run(CHECK_RESULT)(event(*failed_check("核查发现示例的承诺不实")), await asked_after_delivery())
    assert outcome.emits[0].payload["reason"] == "核查发现[NAME]的承诺不实"
    assert "applicant" not in outcome.state["received"]


async def test_a_passed_check_after_delivery_lets_go_of_the_name():
    outcome = await run(CHECK_RESULT)(event(*acc.check_result(True)), await asked_after_delivery())
    assert outcome.finished
    assert "applicant" not in outcome.state["received"]


async def test_a_delivered_file_without_commitments_keeps_nothing_of_the_applicant():
    state, _ = await feed(*ASSIGNED, acceptance(), decision("APPROVED"), receipt("DELIVERED"))
    assert state["delivered"]
    assert "applicant" not in state["received"]
