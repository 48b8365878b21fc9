"""Result channels through delivery's real handlers: each channel to DELIVERED, returns and
retries, the manual-handling queue, pick-up only at an authorised window, POST refused."""

from datetime import timedelta

import pytest

from services.delivery import handlers
from services.delivery.channels import CHANNELS
from services.delivery.channels.base import Deployment, Policy, dispatch_id_for
from services.delivery.channels.electronic import licence_id, licence_problem
from services.delivery.matters import Matter
from tests.unit.test_delivery_rules import (
    ACCEPTED,
    APP,
    CIPHER,
    ID_NUMBER,
    LICENCE,
    MATTERS,
    REGISTRY,
    ROUTED,
    ROUTED_STEP,
    SECRET,
    T0,
    VERIFIED_STEP,
    decision,
    event,
    receipt,
    received,
)
from tongban.handling import Outcome, Rejected

POLICY = Policy(post_attempts=3, retry_after=timedelta(hours=4), pickup_reminder_after=timedelta(days=3),
                uncollected_report_after=timedelta(days=10))
WINDOW, RECEIVE_ONLY, HALL = "430103-W01", "430103-W02", "430103-HALL"
AUTHORISED = {(window, matter, "HAND_OVER") for window in (WINDOW, HALL) for matter in MATTERS}


def authorised(window_id: str, matter_code: str, act: str, at) -> str | None:
    """A fake of the windows registry."""
    return None if (window_id, matter_code, act) in AUTHORISED else f"window {window_id} may not {act} {matter_code}"


def hall(division: str, matter_code: str, at) -> str | None:
    """A fake of the registry's choice of a window that may hand results over."""
    return HALL if division == "430103" else None


DEPLOYMENT = Deployment(secret=SECRET, matters=lambda code: MATTERS.get(code, Matter()), policy=POLICY,
                        authorised=authorised, window_for=hall)


def delivery_handlers() -> dict:
    # built when a test runs, not at import, so that mutation testing sees which tests run them
    return handlers.make_handlers(CIPHER, REGISTRY, results=DEPLOYMENT, clock=lambda: T0)


def dispatch(attempt: int) -> str:
    return dispatch_id_for(SECRET, APP, attempt)


async def feed(*steps, state: dict | None = None) -> tuple[dict | None, list[Outcome]]:
    outcomes = []
    every = delivery_handlers()
    for event_type, payload, topic in steps:
        outcome = await every[event_type](event(event_type, payload, topic), state)
        state = outcome.state if outcome.state is not None else state
        outcomes.append(outcome)
    return state, outcomes


def wallet(status: str, dispatch_id: str | None = None, reason: str | None = None) -> tuple:
    payload = {"dispatch_id": dispatch_id or dispatch(1), "application_id": APP, "status": status, "reason": reason,
               "at": T0}
    return "tongban.delivery.WalletReceipt", payload, "tongban.partner.wallet.receipts"


def command(name: str, **payload) -> tuple:
    return name, payload, "command"


def arrival(window_id: str = WINDOW) -> tuple:
    return command(handlers.RECORD_ARRIVAL, window_id=window_id)


def pickup(window_id: str = WINDOW) -> tuple:
    return command(handlers.CONFIRM_PICKUP, window_id=window_id)


def redirect(method: str, address: str | None = None, operator: bool = False) -> tuple:
    return command(handlers.REDIRECT, method=method, address=address, operator=operator)


def fired(name: str, payload: dict | None = None) -> tuple:
    return name, {"timer_id": f"t-{name}", "name": name, "payload": payload}, "timer"


def stages(outcome: Outcome) -> list[str]:
    return [e.payload["stage"] for e in outcome.emits if e.event_type == "tongban.application.DeliveryProgress"]


def delivered(outcome: Outcome) -> list[dict]:
    return [e.payload for e in outcome.emits if e.event_type == "tongban.application.ApplicationDelivered"]


def by(method: str, matter: str = "KSTB-MKT-01", address: str | None = None, window_id: str = WINDOW,
       division: str = "430103") -> tuple:
    routed = ("tongban.application.ApplicationRouted", {**ROUTED, "matter_code": matter}, ROUTED_STEP[2])
    return (received(delivery_method=method, postal_address=address, window_id=window_id,
                     receiving_division=division), routed, VERIFIED_STEP, ACCEPTED)


def test_each_channel_is_one_module_behind_one_interface():
    assert set(CHANNELS) == {"ELECTRONIC", "POST", "WINDOW"}


# ---------------------------------------------------------------------------- electronic licence

async def test_an_e_licence_is_recorded_in_the_wallet_and_delivered_when_the_wallet_confirms():
    state, outcomes = await feed(*by("ELECTRONIC"), decision("APPROVED"))
    _, entry = outcomes[-1].emits
    assert (entry.topic, entry.event_type) == ("tongban.partner.wallet.dispatches", "tongban.delivery.WalletEntry")
    assert entry.payload == {"dispatch_id": dispatch(1), "application_id": APP, "licence_id": LICENCE,
                             "issuing_partner": "440000", "holder_kind": "PERSON", "holder_id_number": ID_NUMBER}
    assert outcomes[-1].finished is False
    state, outcomes = await feed(wallet("RECORDED"), state=state)
    [done] = delivered(outcomes[-1])
    assert done == {"application_id": APP, "method": "ELECTRONIC", "dispatch_id": dispatch(1),
                    "tracking_number": None, "delivered_at": T0}
    assert outcomes[-1].finished is True
    assert "pii:v" not in repr(state)


@pytest.mark.parametrize(("reference", "problem"), [
    (None, "names no e-licence identifier"),
    ("LIC-1A2B3C", "names no e-licence identifier"),
    (licence_id("440300", "MKT2026000001")[:-1] + "0", "check character is wrong"),
    (licence_id("420100", "MKT2026000001"), "not issued within the deciding authority 440000's divisions"),
])
async def test_a_decision_naming_no_valid_e_licence_is_dead_lettered_before_anything_goes_out(reference, problem):
    state, _ = await feed(*by("ELECTRONIC"))
    step = decision("APPROVED")
    with pytest.raises(Rejected, match=problem):
        await feed((step[0], {**step[1], "result_reference": reference}, step[2]), state=state)
    assert licence_problem(reference, "440000") is not None


async def test_a_wallet_refusal_goes_to_the_manual_queue_with_its_reason():
    state, _ = await feed(*by("ELECTRONIC"), decision("APPROVED"))
    state, outcomes = await feed(wallet("REFUSED", reason="holder 13800000000 has no wallet"), state=state)
    assert stages(outcomes[-1]) == ["WALLET_REFUSED", "MANUAL_HANDLING"]
    assert state["result"]["manual_reason"] == "the wallet refused the licence: holder [NAME] has no wallet"
    assert not outcomes[-1].finished


async def test_an_operator_sends_a_licence_the_wallet_refused_to_the_window_as_paper():
    state, _ = await feed(*by("ELECTRONIC"), decision("APPROVED"), wallet("REFUSED", reason="no wallet"))
    state, outcomes = await feed(redirect("WINDOW", operator=True), arrival(), pickup(), state=state)
    assert stages(outcomes[0]) == ["RESOLVED", "DISPATCHED"]
    [parcel] = [e for e in outcomes[0].emits if e.event_type == "tongban.delivery.PostalDispatch"]
    assert (parcel.payload["purpose"], parcel.payload["attempt"]) == ("TO_WINDOW", 2)
    assert delivered(outcomes[2])[0]["method"] == "WINDOW"


async def test_a_wallet_receipt_for_a_delivery_never_made_is_refused():
    state, _ = await feed(*by("ELECTRONIC"), decision("APPROVED"))
    with pytest.raises(Rejected, match=r"^wallet receipt for a delivery this service did not make$"):
        await feed(wallet("RECORDED", dispatch_id=dispatch_id_for(b"guess", APP, 1)), state=state)


# ---------------------------------------------------------------------------- window pick-up

async def test_a_window_result_travels_to_the_window_and_is_delivered_at_pick_up():
    state, outcomes = await feed(*by("WINDOW"), decision("APPROVED"))
    _, parcel, _ = outcomes[-1].emits
    assert (parcel.topic, parcel.payload["purpose"], parcel.payload["window_id"]) == (
        "tongban.partner.ems.dispatches", "TO_WINDOW", WINDOW)
    assert stages(outcomes[-1]) == ["DISPATCHED"]
    state, outcomes = await feed(receipt("IN_TRANSIT", dispatch(1)), receipt("DELIVERED", dispatch(1)), arrival(),
                                 state=state)
    assert stages(outcomes[0]) == ["IN_TRANSIT"]
    assert not delivered(outcomes[1]), "handed to the window is not handed to the applicant"
    assert stages(outcomes[2]) == ["ARRIVED_AT_WINDOW"]
    assert {(t.name, t.due_at) for t in outcomes[2].timers} == {
        ("pickup_reminder", T0 + timedelta(days=3)), ("uncollected_report", T0 + timedelta(days=10))}
    state, outcomes = await feed(pickup(), state=state)
    [done] = delivered(outcomes[-1])
    assert (done["method"], done["dispatch_id"]) == ("WINDOW", dispatch(1))
    assert outcomes[-1].finished is True
    assert set(outcomes[-1].cancel_timers) >= {"pickup_reminder", "uncollected_report"}


async def test_pick_up_is_confirmed_only_at_an_authorised_window_where_the_result_is():
    state, _ = await feed(*by("WINDOW"), decision("APPROVED"))
    with pytest.raises(Rejected, match=r"^the result has not arrived at a window yet$"):
        await feed(pickup(), state=state)
    state, _ = await feed(arrival(), state=state)
    with pytest.raises(Rejected, match=f"^the result was sent to window {WINDOW}, not to window 430103-W02$"):
        await feed(pickup("430103-W02"), state=state)
    AUTHORISED.discard((WINDOW, "KSTB-MKT-01", "HAND_OVER"))
    try:
        with pytest.raises(Rejected, match=f"^window {WINDOW} may not HAND_OVER KSTB-MKT-01$"):
            await feed(pickup(), state=state)
    finally:
        AUTHORISED.add((WINDOW, "KSTB-MKT-01", "HAND_OVER"))


@pytest.mark.parametrize("window_id", ["", RECEIVE_ONLY])
async def test_a_result_goes_to_a_window_that_may_hand_it_over(window_id):
    """An online application, or one received at a window that only receives: the result goes
    to a window of the receiving county that the registry authorises to hand it over."""
    state, outcomes = await feed(*by("WINDOW", window_id=window_id), decision("APPROVED"))
    assert state["result"]["window_id"] == HALL
    state, outcomes = await feed(arrival(HALL), pickup(HALL), state=state)
    assert delivered(outcomes[-1])


async def test_with_no_window_that_may_hand_it_over_the_result_waits_for_an_operator():
    state, outcomes = await feed(*by("WINDOW", window_id="", division="440305"), decision("APPROVED"))
    assert stages(outcomes[-1]) == ["MANUAL_HANDLING"]
    assert state["result"]["manual_reason"] == ("no window where the application was received may hand over "
                                                "results of matter KSTB-MKT-01")


async def test_an_uncollected_result_is_reminded_then_reported_and_can_still_be_picked_up():
    state, _ = await feed(*by("WINDOW"), decision("APPROVED"), arrival())
    state, outcomes = await feed(fired("pickup_reminder", {"n": 1}), fired("uncollected_report"), state=state)
    assert stages(outcomes[0]) == ["PICKUP_REMINDED"]
    assert [(t.name, t.payload) for t in outcomes[0].timers] == [("pickup_reminder", {"n": 2})]
    assert stages(outcomes[1]) == ["UNCOLLECTED_REPORTED"]
    assert outcomes[1].cancel_timers == ["pickup_reminder"]
    state, outcomes = await feed(fired("pickup_reminder", {"n": 2}), pickup(), state=state)
    assert stages(outcomes[0]) == [], "no more reminders once reported"
    assert delivered(outcomes[1])


# ---------------------------------------------------------------------------- post, returns, manual queue

async def test_post_is_refused_for_a_matter_without_postal_delivery_and_the_result_goes_to_the_window():
    state, outcomes = await feed(*by("POST", matter="KSTB-MED-01", address="长沙"), decision("APPROVED"))
    progress = [e.payload for e in outcomes[-1].emits if e.event_type == "tongban.application.DeliveryProgress"]
    assert progress[0]["stage"] == "POST_REFUSED"
    assert progress[0]["detail"] == ("POST refused: matter KSTB-MED-01 does not allow postal delivery of its result; "
                                     "the result goes by WINDOW")
    [parcel] = [e for e in outcomes[-1].emits if e.event_type == "tongban.delivery.PostalDispatch"]
    assert parcel.payload["purpose"] == "TO_WINDOW"
    assert state["result"]["method"] == "WINDOW"


async def test_an_e_licence_is_refused_for_a_matter_whose_result_is_on_paper_only():
    state, outcomes = await feed(*by("ELECTRONIC", matter="KSTB-SOC-02"), decision("APPROVED"))
    assert stages(outcomes[-1]) == ["ELECTRONIC_REFUSED", "DISPATCHED"]
    assert state["result"]["method"] == "WINDOW"


async def test_a_returned_parcel_is_retried_to_the_corrected_address_and_delivered():
    state, _ = await feed(*by("POST", address="长沙 错误地址"), decision("APPROVED"))
    state, outcomes = await feed(receipt("RETURNED", dispatch(1), return_reason="WRONG_ADDRESS"), state=state)
    assert stages(outcomes[-1]) == ["RETURNED", "RETRY_SCHEDULED"]
    [retry] = outcomes[-1].timers
    assert (retry.name, retry.due_at, retry.payload) == ("post_retry", T0 + timedelta(hours=4), {"attempt": 1})
    state, outcomes = await feed(redirect("POST", address="长沙市天心区示例路2号"), state=state)
    assert "长沙市" not in repr(state), "the corrected address is kept sealed"
    state, outcomes = await feed(fired("post_retry", {"attempt": 1}), state=state)
    [parcel] = [e for e in outcomes[-1].emits if e.event_type == "tongban.delivery.PostalDispatch"]
    assert parcel.payload | {"recipient_name": None} == {
        "dispatch_id": dispatch(2), "application_id": APP, "recipient_name": None, "address": "长沙市天心区示例路2号",
        "phone": "13800000000", "item": f"result {LICENCE}", "purpose": "TO_APPLICANT", "window_id": "",
        "attempt": 2}
    state, outcomes = await feed(receipt("DELIVERED", dispatch(1)), state=state)
    assert not delivered(outcomes[-1]), "the first attempt's news changes nothing"
    state, outcomes = await feed(receipt("DELIVERED", dispatch(2)), state=state)
    assert delivered(outcomes[-1])[0]["dispatch_id"] == dispatch(2)
    assert outcomes[-1].finished is True
    assert "pii:v" not in repr(state)


async def test_a_wrong_address_without_a_correction_goes_to_the_manual_queue_at_its_retry():
    state, _ = await feed(*by("POST", address="长沙"), decision("APPROVED"),
                          receipt("RETURNED", dispatch(1), return_reason="WRONG_ADDRESS"))
    state, outcomes = await feed(fired("post_retry", {"attempt": 1}), state=state)
    assert stages(outcomes[-1]) == ["MANUAL_HANDLING"]
    assert state["result"]["manual_reason"] == "the address was wrong and no corrected address came"


async def test_a_refused_parcel_is_retried_to_the_same_address_and_a_switch_to_the_window_is_honoured():
    state, _ = await feed(*by("POST", address="长沙"), decision("APPROVED"),
                          receipt("RETURNED", dispatch(1), return_reason="NOT_COLLECTED"))
    state, outcomes = await feed(fired("post_retry", {"attempt": 1}), state=state)
    [parcel] = [e for e in outcomes[-1].emits if e.event_type == "tongban.delivery.PostalDispatch"]
    assert (parcel.payload["address"], parcel.payload["attempt"]) == ("长沙", 2)
    state, _ = await feed(receipt("RETURNED", dispatch(2), return_reason="REFUSED"), redirect("WINDOW"), state=state)
    state, outcomes = await feed(fired("post_retry", {"attempt": 2}), state=state)
    [parcel] = [e for e in outcomes[-1].emits if e.event_type == "tongban.delivery.PostalDispatch"]
    assert (parcel.payload["purpose"], parcel.payload["dispatch_id"]) == ("TO_WINDOW", dispatch(3))
    assert state["result"]["method"] == "WINDOW"


async def test_a_parcel_that_exhausts_its_retries_waits_for_an_operator_who_resolves_it():
    state, _ = await feed(*by("POST", address="长沙"), decision("APPROVED"))
    for attempt in (1, 2):
        state, _ = await feed(receipt("RETURNED", dispatch(attempt), return_reason="NOT_COLLECTED"),
                              fired("post_retry", {"attempt": attempt}), state=state)
    state, outcomes = await feed(receipt("RETURNED", dispatch(3), return_reason="REFUSED"), state=state)
    assert stages(outcomes[-1]) == ["RETURNED", "MANUAL_HANDLING"]
    assert outcomes[-1].timers == []
    assert state["result"]["manual_reason"] == "returned 3 times, last: REFUSED"
    with pytest.raises(Rejected, match=r"^only an operator resolves a result in manual handling$"):
        await feed(redirect("POST", address="长沙市岳麓区示例路3号"), state=state)
    state, outcomes = await feed(redirect("POST", address="长沙市岳麓区示例路3号", operator=True), state=state)
    assert stages(outcomes[-1]) == ["RESOLVED", "DISPATCHED"]
    [parcel] = [e for e in outcomes[-1].emits if e.event_type == "tongban.delivery.PostalDispatch"]
    assert (parcel.payload["dispatch_id"], parcel.payload["address"]) == (dispatch(4), "长沙市岳麓区示例路3号")
    state, outcomes = await feed(receipt("DELIVERED", dispatch(4)), state=state)
    assert delivered(outcomes[-1])
    assert outcomes[-1].finished


async def test_an_operator_may_send_a_result_from_the_manual_queue_to_the_window():
    state, _ = await feed(*by("POST", address="长沙"), decision("APPROVED"),
                          receipt("RETURNED", dispatch(1), return_reason="WRONG_ADDRESS"),
                          fired("post_retry", {"attempt": 1}))
    state, outcomes = await feed(redirect("WINDOW", operator=True), arrival(), pickup(), state=state)
    assert stages(outcomes[0]) == ["RESOLVED", "DISPATCHED"]
    assert delivered(outcomes[2])[0]["method"] == "WINDOW"


async def test_a_redirect_while_nothing_came_back_is_refused():
    state, _ = await feed(*by("POST", address="长沙"), decision("APPROVED"))
    with pytest.raises(Rejected, match=r"^the result is not waiting for a new address$"):
        await feed(redirect("POST", address="别处"), state=state)
    with pytest.raises(Rejected, match=r"^no result of this application is on its way$"):
        await feed(redirect("POST", address="别处"))


async def test_a_replayed_decision_makes_the_same_dispatch():
    state, _ = await feed(*by("POST", address="长沙"))
    _, first = await feed(decision("APPROVED"), state=state)
    _, again = await feed(decision("APPROVED"), state=state)
    assert [e.payload for e in first[0].emits] == [e.payload for e in again[0].emits]


async def test_a_window_that_records_the_arrival_and_pick_up_again_after_a_restart_is_answered_ok():
    """The window system restarted after the pick-up and before it noted it: both acts come again."""
    state, _ = await feed(*by("WINDOW"), decision("APPROVED"))
    state, _ = await feed(receipt("DELIVERED", dispatch(1)), arrival(), pickup(), state=state)
    assert state["delivered"]
    again, outcomes = await feed(arrival(), pickup(), state=state)
    assert again == state
    assert [o.emits for o in outcomes] == [[], []]
    with pytest.raises(Rejected, match=f"^the result was sent to window {WINDOW}, not to window 430103-W02$"):
        await feed(arrival("430103-W02"), state=state)
