"""The acceptance lifecycle through delivery's real handlers (issue 10): decision order, the
补正 round trip and its deadline, 不予受理 with its remedy, 容缺 and withdrawal, the
authority's clock. Plain functions of (event, state), no broker."""

from datetime import UTC, datetime, timedelta

import pytest

from services.delivery import acceptance as rules
from services.delivery import handlers
from sim.partners import REFUSAL, Answers, authority
from tests.pii_parties import cipher, seal
from tests.unit.test_delivery_rules import (
    APP,
    ASSIGNED,
    ASSIGNMENT_ID,
    CIPHER,
    REGISTRY,
    ROUTED_STEP,
    T0,
    VERIFIED_STEP,
    acceptance,
    decision,
    event,
    feed,
    received,
    run,
)
from tongban.handling import Event, Rejected

ACCEPTANCE, DECISION = "tongban.partner.AuthorityAcceptance", "tongban.partner.AuthorityDecision"
WITHDRAWN, SUPPLEMENTED = "tongban.application.ApplicationWithdrawn", "tongban.application.SupplementSubmitted"
DECISIONS = "tongban.partner.440000.decisions"
ASSIGNMENTS = "tongban.partner.440000.assignments"
MISSING = {"PREMISES_PROOF": "住所证明未盖章", "ARTICLES": "公司章程缺签字页"}
PERIOD = rules.SUPPLEMENT_PERIOD


def supplement_required(missing: dict | None = None, reason: str | None = "请补正") -> tuple:
    step = acceptance("SUPPLEMENT_REQUIRED", reason=reason)
    return step[0], {**step[1], "missing_materials": MISSING if missing is None else missing}, step[2]


def refused(reason: str | None = "不属于本机关职权范围", remedy: str = "向有权机关申请") -> tuple:
    step = acceptance("REFUSED", reason=reason)
    return step[0], {**step[1], "remedy": remedy}, step[2]


def withdrawn() -> tuple:
    return WITHDRAWN, {"application_id": APP, "reason": "不再需要", "withdrawn_at": T0}, "tongban.application.received"


def supplemented(*codes: str) -> tuple:
    return SUPPLEMENTED, {"application_id": APP, "materials": list(codes), "submitted_at": T0}, \
        "tongban.application.received"


def clock_change(kind: str = "EXTENDED", working_days: int = 10, reason: str = "需要专家评审") -> tuple:
    return "tongban.partner.AuthorityClockChange", {
        "assignment_id": ASSIGNMENT_ID, "application_id": APP, "kind": kind, "working_days": working_days,
        "reason": reason, "changed_at": T0}, DECISIONS


def timer(name: str, payload: dict | None = None) -> Event:
    return Event(f"timer:{APP}:{name}", "tongban.runtime.TimerFired", APP,
                 {"timer_id": f"{APP}:{name}", "name": name, "payload": payload}, {"correlation_id": APP}, "timer")


def types(outcome) -> list[tuple[str, str]]:
    return [(e.topic, e.event_type) for e in outcome.emits]


# ---------------------------------------------------------------------------- decision order

async def test_no_decision_before_acceptance():
    with pytest.raises(Rejected, match=r"^the authority has not accepted this application; it cannot decide it yet$"):
        await feed(*ASSIGNED, decision("APPROVED"))


async def test_no_decision_while_the_application_waits_for_a_supplement():
    with pytest.raises(Rejected, match="has not accepted this application"):
        await feed(*ASSIGNED, supplement_required(), decision("APPROVED"))


async def test_no_decision_after_non_acceptance():
    state, _ = await feed(*ASSIGNED, refused())
    with pytest.raises(Rejected, match=r"^the authority refused to accept this application; it cannot decide it$"):
        await run(DECISION)(event(*decision("APPROVED")), state)


async def test_no_decision_after_withdrawal():
    state, _ = await feed(*ASSIGNED, acceptance(), withdrawn())
    with pytest.raises(Rejected, match=r"^the applicant withdrew this application; it cannot be decided$"):
        await run(DECISION)(event(*decision("DENIED")), state)


@pytest.mark.parametrize("outcome", ["approved", "Denied", "REJECTED", ""])
async def test_a_decision_outcome_outside_the_declared_set_is_dead_lettered_by_name(outcome):
    state, _ = await feed(*ASSIGNED, acceptance())
    step = decision("APPROVED")
    with pytest.raises(Rejected, match=rf"^decision outcome '{outcome}' is not one of APPROVED, DENIED$"):
        await run(DECISION)(event(step[0], {**step[1], "outcome": outcome}, step[2]), state)
    assert "decision" not in state, "a lower-case approval is neither an approval nor a denial"


@pytest.mark.parametrize("outcome", ["accepted", "SUPPLEMENT", "NOT_ACCEPTED"])
async def test_an_acceptance_outcome_outside_the_declared_set_is_dead_lettered_by_name(outcome):
    with pytest.raises(Rejected, match=rf"^acceptance outcome '{outcome}' is not one of ACCEPTED, "
                                       r"SUPPLEMENT_REQUIRED, REFUSED$"):
        await feed(*ASSIGNED, acceptance(outcome))


async def test_an_outcome_quoting_the_applicant_is_scrubbed_from_the_dead_letter_reason():
    with pytest.raises(Rejected) as rejected:
        await feed(*ASSIGNED, acceptance("示例 13800000000"))
    assert "示例" not in str(rejected.value)
    assert "13800000000" not in str(rejected.value)


async def test_the_authority_answers_once():
    state, _ = await feed(*ASSIGNED, acceptance())
    for again in (acceptance(), refused(), supplement_required()):
        with pytest.raises(Rejected, match=r"^the authority already accepted this application$"):
            await run(ACCEPTANCE)(event(*again), state)


# ---------------------------------------------------------------------------- 补正

async def test_a_supplement_notice_lists_everything_missing_pauses_and_sets_the_deadline():
    state, outcomes = await feed(*ASSIGNED, supplement_required())
    [notice] = outcomes[-1].emits
    assert (notice.topic, notice.event_type) == ("tongban.application.accepted",
                                                 "tongban.application.SupplementRequested")
    assert notice.payload == {"application_id": APP, "deciding_partner": "440000", "cause": "AUTHORITY",
                              "missing_materials": {"ARTICLES": "公司章程缺签字页", "PREMISES_PROOF": "住所证明未盖章"},
                              "requested_at": T0, "supplement_by": T0 + PERIOD}
    assert [(t.name, t.due_at) for t in outcomes[-1].timers] == [("supplement-deadline", T0 + PERIOD)]
    assert rules.stage(state) is rules.Stage.SUPPLEMENTING
    assert outcomes[-1].finished is False


async def test_the_supplement_period_is_configurable():
    step = supplement_required()
    state, _ = await feed(*ASSIGNED)
    outcome = await handlers.make_handlers(CIPHER, REGISTRY, supplement_period=timedelta(seconds=20))[ACCEPTANCE](
        event(*step), state)
    assert outcome.emits[0].payload["supplement_by"] == T0 + timedelta(seconds=20)


async def test_a_supplement_notice_without_a_list_is_dead_lettered():
    with pytest.raises(Rejected, match=r"^a 补正 notice must list every missing material$"):
        await feed(*ASSIGNED, supplement_required(missing={}))


async def test_the_missing_materials_reasons_are_scrubbed_of_the_applicant():
    _, outcomes = await feed(*ASSIGNED, supplement_required(missing={"ID": "示例的身份证 430102199003071234 模糊"}))
    assert outcomes[-1].emits[0].payload["missing_materials"] == {"ID": "[NAME]的身份证 [NAME] 模糊"}


async def test_the_file_goes_back_to_the_authority_once_every_listed_material_is_supplemented():
    state, outcomes = await feed(*ASSIGNED, supplement_required(), supplemented("ARTICLES"))
    assert outcomes[-1].emits == [], "half a supplement does not go back"
    assert rules.stage(state) is rules.Stage.SUPPLEMENTING
    state, outcomes = await feed(*ASSIGNED, supplement_required(), supplemented("ARTICLES"),
                                 supplemented("PREMISES_PROOF"))
    body = {"application_id": APP, "assignment_id": ASSIGNMENT_ID, "deciding_partner": "440000",
            "materials": ["ARTICLES", "PREMISES_PROOF"], "supplemented_at": T0}
    assert [(e.topic, e.event_type, e.payload) for e in outcomes[-1].emits] == [
        ("tongban.application.accepted", "tongban.application.MaterialsSupplemented", body),
        (ASSIGNMENTS, "tongban.application.MaterialsSupplemented", body)]
    assert outcomes[-1].cancel_timers == ["supplement-deadline"]
    assert rules.stage(state) is rules.Stage.AWAITING


async def test_the_round_trip_ends_in_acceptance_decision_and_the_result_on_its_way():
    state, outcomes = await feed(*ASSIGNED, supplement_required(), supplemented("ARTICLES", "PREMISES_PROOF"),
                                 acceptance(), decision("APPROVED"))
    assert [e.event_type.rsplit(".", 1)[1] for o in outcomes[3:] for e in o.emits][:5] == [
        "SupplementRequested", "MaterialsSupplemented", "MaterialsSupplemented", "ApplicationAccepted",
        "ApplicationDecided"]
    assert "dispatch_id" in state, "the result goes out by its channel"


async def test_only_one_supplement_notice_everything_missing_listed_at_once():
    with pytest.raises(Rejected, match="already sent its 补正 notice"):
        await feed(*ASSIGNED, supplement_required(), supplemented(*MISSING), supplement_required())


async def test_the_authority_does_not_answer_while_the_applicant_supplements():
    with pytest.raises(Rejected, match="waits for the applicant's supplement"):
        await feed(*ASSIGNED, supplement_required(), acceptance())


async def test_a_missed_supplement_deadline_closes_the_application_and_cancels_the_authoritys_work():
    state, _ = await feed(*ASSIGNED, supplement_required())
    outcome = await run(rules.SUPPLEMENT_DEADLINE)(timer(rules.SUPPLEMENT_DEADLINE), state)
    cancelled, closed = outcome.emits
    assert (cancelled.topic, cancelled.event_type) == (ASSIGNMENTS, "tongban.partner.AssignmentCancelled")
    assert cancelled.payload["assignment_id"] == ASSIGNMENT_ID
    assert (closed.topic, closed.event_type) == ("tongban.application.accepted",
                                                 "tongban.application.ApplicationClosed")
    assert closed.payload == {"application_id": APP, "status": "SUPPLEMENT_EXPIRED", "closed_at": T0 + PERIOD,
                              "reason": f"the materials asked for were not supplemented by {(T0 + PERIOD).isoformat()}"}
    assert outcome.finished is True
    assert "applicant" not in outcome.state["received"]
    with pytest.raises(Rejected, match="closed when its deadline for supplementing passed"):
        await run(ACCEPTANCE)(event(*acceptance()), outcome.state)


async def test_a_deadline_that_fires_after_the_supplement_changes_nothing():
    state, _ = await feed(*ASSIGNED, supplement_required(), supplemented(*MISSING))
    outcome = await run(rules.SUPPLEMENT_DEADLINE)(timer(rules.SUPPLEMENT_DEADLINE), state)
    assert outcome.emits == []
    assert outcome.state is None
    assert not outcome.finished


async def test_a_supplement_after_the_application_ended_is_dead_lettered_even_for_a_deferred_material():
    state, _ = await feed(received(deferred_materials={"PREMISES_PROOF": "2026-11-20"}), ROUTED_STEP, VERIFIED_STEP,
                          withdrawn())
    with pytest.raises(Rejected, match=r"^the applicant withdrew this application; it takes no supplement$"):
        await run(SUPPLEMENTED)(event(*supplemented("PREMISES_PROOF")), state)


async def test_a_supplement_nobody_asked_for_is_dead_lettered_after_hand_over_and_ignored_before():
    with pytest.raises(Rejected, match=r"^no supplement was asked for this application \(it is ACCEPTED\)$"):
        await feed(*ASSIGNED, acceptance(), supplemented("ARTICLES"))
    _, outcomes = await feed(received(), supplemented("ARTICLES"))
    assert outcomes[-1].emits == []


# ---------------------------------------------------------------------------- 不予受理

async def test_non_acceptance_is_served_with_reason_and_remedy_and_ends_the_work():
    state, outcomes = await feed(*ASSIGNED, refused())
    [emit] = outcomes[-1].emits
    assert (emit.topic, emit.event_type) == ("tongban.application.accepted", "tongban.application.ApplicationRefused")
    assert emit.payload == {"application_id": APP, "deciding_partner": "440000", "reason": "不属于本机关职权范围",
                            "remedy": "向有权机关申请"}
    assert outcomes[-1].finished is True
    assert rules.stage(state) is rules.Stage.NOT_ACCEPTED


async def test_a_remedy_quoting_the_applicant_is_scrubbed():
    _, outcomes = await feed(*ASSIGNED, refused(remedy="请示例致电13800000000"))
    assert outcomes[-1].emits[0].payload["remedy"] == "请[NAME]致电[NAME]"


# ---------------------------------------------------------------------------- withdrawal

async def test_withdrawal_before_the_decision_cancels_the_partners_work_and_closes():
    _, outcomes = await feed(*ASSIGNED, acceptance(), withdrawn())
    cancelled, closed = outcomes[-1].emits
    assert (cancelled.topic, cancelled.event_type) == (ASSIGNMENTS, "tongban.partner.AssignmentCancelled")
    assert cancelled.payload == {"assignment_id": ASSIGNMENT_ID, "application_id": APP,
                                 "reason": "withdrawn by the applicant before the decision", "cancelled_at": T0}
    assert closed.payload == {"application_id": APP, "status": "WITHDRAWN", "closed_at": T0,
                              "reason": "withdrawn by the applicant before the decision"}
    assert outcomes[-1].finished is True
    assert set(outcomes[-1].cancel_timers) == {"supplement-deadline", "deferred-promise"}
    assert "不再需要" not in repr(outcomes[-1].emits), "the applicant's words stay with intake"


async def test_withdrawal_while_supplementing_cancels_the_deadline_too():
    _, outcomes = await feed(*ASSIGNED, supplement_required(), withdrawn())
    assert [e.event_type for e in outcomes[-1].emits] == ["tongban.partner.AssignmentCancelled",
                                                         "tongban.application.ApplicationClosed"]
    assert "supplement-deadline" in outcomes[-1].cancel_timers


async def test_withdrawal_before_hand_over_closes_and_nothing_is_assigned_later():
    state, outcomes = await feed(received(), withdrawn(), ROUTED_STEP, VERIFIED_STEP)
    assert [e.event_type for e in outcomes[1].emits] == ["tongban.application.ApplicationClosed"]
    assert [e for o in outcomes[2:] for e in o.emits] == []
    assert "assignment" not in state


async def test_the_authority_answers_nothing_more_once_the_application_is_withdrawn():
    state, _ = await feed(*ASSIGNED, withdrawn())
    with pytest.raises(Rejected, match=r"^the applicant withdrew this application; it takes no acceptance answer$"):
        await run(ACCEPTANCE)(event(*acceptance()), state)
    with pytest.raises(Rejected, match="cannot change while this application is WITHDRAWN"):
        await run("tongban.partner.AuthorityClockChange")(event(*clock_change()), state)


async def test_withdrawal_after_the_decision_is_refused_with_the_reason():
    state, _ = await feed(*ASSIGNED, acceptance(), decision("APPROVED"))
    with pytest.raises(Rejected, match=r"^the authority already decided this application; it can no longer be "
                                       r"withdrawn$"):
        await run(WITHDRAWN)(event(*withdrawn()), state)


# ---------------------------------------------------------------------------- the authority's clock

@pytest.mark.parametrize(("kind", "days"), [("EXTENDED", 10), ("EXCLUSION_STARTED", 0), ("EXCLUSION_ENDED", 0)])
async def test_clock_changes_are_relayed_for_the_sla_ledger(kind, days):
    _, outcomes = await feed(*ASSIGNED, acceptance(), clock_change(kind, days))
    [emit] = outcomes[-1].emits
    assert (emit.topic, emit.event_type) == ("tongban.application.accepted",
                                             "tongban.application.ApplicationClockChanged")
    assert emit.payload == {"application_id": APP, "deciding_partner": "440000", "kind": kind, "working_days": days,
                            "reason": "需要专家评审", "changed_at": T0}
    assert outcomes[-1].state is None, "the file itself does not change"


@pytest.mark.parametrize(("change", "reason"), [
    (clock_change("extended"), r"^clock change 'extended' is not one of EXTENDED, EXCLUSION_STARTED, EXCLUSION_ENDED$"),
    (clock_change("EXTENDED", 0), r"^an extension must add working days$"),
])
async def test_a_malformed_clock_change_is_dead_lettered(change, reason):
    with pytest.raises(Rejected, match=reason):
        await feed(*ASSIGNED, acceptance(), change)


async def test_no_clock_change_after_the_decision_or_from_another_partner():
    with pytest.raises(Rejected, match="cannot change while this application is DECIDED"):
        await feed(*ASSIGNED, acceptance(), decision("DENIED"), clock_change())
    other = clock_change()
    with pytest.raises(Rejected, match="not the assigned authority"):
        await feed(*ASSIGNED, acceptance(), (other[0], other[1], "tongban.partner.420000.decisions"))


# ---------------------------------------------------------------------------- 容缺

DEFERRED = {"PREMISES_PROOF": "2026-11-20"}
PROMISE_ENDS = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)  # 2026-11-21 00:00 in China


def with_deferred() -> tuple:
    return received(deferred_materials=DEFERRED), ROUTED_STEP, VERIFIED_STEP


async def test_deferred_materials_do_not_stop_acceptance_and_their_promise_is_watched():
    state, outcomes = await feed(*with_deferred(), acceptance())
    assert [(t.name, t.due_at) for t in outcomes[0].timers] == [("deferred-promise", PROMISE_ENDS)]
    assert state["deferred"] == DEFERRED
    assert outcomes[-1].emits[0].event_type == "tongban.application.ApplicationAccepted"
    assert rules.result_may_go_out(state) is False


async def test_the_result_waits_for_the_deferred_material_and_goes_out_when_it_arrives():
    state, outcomes = await feed(*with_deferred(), acceptance(), decision("APPROVED"))
    assert [e.event_type for e in outcomes[-1].emits] == ["tongban.application.ApplicationDecided"]
    assert outcomes[-1].finished is False
    assert "dispatch_id" not in state
    state, outcomes = await feed(*with_deferred(), acceptance(), decision("APPROVED"),
                                 supplemented("PREMISES_PROOF"))
    assert [(e.topic, e.event_type) for e in outcomes[-1].emits][:2] == [
        ("tongban.application.accepted", "tongban.application.MaterialsSupplemented"),
        (ASSIGNMENTS, "tongban.application.MaterialsSupplemented")]
    assert "tongban.delivery.PostalDispatch" in [e.event_type for e in outcomes[-1].emits], "the result goes out"
    assert "dispatch_id" in state
    assert state["deferred"] == {}
    assert outcomes[-1].cancel_timers == ["deferred-promise"]


async def test_a_missed_promise_asks_for_the_material_and_the_result_keeps_waiting():
    state, _ = await feed(*with_deferred(), acceptance())
    outcome = await run(rules.DEFERRED_PROMISE)(timer(rules.DEFERRED_PROMISE, {"due_at": PROMISE_ENDS.isoformat()}),
                                                state)
    [notice] = outcome.emits
    assert notice.event_type == "tongban.application.SupplementRequested"
    assert notice.payload["cause"] == "DEFERRED_PROMISE_MISSED"
    assert notice.payload["missing_materials"] == {"PREMISES_PROOF": "容缺: promised by 2026-11-20"}
    assert notice.payload["supplement_by"] == PROMISE_ENDS + PERIOD
    assert outcome.state is None
    assert not outcome.finished


def test_a_promise_holds_until_the_promised_day_ends_in_china():
    assert rules.promise_deadline("2026-11-20") == PROMISE_ENDS
    assert rules.overdue(DEFERRED, PROMISE_ENDS - timedelta(seconds=1)) == {}
    assert rules.overdue(DEFERRED, PROMISE_ENDS) == DEFERRED
    assert rules.next_promise({"A": "2026-11-20", "B": "2026-11-25"}, T0) == PROMISE_ENDS
    assert rules.next_promise(DEFERRED, PROMISE_ENDS) is None


# ---------------------------------------------------------------------------- the stage table

@pytest.mark.parametrize(("file", "expected"), [
    ({}, rules.Stage.UNASSIGNED),
    ({"assignment": {}}, rules.Stage.AWAITING),
    ({"assignment": {}, "supplement": {"returned": False}}, rules.Stage.SUPPLEMENTING),
    ({"assignment": {}, "supplement": {"returned": True}}, rules.Stage.AWAITING),
    ({"assignment": {}, "acceptance": "ACCEPTED"}, rules.Stage.ACCEPTED),
    ({"assignment": {}, "acceptance": "REFUSED"}, rules.Stage.NOT_ACCEPTED),
    ({"assignment": {}, "acceptance": "ACCEPTED", "decision": "DENIED"}, rules.Stage.DECIDED),
    ({"assignment": {}, "acceptance": "ACCEPTED", "closed": "WITHDRAWN"}, rules.Stage.WITHDRAWN),
    ({"assignment": {}, "closed": "SUPPLEMENT_EXPIRED"}, rules.Stage.SUPPLEMENT_EXPIRED),
])
def test_the_stage_of_a_file(file, expected):
    assert rules.stage(file) is expected


# ---------------------------------------------------------------------------- 告知承诺

CHECK_AFTER = rules.COMMITMENT_CHECK_AFTER
COMMITTED = (received(commitments=["PREMISES_PROOF"]), ROUTED_STEP, VERIFIED_STEP)


def check_result(passed: bool, partner: str = "440000") -> tuple:
    return "tongban.partner.CommitmentCheckResult", {
        "assignment_id": ASSIGNMENT_ID, "application_id": APP, "passed": passed,
        "failed_commitments": {} if passed else {"PREMISES_PROOF": "住所与示例承诺不符"},
        "reason": "" if passed else "核查发现承诺不实", "checked_at": T0 + CHECK_AFTER}, \
        f"tongban.partner.{partner}.decisions"


async def checked() -> dict:
    """An approval under 告知承诺 whose check fell due and was asked of the authority."""
    state, _ = await feed(*COMMITTED, acceptance(), decision("APPROVED"))
    outcome = await run(rules.COMMITMENT_CHECK)(timer(rules.COMMITMENT_CHECK), state)
    return outcome.state


async def test_an_approval_under_commitments_schedules_the_check():
    state, outcomes = await feed(*COMMITTED, acceptance(), decision("APPROVED"))
    assert [(t.name, t.due_at) for t in outcomes[-1].timers] == [("commitment-check", T0 + CHECK_AFTER)]
    assert state["commitments"] == ["PREMISES_PROOF"]
    _, outcomes = await feed(*ASSIGNED, acceptance(), decision("APPROVED"))
    assert outcomes[-1].timers == [], "nothing promised, nothing to check"
    _, outcomes = await feed(*COMMITTED, acceptance(), decision("DENIED"))
    assert outcomes[-1].timers == [], "a denial has no result to revoke"


async def test_the_due_check_is_asked_of_the_approving_authority():
    state, _ = await feed(*COMMITTED, acceptance(), decision("APPROVED"))
    outcome = await run(rules.COMMITMENT_CHECK)(timer(rules.COMMITMENT_CHECK), state)
    [asked] = outcome.emits
    assert (asked.topic, asked.event_type) == (ASSIGNMENTS, "tongban.partner.CommitmentCheckRequested")
    assert {k: v for k, v in asked.payload.items() if k != "requested_at"} == {
        "assignment_id": ASSIGNMENT_ID, "application_id": APP, "matter_code": "KSTB-MKT-01",
        "commitments": ["PREMISES_PROOF"]}
    assert outcome.state["commitment_check"] == "REQUESTED"
    again = await run(rules.COMMITMENT_CHECK)(timer(rules.COMMITMENT_CHECK), outcome.state)
    assert again.emits == [], "asked once"


async def test_a_failed_check_revokes_the_result_with_the_reason():
    outcome = await run("tongban.partner.CommitmentCheckResult")(event(*check_result(False)), await checked())
    [revoked] = outcome.emits
    assert (revoked.topic, revoked.event_type) == ("tongban.application.decided",
                                                   "tongban.application.ResultRevoked")
    assert revoked.payload == {"application_id": APP, "deciding_partner": "440000", "reason": "核查发现承诺不实",
                               "failed_commitments": {"PREMISES_PROOF": "住所与[NAME]承诺不符"},
                               "revoked_at": T0 + CHECK_AFTER}
    assert outcome.state["revoked"] is True


async def test_a_passed_check_revokes_nothing():
    outcome = await run("tongban.partner.CommitmentCheckResult")(event(*check_result(True)), await checked())
    assert outcome.emits == []
    assert outcome.state["commitment_check"] == "PASSED"


async def test_a_check_result_nobody_asked_for_or_from_another_partner_is_dead_lettered():
    state, _ = await feed(*COMMITTED, acceptance(), decision("APPROVED"))
    with pytest.raises(Rejected, match=r"^no 告知承诺 check of this application is awaited from the authority$"):
        await run("tongban.partner.CommitmentCheckResult")(event(*check_result(False)), state)
    with pytest.raises(Rejected, match="not the assigned authority"):
        await run("tongban.partner.CommitmentCheckResult")(event(*check_result(False, partner="420000")),
                                                           await checked())
    outcome = await run("tongban.partner.CommitmentCheckResult")(event(*check_result(False)), await checked())
    with pytest.raises(Rejected, match="no 告知承诺 check"):
        await run("tongban.partner.CommitmentCheckResult")(event(*check_result(False)), outcome.state)


# ---------------------------------------------------------------------------- the simulated authority

ASSIGNED_RECORD = {"assignment_id": ASSIGNMENT_ID, "application_id": APP, "matter_code": "KSTB-MKT-01",
                   "materials": [{"code": "APPLICATION_FORM"}, {"code": "ARTICLES"}],
                   "applicant": {"id_number": seal("430102199003071234", "tongban.partner.MatterAssigned",
                                                   "applicant.id_number", APP, ["440000"])}}


def answers_of(answers: Answers, event_type: str = "tongban.partner.MatterAssigned",
               record: dict | None = None) -> list[tuple[str, dict]]:
    replies = authority("440000", answers, cipher("440000"))(event_type, record or ASSIGNED_RECORD)
    assert {r.topic for r in replies} <= {DECISIONS}
    return [(r.event_type.rsplit(".", 1)[1], r.payload) for r in replies]


def test_the_simulated_authority_asks_for_a_supplement_then_accepts_and_decides_what_comes_back():
    [(kind, notice)] = answers_of(Answers(supplement_matters=frozenset({"KSTB-MKT-01"})))
    assert (kind, notice["outcome"], notice["missing_materials"]) == (
        "AuthorityAcceptance", "SUPPLEMENT_REQUIRED", {"ARTICLES": "复印件不清晰 (simulated)"})
    back = {"assignment_id": ASSIGNMENT_ID, "application_id": APP, "materials": ["ARTICLES"]}
    replies = answers_of(Answers(), "tongban.application.MaterialsSupplemented", back)
    assert [(k, p["outcome"]) for k, p in replies] == [("AuthorityAcceptance", "ACCEPTED"),
                                                        ("AuthorityDecision", "APPROVED")]


def test_the_simulated_authoritys_supplement_share_is_a_fixed_draw_per_assignment():
    assert answers_of(Answers(supplement_share=1.0))[0][1]["outcome"] == "SUPPLEMENT_REQUIRED"
    assert answers_of(Answers(supplement_share=0.0))[0][1]["outcome"] == "ACCEPTED"


def test_the_simulated_authority_does_not_accept_with_reason_and_remedy():
    [(_, refusal)] = answers_of(Answers(refuse_matters=frozenset({"KSTB-MKT-01"})))
    assert (refusal["outcome"], refusal["reason"], refusal["remedy"]) == ("REFUSED", *REFUSAL)


def test_the_simulated_authority_checks_commitments_and_stops_cancelled_work():
    asked = {"assignment_id": ASSIGNMENT_ID, "application_id": APP, "matter_code": "KSTB-MKT-01",
             "commitments": ["PREMISES_PROOF"]}
    [(kind, found)] = answers_of(Answers(broken_commitment_matters=frozenset({"KSTB-MKT-01"})),
                                 "tongban.partner.CommitmentCheckRequested", asked)
    assert (kind, found["passed"], list(found["failed_commitments"])) == (
        "CommitmentCheckResult", False, ["PREMISES_PROOF"])
    [(_, found)] = answers_of(Answers(), "tongban.partner.CommitmentCheckRequested", asked)
    assert found["passed"] is True
    assert answers_of(Answers(), "tongban.partner.AssignmentCancelled", {"assignment_id": ASSIGNMENT_ID}) == []
