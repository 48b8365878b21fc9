"""Intake's formal check and the applicant's progress view."""

from datetime import UTC, datetime, timedelta

import pytest

from services.intake.domain import (
    InvalidSubmission,
    Submission,
    advance,
    application_id_for,
    check_rating,
    check_submission,
    new_progress,
)

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def submission(**changes) -> Submission:
    fields = dict(matter_code="KSTB-MED-01", channel="PORTAL", receiving_division="430102",
                  home_division="420106", applicant_kind="PERSON", applicant_name="示例",
                  applicant_id_number="420106198506123417", materials=("RESIDENT_ID",),
                  delivery_method="ELECTRONIC", postal_address=None)
    return Submission(**{**fields, **changes})


def test_a_complete_submission_passes():
    check_submission(submission())
    check_submission(submission(receiving_division="433101001001"))  # 12-digit township window


def test_every_problem_is_reported_at_once_and_names_fields_not_values():
    with pytest.raises(InvalidSubmission) as problems:
        check_submission(submission(channel="FAX", home_division="42", applicant_name=" ", materials=(),
                                    delivery_method="POST", applicant_id_number="secret-123"))
    text = str(problems.value)
    assert len(problems.value.problems) == 5
    for field in ("channel", "home_division", "applicant.name", "material", "postal_address"):
        assert field in text
    assert "secret-123" not in text


def test_the_same_client_reference_is_the_same_application():
    assert application_id_for("portal", "ref-1") == application_id_for("portal", "ref-1")
    assert application_id_for("portal", "ref-1") != application_id_for("window", "ref-1")
    assert application_id_for("portal", "ref-1").startswith("TB")


def test_the_view_only_moves_forward_and_terminal_is_final():
    view = new_progress("TB1", "KSTB-MED-01", T0)
    view = advance(view, "TB1", "DECIDED", T0 + timedelta(minutes=3))
    view = advance(view, "TB1", "VERIFIED", T0 + timedelta(minutes=1))  # arrived late from its topic
    assert view["stage"] == "DECIDED"
    view = advance(view, "TB1", "DELIVERED", T0 + timedelta(minutes=4), "POST", tracking_number="EMS1")
    view = advance(view, "TB1", "REJECTED", T0 + timedelta(minutes=5))
    assert (view["stage"], view["terminal"], view["tracking_number"]) == ("DELIVERED", True, "EMS1")
    assert [h["stage"] for h in view["history"]] == ["RECEIVED", "DECIDED", "VERIFIED", "DELIVERED", "REJECTED"]


def test_a_view_can_start_from_a_later_event():
    view = advance(None, "TB2", "ROUTED", T0, "FULLY_ONLINE", deciding_partner="420000")
    assert (view["application_id"], view["stage"], view["deciding_partner"]) == ("TB2", "ROUTED", "420000")


def test_ratings_need_a_concluded_application_and_a_valid_level():
    concluded = advance(new_progress("TB3", "KSTB-MED-01", T0), "TB3", "DELIVERED", T0)
    check_rating(concluded, 5, "ONLINE")
    with pytest.raises(InvalidSubmission, match="concluded"):
        check_rating(new_progress("TB3", "KSTB-MED-01", T0), 1, "ONLINE")
    with pytest.raises(InvalidSubmission, match="level"):
        check_rating(concluded, 6, "ONLINE")
    with pytest.raises(InvalidSubmission, match="channel"):
        check_rating(concluded, 1, "EMAIL")
