"""Rules of intake's pure domain (services/intake/domain.py) that the fresh-clone mutation run
of 836805e found unguarded: the exact words of the formal and rating checks, the bounds at
their edges, the catalogue's material rules, sealed-looking input in the coded fields, what
Track shows of who holds an application and what comes next, notices, and the identifiers
kept across releases. One rule per test, over the real domain functions."""

import re
from datetime import timedelta

import pytest
from test_intake_api import Catalogue
from test_intake_domain_rules_more import decided
from test_intake_leg_rules import APP, T0, received
from test_intake_rules import problems, submission

from services.intake import domain

ONLINE_ONLY = "rated_role: RECEIVING rates the window that received; this application came in online"


def company(**changes) -> domain.Submission:
    """A company's application for the catalogue's one matter (KSTB-MKT-01): the application
    form and the articles are essential, the premises proof may follow, the articles may be
    replaced by a written commitment."""
    return submission(**{"matter_code": "KSTB-MKT-01", "applicant_kind": "COMPANY",
                         "materials": ("APPLICATION_FORM", "ARTICLES"), **changes})


def form_problems(sub: domain.Submission) -> list[str]:
    return domain.form_problems(sub, Catalogue(), None)


class WindowOnly:
    """A catalogue of one matter a person can only apply for at a window."""

    def matter(self, code: str) -> domain.MatterForm | None:
        return domain.MatterForm("PERSON", ("RECEIVE_HERE_HANDLE_THERE",), frozenset({"RESIDENT_ID"}))


# ---------------------------------------------------------------- the catalogue's material rules

def test_an_essential_material_listed_but_not_handed_in_is_missing():
    assert form_problems(company(provided=(True, False))) == ["materials: essential material(s) missing: ARTICLES"]


def test_materials_listed_without_saying_whether_each_was_handed_in_count_as_handed_in():
    assert form_problems(company()) == []


def test_an_application_listing_no_material_is_told_every_essential_one_it_lacks():
    assert form_problems(company(materials=())) == [
        "materials: essential material(s) missing: APPLICATION_FORM, ARTICLES"]


def test_every_commitment_no_commitment_may_replace_is_named():
    assert form_problems(company(commitments=("LICENCE", "APPLICATION_FORM"))) == [
        "commitments: no written commitment may replace: APPLICATION_FORM, LICENCE"]


def test_every_essential_material_promised_for_later_is_named():
    assert form_problems(company(deferred_materials={"ARTICLES": "2026-12-20", "APPLICATION_FORM": "2026-12-20"})) \
        == ["deferred_materials: only non-essential materials may follow later: APPLICATION_FORM, ARTICLES"]


def test_a_matter_handled_only_at_a_window_is_received_at_a_window_and_refused_online():
    window, portal = submission(channel="WINDOW"), submission(channel="PORTAL")
    assert domain.form_problems(window, WindowOnly(), None) == []
    assert domain.form_problems(portal, WindowOnly(), None) == [
        "channel: the matter cannot be handled fully online; apply at a window"]


# ---------------------------------------------------------------- the formal check's bounds and words

def test_an_id_number_exactly_at_its_limit_is_still_checked_as_a_resident_id():
    assert problems(applicant_id_number="1" * domain.MAX_ID_NUMBER_LENGTH) == [
        "applicant.id_number: not a valid resident ID number (GB 11643: form, birth date or check digit)"]


def test_fifty_commitments_and_deferred_materials_pass_and_fifty_one_are_refused_with_the_count():
    fifty = tuple(f"C{i}" for i in range(domain.MAX_MATERIALS))
    domain.check_submission(submission(commitments=fifty, deferred_materials=dict.fromkeys(fifty, "2026-12-20")))
    assert problems(commitments=(*fifty, "C50")) == ["commitments: at most 50 items (got 51)"]


def test_a_deferred_material_code_at_its_limit_is_still_asked_for_a_proper_date():
    code = "M" * domain.MAX_CODE_LENGTH
    assert problems(deferred_materials={code: "soon"}) == [
        f"deferred_materials[{code}]: the promised date must be YYYY-MM-DD"]


def test_a_sealed_looking_deferred_material_code_is_never_echoed_in_the_date_problem():
    assert problems(deferred_materials={"pii:v2:x": "soon"}) == [f"deferred_materials[0]: {domain.SEALED_INPUT}"]


@pytest.mark.parametrize(("attribute", "field"), [
    ("channel", "channel"), ("receiving_division", "receiving_division"), ("home_division", "home_division"),
    ("applicant_kind", "applicant.kind"), ("delivery_method", "delivery_method")])
def test_a_sealed_looking_coded_field_is_refused_naming_the_field(attribute, field):
    assert f"{field}: {domain.SEALED_INPUT}" in problems(**{attribute: "pii:v2:x"})


# ---------------------------------------------------------------- the rating check's words

def test_an_interaction_id_over_its_limit_is_refused_naming_the_field_and_the_limit():
    too_long = "I" * (domain.MAX_REFERENCE_LENGTH + 1)
    assert domain.rating_problems(decided(), domain.SERVICE, "ONSITE", too_long) == [
        "interaction_id: at most 128 characters (got 129)"]


def test_an_on_site_rating_that_names_no_interaction_is_refused_saying_why():
    with pytest.raises(domain.InvalidSubmission) as refused:
        domain.check_rating(decided(), 1, "ONSITE")
    assert refused.value.problems == [
        "interaction_id is required on site (一次一评: one rating per service interaction)"]


def test_the_receiving_window_of_an_application_that_came_in_online_cannot_be_rated_saying_why():
    assert domain.rating_problems(decided(), domain.RECEIVING, "ONLINE", "") == [ONLINE_ONLY]


def test_the_deciding_authority_cannot_be_rated_before_it_decided_saying_why():
    accepted = {**decided(), "stage": "ACCEPTED", "window_id": "HN-430103-KSTB-01"}
    assert domain.rating_problems(accepted, domain.DECIDING, "ONLINE", "") == [
        "rated_role: the deciding authority can be rated once it has decided"]


# ---------------------------------------------------------------- what Track shows

def test_the_authority_may_ask_for_a_second_supplement_after_the_first_was_handed_in():
    view = received()
    for minutes, stage in enumerate(("ROUTED", "VERIFIED", "SUPPLEMENT_REQUESTED", "SUPPLEMENTED"), start=1):
        view = domain.advance(view, APP, stage, T0 + timedelta(minutes=minutes))
    again = domain.advance(view, APP, "SUPPLEMENT_REQUESTED", T0 + timedelta(minutes=9),
                           supplement_by=T0 + timedelta(days=5))
    assert (again["stage"], domain.deadline(again)) == ("SUPPLEMENT_REQUESTED", T0 + timedelta(days=5))


def test_a_routed_application_is_held_by_the_deciding_authority_it_names():
    view = domain.advance(received(), APP, "ROUTED", T0, "FULLY_ONLINE", deciding_partner="420000")
    assert domain.responsible_for(view["stage"], domain.acting_party(view)) == "DECIDING_AUTHORITY:420000"


def test_an_application_whose_authority_is_not_known_yet_is_held_by_the_role_and_no_party():
    view = domain.advance(received(), APP, "ACCEPTED", T0)  # the acceptance was read before the routing
    assert domain.responsible_for(view["stage"], domain.acting_party(view)) == "DECIDING_AUTHORITY"


def test_an_application_known_only_from_a_step_that_is_not_a_stage_has_no_next_step_and_no_one_acting():
    # The originals' dispatch was read before anything else of an application received elsewhere.
    view = domain.advance(None, APP, "ORIGINALS_DISPATCHED", T0, "EMS1 to 420000")
    assert (domain.next_step(view), domain.responsible_for(view["stage"], domain.acting_party(view))) == ("", "")


# ---------------------------------------------------------------- notices

def test_a_notice_served_without_a_remedy_offers_none():
    assert domain.notice("N1", received(), domain.RECEIPT, T0)["remedy"] == ""


def test_a_notice_for_an_application_intake_has_not_numbered_carries_an_empty_number():
    view = domain.advance(None, APP, "DENIED", T0)  # received elsewhere: intake never numbered it
    assert domain.notice("N1", view, domain.DENIAL, T0, ["不予许可"], domain.REMEDY)["application_number"] == ""


def test_a_notice_served_on_a_view_kept_before_notices_were_listed_starts_the_list():
    legacy = {k: v for k, v in received().items() if k != "notices"}
    served = domain.notice("N1", legacy, domain.DENIAL, T0, ["不予许可"], domain.REMEDY)
    assert domain.record_notice(legacy, served)["notices"] == [
        {"notice_id": "N1", "kind": domain.DENIAL, "reasons": ["不予许可"], "remedy": domain.REMEDY, "served_at": T0}]


# ---------------------------------------------------------------- identifiers kept across releases

def test_a_bundle_id_is_tbb_and_twenty_capital_hex_digits_fixed_by_source_and_reference():
    first = domain.bundle_id_for("hunan-portal", "B-1")
    assert re.fullmatch(r"TBB[0-9A-F]{20}", first)
    assert domain.bundle_id_for("hunan-portal", "B-1") == first != domain.bundle_id_for("gd-portal", "B-1")
    assert domain.bundle_id_for("hunan-portal", "") == ""


def test_an_applications_numbering_counter_stays_the_one_it_was_numbered_by_across_releases():
    # Counters and their dedupe marks are stored under these keys: a retry after an upgrade
    # must meet the counter that numbered it, so the shard of an id never changes.
    ids = [domain.application_id_for("hunan-portal", ref) for ref in ("ref-1", "ref-2", "ref-3")]
    assert [domain.numbering_key(i) for i in ids] == ["numbering:14", "numbering:08", "numbering:09"]


def test_a_retry_that_adds_a_bundle_reference_the_first_submission_lacked_differs_in_it():
    fields = {"matter_code": "KSTB-MKT-01", "channel": "PORTAL"}
    kept = domain.fingerprints(APP, fields)
    assert domain.differing(kept, domain.fingerprints(APP, {**fields, "bundle_reference": "B-1"})) == [
        "bundle_reference"]


@pytest.mark.parametrize("code", ["TAX RETURN", "税务/证明", "CERT-1"])
def test_a_deferred_material_named_by_any_code_is_the_field_its_date_problem_names(code):
    problem = f"deferred_materials[{code}]: the promised date must be YYYY-MM-DD"
    assert domain.field_of(problem) == f"deferred_materials[{code}]"
    assert domain.field_of("materials[1].code: at most 64 characters") == "materials[1].code"
    assert domain.field_of("channel must be one of WINDOW, PORTAL") == "channel"
