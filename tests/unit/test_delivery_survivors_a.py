"""Delivery's rules that the fresh-clone mutation run of 836805e found unguarded (the first
half of `make_handlers`, the joint legs, the receipts of parcels posted before the result
channels, the windows a result waits at, the defaults of `make_handlers`, `keys`), each
through the real handlers. The survivors judged equivalent are explained in the report of
that run, not here."""

from dataclasses import asdict
from datetime import date, timedelta

import pytest

from services.delivery import acceptance as rules
from services.delivery import bundles, handlers
from services.delivery.channels.base import Deployment, dispatch_id_for
from services.delivery.matters import Matter
from services.routing.domain import DECISION_STEP, RoutingLeg
from tests.unit import test_delivery_bundles as bundled
from tests.unit import test_delivery_channels as channels
from tests.unit import test_joint_legs as joint
from tests.unit.test_delivery_acceptance import DEFERRED, refused, supplement_required, supplemented, with_deferred
from tests.unit.test_delivery_rules import (
    ACCEPTED,
    APP,
    ASSIGNED,
    ASSIGNMENT_ID,
    CIPHER,
    DECISION_EVENT,
    MATTERS,
    RECEIPT_EVENT,
    RECEIVED_STEP,
    REGISTRY,
    ROUTED,
    SECRET,
    T0,
    VERIFIED_STEP,
    acceptance,
    decision,
    event,
    feed,
    receipt,
    received,
    run,
)
from tongban import topics
from tongban.handling import Event, Outcome, Rejected

WALLET_RECEIPT = "tongban.delivery.WalletReceipt"
DAY2, DAY3 = T0 + timedelta(days=1), T0 + timedelta(days=2)
OLD_DISPATCH = "DSP0123456789ABCDEF"  # the form of a dispatch id before the result channels
LEG_1, LEG_2, LEG_3 = joint.LEG_1, joint.LEG_2, joint.LEG_3


async def feed_with(every: dict, *steps, state: dict | None = None) -> tuple[dict | None, list[Outcome]]:
    """`feed` over handlers a test made with its own deployment."""
    outcomes = []
    for event_type, payload, topic in steps:
        outcome = await every[event_type](event(event_type, payload, topic), state)
        state = outcome.state if outcome.state is not None else state
        outcomes.append(outcome)
    return state, outcomes


def at(step: tuple, **changes) -> tuple:
    """A step with some of its payload changed (a partner's time or words)."""
    return step[0], {**step[1], **changes}, step[2]


def types(outcome: Outcome) -> list[str]:
    return [e.event_type for e in outcome.emits]


# ---------------------------------------------------------------------------- the joint legs (多地联办)

def first_leg_approved() -> tuple[tuple, tuple]:
    """A joint matter's first leg taken up and approved by its authority (fresh payloads)."""
    return joint.answer("ACCEPTED", "440000", LEG_1), joint.decision("APPROVED", "440000", LEG_1)


async def legs_one_and_two_done() -> dict:
    state, _ = await joint.start()
    state, _ = await joint.feed(state, *first_leg_approved(),
                                joint.answer("ACCEPTED", "420000", LEG_2),
                                joint.decision("APPROVED", "420000", LEG_2, DAY2),
                                joint.answer("ACCEPTED", "440000", LEG_3))
    return state


async def test_each_joint_leg_is_assigned_with_its_own_promised_working_days():
    legs = (await joint.routed_payload())["legs"]
    state, outcomes = await joint.start()
    _, after_1 = await joint.feed(state, *first_leg_approved())
    assigned = [e.payload for e in joint.emitted(outcomes + after_1) if e.event_type == topics.MATTER_ASSIGNED_EVENT]
    assert [(a["leg"], a["promised_working_days"]) for a in assigned] == [
        (1, legs[0]["working_days"]), (2, legs[1]["working_days"])]
    assert all(isinstance(a["promised_working_days"], int) for a in assigned)


async def test_a_completed_leg_is_published_with_its_application_party_step_and_result_reference():
    state, _ = await joint.start()
    _, outcomes = await joint.feed(state, joint.answer("ACCEPTED", "440000", LEG_1),
                                   joint.decision("APPROVED", "440000", LEG_1, DAY2))
    [completed] = [e for e in outcomes[-1].emits if e.event_type == topics.LEG_COMPLETED_EVENT]
    assert completed.payload == {"application_id": joint.APP, "assignment_id": LEG_1, "partner_id": "440000",
                                 "step": "CONTACT_LETTER", "leg": 1, "legs": 3, "result_reference": f"REF-{LEG_1}",
                                 "completed_at": DAY2}


async def test_a_failed_leg_and_the_denial_name_the_application_the_failing_party_and_the_scrubbed_reason():
    state, _ = await joint.start()
    _, outcomes = await joint.feed(state, *first_leg_approved(),
                                   joint.answer("ACCEPTED", "420000", LEG_2),
                                   joint.decision("DENIED", "420000", LEG_2, DAY2,
                                                  reason=f"{joint.NAME}的缴费记录无法转出"))
    failed, _, decided = (e.payload for e in outcomes[-1].emits)
    assert failed == {"application_id": joint.APP, "assignment_id": LEG_2, "partner_id": "420000",
                      "step": "FUND_TRANSFER", "leg": 2, "legs": 3, "reason": "[NAME]的缴费记录无法转出",
                      "compensated": [{"assignment_id": LEG_1, "partner_id": "440000", "step": "CONTACT_LETTER"}],
                      "failed_at": DAY2}
    assert decided == {"application_id": joint.APP, "deciding_partner": "420000", "outcome": "DENIED",
                       "result_reference": None, "decided_at": DAY2,
                       "reason": "leg 2 of 3 (FUND_TRANSFER) failed: [NAME]的缴费记录无法转出"}


async def test_a_failing_last_leg_tells_the_party_of_every_earlier_leg_to_undo_it_each_by_its_own_event():
    state = await legs_one_and_two_done()
    _, outcomes = await joint.feed(state, joint.decision("DENIED", "440000", LEG_3, DAY3, reason="材料不全"))
    failing = outcomes[-1]
    why = "leg 3 of 3 (COMPLETION) failed: 材料不全"
    undo = [(e.topic, e.payload) for e in failing.emits if e.event_type == topics.ASSIGNMENT_CANCELLED_EVENT]
    assert undo == [
        (topics.partner_assignments("440000"), {"assignment_id": LEG_1, "application_id": joint.APP,
                                                "reason": f"{why}; undo CONTACT_LETTER", "cancelled_at": DAY3}),
        (topics.partner_assignments("420000"), {"assignment_id": LEG_2, "application_id": joint.APP,
                                                "reason": f"{why}; undo FUND_TRANSFER", "cancelled_at": DAY3})]
    # event ids derive from the cause, the type and the qualifier: each undo has its own
    assert len({(e.event_type, e.qualifier) for e in failing.emits}) == len(failing.emits)


async def test_a_failing_first_leg_denies_the_application_with_nothing_to_undo_and_says_denied_without_a_reason():
    state, _ = await joint.start()
    _, outcomes = await joint.feed(state, joint.answer("ACCEPTED", "440000", LEG_1),
                                   joint.decision("DENIED", "440000", LEG_1))
    assert types(outcomes[-1]) == [topics.LEG_FAILED_EVENT, topics.APPLICATION_DECIDED_EVENT]
    failed, decided = (e.payload for e in outcomes[-1].emits)
    assert failed["compensated"] == []
    assert decided["reason"] == "leg 1 of 3 (CONTACT_LETTER) failed: denied"
    assert outcomes[-1].finished is True


async def test_a_failed_leg_stops_watching_the_deferred_material_promise():
    """A denied application asks nobody for its 容缺 material any more."""
    payload = {**joint.received_payload(), "deferred_materials": {"CONTRIBUTION_CERTIFICATE": "2026-11-20"}}
    routed = await joint.routed_payload()
    state, outcomes = await joint.feed(None, (topics.APPLICATION_RECEIVED_EVENT, payload, topics.APPLICATION_RECEIVED),
                                       (topics.APPLICATION_ROUTED_EVENT, routed, topics.APPLICATION_ROUTED),
                                       (topics.APPLICATION_VERIFIED_EVENT, {"application_id": joint.APP, "checks": []},
                                        topics.APPLICATION_VERIFIED))
    assert [t.name for t in outcomes[0].timers] == [rules.DEFERRED_PROMISE]
    _, outcomes = await joint.feed(state, joint.answer("ACCEPTED", "440000", LEG_1),
                                   joint.decision("DENIED", "440000", LEG_1))
    assert outcomes[-1].cancel_timers == [rules.DEFERRED_PROMISE]


async def test_an_application_whose_leg_failed_is_decided_and_can_no_longer_be_withdrawn():
    state, _ = await joint.start()
    state, _ = await joint.feed(state, joint.answer("ACCEPTED", "440000", LEG_1),
                                joint.decision("DENIED", "440000", LEG_1))
    with pytest.raises(Rejected, match=r"^the authority already decided this application; it can no longer be "
                                       r"withdrawn$"):
        await joint.feed(state, (topics.APPLICATION_WITHDRAWN_EVENT,
                                 {"application_id": joint.APP, "reason": "", "withdrawn_at": T0},
                                 topics.APPLICATION_RECEIVED))


async def test_a_joint_application_of_a_bundle_whose_leg_fails_tells_its_bundle_it_was_denied():
    state, _ = await joint.start()
    released = {"application_id": joint.APP, "bundle_id": "TBBJOINT", "bundle_code": "BUNDLE-RETIREMENT",
                "applications": [joint.APP, "TBOTHER"], "release": "ROUTE", "reason": "", "released_at": T0}
    _, outcomes = await joint.feed(state, (topics.BUNDLE_RELEASED_EVENT, released, topics.APPLICATION_ROUTED),
                                   joint.answer("ACCEPTED", "440000", LEG_1),
                                   joint.decision("DENIED", "440000", LEG_1))
    [told] = [e.payload for e in outcomes[-1].emits if e.event_type == topics.BUNDLE_MEMBER_DECIDED_EVENT]
    assert (told["bundle_id"], told["outcome"], told["held"]) == ("TBBJOINT", "DENIED", False)


async def test_a_later_legs_party_takes_its_leg_up_once():
    state, _ = await joint.start()
    state, _ = await joint.feed(state, *first_leg_approved(),
                                joint.answer("ACCEPTED", "420000", LEG_2))
    with pytest.raises(Rejected, match=r"^this leg's party already took it up$"):
        await joint.feed(state, joint.answer("ACCEPTED", "420000", LEG_2))


async def test_a_later_legs_refusal_without_a_reason_fails_the_leg_as_refused_when_the_party_answered():
    state, _ = await joint.start()
    _, outcomes = await joint.feed(state, *first_leg_approved(),
                                   at(joint.answer("REFUSED", "420000", LEG_2), accepted_at=DAY2))
    failed, _, decided = (e.payload for e in outcomes[-1].emits)
    assert (decided["reason"], decided["decided_at"], failed["failed_at"]) == (
        "leg 2 of 3 (FUND_TRANSFER) failed: refused", DAY2, DAY2)


async def test_a_later_legs_refusal_naming_the_applicant_is_scrubbed():
    state, _ = await joint.start()
    _, outcomes = await joint.feed(state, *first_leg_approved(),
                                   joint.answer("REFUSED", "420000", LEG_2, reason=f"{joint.NAME}在转出地无参保记录"))
    assert outcomes[-1].emits[-1].payload["reason"] == "leg 2 of 3 (FUND_TRANSFER) failed: [NAME]在转出地无参保记录"


async def test_a_later_legs_party_is_told_it_may_only_accept_or_refuse():
    state, _ = await joint.start()
    state, _ = await joint.feed(state, *first_leg_approved())
    with pytest.raises(Rejected, match=r"^acceptance outcome 'SUPPLEMENT_REQUIRED' is not open to a later leg of a "
                                       r"joint matter \(ACCEPTED or REFUSED; 补正 was the accepting authority's\)$"):
        await joint.feed(state, joint.answer("SUPPLEMENT_REQUIRED", "420000", LEG_2))


async def test_a_matter_that_is_not_joint_is_one_assignment_decided_as_the_authority_decided_it():
    """Routing lists the one decision leg of every matter (ApplicationRouted.legs is required);
    only a JOINT matter runs in legs."""
    one_leg = [asdict(RoutingLeg("440000", "440300", DECISION_STEP, 3))]
    routed = ("tongban.application.ApplicationRouted", {**ROUTED, "legs": one_leg}, "tongban.application.routed")
    _, outcomes = await feed(RECEIVED_STEP, routed, VERIFIED_STEP, ACCEPTED, decision("DENIED"))
    assert outcomes[2].emits[0].payload["assignment_id"] == ASSIGNMENT_ID
    assert types(outcomes[-1]) == [topics.APPLICATION_DECIDED_EVENT]
    assert outcomes[-1].emits[0].payload["reason"] == "不符合法定条件"


# ---------------------------------------------------------------------------- keys

async def _joint_leg_done_then_failed() -> list:
    state, outcomes = await joint.start()
    _, more = await joint.feed(state, *first_leg_approved(), joint.answer("ACCEPTED", "420000", LEG_2),
                               joint.decision("DENIED", "420000", LEG_2, reason="不符合转移条件"))
    return joint.emitted(outcomes + more)


async def _later_leg_refused() -> list:
    state, outcomes = await joint.start()
    _, more = await joint.feed(state, *first_leg_approved(),
                               joint.answer("REFUSED", "420000", LEG_2, reason="转出地无参保记录"))
    return joint.emitted(outcomes + more)


async def _supplement_requested() -> list:
    _, outcomes = await feed(*ASSIGNED, supplement_required())
    return [e for o in outcomes for e in o.emits]


async def _picked_up_at_the_window() -> list:
    _, outcomes = await channels.feed(*channels.by("WINDOW"), decision("APPROVED"), channels.arrival(),
                                      channels.pickup())
    return [e for o in outcomes for e in o.emits]


@pytest.mark.parametrize("flow", [_joint_leg_done_then_failed, _later_leg_refused, _supplement_requested,
                                  _picked_up_at_the_window])
async def test_every_event_delivery_emits_about_an_application_is_keyed_by_that_application(flow):
    emits = await flow()
    assert emits
    application = emits[0].payload["application_id"]
    assert {e.key for e in emits} == {application}
    assert {e.payload["application_id"] for e in emits} == {application}


async def test_a_settled_files_news_goes_to_its_bundles_aggregate():
    delivery = await bundled.feed(*bundled.accepted(bundled.A), *bundled.accepted(bundled.B),
                                  bundled.decision(bundled.A, "APPROVED"), bundled.decision(bundled.B, "DENIED"))
    key_of = handlers.keys()[topics.BUNDLE_MEMBER_DECIDED_EVENT]
    told = [e for e in delivery.written if e.event_type == topics.BUNDLE_MEMBER_DECIDED_EVENT]
    assert [e.key for e in told] == [bundled.A, bundled.B]  # written by each file ...
    aggregates = {key_of(Event(f"id-{e.key}", e.event_type, e.key, e.payload, {}, e.topic)) for e in told}
    assert aggregates == {bundles.key(bundled.BUNDLE)}  # ... read back by their bundle, where its hold is kept


# ---------------------------------------------------------------------------- acceptance

async def test_a_refusal_with_a_remedy_but_no_reason_still_has_the_remedy_scrubbed_of_the_applicant():
    _, outcomes = await feed(*ASSIGNED, refused(reason=None, remedy="请示例致电13800000000"))
    assert outcomes[-1].emits[0].payload["remedy"] == "请[NAME]致电[NAME]"
    assert outcomes[-1].emits[0].payload["reason"] == "refused"


async def test_a_refusal_stops_watching_the_deferred_material_promise():
    _, outcomes = await feed(*with_deferred(), refused())
    assert outcomes[-1].cancel_timers == [rules.DEFERRED_PROMISE]


async def test_a_decision_outcome_quoting_the_applicant_is_scrubbed_from_the_dead_letter_reason():
    state, _ = await feed(*ASSIGNED, ACCEPTED)
    with pytest.raises(Rejected) as rejected:
        await run(DECISION_EVENT)(event(*at(decision("APPROVED"), outcome="示例")), state)
    assert str(rejected.value) == "decision outcome '[NAME]' is not one of APPROVED, DENIED"


async def test_a_repeated_application_received_does_not_bring_back_a_deferred_material_that_arrived():
    state, outcomes = await feed(*with_deferred(), acceptance(), supplemented(*DEFERRED),
                                 received(deferred_materials=DEFERRED), decision("APPROVED"))
    assert outcomes[-2].timers == [], "the promise is watched from the first ApplicationReceived only"
    assert state["deferred"] == {}
    assert topics.POSTAL_DISPATCH_EVENT in types(outcomes[-1]), "nothing holds the result"


# ---------------------------------------------------------------------------- receipts

async def test_a_receipt_for_an_application_with_nothing_dispatched_is_refused():
    state, _ = await feed(*ASSIGNED, ACCEPTED)
    with pytest.raises(Rejected, match=r"^receipt for a dispatch this service did not make$"):
        await run(RECEIPT_EVENT)(event(*receipt("DELIVERED")), state)
    with pytest.raises(Rejected, match=r"^wallet receipt for a delivery this service did not make$"):
        await run(WALLET_RECEIPT)(event(*channels.wallet("RECORDED")), state)


def before_channels(file: dict, **changes) -> dict:
    """A file as delivery kept it before the result channels: a dispatch id of the old form,
    no `result`, and no receiving window or division in what it received."""
    kept = {k: v for k, v in file["received"].items() if k not in ("window_id", "receiving_division")}
    return {**{k: v for k, v in file.items() if k != "result"}, "dispatch_id": OLD_DISPATCH, "received": kept,
            **changes}


async def test_a_parcel_posted_before_the_result_channels_that_comes_back_is_retried_as_its_second_attempt():
    state, _ = await feed(*ASSIGNED, ACCEPTED, decision("APPROVED"))
    outcome = await run(RECEIPT_EVENT)(event(*receipt("RETURNED", dispatch_id=OLD_DISPATCH,
                                                      return_reason="NOT_COLLECTED")), before_channels(state))
    assert [(e.payload["stage"], e.payload["attempt"]) for e in outcome.emits] == [("RETURNED", 1),
                                                                                   ("RETRY_SCHEDULED", 1)]
    assert outcome.emits[-1].payload["detail"].startswith("attempt 2 after ")
    assert [(t.name, t.payload) for t in outcome.timers] == [("post_retry", {"attempt": 1})]
    assert outcome.finished is False


async def test_a_result_delivered_without_the_carrier_before_the_result_channels_takes_no_carrier_receipt():
    """Before the channels an e-licence was delivered with its decision: no parcel was posted."""
    state, _ = await feed(received(delivery_method="ELECTRONIC"), *ASSIGNED[1:], ACCEPTED, decision("APPROVED"))
    old = before_channels(state, delivered=True)
    with pytest.raises(Rejected, match=r"^receipt for a dispatch this service did not make$"):
        await run(RECEIPT_EVENT)(event(*receipt("DELIVERED", dispatch_id=OLD_DISPATCH)), old)


async def test_late_carrier_news_of_an_earlier_parcel_is_ignored_once_the_wallet_delivered_the_result():
    state, _ = await channels.feed(*channels.by("WINDOW"), decision("APPROVED"),
                                   receipt("RETURNED", channels.dispatch(1), return_reason="NOT_COLLECTED"),
                                   channels.redirect("ELECTRONIC", operator=True),
                                   channels.wallet("RECORDED", dispatch_id=channels.dispatch(2)))
    assert state["delivered"] is True
    _, outcomes = await channels.feed(receipt("DELIVERED", channels.dispatch(1)), state=state)
    assert outcomes[-1] == Outcome()


async def test_a_late_wallet_answer_is_ignored_once_the_carrier_delivered_the_result():
    state, _ = await channels.feed(*channels.by("ELECTRONIC", address="长沙"), decision("APPROVED"),
                                   channels.wallet("REFUSED", reason="no wallet"),
                                   channels.redirect("POST", operator=True),
                                   receipt("DELIVERED", channels.dispatch(2)))
    assert state["delivered"] is True
    _, outcomes = await channels.feed(channels.wallet("RECORDED", dispatch_id=channels.dispatch(1)), state=state)
    assert outcomes[-1] == Outcome()


async def test_an_operator_cannot_send_by_post_a_result_whose_matter_allows_no_postal_delivery():
    state, _ = await channels.feed(*channels.by("WINDOW", matter="KSTB-MED-01"), decision("APPROVED"),
                                   receipt("RETURNED", channels.dispatch(1), return_reason="NOT_COLLECTED"))
    with pytest.raises(Rejected, match=r"^POST refused: matter KSTB-MED-01 does not allow postal delivery of its "
                                       r"result$"):
        await channels.feed(channels.redirect("POST", address="长沙", operator=True), state=state)


# ---------------------------------------------------------------------------- windows

def window_handlers(**deployment) -> dict:
    results = Deployment(**{"secret": SECRET, "matters": lambda code: MATTERS.get(code, Matter()),
                            "policy": channels.POLICY, "authorised": channels.authorised,
                            "window_for": channels.hall, **deployment})
    return handlers.make_handlers(CIPHER, REGISTRY, results=results, clock=lambda: T0)


def window_of(outcome: Outcome) -> str:
    [parcel] = [e for e in outcome.emits if e.event_type == topics.POSTAL_DISPATCH_EVENT]
    return parcel.payload["window_id"]


async def test_a_receiving_window_whose_authorisation_lapsed_on_the_day_of_the_result_does_not_hand_it_over():
    def lapsed(window_id: str, matter_code: str, act: str, on) -> str | None:
        if window_id == channels.WINDOW and on.date() >= date(2026, 11, 1):
            return f"window {window_id}: its authorisation ended on 2026-10-31"
        return channels.authorised(window_id, matter_code, act, on)

    _, outcomes = await feed_with(window_handlers(authorised=lapsed), *channels.by("WINDOW"), decision("APPROVED"))
    assert window_of(outcomes[-1]) == channels.HALL


async def test_an_online_application_waits_at_a_window_of_its_county_that_may_hand_over_its_matter():
    def county_window(division: str, matter_code: str, on) -> str | None:
        return {("430103", "KSTB-MKT-01"): channels.HALL}.get((division, matter_code))

    _, outcomes = await feed_with(window_handlers(window_for=county_window), *channels.by("WINDOW", window_id=""),
                                  decision("APPROVED"))
    assert window_of(outcomes[-1]) == channels.HALL


# ---------------------------------------------------------------------------- make_handlers' defaults

async def test_handlers_made_without_a_registry_or_a_deployment_load_the_schemas_the_catalogue_and_no_secret():
    """As a tool would make them: the declared schemas, the catalogue's matters, no dispatch secret."""
    every = handlers.make_handlers(CIPHER, clock=lambda: T0)
    _, outcomes = await feed_with(every, *ASSIGNED, ACCEPTED, decision("APPROVED"))
    assert outcomes[2].emits[0].payload["applicant"]["name"] == "示例"
    [parcel] = [e for e in outcomes[-1].emits if e.event_type == topics.POSTAL_DISPATCH_EVENT]
    assert parcel.payload["dispatch_id"] == dispatch_id_for(b"", APP, 1)  # KSTB-MKT-01 goes by post
    no_post = ("tongban.application.ApplicationRouted", {**ROUTED, "matter_code": "KSTB-SOC-03"},
               "tongban.application.routed")
    _, outcomes = await feed_with(handlers.make_handlers(CIPHER, clock=lambda: T0), RECEIVED_STEP, no_post,
                                  VERIFIED_STEP, ACCEPTED, decision("APPROVED"))
    stages = [e.payload["stage"] for e in outcomes[-1].emits if e.event_type == topics.DELIVERY_PROGRESS_EVENT]
    assert stages[:1] == ["POST_REFUSED"]  # KSTB-SOC-03 does not

