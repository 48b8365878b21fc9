"""Rules of routing's and feedback's pure domains that the fresh-clone mutation run of 836805e
found unguarded: what a 全国通办 matter's refusal names, how the partner registry refuses a
partner of no known kind and loads a file of none, and which window a flag's clearance names."""

from datetime import UTC, datetime, timedelta

import pytest
from test_feedback_domain import CONFIG, GROUP
from test_routing_domain import route_at

from services.feedback.domain import Verdict, WindowCounts, evaluate
from services.routing.domain import Partner, PartnerAgreement, PartnerRegistry, Unroutable
from tongban.workdays import WorkingCalendar

# ---------------------------------------------------------------- routing


def test_a_matter_handled_anywhere_received_where_no_partner_works_is_unroutable_naming_the_receiving_division():
    with pytest.raises(Unroutable) as caught:
        route_at("ANYWHERE", PartnerRegistry.load(), WorkingCalendar(), receiving="110101")
    assert caught.value.reason == "no partner agreement covers receiving division 110101 for files received in 110101"


def test_a_partner_of_no_known_kind_is_refused_naming_the_kinds_it_may_be():
    kinds = "('PROVINCE', 'CITY', 'COUNTY', 'MINISTRY', 'HUB')"
    with pytest.raises(ValueError, match=r"^partner 430000: kind must be one of ") as refused:
        PartnerRegistry([PartnerAgreement(Partner("430000", "430000", "湖南省", "STATE"))])
    assert str(refused.value) == f"partner 430000: kind must be one of {kinds}"


def test_a_partner_file_that_lists_no_partner_loads_and_no_division_has_a_partner(tmp_path):
    path = tmp_path / "partners.toml"
    path.write_text("# no agreement signed yet\n")
    registry = PartnerRegistry.load(path)
    assert (registry.all(), registry.deciding_partner("430102", "430102")) == ([], None)


# ---------------------------------------------------------------- feedback

def test_a_clearance_names_the_window_that_recovered_and_when_that_window_began():
    week, spec = timedelta(days=7), CONFIG.windows[0]  # 7d, tumbling
    [rule] = [r for r in CONFIG.rules if r.name == "bad-ratings"]
    flagged_in = datetime(2026, 11, 5, tzinfo=UTC)
    standing = {rule.name: (f"{GROUP}|7d|2026-11-05|bad-ratings#1", flagged_in)}
    good_week = WindowCounts({f"F{n}": ("RATING", False) for n in range(rule.min_volume)})
    assert evaluate(GROUP, spec, flagged_in + week, good_week, [rule], standing) == [
        Verdict("CLEAR", rule, "7d", flagged_in + week, f"{GROUP}|7d|2026-11-05|bad-ratings#1")]
