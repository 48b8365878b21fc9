"""Rules of intake's handlers that the fresh-clone mutation run of 836805e found unguarded:
what an applicant, a window, a partner and an operator see of Submit, Withdraw and
SupplementMaterials, of the numbered application and its receipt, of partners' submissions,
video consultations, bundles, joint legs and the steps Track shows. Each test drives the
real handlers with the helpers of the modules that own the scenario. No broker."""

from datetime import timedelta

import pytest
import test_intake_joint_leg_view as joint
import test_intake_lifecycle as lifecycle
import test_intake_partner_submissions as partners
import test_intake_rating_roles as roles
import test_intake_video_consultations as consult
from test_intake_api_auth import InstantRuntime

from services.intake import domain, handlers, notify
from tongban import topics
from tongban.handling import Event, Rejected

P = "tongban.application."
APP, T0, at = lifecycle.APP, lifecycle.T0, lifecycle.at
BUNDLE = "TBB0123456789ABCDEF0123"
UNDER_REVIEW = (P + "ApplicationUnderReview", {"application_id": APP, "matter_code": "KSTB-MKT-01",
                                               "reason": "deciding authority unclear"})
BUNDLE_HELD = (topics.BUNDLE_MEMBER_HELD_EVENT, {"application_id": APP, "matter_code": "KSTB-MKT-01",
                                                 "bundle_id": BUNDLE, "routable": True, "reason": ""})
BUNDLE_RELEASED = (topics.BUNDLE_RELEASED_EVENT, {"application_id": APP, "bundle_id": BUNDLE, "bundle_code": "",
                                                  "applications": [APP, "TBOTHER"], "release": "REVIEW",
                                                  "reason": "住所证明不属于本事项", "released_at": T0})


def last_step(view: dict) -> tuple:
    step = view["history"][-1]
    return step["stage"], step["at"], step["detail"]


def legs(view: dict, *fields: str) -> list[tuple]:
    return [(leg["number"], leg["state"], *(leg.get(f) for f in fields)) for leg in view["legs"]]


async def joint_command(kind: str, payload: dict, state: dict | None, minutes: int) -> object:
    return await handlers.COMMANDS[kind](Event(f"cmd-{kind}-{minutes}", kind, joint.APP, payload,
                                               {"occurred_at": joint.at(minutes)}, "command"), state)


# ---------------------------------------------------------------------------- Submit and the receipt

@pytest.mark.parametrize("bundle_id", ["", BUNDLE])
async def test_track_shows_the_bundle_a_submission_was_made_in_and_none_outside_a_bundle(bundle_id):
    outcome = await handlers.submit(lifecycle.event(handlers.SUBMIT, {**lifecycle.COMMAND, "bundle_id": bundle_id}),
                                    None)
    assert outcome.state["bundle_id"] == bundle_id


async def test_a_material_code_that_repeats_the_applicants_name_is_scrubbed_before_it_travels():
    careless = {"code": f"POWER-{lifecycle.NAME}", "name": "委托书", "provided": True, "original_checked": False}
    outcome = await handlers.number(lifecycle.event(handlers.NUMBER, {**lifecycle.COMMAND, "materials": [careless]}),
                                    None)
    [emit] = outcome.emits
    assert emit.payload["materials"] == [{**careless, "code": "POWER-[NAME]"}]


async def test_the_receipt_is_served_to_the_application_and_names_no_remedy():
    submitted = (await handlers.submit(lifecycle.event(handlers.SUBMIT, lifecycle.COMMAND), None)).state
    outcome = await handlers.on_received(lifecycle.event(*lifecycle.NUMBERED), submitted)
    [emit] = outcome.emits
    assert (emit.topic, emit.key, emit.payload["kind"], emit.payload["remedy"]) == (
        topics.APPLICATION_NOTICES, APP, "RECEIPT", "")


async def test_the_numbered_step_shows_the_application_number():
    view = await lifecycle.received()
    assert (view["history"][-1]["stage"], view["history"][-1]["detail"]) == ("NUMBERED", lifecycle.NUMBER)


async def test_two_applications_receipts_are_two_notices_so_the_sender_drops_neither_as_a_repeat():
    other = "TBLIFECYCLEOTHER"
    first = await handlers.on_received(lifecycle.event(*lifecycle.NUMBERED, n=1), None)
    second = await handlers.on_received(
        lifecycle.event(lifecycle.NUMBERED[0], {**lifecycle.NUMBERED[1], "application_id": other,
                                                "application_number": "430102-20261204-0000002-Y"}, n=2, key=other),
        None)
    sender = notify.SimulatedSender()
    await notify.deliver(lifecycle.notices([first, second]), sender)
    assert sorted(m.application_number for m in sender.sent.values()) == [
        lifecycle.NUMBER, "430102-20261204-0000002-Y"]


@pytest.mark.parametrize("window_id", ["HN-430102-KSTB-01", ""])
async def test_an_application_received_elsewhere_shows_its_matter_time_divisions_and_window(window_id):
    """Read from the topic without a Submit here: Track (and who may rate the window) needs the same."""
    numbered = {**lifecycle.NUMBERED[1], "window_id": window_id}
    view = (await handlers.on_received(lifecycle.event(lifecycle.NUMBERED[0], numbered, n=7), None)).state
    assert (view["matter_code"], view["history"][0]["stage"], view["history"][0]["at"]) == (
        "KSTB-MKT-01", "RECEIVED", T0)
    assert (view["receiving_division"], view["home_division"], view["window_id"]) == (
        "430102001001", "440300", window_id)


async def test_an_authority_routed_without_a_division_is_rated_in_the_applicants_home_division():
    routed = (roles.ROUTED[0], {**roles.ROUTED[1], "deciding_division": ""})
    _, outcomes = await roles.feed(routed, roles.APPROVED, roles.rating("DECIDING"))
    rated = roles.published(outcomes[-1])
    assert (rated["party"], rated["division_code"]) == ("440000", roles.SUBMITTED["home_division"])


# ---------------------------------------------------------------------------- Withdraw and SupplementMaterials

@pytest.mark.parametrize("kind", [handlers.WITHDRAW, handlers.SUPPLEMENT])
async def test_a_command_for_an_unknown_application_is_refused_in_exactly_those_words(kind):
    with pytest.raises(Rejected) as refused:
        await lifecycle.command(kind, {"reason": "", "withdrawn_at": T0, "materials": ["ARTICLES"],
                                       "submitted_at": T0}, None)
    assert str(refused.value) == "no such application"


async def test_a_withdrawal_without_a_reason_is_published_with_none_made_up():
    outcome = await lifecycle.command(handlers.WITHDRAW, {"reason": "", "withdrawn_at": at(9)},
                                      await lifecycle.received())
    [emit] = outcome.emits
    assert emit.payload == {"application_id": APP, "reason": "", "withdrawn_at": at(9)}


async def test_the_withdrawal_step_says_the_applicant_withdrew_and_when():
    outcome = await lifecycle.command(handlers.WITHDRAW, {"reason": "不办了", "withdrawn_at": at(9)},
                                      await lifecycle.received())
    assert last_step(outcome.state) == ("WITHDRAWN", at(9), "withdrawn by the applicant")


async def test_withdrawing_a_joint_matter_cancels_every_open_leg_at_the_withdrawal_saying_why():
    view, _ = await joint.feed(joint.ROUTED, joint.VERIFIED)
    outcome = await joint_command(handlers.WITHDRAW, {"reason": "", "withdrawn_at": joint.at(9)}, view, 9)
    assert legs(outcome.state, "cancelled_at", "detail") == [
        (n, "CANCELLED", joint.at(9), "withdrawn by the applicant") for n in (1, 2, 3)]


async def test_a_supplement_is_published_for_its_application_and_its_step_names_the_materials_and_when():
    state, _ = await lifecycle.feed(lifecycle.SUPPLEMENT_REQUESTED, state=await lifecycle.received())
    outcome = await lifecycle.command(handlers.SUPPLEMENT, {"materials": ["ARTICLES", "PREMISES_PROOF"],
                                                            "submitted_at": at(40)}, state)
    [emit] = outcome.emits
    assert (emit.event_type, emit.key) == (topics.SUPPLEMENT_SUBMITTED_EVENT, APP)
    assert last_step(outcome.state) == ("SUPPLEMENTED", at(40), "ARTICLES, PREMISES_PROOF")


# ---------------------------------------------------------------------------- partners' submissions

async def partner_submission(numbering_first: bool) -> InstantRuntime:
    """One valid submission through the partner feed; NUMBER applied before PARTNER_SUBMIT
    when `numbering_first` (they are on different partitions)."""
    runtime = InstantRuntime()
    held: list[tuple] = []
    if numbering_first:
        async def submit(command_type: str, key: str, command_id: str, payload: dict) -> None:
            if command_type == handlers.PARTNER_SUBMIT:
                held.append((command_type, key, command_id, payload))
                return
            await InstantRuntime.submit(runtime, command_type, key, command_id, payload)
        runtime.submit = submit
    await partners.feed_of(runtime).handle(partners.PARTNER, *partners.submission())
    for command in held:
        await InstantRuntime.submit(runtime, *command)
    return runtime


@pytest.mark.parametrize("numbering_first", [False, True])
async def test_the_partner_learns_which_submission_became_which_number_and_when_it_was_received(numbering_first):
    runtime = await partner_submission(numbering_first)
    application_id = domain.application_id_for("partner-420000", "HB-0001")
    [ack] = [e for e in runtime.published if e.topic == partners.ACKS]
    assert (ack.event_type, ack.key, ack.payload) == (topics.SUBMISSION_RECEIVED_EVENT, "HB-0001", {
        "submission_id": "HB-0001", "application_id": application_id,
        "application_number": runtime.states[application_id]["application_number"], "received_at": partners.T0})


async def test_an_application_numbered_before_its_submission_is_recorded_as_received_from_the_partner_all_the_same():
    application_id = domain.application_id_for("partner-420000", "HB-0001")
    recorded = (await partner_submission(numbering_first=False)).states[application_id]
    adopted = (await partner_submission(numbering_first=True)).states[application_id]
    fields = ("source_system", "source_role", "fingerprints", "partner_submission")
    assert [adopted.get(f) for f in fields] == [recorded.get(f) for f in fields]
    assert (adopted["source_system"], adopted["source_role"]) == ("partner-420000", "partner")


async def test_a_refusal_tells_the_partner_which_submission_every_problem_and_when():
    outcome = await handlers.partner_refuse(Event("c1", handlers.PARTNER_REFUSE, "TBX", {
        "partner": partners.PARTNER, "submission_id": "HB-9", "problems": ["matter_code is required"],
        "refused_at": partners.T0}, {"occurred_at": partners.T0}, "command"), None)
    [emit] = outcome.emits
    assert (emit.event_type, emit.key, emit.payload) == (topics.SUBMISSION_REFUSED_EVENT, "HB-9", {
        "submission_id": "HB-9", "problems": ["matter_code is required"], "refused_at": partners.T0})


async def test_another_payload_under_a_submission_id_is_refused_naming_it_and_every_differing_field_at_the_resend():
    application_id = domain.application_id_for("partner-420000", "HB-0001")
    body = {"application_id": application_id, "matter_code": "KSTB-MKT-01", "receiving_division": "420106",
            "home_division": "430103", "window_id": "", "bundle_id": "", "submitted_at": partners.T0,
            "partner": partners.PARTNER, "submission_id": "HB-0001",
            "fingerprints": {"applicant.phone": "aaaaaa", "matter_code": "bbbbbb", "window_id": "cccccc"}}

    def command(payload: dict, n: int) -> Event:
        return Event(f"partner-submit:{n}", handlers.PARTNER_SUBMIT, application_id, payload,
                     {"occurred_at": partners.T0}, "command")

    first = (await handlers.partner_submit(command(body, 1), None)).state
    resent_at = partners.T0 + timedelta(hours=2)
    other = {**body, "submitted_at": resent_at,
             "fingerprints": {"applicant.phone": "dddddd", "matter_code": "bbbbbb", "window_id": "eeeeee"}}
    outcome = await handlers.partner_submit(command(other, 2), first)
    [emit] = outcome.emits
    assert (emit.topic, emit.event_type, emit.key, emit.payload) == (
        partners.ACKS, topics.SUBMISSION_REFUSED_EVENT, "HB-0001", {
            "submission_id": "HB-0001", "refused_at": resent_at,
            "problems": ["submission_id was used for another submission; it differs in: applicant.phone, window_id"]})


# ---------------------------------------------------------------------------- video consultations

async def test_a_recorded_consultation_is_published_under_its_id_with_when_it_was_held_and_the_note_scrubbed():
    _, (_, recorded) = await consult.feed((handlers.REQUEST_CONSULTATION, consult.REQUEST),
                                          (handlers.RECORD_CONSULTATION, consult.recording(note="回电 13812345678")))
    [emit] = recorded.emits
    assert (emit.topic, emit.key) == (topics.CONSULTATIONS, consult.CID)
    assert emit.payload == {
        "consultation_id": consult.CID, "application_id": consult.APP, "matter_code": "KSTB-SOC-02",
        "deciding_partner": "360000", "outcome": "AGREED", "agreed_materials": ["RESIDENT_ID"],
        "held_at": consult.T0 + timedelta(minutes=30), "note": "回电 [PHONE]",
        "recorded_at": consult.T0 + timedelta(hours=1)}


async def test_the_reason_a_consultation_is_asked_for_travels_scrubbed_not_dropped():
    _, (asked,) = await consult.feed((handlers.REQUEST_CONSULTATION, consult.REQUEST))
    [emit] = asked.emits
    assert emit.payload["reason"] == "申请人电话[PHONE]，材料存疑"


async def test_an_outcome_without_a_request_is_refused_in_exactly_those_words():
    with pytest.raises(Rejected) as refused:
        await consult.feed((handlers.RECORD_CONSULTATION, consult.recording()))
    assert str(refused.value) == "no such consultation"


# ---------------------------------------------------------------------------- the steps Track shows

async def test_a_denial_without_a_reason_names_none():
    denied = (lifecycle.DENIED[0], {**lifecycle.DENIED[1], "reason": None})
    state, outcomes = await lifecycle.feed(denied, state=await lifecycle.received())
    [served] = lifecycle.notices(outcomes)
    assert (state["history"][-1]["stage"], state["history"][-1]["detail"]) == ("DENIED", "")
    assert served["reasons"] == []


@pytest.mark.parametrize("cause", ["材料不全", ""])
async def test_the_supplement_request_step_says_its_cause_and_nothing_when_none_was_given(cause):
    requested = (lifecycle.SUPPLEMENT_REQUESTED[0], {**lifecycle.SUPPLEMENT_REQUESTED[1], "cause": cause})
    state, _ = await lifecycle.feed(requested, state=await lifecycle.received())
    assert (state["history"][-1]["stage"], state["history"][-1]["detail"]) == ("SUPPLEMENT_REQUESTED", cause)


async def test_a_supplement_request_read_before_the_routing_names_the_deciding_authority():
    state, _ = await lifecycle.feed(lifecycle.SUPPLEMENT_REQUESTED, state=await lifecycle.received())
    assert state["deciding_partner"] == "440000"


async def test_materials_supplemented_at_the_authority_move_the_view_on_keep_its_history_and_are_named():
    before, _ = await lifecycle.feed(lifecycle.ROUTED, lifecycle.SUPPLEMENT_REQUESTED,
                                     state=await lifecycle.received())
    state, _ = await lifecycle.feed(lifecycle.MATERIALS_SUPPLEMENTED, state=before)
    assert state["stage"] == "SUPPLEMENTED"
    assert state["history"][:-1] == before["history"]
    assert (state["history"][-1]["stage"], state["history"][-1]["detail"]) == (
        "SUPPLEMENTED", "ARTICLES, PREMISES_PROOF")


async def test_an_application_sent_for_review_keeps_its_history_and_the_step_says_why():
    before = await lifecycle.received()
    state, _ = await lifecycle.feed(UNDER_REVIEW, state=before)
    assert state["history"][:-1] == before["history"]
    assert (state["history"][-1]["stage"], state["history"][-1]["detail"]) == (
        "UNDER_REVIEW", "deciding authority unclear")


async def test_a_clock_change_is_shown_as_its_own_step():
    clock = (P + "ApplicationClockChanged", {"application_id": APP, "deciding_partner": "440000", "kind": "SUSPENDED",
                                            "working_days": 2, "reason": "现场核查", "changed_at": T0})
    state, _ = await lifecycle.feed(lifecycle.ROUTED, clock, state=await lifecycle.received())
    assert (state["history"][-1]["stage"], state["history"][-1]["detail"]) == ("CLOCK_CHANGED", "SUSPENDED 2: 现场核查")


async def test_delivery_closing_a_withdrawn_application_is_shown_as_a_withdrawn_step():
    withdrawn = (await lifecycle.command(handlers.WITHDRAW, {"reason": "", "withdrawn_at": at(9)},
                                         await lifecycle.received())).state
    state, _ = await lifecycle.feed(lifecycle.CLOSED_WITHDRAWN, state=withdrawn)
    assert (state["history"][-1]["stage"], state["history"][-1]["detail"]) == ("WITHDRAWN", "WITHDRAWN: 撤回")


async def test_an_application_waiting_for_its_bundle_says_so():
    state, _ = await lifecycle.feed(BUNDLE_HELD, state=await lifecycle.received())
    assert (state["history"][-1]["stage"], state["history"][-1]["detail"]) == (
        "BUNDLE_WAITING", "waiting for the other matters of its bundle")


@pytest.mark.parametrize("step", [BUNDLE_HELD, BUNDLE_RELEASED], ids=["held", "released"])
async def test_a_bundle_step_read_before_the_submission_names_the_bundle_for_track(step):
    state, _ = await lifecycle.feed(step)
    assert state["bundle_id"] == BUNDLE


async def test_a_bundle_released_without_a_code_is_called_a_bundle_and_the_step_says_why():
    state, _ = await lifecycle.feed(BUNDLE_RELEASED, state=await lifecycle.received())
    assert (state["history"][-1]["stage"], state["history"][-1]["detail"]) == (
        "BUNDLE_RELEASED", "bundle: REVIEW: 住所证明不属于本事项")


# ---------------------------------------------------------------------------- a joint matter's legs

async def test_leg_1_of_a_joint_matter_verified_before_it_was_routed_is_held_from_the_routing():
    view, _ = await joint.feed(joint.VERIFIED, joint.ROUTED)
    assert legs(view, "assigned_at")[0] == (1, "ASSIGNED", joint.at(2))


async def test_the_first_partys_acceptance_read_before_the_verification_holds_leg_1_from_the_acceptance():
    view, _ = await joint.feed(joint.ROUTED, joint.ACCEPTED)
    assert view["stage"] == "ACCEPTED"
    assert legs(view, "assigned_at")[0] == (1, "ASSIGNED", joint.ACCEPTED[1]["accepted_at"])


async def test_a_joint_matter_refused_by_its_first_party_fails_leg_1_then_and_cancels_the_rest_as_rejected():
    refused = (P + "ApplicationRefused", {"application_id": joint.APP, "deciding_partner": "440000",
                                          "reason": "材料无法读取"})
    view, _ = await joint.feed(joint.ROUTED, joint.VERIFIED, refused)
    assert legs(view, "failed_at", "cancelled_at", "detail") == [
        (1, "FAILED", joint.at(3), None, "材料无法读取"),
        (2, "CANCELLED", None, joint.at(3), "REJECTED"), (3, "CANCELLED", None, joint.at(3), "REJECTED")]


async def test_a_joint_matter_approved_before_its_routing_was_read_shows_its_last_leg_completed_at_the_decision():
    # The decision's step is at its event's time (step 1 here); the routing learned later completes the last leg then.
    view, _ = await joint.feed(joint.decided("APPROVED", 1), joint.ROUTED)
    assert legs(view, "completed_at")[-1] == (3, "COMPLETED", joint.at(1))


async def test_a_joint_matter_withdrawn_before_its_routing_was_read_shows_every_leg_cancelled_as_withdrawn():
    verified, _ = await joint.feed(joint.VERIFIED)
    withdrawn = (await joint_command(handlers.WITHDRAW, {"reason": "", "withdrawn_at": joint.at(5)}, verified, 5)).state
    view, _ = await joint.feed(joint.ROUTED, state=withdrawn)
    assert legs(view, "cancelled_at", "detail") == [(n, "CANCELLED", joint.at(1), "WITHDRAWN") for n in (1, 2, 3)]


async def test_a_joint_matter_closed_by_delivery_cancels_every_leg_done_ones_too_saying_why():
    expired = (P + "ApplicationClosed", {"application_id": joint.APP, "status": "SUPPLEMENT_EXPIRED",
                                         "reason": "补正期限已过", "closed_at": joint.at(30)})
    view, _ = await joint.feed(joint.ROUTED, joint.VERIFIED, joint.leg_completed(1, 3, "440000", "CONTACT_LETTER"),
                               expired)
    assert legs(view, "cancelled_at", "detail") == [
        (n, "CANCELLED", joint.at(30), "SUPPLEMENT_EXPIRED: 补正期限已过") for n in (1, 2, 3)]


LEG_ENDS = [joint.leg_completed(1, 3, "440000", "CONTACT_LETTER"),
            joint.leg_failed(1, 3, "440000", "CONTACT_LETTER", [])]


@pytest.mark.parametrize("step", LEG_ENDS, ids=["completed", "failed"])
async def test_a_legs_end_for_an_application_intake_never_recorded_starts_a_view_operators_can_see(step):
    view, _ = await joint.feed(step)
    assert (view["application_id"], view["matter_code"], view["stage"]) == (joint.APP, "", "RECEIVED")
    assert view["history"][0] == {"stage": "RECEIVED", "at": joint.at(1), "detail": "", "sequence": 1,
                                  "responsible": "RECEIVING_WINDOW"}
    assert view["legs"][0]["state"] in ("COMPLETED", "FAILED")


@pytest.mark.parametrize("step", LEG_ENDS, ids=["completed", "failed"])
async def test_a_legs_end_read_after_the_application_ended_leaves_it_finished(step):
    view, _ = await joint.feed(joint.ROUTED)
    withdrawn = (await joint_command(handlers.WITHDRAW, {"reason": "", "withdrawn_at": joint.at(2)}, view, 2)).state
    _, (outcome,) = await joint.feed(step, state=withdrawn)
    assert outcome.finished is True
