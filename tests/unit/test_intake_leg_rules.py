"""The joint-leg part of intake's progress view (多地联办), as Track and Watch show it: the
step each leg's change adds (which leg of how many, its step, who holds it, why), what a
leg's own events fill in and what they never rewrite, and the checks of Withdraw and
SupplementMaterials. Pure rules (services/intake/domain.py), no handlers."""

from datetime import UTC, datetime, timedelta

import pytest

from services.intake import domain

APP = "TBJOINTRULES"
T0 = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
LEGS = [{"partner_id": "440000", "division_code": "440103", "step": "CONTACT_LETTER", "working_days": 15},
        {"partner_id": "420000", "division_code": "420106", "step": "FUND_TRANSFER", "working_days": 15},
        {"partner_id": "440000", "division_code": "440103", "step": "COMPLETION", "working_days": 15}]
REASON = "转移资金不足"


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def received() -> dict:
    return domain.new_progress(APP, "KSTB-SOC-01", T0, "gd-portal", "portal")


def routed() -> dict:
    """Received, then routed as a joint matter of three legs; nothing assigned yet."""
    view = domain.advance(received(), APP, "ROUTED", at(1), "JOINT", deciding_partner="440000")
    return domain.joint_legs(view, domain.JOINT, LEGS)


def assigned() -> dict:
    """Routed and verified: leg 1 is assigned to its party."""
    return domain.first_leg_assigned(domain.advance(routed(), APP, "VERIFIED", at(2)), at(2))


def completed(n: int, minutes: int, partner: str, step: str, legs: int = 3) -> dict:
    return {"application_id": APP, "assignment_id": f"{APP}:{partner}:{n}", "partner_id": partner, "step": step,
            "leg": n, "legs": legs, "result_reference": f"REF-{n}", "completed_at": at(minutes)}


def failed(n: int, minutes: int, partner: str, step: str, undone: list[tuple[int, str]]) -> dict:
    return {"application_id": APP, "assignment_id": f"{APP}:{partner}:{n}", "partner_id": partner, "step": step,
            "leg": n, "legs": 3, "reason": REASON,
            "compensated": [{"assignment_id": f"{APP}:{p}:{k}", "partner_id": p, "step": "?"} for k, p in undone],
            "failed_at": at(minutes)}


def leg_steps(view: dict) -> list[tuple]:
    """The leg steps as Watch sends them: stage, leg, what it says, party, who is responsible."""
    return [(h["stage"], h["leg"], h["detail"], h["party"], h["responsible"]) for h in view["history"] if "leg" in h]


def shown(leg: dict) -> tuple:
    """A leg as Track shows it (absent fields are empty)."""
    return (leg["number"], leg.get("step", ""), leg.get("party", ""), leg.get("division", ""), leg["state"])


# ---------------------------------------------------------------- the step each leg's change adds

def test_an_assigned_legs_step_says_which_leg_of_how_many_its_step_and_that_its_party_holds_it():
    assert leg_steps(assigned()) == [
        ("LEG_ASSIGNED", 1, "leg 1 of 3 (CONTACT_LETTER)", "440000", "DECIDING_AUTHORITY:440000")]


def test_only_the_assigned_leg_has_someone_responsible_a_done_leg_names_its_party_but_no_one_acts():
    view = domain.leg_completed(assigned(), completed(1, 10, "440000", "CONTACT_LETTER"))
    assert leg_steps(view)[1:] == [
        ("LEG_COMPLETED", 1, "leg 1 of 3 (CONTACT_LETTER)", "440000", ""),
        ("LEG_ASSIGNED", 2, "leg 2 of 3 (FUND_TRANSFER)", "420000", "DECIDING_AUTHORITY:420000")]


def test_a_failed_legs_step_says_why_it_failed():
    view = domain.leg_completed(assigned(), completed(1, 10, "440000", "CONTACT_LETTER"))
    view = domain.leg_failed(view, failed(2, 20, "420000", "FUND_TRANSFER", [(1, "440000")]), REASON)
    assert leg_steps(view)[3] == ("LEG_FAILED", 2, f"leg 2 of 3 (FUND_TRANSFER): {REASON}", "420000", "")


def test_open_legs_ended_by_the_applications_end_say_why():
    view = domain.legs_ended(assigned(), at(5), "withdrawn by the applicant")
    assert [leg["detail"] for leg in view["legs"]] == ["withdrawn by the applicant"] * 3
    assert [step[2] for step in leg_steps(view)[1:]] == [
        "leg 1 of 3 (CONTACT_LETTER): withdrawn by the applicant",
        "leg 2 of 3 (FUND_TRANSFER): withdrawn by the applicant",
        "leg 3 of 3 (COMPLETION): withdrawn by the applicant"]


# ---------------------------------------------------------------- what is known of a leg

def test_a_view_that_starts_from_the_routing_assigns_leg_1_once_routed_and_verified():
    # The receipt was never read here (received elsewhere): routed and verified are enough.
    view = domain.joint_legs(domain.advance(None, APP, "ROUTED", at(1), "JOINT"), domain.JOINT, LEGS)
    view = domain.first_leg_assigned(domain.advance(view, APP, "VERIFIED", at(2)), at(2))
    assert [leg["state"] for leg in view["legs"]] == ["ASSIGNED", "WAITING", "WAITING"]


def test_what_is_not_known_of_a_leg_yet_is_shown_as_unknown_not_made_up():
    # Leg 1 is held (its party accepted) before anything said how many legs there are or what leg 1 is.
    view = domain.leg_reached(received(), 1, domain.ASSIGNED, at(3))
    assert shown(view["legs"][0]) == (1, "", "", "", "ASSIGNED")
    assert leg_steps(view) == [("LEG_ASSIGNED", 1, "leg 1 of ? (?)", "", "")]


def test_a_legs_own_event_fills_in_its_count_party_and_step_not_known_before():
    view = domain.leg_reached(received(), 1, domain.ASSIGNED, at(3))
    view = domain.leg_completed(view, completed(1, 10, "440000", "CONTACT_LETTER"))
    assert shown(view["legs"][0]) == (1, "CONTACT_LETTER", "440000", "", "COMPLETED")
    assert leg_steps(view)[1] == ("LEG_COMPLETED", 1, "leg 1 of 3 (CONTACT_LETTER)", "440000", "")


def test_a_legs_party_and_step_from_the_routing_stand_whichever_event_is_read_first():
    # A completion that names leg 2 differently from the routing: the routing's plan is what Track shows.
    odd = completed(2, 20, "420100", "FUND_TRANSFER_OLD")
    first_routed = domain.leg_completed(domain.leg_completed(assigned(), completed(1, 10, "440000", "CONTACT_LETTER")),
                                        odd)
    first_completed = domain.joint_legs(domain.leg_completed(received(), odd), domain.JOINT, LEGS)
    assert shown(first_routed["legs"][1]) == (2, "FUND_TRANSFER", "420000", "420106", "COMPLETED")
    assert shown(first_completed["legs"][1]) == shown(first_routed["legs"][1])


def test_a_leg_completion_read_before_the_routing_already_says_which_leg_of_how_many_and_who_did_it():
    view = domain.leg_completed(received(), completed(1, 10, "440000", "CONTACT_LETTER"))
    assert [shown(leg) for leg in view["legs"]] == [(1, "CONTACT_LETTER", "440000", "", "COMPLETED"),
                                                   (2, "", "", "", "ASSIGNED")]
    assert leg_steps(view) == [("LEG_COMPLETED", 1, "leg 1 of 3 (CONTACT_LETTER)", "440000", ""),
                               ("LEG_ASSIGNED", 2, "leg 2 of 3 (?)", "", "")]


def test_a_leg_failure_read_before_the_routing_already_says_which_legs_of_how_many_failed_were_undone_and_never_run():
    view = domain.leg_failed(received(), failed(2, 20, "420000", "FUND_TRANSFER", [(1, "440000")]), REASON)
    assert leg_steps(view) == [("LEG_FAILED", 2, f"leg 2 of 3 (FUND_TRANSFER): {REASON}", "420000", ""),
                               ("LEG_CANCELLED", 1, "leg 1 of 3 (?): undone: leg 2 failed", "", ""),
                               ("LEG_CANCELLED", 3, "leg 3 of 3 (?): not run: leg 2 failed", "", "")]


# ---------------------------------------------------------------- completing and failing

def test_a_leg_completion_never_assigns_a_leg_beyond_the_last():
    view = assigned()
    for n, partner, step in ((1, "440000", "CONTACT_LETTER"), (2, "420000", "FUND_TRANSFER"),
                             (3, "440000", "COMPLETION")):
        view = domain.leg_completed(view, completed(n, 10 * n, partner, step))
    assert [(leg["number"], leg["state"]) for leg in view["legs"]] == [(1, "COMPLETED"), (2, "COMPLETED"),
                                                                      (3, "COMPLETED")]
    assert leg_steps(view)[-1][:2] == ("LEG_COMPLETED", 3)


def test_a_leg_completion_read_after_the_application_ended_assigns_no_next_leg():
    # Withdrawn before intake read the routing; delivery had completed leg 1 meanwhile.
    view = domain.advance(received(), APP, "WITHDRAWN", at(5), "withdrawn by the applicant")
    view = domain.leg_completed(view, completed(1, 4, "440000", "CONTACT_LETTER"))
    assert [(leg["number"], leg["state"]) for leg in view["legs"]] == [(1, "COMPLETED")]
    assert [step[:2] for step in leg_steps(view)] == [("LEG_COMPLETED", 1)]


def test_the_legs_after_a_failed_leg_are_cancelled_at_the_time_it_failed():
    view = domain.leg_failed(assigned(), failed(1, 20, "440000", "CONTACT_LETTER", []), REASON)
    later = view["legs"][1:]
    assert [leg["cancelled_at"] for leg in later] == [at(20), at(20)]
    assert [h["at"] for h in view["history"] if h["stage"] == "LEG_CANCELLED"] == [at(20), at(20)]


def test_the_first_leg_failing_cancels_only_the_legs_after_it():
    view = domain.leg_failed(assigned(), failed(1, 20, "440000", "CONTACT_LETTER", []), REASON)
    assert [(leg["number"], leg["state"]) for leg in view["legs"]] == [(1, "FAILED"), (2, "CANCELLED"),
                                                                      (3, "CANCELLED")]


# ---------------------------------------------------------------- Watch, Withdraw, SupplementMaterials

def test_watch_of_a_view_recorded_before_steps_were_numbered_sends_the_steps_learned_since_numbered_from_1():
    legacy = {**received(), "history": [{"stage": "RECEIVED", "at": T0, "detail": ""}]}  # no "sequence"
    view = domain.leg_reached(legacy, 1, domain.ASSIGNED, at(3))
    assert [(h["stage"], h["sequence"]) for h in domain.steps_after(view, 0)] == [("LEG_ASSIGNED", 1)]


@pytest.mark.parametrize("stage", ["DECIDED", "DELIVERED"])
def test_a_withdrawal_once_decided_is_refused_with_the_exact_words_the_applicant_reads(stage):
    view = {**received(), "stage": stage}
    with pytest.raises(domain.InvalidSubmission) as refused:
        domain.check_withdrawal(view)
    assert refused.value.problems == [
        f"application: cannot be withdrawn at stage {stage} (撤回 is possible until the decision)"]


def test_a_supplement_listing_no_material_is_refused_with_the_exact_words_the_applicant_reads():
    view = {**received(), "stage": "SUPPLEMENT_REQUESTED"}
    with pytest.raises(domain.InvalidSubmission) as refused:
        domain.check_supplement(view, ())
    assert refused.value.problems == ["materials: at least one must be listed"]
