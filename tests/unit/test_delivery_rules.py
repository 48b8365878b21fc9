"""Delivery's rules through its handlers: plain functions of (event, state), no broker."""

import hashlib
import re
from datetime import UTC, datetime

import pytest

from services.delivery import domain, handlers
from services.delivery.channels.base import Deployment, dispatch_id_for
from services.delivery.channels.electronic import licence_id
from services.delivery.matters import Matter
from tests.pii_parties import cipher, seal, seal_received
from tongban.codec import SchemaRegistry
from tongban.handling import Event, Outcome, Rejected
from tongban.pii import PiiError

APP = "TBUNIT"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
ID_NUMBER = "430102199003071234"
APPLICANT = {"kind": "PERSON", "name": "示例", "id_number": ID_NUMBER, "phone": "13800000000"}
MATERIALS = [{"code": "ARTICLES", "name": "公司章程", "provided": True, "original_checked": True}]
REGISTRY = SchemaRegistry.load()
CIPHER = cipher("delivery")


def sealed_applicant(application_id: str = APP) -> dict:
    """The applicant as intake sealed it: for verification and delivery, bound to the application."""
    return {k: v if k == "kind" else seal_received(v, f"applicant.{k}", application_id) for k, v in APPLICANT.items()}


RECEIVED = {"applicant": sealed_applicant(), "materials": MATERIALS, "delivery_method": "POST",
            "postal_address": seal_received("长沙", "postal_address", APP)}
ACCEPTANCE_EVENT, DECISION_EVENT = "tongban.partner.AuthorityAcceptance", "tongban.partner.AuthorityDecision"
RECEIPT_EVENT = "tongban.delivery.PostalReceipt"


def run(event_type: str):
    """Delivery's handler for `event_type`, made with delivery's own key."""
    return handlers.make_handlers(CIPHER, REGISTRY, results=DEPLOYMENT, clock=lambda: T0)[event_type]


SECRET = b"delivery's dispatch secret in the unit tests"
# A catalogue of the tests' own: a company licence by post or as an e-licence, a 备案 that
# allows no post, a card on paper only.
MATTERS = {"KSTB-MKT-01": Matter(True, "E_LICENCE"), "KSTB-MED-01": Matter(False, "REGISTRATION"),
           "KSTB-SOC-02": Matter(True, "PAPER_LICENCE")}
DEPLOYMENT = Deployment(secret=SECRET, matters=lambda code: MATTERS.get(code, Matter()))
DISPATCH_1 = dispatch_id_for(SECRET, APP, 1)
LICENCE = licence_id("440300", "MKT2026000001")
ROUTED = {"application_id": APP, "matter_code": "KSTB-MKT-01", "mode": "RECEIVE_HERE_HANDLE_THERE",
          "deciding_partner": "440000", "deciding_division": "440300", "legs": [], "promised_working_days": 3,
          "due_at": T0}
ASSIGNMENT_ID = f"{APP}:440000"
DECISIONS = "tongban.partner.440000.decisions"


def event(event_type: str, payload: dict, topic: str = "tongban.application.received") -> Event:
    return Event(f"id-{event_type}", event_type, APP, payload, {"occurred_at": T0, "correlation_id": APP}, topic)


async def feed(*steps) -> tuple[dict | None, list[Outcome]]:
    state, outcomes = None, []
    for event_type, payload, topic in steps:
        outcome = await run(event_type)(event(event_type, payload, topic), state)
        state = outcome.state if outcome.state is not None else state
        outcomes.append(outcome)
    return state, outcomes


def received(**changes) -> tuple:
    if changes.get("postal_address"):
        changes["postal_address"] = seal_received(changes["postal_address"], "postal_address", APP)
    return ("tongban.application.ApplicationReceived", {**RECEIVED, "matter_code": "KSTB-MKT-01", **changes},
            "tongban.application.received")


RECEIVED_STEP = received()
ROUTED_STEP = ("tongban.application.ApplicationRouted", ROUTED, "tongban.application.routed")
VERIFIED_STEP = ("tongban.application.ApplicationVerified", {"application_id": APP, "checks": []},
                 "tongban.application.verified")
ASSIGNED = (RECEIVED_STEP, ROUTED_STEP, VERIFIED_STEP)


def decision(outcome: str, partner: str = "440000", assignment_id: str = ASSIGNMENT_ID) -> tuple:
    payload = {"assignment_id": assignment_id, "application_id": APP, "outcome": outcome,
               "result_reference": LICENCE if outcome == "APPROVED" else None,
               "reason": "不符合法定条件" if outcome == "DENIED" else None, "decided_at": T0}
    return "tongban.partner.AuthorityDecision", payload, f"tongban.partner.{partner}.decisions"


def acceptance(outcome: str = "ACCEPTED", partner: str = "440000", assignment_id: str = ASSIGNMENT_ID,
               reason: str | None = None) -> tuple:
    payload = {"assignment_id": assignment_id, "application_id": APP, "outcome": outcome, "reason": reason,
               "accepted_at": T0}
    return "tongban.partner.AuthorityAcceptance", payload, f"tongban.partner.{partner}.decisions"


def receipt(status: str, dispatch_id: str | None = None, return_reason: str | None = None) -> tuple:
    payload = {"dispatch_id": dispatch_id or DISPATCH_1, "application_id": APP,
               "tracking_number": "EMS1", "status": status, "at": T0, "return_reason": return_reason}
    return "tongban.delivery.PostalReceipt", payload, handlers.RECEIPTS


ACCEPTED = acceptance()


# ---------------------------------------------------------------------------- assignment

@pytest.mark.parametrize("order", [(RECEIVED_STEP, ROUTED_STEP, VERIFIED_STEP),
                                   (VERIFIED_STEP, ROUTED_STEP, RECEIVED_STEP),
                                   (ROUTED_STEP, VERIFIED_STEP, RECEIVED_STEP),
                                   (RECEIVED_STEP, VERIFIED_STEP, ROUTED_STEP)])
async def test_work_is_assigned_once_when_received_routed_and_verified_whatever_the_order(order):
    state, outcomes = await feed(*order)
    emitted = [e for o in outcomes for e in o.emits]
    assert [(e.topic, e.event_type, e.key) for e in emitted] == [
        ("tongban.partner.440000.assignments", "tongban.partner.MatterAssigned", APP)]
    assert emitted[0].payload["assignment_id"] == ASSIGNMENT_ID
    assert state["assignment"] == {"assignment_id": ASSIGNMENT_ID, "partner_id": "440000"}
    assert not any(o.finished for o in outcomes)


@pytest.mark.parametrize("steps", [(RECEIVED_STEP, ROUTED_STEP), (ROUTED_STEP, VERIFIED_STEP),
                                   (RECEIVED_STEP, VERIFIED_STEP)])
async def test_nothing_is_assigned_before_the_file_is_received_routed_and_verified(steps):
    state, outcomes = await feed(*steps)
    assert [e for o in outcomes for e in o.emits] == []
    assert "assignment" not in state


async def test_a_repeated_lifecycle_event_does_not_assign_the_work_again():
    state, _ = await feed(*ASSIGNED)
    for step in ASSIGNED:
        again = await run(step[0])(event(*step), state)
        assert again.emits == []
        assert again.state["assignment"] == state["assignment"]


async def test_the_assignment_carries_what_the_deciding_authority_needs():
    _, outcomes = await feed(*ASSIGNED)
    assert outcomes[-1].emits[0].payload == {
        "assignment_id": ASSIGNMENT_ID, "application_id": APP, "matter_code": "KSTB-MKT-01",
        "mode": "RECEIVE_HERE_HANDLE_THERE", "deciding_division": "440300", "applicant": APPLICANT,
        "materials": MATERIALS, "promised_working_days": 3, "due_at": T0, "step": "DECIDE", "leg": 1, "legs": 1}


def test_delivery_reads_every_partners_decisions_and_the_carriers_and_wallets_receipts():
    assert handlers.inputs(["440000", "370100"]) == [
        "tongban.application.received", "tongban.application.routed", "tongban.application.verified",
        "tongban.partner.440000.decisions", "tongban.partner.370100.decisions", "tongban.partner.ems.receipts",
        "tongban.partner.wallet.receipts", "tongban.application.decided"]


def test_an_assignment_id_names_the_application_and_the_partner():
    assert domain.assignment_id_for("TB1", "420000") == "TB1:420000"


# ---------------------------------------------------------------------------- decision rights

async def test_a_decision_from_another_partner_is_refused_even_with_the_right_assignment_id():
    with pytest.raises(Rejected, match=r"^partner 420000 is not the assigned authority for this application$"):
        await feed(*ASSIGNED, ACCEPTED, decision("APPROVED", partner="420000", assignment_id=ASSIGNMENT_ID))


async def test_a_decision_with_a_forged_assignment_id_is_refused_even_from_the_assigned_partner():
    with pytest.raises(Rejected, match="not the assigned authority"):
        await feed(*ASSIGNED, ACCEPTED, decision("APPROVED", assignment_id=f"{APP}:420000"))


async def test_the_sender_is_the_topic_and_an_envelope_claiming_another_partner_is_refused():
    state, _ = await feed(*ASSIGNED, ACCEPTED)
    topic_event = event(*decision("APPROVED"))
    claims = {**topic_event.envelope, "source_partner": "420000"}  # written on 440000's topic
    with pytest.raises(Rejected, match=r"^the envelope names partner 420000, but the record came on partner "
                                       r"440000's topic$"):
        await run(DECISION_EVENT)(Event(topic_event.event_id, DECISION_EVENT, APP, topic_event.payload, claims,
                                        topic_event.topic), state)
    agreeing = {**topic_event.envelope, "source_partner": "440000"}
    outcome = await run(DECISION_EVENT)(Event(topic_event.event_id, DECISION_EVENT, APP, topic_event.payload,
                                              agreeing, topic_event.topic), state)
    assert outcome.emits
    state, _ = await feed(*ASSIGNED, ACCEPTED, decision("APPROVED"))
    carrier = event(*receipt("DELIVERED"))
    with pytest.raises(Rejected, match="names partner 440000"):
        await run(RECEIPT_EVENT)(Event(carrier.event_id, RECEIPT_EVENT, APP, carrier.payload,
                                       {**carrier.envelope, "source_partner": "440000"}, carrier.topic), state)


async def test_a_decision_for_an_application_with_no_assigned_work_is_refused():
    with pytest.raises(Rejected, match=r"^no work is assigned for this application$"):
        await feed(RECEIVED_STEP, decision("APPROVED"))
    with pytest.raises(Rejected, match=r"^no work is assigned for this application$"):
        await run(DECISION_EVENT)(event(*decision("APPROVED")), None)


async def test_an_acceptance_from_another_partner_is_refused_even_with_the_right_assignment_id():
    with pytest.raises(Rejected, match="not the assigned authority"):
        await feed(*ASSIGNED, acceptance(partner="420000"))


async def test_an_acceptance_with_a_forged_assignment_id_is_refused_even_from_the_assigned_partner():
    with pytest.raises(Rejected, match="not the assigned authority"):
        await feed(*ASSIGNED, acceptance(assignment_id=f"{APP}:420000"))


async def test_an_acceptance_for_an_application_with_no_assigned_work_is_refused():
    with pytest.raises(Rejected, match="no work is assigned"):
        await feed(RECEIVED_STEP, ROUTED_STEP, acceptance())


async def test_a_decision_after_the_authority_refused_to_accept_is_refused():
    state, _ = await feed(*ASSIGNED, acceptance("REFUSED", reason="材料无法读取"))
    with pytest.raises(Rejected, match=r"^the authority refused to accept this application; it cannot decide it$"):
        await run(DECISION_EVENT)(event(*decision("APPROVED")), state)


async def test_the_authority_decides_only_once():
    state, _ = await feed(*ASSIGNED, ACCEPTED, decision("DENIED"))
    with pytest.raises(Rejected, match=r"^the authority already decided this application$"):
        await run(DECISION_EVENT)(event(*decision("APPROVED")), state)


# ---------------------------------------------------------------------------- acceptance

async def test_an_acceptance_is_published_and_the_work_goes_on():
    state, outcomes = await feed(*ASSIGNED, ACCEPTED)
    [emit] = outcomes[-1].emits
    assert (emit.topic, emit.event_type, emit.key) == (
        "tongban.application.accepted", "tongban.application.ApplicationAccepted", APP)
    assert emit.payload == {"application_id": APP, "deciding_partner": "440000", "accepted_at": T0}
    assert state["acceptance"] == "ACCEPTED"
    assert outcomes[-1].finished is False


async def test_a_refusal_is_published_with_its_reason_and_ends_the_work():
    state, outcomes = await feed(*ASSIGNED, acceptance("REFUSED", reason="材料无法读取"))
    [emit] = outcomes[-1].emits
    assert (emit.topic, emit.event_type, emit.key) == (
        "tongban.application.accepted", "tongban.application.ApplicationRefused", APP)
    assert emit.payload == {"application_id": APP, "deciding_partner": "440000", "reason": "材料无法读取", "remedy": ""}
    assert state["acceptance"] == "REFUSED"
    assert outcomes[-1].finished is True


async def test_a_refusal_without_a_reason_still_says_it_was_refused():
    _, outcomes = await feed(*ASSIGNED, acceptance("REFUSED"))
    assert outcomes[-1].emits[0].payload["reason"] == "refused"


async def test_a_supplement_request_without_its_list_of_missing_materials_is_dead_lettered():
    """补正 itself: tests/unit/test_delivery_acceptance.py."""
    with pytest.raises(Rejected, match=r"^a 补正 notice must list every missing material$"):
        await feed(*ASSIGNED, acceptance("SUPPLEMENT_REQUIRED", reason="请补正 张三 13800000000"))


async def test_an_acceptance_reason_with_personal_data_never_reaches_the_dead_letter_reason():
    with pytest.raises(Rejected) as rejected:
        await feed(*ASSIGNED, acceptance("SUPPLEMENT_REQUIRED", reason="请补正 张三 13800000000"))
    assert "张三" not in str(rejected.value)
    assert "13800000000" not in str(rejected.value)


# ---------------------------------------------------------------------------- decisions and delivery

async def test_the_decision_is_published_as_the_authority_made_it():
    _, outcomes = await feed(*ASSIGNED, ACCEPTED, decision("DENIED"))
    [emit] = outcomes[-1].emits
    assert (emit.topic, emit.event_type, emit.key) == (
        "tongban.application.decided", "tongban.application.ApplicationDecided", APP)
    assert emit.payload == {"application_id": APP, "deciding_partner": "440000", "outcome": "DENIED",
                            "result_reference": None, "reason": "不符合法定条件", "decided_at": T0}


async def test_a_denial_delivers_nothing_and_ends_the_work():
    state, outcomes = await feed(*ASSIGNED, ACCEPTED, decision("DENIED"))
    assert [e.event_type for e in outcomes[-1].emits] == ["tongban.application.ApplicationDecided"]
    assert outcomes[-1].finished is True
    assert state["decision"] == "DENIED"
    assert "dispatch_id" not in state


async def test_an_approved_paper_result_goes_to_the_carrier_and_waits_for_its_receipt():
    state, outcomes = await feed(*ASSIGNED, ACCEPTED, decision("APPROVED"))
    decided, dispatch, dispatched = outcomes[-1].emits
    assert decided.event_type == "tongban.application.ApplicationDecided"
    assert decided.payload["result_reference"] == LICENCE
    assert (dispatch.topic, dispatch.event_type, dispatch.key) == (
        "tongban.partner.ems.dispatches", "tongban.delivery.PostalDispatch", APP)
    assert dispatch.payload == {"dispatch_id": DISPATCH_1, "application_id": APP, "recipient_name": "示例",
                                "address": "长沙", "phone": "13800000000", "item": f"result {LICENCE}",
                                "purpose": "TO_APPLICANT", "window_id": "", "attempt": 1}
    assert (dispatched.event_type, dispatched.payload["stage"]) == ("tongban.application.DeliveryProgress",
                                                                    "DISPATCHED")
    assert outcomes[-1].finished is False, "the work is done when the carrier confirms delivery"
    assert state["dispatch_id"] == DISPATCH_1
    assert not state.get("delivered")


async def test_a_dispatch_without_a_result_reference_names_only_the_result():
    state, _ = await feed(*ASSIGNED, ACCEPTED)
    step = decision("APPROVED")
    outcome = await run(DECISION_EVENT)(event(step[0], {**step[1], "result_reference": None}, step[2]), state)
    assert outcome.emits[1].payload["item"] == "result"


@pytest.mark.parametrize("method", ["ELECTRONIC", "WINDOW"])
async def test_a_result_not_sent_by_post_is_not_delivered_with_the_decision(method):
    """An e-licence waits for the wallet, a paper result for its pick-up at the window."""
    state, outcomes = await feed(received(delivery_method=method, postal_address=None), ROUTED_STEP, VERIFIED_STEP,
                                 ACCEPTED, decision("APPROVED"))
    assert "tongban.application.ApplicationDelivered" not in [e.event_type for e in outcomes[-1].emits]
    assert outcomes[-1].finished is False
    assert not state.get("delivered")
    assert state["result"]["method"] == method


async def test_the_carriers_delivery_receipt_delivers_the_result_and_ends_the_work():
    state, outcomes = await feed(*ASSIGNED, ACCEPTED, decision("APPROVED"), receipt("DELIVERED"))
    [delivered] = outcomes[-1].emits
    assert (delivered.topic, delivered.event_type, delivered.key) == (
        "tongban.application.delivered", "tongban.application.ApplicationDelivered", APP)
    assert delivered.payload == {"application_id": APP, "method": "POST", "dispatch_id": DISPATCH_1,
                                 "tracking_number": "EMS1", "delivered_at": T0}
    assert outcomes[-1].finished is True
    assert state["delivered"] is True
    assert state["result"]["status"] == "DELIVERED"


async def test_a_returned_parcel_is_not_delivered():
    state, outcomes = await feed(*ASSIGNED, ACCEPTED, decision("APPROVED"), receipt("RETURNED"))
    assert "tongban.application.ApplicationDelivered" not in [e.event_type for e in outcomes[-1].emits]
    assert outcomes[-1].finished is False
    assert not state.get("delivered")
    assert state["result"]["status"] == "RETURNED"


async def test_a_parcel_the_carrier_only_took_in_is_not_delivered_yet():
    state, outcomes = await feed(*ASSIGNED, ACCEPTED, decision("APPROVED"), receipt("ACCEPTED"))
    assert [(e.event_type, e.payload["stage"]) for e in outcomes[-1].emits] == [
        ("tongban.application.DeliveryProgress", "IN_TRANSIT")]
    assert outcomes[-1].finished is False
    assert not state.get("delivered")
    assert state["result"]["status"] == "IN_TRANSIT"


async def test_a_repeated_delivery_receipt_delivers_nothing_more():
    state, _ = await feed(*ASSIGNED, ACCEPTED, decision("APPROVED"), receipt("DELIVERED"))
    again = await run(RECEIPT_EVENT)(event(*receipt("DELIVERED")), state)
    assert again.emits == []


async def test_a_receipt_for_a_dispatch_delivery_did_not_make_is_refused():
    state, _ = await feed(*ASSIGNED, ACCEPTED, decision("APPROVED"))
    guessed = "DSP" + hashlib.sha256(APP.encode()).hexdigest()[:16].upper()  # how ids were made before
    for forged in ("DSPFORGED", guessed, dispatch_id_for(b"another secret", APP, 1), dispatch_id_for(SECRET, APP, 2)):
        with pytest.raises(Rejected, match=r"^receipt for a dispatch this service did not make$"):
            await run(RECEIPT_EVENT)(event(*receipt("DELIVERED", dispatch_id=forged)), state)
    with pytest.raises(Rejected, match=r"^receipt for a dispatch this service did not make$"):
        await run(RECEIPT_EVENT)(event(*receipt("DELIVERED")), None)


async def test_a_parcel_posted_before_the_result_channels_is_still_delivered_by_its_receipt():
    """A file in flight when delivery was upgraded: its dispatch id is of the old form."""
    state, _ = await feed(*ASSIGNED, ACCEPTED, decision("APPROVED"))
    old_id = "DSP" + hashlib.sha256(APP.encode()).hexdigest()[:16].upper()
    before = {k: v for k, v in state.items() if k != "result"} | {"dispatch_id": old_id}
    outcome = await run(RECEIPT_EVENT)(event(*receipt("DELIVERED", dispatch_id=old_id)), before)
    assert [e.payload["dispatch_id"] for e in outcome.emits] == [old_id]
    assert outcome.finished is True


def test_a_dispatch_id_is_fixed_by_application_and_attempt_and_unguessable_without_the_secret():
    assert dispatch_id_for(SECRET, "TB1", 1) == dispatch_id_for(SECRET, "TB1", 1)
    assert len({dispatch_id_for(SECRET, "TB1", 1), dispatch_id_for(SECRET, "TB2", 1),
                dispatch_id_for(SECRET, "TB1", 2), dispatch_id_for(b"other", "TB1", 1)}) == 4
    assert re.fullmatch(r"DSP[0-9A-F]{24}", dispatch_id_for(SECRET, "TB1", 1))


# ---------------------------------------------------------------------------- personal data

async def test_the_applicant_is_opened_only_to_be_sealed_again_for_the_assigned_partner():
    """Delivery opens what intake sealed for it; the runtime seals the assignment for the
    partner (tongban.pii_policy): the handler's output holds the plaintext, its state does not."""
    state, outcomes = await feed(*ASSIGNED)
    assert outcomes[-1].emits[0].payload["applicant"] == APPLICANT
    assert state["received"]["applicant"] == RECEIVED["applicant"], "kept sealed, as received"


async def test_a_value_sealed_for_another_application_does_not_open():
    moved = {**RECEIVED, "applicant": {**RECEIVED["applicant"], "id_number": sealed_applicant("TBOTHER")["id_number"]}}
    with pytest.raises(PiiError, match="another field or application"):
        await feed(("tongban.application.ApplicationReceived", {**moved, "matter_code": "KSTB-MKT-01"},
                    "tongban.application.received"), ROUTED_STEP, VERIFIED_STEP)


async def test_a_value_delivery_cannot_open_is_refused():
    """A value sealed for verification alone (or any other party) is not delivery's to open."""
    only_verification = seal("示例", "tongban.application.ApplicationReceived", "applicant.name", APP, ["verification"])
    file = {**RECEIVED, "matter_code": "KSTB-MKT-01", "applicant": {**RECEIVED["applicant"], "name": only_verification}}
    with pytest.raises(PiiError, match="not for delivery"):
        await feed(("tongban.application.ApplicationReceived", file, "tongban.application.received"), ROUTED_STEP,
                   VERIFIED_STEP)


PARTNER_TEXT = f"申请人示例（{ID_NUMBER}，电话13800000000）不符合法定条件"


async def test_a_partners_refusal_reason_is_scrubbed_of_the_applicant_before_it_travels():
    _, outcomes = await feed(*ASSIGNED, acceptance("REFUSED", reason=PARTNER_TEXT))
    assert outcomes[-1].emits[0].payload["reason"] == "申请人[NAME]（[NAME]，电话[NAME]）不符合法定条件"


async def test_a_partners_decision_reason_and_result_item_are_scrubbed_of_the_applicant():
    state, _ = await feed(*ASSIGNED, ACCEPTED)
    step = decision("DENIED")
    outcome = await run(DECISION_EVENT)(event(step[0], {**step[1], "reason": PARTNER_TEXT}, step[2]), state)
    assert outcome.emits[0].payload["reason"] == "申请人[NAME]（[NAME]，电话[NAME]）不符合法定条件"
    step = decision("APPROVED")
    outcome = await run(DECISION_EVENT)(event(step[0], {**step[1], "result_reference": "LIC 示例 13900000000"},
                                              step[2]), state)
    assert outcome.emits[1].payload["item"] == "result LIC [NAME] [PHONE]"


@pytest.mark.parametrize("ending", [
    (ACCEPTED, decision("DENIED")),
    (acceptance("REFUSED"),),
    (ACCEPTED, decision("APPROVED"), receipt("DELIVERED")),
])
async def test_a_finished_file_keeps_no_personal_data(ending):
    state, outcomes = await feed(*ASSIGNED, *ending)
    assert outcomes[-1].finished is True
    assert "applicant" not in state["received"]
    assert "postal_address" not in state["received"]
    assert "pii:v" not in repr(state)
