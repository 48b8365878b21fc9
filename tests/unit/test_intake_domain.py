"""Intake's formal check and the applicant's progress view."""

from datetime import UTC, datetime, timedelta

import pytest

from services.intake import domain
from services.intake.domain import (
    MAX_MATERIALS,
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
                  applicant_id_number="420106198506123410", materials=("RESIDENT_ID",),
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
    assert len(problems.value.problems) == 6
    for field in ("channel", "home_division", "applicant.name", "applicant.id_number", "material", "postal_address"):
        assert field in text
    assert "secret-123" not in text


# field as the API names it, Submission attribute, limit
STRING_LIMITS = [
    ("client_reference", "client_reference", domain.MAX_REFERENCE_LENGTH),
    ("source_system", "source_system", domain.MAX_REFERENCE_LENGTH),
    ("matter_code", "matter_code", domain.MAX_CODE_LENGTH),
    ("applicant.name", "applicant_name", domain.MAX_NAME_LENGTH),
    ("applicant.id_number", "applicant_id_number", domain.MAX_ID_NUMBER_LENGTH),
    ("applicant.phone", "applicant_phone", domain.MAX_PHONE_LENGTH),
    ("postal_address", "postal_address", domain.MAX_ADDRESS_LENGTH),
]


def test_the_limits_are_the_agreed_ones():
    assert (MAX_MATERIALS, domain.MAX_CODE_LENGTH, domain.MAX_NAME_LENGTH, domain.MAX_ID_NUMBER_LENGTH,
            domain.MAX_PHONE_LENGTH, domain.MAX_ADDRESS_LENGTH, domain.MAX_REFERENCE_LENGTH,
            domain.MAX_COMMENT_LENGTH) == (50, 64, 200, 32, 32, 500, 128, 500)


def test_a_submission_exactly_at_every_limit_passes():
    # The ID number has its own form (GB 11643), checked on its own.
    at_limit = {attribute: "办" * limit for _, attribute, limit in STRING_LIMITS if attribute != "applicant_id_number"}
    check_submission(submission(**at_limit, materials=tuple("M" * domain.MAX_CODE_LENGTH for _ in range(MAX_MATERIALS)),
                                material_names=tuple("材" * domain.MAX_NAME_LENGTH for _ in range(MAX_MATERIALS))))


@pytest.mark.parametrize(("field", "attribute", "limit"), STRING_LIMITS)
def test_a_string_over_its_limit_is_refused_naming_the_field_and_the_limit(field, attribute, limit):
    value = "秘" * (limit + 1)
    with pytest.raises(InvalidSubmission) as problems:
        check_submission(submission(**{attribute: value}))
    assert problems.value.problems == [f"{field}: at most {limit} characters (got {limit + 1})"]
    assert "秘" not in str(problems.value)


def test_too_many_materials_are_refused_with_the_count():
    with pytest.raises(InvalidSubmission) as problems:
        check_submission(submission(materials=("RESIDENT_ID",) * 100_000))
    assert problems.value.problems == ["materials: at most 50 items (got 100000)"]


def test_a_material_code_or_name_over_its_limit_names_the_item():
    codes = ("RESIDENT_ID", "C" * 65, "HOUSEHOLD")
    names = ("居民身份证", "户口簿", "名" * 201)
    with pytest.raises(InvalidSubmission) as problems:
        check_submission(submission(materials=codes, material_names=names))
    assert problems.value.problems == ["materials[1].code: at most 64 characters (got 65)",
                                       "materials[2].name: at most 200 characters (got 201)"]


def test_a_flood_of_oversized_input_gives_a_short_answer():
    """The problems go back as one gRPC status message: it stays small whatever comes in."""
    flood = "x" * 1_000_000
    with pytest.raises(InvalidSubmission) as problems:
        check_submission(submission(**{attribute: flood for _, attribute, _ in STRING_LIMITS},
                                    channel=flood, delivery_method=flood, applicant_kind=flood,
                                    receiving_division=flood, home_division=flood,
                                    materials=(flood,) * 10_000, material_names=(flood,) * 10_000))
    text = str(problems.value)
    assert len(text) < 2000
    assert "materials[0].code: at most 64 characters (got 1000000; 9999 more too long)" in text
    assert "materials: at most 50 items (got 10000)" in text


def test_the_new_fields_are_optional_for_callers_that_do_not_send_them():
    check_submission(submission())  # no material_names, phone, client_reference or source_system
    assert submission().material_names == ()


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


def test_a_rating_comment_is_bounded():
    concluded = advance(new_progress("TB4", "KSTB-MED-01", T0), "TB4", "DELIVERED", T0)
    check_rating(concluded, 1, "ONLINE", "办" * domain.MAX_COMMENT_LENGTH)
    check_rating(concluded, 1, "ONLINE", None)
    with pytest.raises(InvalidSubmission) as problems:
        check_rating(concluded, 1, "ONLINE", "差" * 501)
    assert problems.value.problems == ["comment: at most 500 characters (got 501)"]


# ---------------------------------------------------------------------------- sealed-looking input
SEALED = "pii:v2:aes256gcm:tongban.application.ApplicationReceived:applicant.id_number:TBX:intake.k1.AAAA:BBBB"


@pytest.mark.parametrize(("changes", "field"), [
    ({"applicant_id_number": SEALED}, "applicant.id_number"),
    ({"applicant_name": "pii:v1:k1:AAAA"}, "applicant.name"),
    ({"applicant_phone": "  PII:V2:whatever"}, "applicant.phone"),
    ({"postal_address": SEALED, "delivery_method": "POST"}, "postal_address"),
    ({"material_names": ("居民身份证", SEALED), "materials": ("RESIDENT_ID", "PHOTO")}, "materials[1].name"),
    ({"materials": (SEALED,)}, "materials[0].code"),
    ({"client_reference": SEALED}, "client_reference"),
])
def test_input_that_already_looks_sealed_is_refused_naming_the_field_not_the_value(changes, field):
    with pytest.raises(InvalidSubmission) as refused:
        check_submission(submission(**changes))
    assert f"{field}: looks sealed (starts with pii:v)" in str(refused.value)
    assert "AAAA" not in str(refused.value)
    assert "whatever" not in str(refused.value)


def test_text_that_merely_mentions_the_prefix_is_not_refused():
    check_submission(submission(material_names=("见 pii:v2 说明",), materials=("RESIDENT_ID",)))


def test_a_rating_comment_that_looks_sealed_is_refused():
    progress = {**new_progress("TB1", "KSTB-MED-01", T0), "stage": "DELIVERED"}
    with pytest.raises(InvalidSubmission, match="comment: looks sealed"):
        check_rating(progress, 1, "ONLINE", "pii:v2:x")


def test_commitments_and_deferred_materials_are_bounded_and_never_echoed():
    long_code = "秘" * (domain.MAX_CODE_LENGTH + 1)
    with pytest.raises(InvalidSubmission) as problems:
        check_submission(submission(commitments=(long_code,), deferred_materials={long_code: "soon"}))
    assert problems.value.problems == [
        f"commitments[0].code: at most {domain.MAX_CODE_LENGTH} characters (got {domain.MAX_CODE_LENGTH + 1})",
        f"deferred_materials[0].code: at most {domain.MAX_CODE_LENGTH} characters (got {domain.MAX_CODE_LENGTH + 1})"]
    with pytest.raises(InvalidSubmission) as sealed:
        check_submission(submission(commitments=("pii:v2:x",)))
    assert sealed.value.problems == [f"commitments[0]: {domain.SEALED_INPUT}"]
