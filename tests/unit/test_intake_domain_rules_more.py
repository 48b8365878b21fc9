"""Rating rules of intake's pure domain (好差评) that the progress view's history makes
necessary: whom a rating counts against when the view does not know it, and 一事一评 over
ratings of several roles and over ratings recorded before roles were."""

from datetime import UTC, datetime, timedelta

from services.intake import domain

T0 = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)


def decided(**facts) -> dict:
    view = domain.new_progress("TBRATE", "KSTB-SOC-01", T0, "gd-portal", "portal")
    return {**view, "stage": "DECIDED", **facts}


def test_a_deciding_authority_the_view_does_not_know_yet_is_rated_as_no_party_in_no_division_never_a_made_up_one():
    # The decision was read before the routing, and the view predates the home division being kept.
    assert domain.rated_party(decided(), domain.DECIDING) == ("", "")


def test_a_second_online_rating_of_a_role_is_refused_even_when_another_role_was_rated_first():
    view = decided(ratings=[{"rated_role": domain.RECEIVING, "channel": "ONLINE", "interaction_id": ""},
                            {"rated_role": domain.DECIDING, "channel": "ONLINE", "interaction_id": ""}])
    assert domain.repeated_rating(view, domain.DECIDING, "MOBILE", "") == (
        "the application was already rated online for DECIDING (一事一评: one rating per matter)")


def test_a_rating_recorded_before_roles_were_kept_counts_as_a_rating_of_the_whole_service():
    view = decided(ratings=[{"rating_id": "r1", "level": 1, "channel": "ONLINE"}])  # no rated_role
    assert domain.repeated_rating(view, domain.SERVICE, "ONLINE", "") == (
        "the application was already rated online for SERVICE (一事一评: one rating per matter)")
    assert domain.repeated_rating(view, domain.DECIDING, "ONLINE", "") is None


# ---------------------------------------------------------------- views recorded before steps were numbered

def legacy() -> dict:
    """A view kept before steps had a sequence (issue 10): its steps have none."""
    return {**decided(), "stage": "RECEIVED", "history": [{"stage": "RECEIVED", "at": T0, "detail": ""}]}


def test_watch_of_a_view_recorded_before_steps_were_numbered_sends_the_next_step_numbered_1():
    view = domain.advance(legacy(), "TBRATE", "ROUTED", T0 + timedelta(minutes=1))
    assert [(h["stage"], h["sequence"]) for h in domain.steps_after(view, 0)] == [("ROUTED", 1)]


def test_track_lists_an_unnumbered_step_and_a_numbered_one_of_the_same_moment_in_the_order_learned():
    view = domain.advance(legacy(), "TBRATE", "NUMBERED", T0, "430102-20261207-0700001-K")
    assert [h["stage"] for h in domain.timeline(view)] == ["RECEIVED", "NUMBERED"]


def test_a_view_started_from_a_later_event_numbers_its_first_step_1():
    view = domain.advance(None, "TBRATE", "ROUTED", T0, "FULLY_ONLINE", deciding_partner="420000")
    assert [(h["stage"], h["sequence"]) for h in domain.steps_after(view, 0)] == [("ROUTED", 1)]


def test_an_authoritys_step_read_before_the_view_knows_the_authority_names_the_role_and_no_party():
    # The decision was read before the routing: the deciding authority is not known yet.
    view = domain.advance(domain.new_progress("TBRATE", "KSTB-SOC-01", T0), "TBRATE", "ACCEPTED", T0)
    assert view["history"][-1]["responsible"] == "DECIDING_AUTHORITY"
