"""Delivery's rules the mutation run of 836805e found unguarded in the second half of
`make_handlers` (redirects and channel timers, 容缺 promises, closes, 告知承诺, the authority's
clock, bundles): each test names the rule, through the real handlers and the helpers of
the delivery test modules."""

from datetime import datetime

import pytest

from services.delivery import acceptance as rules
from services.delivery import bundles, handlers
from tests.unit import test_delivery_acceptance as acc
from tests.unit import test_delivery_bundles as bundled
from tests.unit import test_delivery_channels as ch
from tests.unit import test_joint_legs as joint
from tests.unit.test_delivery_rules import (
    APP,
    ASSIGNED,
    ROUTED_STEP,
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
from tongban.events import derive_event_id
from tongban.handling import Event, Outcome, Rejected, Timer

TWO_PROMISES = {"PREMISES_PROOF": "2026-11-20", "ARTICLES": "2026-11-25"}
SECOND_PROMISE_ENDS = rules.promise_deadline("2026-11-25")  # 2026-11-26 00:00 in China
CHECK_RESULT = topics.COMMITMENT_CHECK_RESULT_EVENT


def promise_missed(due_at: datetime = acc.PROMISE_ENDS) -> Event:
    """The deferred-promise timer as the runtime fires it, with the payload it was set with."""
    return acc.timer(rules.DEFERRED_PROMISE, {"due_at": due_at.isoformat()})


def two_promises() -> tuple:
    return received(deferred_materials=TWO_PROMISES), ROUTED_STEP, VERIFIED_STEP, acceptance()


# ---------------------------------------------------------------------------- result channels

@pytest.mark.parametrize(("given", "detail"), [
    ({"reason": "申请人来电改为窗口领取"}, "an operator sent it on by WINDOW: 申请人来电改为窗口领取"),
    ({}, "an operator sent it on by WINDOW"),  # the API leaves the reason out when the operator gave none
], ids=["with-reason", "without"])
async def test_an_operators_resolution_tells_the_reason_the_operator_gave_and_nothing_else(given, detail):
    state, _ = await ch.feed(*ch.by("POST", address="长沙"), decision("APPROVED"),
                             receipt("RETURNED", ch.dispatch(1), return_reason="WRONG_ADDRESS"),
                             ch.fired("post_retry", {"attempt": 1}))
    resolve = ch.command(handlers.REDIRECT, method="WINDOW", address=None, operator=True, **given)
    _, outcomes = await ch.feed(resolve, state=state)
    [resolved] = [e.payload for e in outcomes[0].emits
                  if e.event_type == topics.DELIVERY_PROGRESS_EVENT and e.payload["stage"] == "RESOLVED"]
    assert resolved["detail"] == detail


@pytest.mark.parametrize("before", [
    (),
    ch.by("WINDOW"),
    (*ch.by("WINDOW"), decision("APPROVED"), ch.arrival(), ch.pickup()),
], ids=["no-file", "no-result-yet", "delivered"])
async def test_a_channel_timer_with_no_result_on_its_way_changes_nothing(before):
    state, _ = await ch.feed(*before)
    _, [outcome] = await ch.feed(ch.fired("pickup_reminder", {"n": 1}), state=state)
    assert outcome == Outcome(), "no event, and the file as it is stored (a delivered one stays finished)"


# ---------------------------------------------------------------------------- 容缺 promises

async def test_the_promise_timer_delivery_sets_is_the_one_it_judges_when_it_fires():
    state, outcomes = await feed(*acc.with_deferred(), acceptance())
    [watch] = outcomes[0].timers
    outcome = await run(rules.DEFERRED_PROMISE)(acc.timer(rules.DEFERRED_PROMISE, watch.payload), state)
    [notice] = outcome.emits
    assert notice.payload["missing_materials"] == {"PREMISES_PROOF": "容缺: promised by 2026-11-20"}


async def test_a_missed_promise_asks_for_the_material_naming_the_authority_and_the_new_deadline():
    state, _ = await feed(*acc.with_deferred(), acceptance())
    outcome = await run(rules.DEFERRED_PROMISE)(promise_missed(), state)
    [notice] = outcome.emits
    assert (notice.topic, notice.event_type, notice.key) == (
        topics.APPLICATION_ACCEPTED, topics.SUPPLEMENT_REQUESTED_EVENT, APP)
    assert notice.payload == {"application_id": APP, "deciding_partner": "440000", "cause": "DEFERRED_PROMISE_MISSED",
                              "missing_materials": {"PREMISES_PROOF": "容缺: promised by 2026-11-20"},
                              "requested_at": acc.PROMISE_ENDS, "supplement_by": acc.PROMISE_ENDS + acc.PERIOD}
    assert outcome.timers == [], "no promise left ahead"


async def test_a_promise_missed_before_the_application_is_routed_names_no_authority_yet():
    state, _ = await feed(received(deferred_materials=acc.DEFERRED))
    outcome = await run(rules.DEFERRED_PROMISE)(promise_missed(), state)
    [notice] = outcome.emits
    assert notice.payload["deciding_partner"] == ""
    assert notice.payload["missing_materials"] == {"PREMISES_PROOF": "容缺: promised by 2026-11-20"}


async def test_after_a_missed_promise_the_next_promise_is_watched():
    state, _ = await feed(*two_promises())
    outcome = await run(rules.DEFERRED_PROMISE)(promise_missed(), state)
    assert list(outcome.emits[0].payload["missing_materials"]) == ["PREMISES_PROOF"]
    assert outcome.timers == [Timer(rules.DEFERRED_PROMISE, SECOND_PROMISE_ENDS,
                                    {"due_at": SECOND_PROMISE_ENDS.isoformat()})]


async def test_when_one_deferred_material_arrives_the_next_promise_is_watched():
    state, outcomes = await feed(*two_promises(), acc.supplemented("PREMISES_PROOF"))
    assert state["deferred"] == {"ARTICLES": "2026-11-25"}
    assert outcomes[-1].timers == [Timer(rules.DEFERRED_PROMISE, SECOND_PROMISE_ENDS,
                                         {"due_at": SECOND_PROMISE_ENDS.isoformat()})]
    assert outcomes[-1].cancel_timers == []


@pytest.mark.parametrize("before", [(), (*two_promises(), acc.supplemented("PREMISES_PROOF"))],
                         ids=["no-file", "material-arrived-since"])
async def test_a_promise_timer_that_finds_nothing_overdue_asks_for_nothing(before):
    state, _ = await feed(*before)
    outcome = await run(rules.DEFERRED_PROMISE)(promise_missed(), state)
    assert outcome == Outcome()


@pytest.mark.parametrize("ending", [acc.withdrawn(), acc.refused()], ids=["withdrawn", "not-accepted"])
async def test_a_promise_that_runs_out_after_the_application_ended_undecided_asks_for_nothing(ending):
    state, _ = await feed(*acc.with_deferred(), ending)
    assert state["deferred"] == acc.DEFERRED
    outcome = await run(rules.DEFERRED_PROMISE)(promise_missed(), state)
    assert outcome == Outcome()


# ---------------------------------------------------------------------------- 补正 and closes

async def test_the_file_going_back_after_a_supplement_is_two_events_each_with_an_event_id_of_its_own():
    _, outcomes = await feed(*ASSIGNED, acc.supplement_required(), acc.supplemented(*acc.MISSING))
    emits = outcomes[-1].emits
    assert [e.topic for e in emits] == [topics.APPLICATION_ACCEPTED, acc.ASSIGNMENTS]
    # the runtime derives each event's id from its cause, type and qualifier
    assert len({derive_event_id("cause", e.event_type, e.qualifier) for e in emits}) == len(emits) == 2


async def test_a_withdrawal_between_legs_tells_the_done_legs_party_why_and_when_to_undo_it():
    state, _ = await joint.start()
    state, _ = await joint.feed(state, joint.answer("ACCEPTED", "440000", joint.LEG_1),
                                joint.decision("APPROVED", "440000", joint.LEG_1))
    withdrawal = {"application_id": joint.APP, "reason": "", "withdrawn_at": T0}
    _, outcomes = await joint.feed(state, (topics.APPLICATION_WITHDRAWN_EVENT, withdrawal, topics.APPLICATION_RECEIVED))
    undo = [e for e in outcomes[0].emits
            if e.event_type == topics.ASSIGNMENT_CANCELLED_EVENT and e.payload["assignment_id"] == joint.LEG_1]
    assert [(e.topic, e.key, e.payload) for e in undo] == [
        (topics.partner_assignments("440000"), joint.APP,
         {"assignment_id": joint.LEG_1, "application_id": joint.APP,
          "reason": "withdrawn by the applicant before the decision", "cancelled_at": T0})]


# ---------------------------------------------------------------------------- every event under its application

async def _withdrawn() -> Outcome:
    return (await feed(*ASSIGNED, acceptance(), acc.withdrawn()))[1][-1]


async def _supplemented() -> Outcome:
    return (await feed(*ASSIGNED, acc.supplement_required(), acc.supplemented(*acc.MISSING)))[1][-1]


async def _promise_missed() -> Outcome:
    state, _ = await feed(*acc.with_deferred(), acceptance())
    return await run(rules.DEFERRED_PROMISE)(promise_missed(), state)


async def _check_asked() -> Outcome:
    state, _ = await feed(*acc.COMMITTED, acceptance(), decision("APPROVED"))
    return await run(rules.COMMITMENT_CHECK)(acc.timer(rules.COMMITMENT_CHECK), state)


async def _revoked() -> Outcome:
    return await run(CHECK_RESULT)(event(*acc.check_result(False)), await acc.checked())


async def _clock_changed() -> Outcome:
    return (await feed(*ASSIGNED, acceptance(), acc.clock_change()))[1][-1]


@pytest.mark.parametrize("outcome_of", [_withdrawn, _supplemented, _promise_missed, _check_asked, _revoked,
                                        _clock_changed],
                         ids=["closed", "supplemented", "promise-missed", "check-asked", "revoked", "clock-changed"])
async def test_every_event_about_an_application_is_written_under_its_id(outcome_of):
    # the record key: each application's events on one partition, in the order they happened
    outcome = await outcome_of()
    assert outcome.emits
    assert [e.key for e in outcome.emits] == [APP] * len(outcome.emits)


# ---------------------------------------------------------------------------- 告知承诺

async def delivered_under_commitments() -> dict:
    state, outcomes = await feed(*acc.COMMITTED, acceptance(), decision("APPROVED"), receipt("DELIVERED"))
    assert outcomes[-1].finished
    assert state["delivered"]
    return state


async def test_a_delivered_file_stays_finished_when_its_commitment_check_is_asked():
    outcome = await run(rules.COMMITMENT_CHECK)(acc.timer(rules.COMMITMENT_CHECK), await delivered_under_commitments())
    assert [e.event_type for e in outcome.emits] == ["tongban.partner.CommitmentCheckRequested"]
    assert outcome.finished is True


@pytest.mark.parametrize("passed", [True, False], ids=["passed", "failed"])
async def test_a_delivered_file_stays_finished_whatever_its_commitment_check_finds(passed):
    asked = await run(rules.COMMITMENT_CHECK)(acc.timer(rules.COMMITMENT_CHECK), await delivered_under_commitments())
    outcome = await run(CHECK_RESULT)(event(*acc.check_result(passed)), asked.state)
    assert len(outcome.emits) == (0 if passed else 1)
    assert outcome.finished is True


def failed_check(reason: str) -> tuple:
    event_type, payload, topic = acc.check_result(False)
    return event_type, {**payload, "reason": reason}, topic


async def test_a_revocation_reason_quoting_the_applicant_is_scrubbed_before_it_travels():
    outcome = await run(CHECK_RESULT)(event(*failed_check("核查发现示例的承诺不实")), await acc.checked())
    assert outcome.emits[0].payload["reason"] == "核查发现[NAME]的承诺不实"


async def test_a_revocation_the_authority_gave_no_reason_for_says_a_promise_does_not_hold():
    outcome = await run(CHECK_RESULT)(event(*failed_check("")), await acc.checked())
    assert outcome.emits[0].payload["reason"] == "a promise made under 告知承诺 does not hold"


# ---------------------------------------------------------------------------- the authority's clock

async def test_a_clock_change_reason_quoting_the_applicant_is_scrubbed_before_it_travels():
    _, outcomes = await feed(*ASSIGNED, acceptance(), acc.clock_change(reason="示例的材料需要专家评审"))
    assert outcomes[-1].emits[0].payload["reason"] == "[NAME]的材料需要专家评审"


async def test_a_clock_change_kind_quoting_the_applicant_is_scrubbed_from_the_dead_letter_reason():
    with pytest.raises(Rejected) as rejected:
        await feed(*ASSIGNED, acceptance(), acc.clock_change("示例 13800000000"))
    assert str(rejected.value) == ("clock change '[NAME] [NAME]' is not one of EXTENDED, EXCLUSION_STARTED, "
                                   "EXCLUSION_ENDED")


# ---------------------------------------------------------------------------- 一件事一次办

A, B, BUNDLE_KEY = bundled.A, bundled.B, bundles.key(bundled.BUNDLE)


async def test_a_bundle_is_told_when_its_application_was_settled():
    delivery = await bundled.feed(*bundled.accepted(A), *bundled.accepted(B), bundled.decision(A, "APPROVED"))
    assert bundled.members_told(delivery)[A]["settled_at"] == T0


async def test_a_released_result_names_its_application_the_bundles_outcomes_and_when_it_was_released():
    delivery = await bundled.feed(*bundled.accepted(A), *bundled.accepted(B), bundled.decision(A, "APPROVED"),
                                  bundled.decision(B, "DENIED"))
    [release] = [e for e in delivery.written if e.event_type == topics.BUNDLE_RESULTS_RELEASED_EVENT]
    assert (release.topic, release.key) == (topics.APPLICATION_DECIDED, A)
    assert release.payload == {"application_id": A, "bundle_id": bundled.BUNDLE, "applications": [B, A],
                               "outcomes": {A: "APPROVED", B: "DENIED"}, "complete": True, "released_at": T0}


async def test_a_result_released_when_the_hold_runs_out_says_when():
    delivery = await bundled.feed(*bundled.accepted(A), *bundled.accepted(B), bundled.decision(A, "APPROVED"),
                                  bundled.hold_ran_out())
    [release] = [e for e in delivery.written if e.event_type == topics.BUNDLE_RESULTS_RELEASED_EVENT]
    assert (release.payload["application_id"], release.payload["released_at"]) == (A, T0)


def member_decided(app: str, outcome: str) -> Event:
    report = {"application_id": app, "bundle_id": bundled.BUNDLE, "applications": [B, A], "outcome": outcome,
              "held": outcome == "APPROVED", "settled_at": T0}
    return Event(f"told-{app}", topics.BUNDLE_MEMBER_DECIDED_EVENT, BUNDLE_KEY, report, {"occurred_at": T0},
                 topics.APPLICATION_DECIDED)


async def test_a_bundle_stops_its_hold_once_every_application_of_it_is_settled():
    handle = bundled.delivery_handlers()[topics.BUNDLE_MEMBER_DECIDED_EVENT]
    first = await handle(member_decided(A, "APPROVED"), None)
    assert ([t.name for t in first.timers], first.cancel_timers, first.finished) == ([bundles.HOLD_TIMER], [], False)
    last = await handle(member_decided(B, "DENIED"), first.state)
    assert (last.timers, last.cancel_timers, last.finished) == ([], [bundles.HOLD_TIMER], True)


async def test_a_hold_that_runs_out_with_nothing_left_to_hold_changes_nothing():
    hold = bundled.hold_ran_out()
    fired = Event("hold", hold[1], hold[0], hold[2], {"occurred_at": T0}, hold[3])
    assert await bundled.delivery_handlers()[bundles.HOLD_TIMER](fired, None) == Outcome()
    delivery = await bundled.feed(*bundled.accepted(A), *bundled.accepted(B), bundled.decision(A, "APPROVED"),
                                  bundled.decision(B, "APPROVED"))
    assert await bundled.delivery_handlers()[bundles.HOLD_TIMER](fired, delivery.states[BUNDLE_KEY]) == Outcome()


async def test_a_release_for_a_file_that_is_not_held_by_a_bundle_changes_nothing():
    app, event_type, payload, topic = bundled.received(A)
    alone = (app, event_type, {k: v for k, v in payload.items() if k != "bundle_id"}, topic)
    delivery = await bundled.feed(alone, bundled.routed(A), bundled.verified(A), bundled.answer(A),
                                  bundled.decision(A, "APPROVED"))
    body = {"application_id": A, "bundle_id": bundled.BUNDLE, "applications": [B, A], "outcomes": {A: "APPROVED"},
            "complete": False, "released_at": T0}
    release = Event("r", topics.BUNDLE_RESULTS_RELEASED_EVENT, A, body, {"occurred_at": T0}, topics.APPLICATION_DECIDED)
    assert await bundled.delivery_handlers()[topics.BUNDLE_RESULTS_RELEASED_EVENT](release, delivery.states[A]) \
        == Outcome()


def received_with_deferred(app: str) -> tuple:
    app, event_type, payload, topic = bundled.received(app)
    return app, event_type, {**payload, "deferred_materials": {"RESIDENT_ID": "2026-11-20"}}, topic


async def test_a_bundles_result_also_held_for_a_deferred_material_goes_out_when_both_holds_are_lifted():
    delivery = await bundled.feed(received_with_deferred(A), bundled.released(A), bundled.routed(A),
                                  bundled.verified(A), bundled.answer(A), *bundled.accepted(B),
                                  bundled.decision(A, "APPROVED"), bundled.decision(B, "APPROVED"))
    assert A in delivery.states[BUNDLE_KEY]["released"], "the bundle let it go"
    assert delivery.dispatched(B)
    assert not delivery.dispatched(A), "it still waits for its 容缺 material"
    material = (A, topics.SUPPLEMENT_SUBMITTED_EVENT,
                {"application_id": A, "materials": ["RESIDENT_ID"], "submitted_at": T0}, topics.APPLICATION_RECEIVED)
    await bundled.feed(material, delivery=delivery)
    assert delivery.dispatched(A)


async def test_a_bundle_sent_to_review_leaves_its_files_as_they_were():
    delivery = await bundled.feed(bundled.received(A))
    outcome = await delivery.handle(*bundled.released(A, "REVIEW"))
    assert (outcome.state, outcome.emits) == (None, [])


async def test_a_file_learns_its_bundle_once_and_a_release_heard_again_changes_nothing():
    delivery = await bundled.feed(*bundled.accepted(A), *bundled.accepted(B), bundled.decision(A, "APPROVED"),
                                  bundled.decision(B, "APPROVED"))
    outcome = await delivery.handle(*bundled.released(A))
    assert (outcome.state, outcome.emits) == (None, [])


@pytest.mark.parametrize("heard", [bundled.verification_failed(B), bundled.unroutable(B)],
                         ids=["verification-failed", "rejected-on-review"])
async def test_a_settled_application_of_a_bundle_keeps_its_settlement_whatever_is_heard_later(heard):
    delivery = await bundled.feed(bundled.received(B), bundled.released(B), bundled.withdrawn(B))
    assert bundled.members_told(delivery)[B]["outcome"] == "WITHDRAWN"
    outcome = await delivery.handle(*heard)
    assert (outcome.state, outcome.emits) == (None, [])
    assert delivery.finished[B], "its work stays done"
