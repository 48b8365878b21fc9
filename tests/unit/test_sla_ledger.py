"""The SLA ledger's clocks, table-driven over the deadline edges of issue 9.

Expected dates are worked out by hand from the State Council's holiday notices for 2025 and
2026 (see services/routing/workday_overrides.toml) and 行政许可法 §32, §42, §44, §45."""

from datetime import UTC, date, datetime, time, timedelta

import pytest

from services.routing.ledger import (
    ACCEPTANCE,
    BREACHED,
    DEEMED,
    DEEMED_ACCEPTED,
    DELIVERED,
    DELIVERY,
    DENIED,
    DONE,
    FAILED,
    LEG_FAILED,
    RECEIPT,
    RED,
    RUNNING,
    STOPPED,
    TRANSIT,
    WAITING,
    YELLOW,
    ClockError,
    DecisionLeg,
    Ledger,
    SlaPolicy,
    end_of,
    start_of,
)
from tongban.workdays import SHANGHAI, WorkingCalendar

CALENDAR = WorkingCalendar.load()
POLICY = SlaPolicy()
DECIDE = [DecisionLeg("420000", "DECIDE", 20)]
# 养老保险关系转移接续: the new insured place writes the contact letter, the old one moves the
# fund, the new one completes.
PENSION = [DecisionLeg("420000", "CONTACT_LETTER", 3), DecisionLeg("430000", "TRANSFER", 5),
           DecisionLeg("420000", "COMPLETE", 2)]


def at(d: date, hour: int = 10) -> datetime:
    """`hour` o'clock Beijing time on `d`, as the UTC instant events carry."""
    return datetime.combine(d, time(hour), SHANGHAI).astimezone(UTC)


def ledger(submitted: datetime, legs=DECIDE, posted: bool = False, serves: str = "ems") -> Ledger:
    return Ledger.open(submitted, window="WIN-430102-01", deciding_party="420000", decision_legs=legs,
                       delivery_party=serves, originals_posted=posted, policy=POLICY, calendar=CALENDAR)


def deadline(book: Ledger, name: str) -> date | None:
    return book.deadlines(CALENDAR).get(name)


# ---------------------------------------------------------------------------- receipt and acceptance

@pytest.mark.parametrize(("edge", "submitted", "received_on", "acceptance_due"), [
    # received Friday 13 Feb 2026; 14 Feb (Sat) is a make-up working day, 15-23 Feb are off
    ("Spring Festival 2026", at(date(2026, 2, 13)), date(2026, 2, 13), date(2026, 2, 27)),
    # received Monday 27 Jan 2025; 28 Jan - 4 Feb off; 8 Feb (Sat) is a make-up working day
    ("Spring Festival 2025", at(date(2025, 1, 27)), date(2025, 1, 27), date(2025, 2, 10)),
    # received Tuesday 29 Sep 2026; 1-7 Oct off; 10 Oct (Sat) is a make-up working day
    ("National Day 2026", at(date(2026, 9, 29)), date(2026, 9, 29), date(2026, 10, 12)),
    # 30 Sep 2025, 1-8 Oct off, 11 Oct (Sat) make-up
    ("National Day 2025", at(date(2025, 9, 30)), date(2025, 9, 30), date(2025, 10, 14)),
    # a make-up Saturday is a working day: the file counts from that day
    ("make-up Saturday", at(date(2026, 2, 28)), date(2026, 2, 28), date(2026, 3, 6)),
    # an ordinary Saturday online submission counts from Monday
    ("Saturday online", at(date(2025, 11, 15)), date(2025, 11, 17), date(2025, 11, 24)),
    # 01:00 Saturday in Beijing is still Friday in UTC: Beijing's date decides
    ("Saturday in Beijing", datetime(2025, 11, 14, 17, 0, tzinfo=UTC), date(2025, 11, 17), date(2025, 11, 24)),
    # Saturday 27 Sep 2025 counts from the make-up Sunday after it
    ("Saturday before a make-up Sunday", at(date(2025, 9, 27)), date(2025, 9, 28), date(2025, 10, 11)),
    # a submission during the holiday counts from the first working day after it
    ("during Spring Festival", at(date(2026, 2, 18)), date(2026, 2, 24), date(2026, 3, 2)),
])
def test_acceptance_runs_five_working_days_from_the_working_day_the_file_counts_as_received(
        edge, submitted, received_on, acceptance_due):
    book = ledger(submitted)
    assert book.received_on == received_on, edge
    receipt = book.clock(RECEIPT)
    assert (receipt.party, receipt.status, receipt.ended_on) == ("WIN-430102-01", DONE, received_on)
    assert deadline(book, ACCEPTANCE) == acceptance_due, edge


def test_a_decision_read_before_its_acceptance_still_has_a_dated_decision_clock():
    """Acceptance and decision come on different topics; the decision may be read first."""
    book = ledger(at(date(2025, 11, 17)))
    book.decided("APPROVED", at(date(2025, 11, 20)))
    book.accepted(at(date(2025, 11, 19)))  # read late: it changes nothing any more
    decision = book.clock("DECISION")
    assert (decision.status, decision.starts_on, decision.ended_on) == (DONE, date(2025, 11, 20), date(2025, 11, 20))

def test_the_statutory_clock_starts_at_acceptance_not_at_receipt():
    book = ledger(at(date(2025, 11, 17)))
    assert book.clock("DECISION").status == WAITING
    assert deadline(book, "DECISION:DECIDE") is None
    book.accepted(at(date(2025, 11, 20)))
    assert book.clock(ACCEPTANCE).status == DONE
    # 20 working days from Thursday 20 Nov 2025
    assert deadline(book, "DECISION:DECIDE") == date(2025, 12, 18)


def test_without_acceptance_or_notice_in_five_days_the_file_is_accepted_from_the_day_received():
    book = ledger(at(date(2025, 11, 17)))
    cards = book.advance(at(date(2025, 11, 24), 23), CALENDAR, POLICY)
    assert [(a.level, a.leg, a.deadline) for a in cards] == [(YELLOW, ACCEPTANCE, date(2025, 11, 24)),
                                                            (RED, ACCEPTANCE, date(2025, 11, 24))]
    assert book.deemed_accepted_on is None
    [breach] = book.advance(start_of(date(2025, 11, 25)), CALENDAR, POLICY)
    assert (breach.level, breach.leg, breach.party, breach.deadline, breach.consequence) == (
        BREACHED, ACCEPTANCE, "420000", date(2025, 11, 24), DEEMED_ACCEPTED)
    assert book.deemed_accepted_on == date(2025, 11, 17)
    assert book.clock(ACCEPTANCE).status == DEEMED
    # the decision clock counts from the day received: 20 working days from 17 Nov
    assert deadline(book, "DECISION:DECIDE") == date(2025, 12, 15)
    book.accepted(at(date(2025, 11, 26)))  # the late acceptance moves nothing
    assert deadline(book, "DECISION:DECIDE") == date(2025, 12, 15)


# ---------------------------------------------------------------------------- stops and extensions

def _supplement_before_acceptance(book: Ledger) -> None:
    book.supplement_requested(at(date(2025, 11, 19)))
    assert deadline(book, ACCEPTANCE) is None  # the applicant's time: no clock runs
    assert book.advance(start_of(date(2025, 11, 26)), CALENDAR, POLICY) == []
    book.materials_arrived(at(date(2025, 11, 24)))


def _second_notice(book: Ledger) -> None:
    _supplement_before_acceptance(book)
    book.supplement_requested(at(date(2025, 11, 25)))  # the law allows one: it stops nothing


def _supplement_after_acceptance(book: Ledger) -> None:
    book.accepted(at(date(2025, 11, 17)))
    book.supplement_requested(at(date(2025, 11, 18)))
    assert deadline(book, "DECISION:DECIDE") is None
    book.materials_arrived(at(date(2025, 11, 20)))


def _extended(book: Ledger) -> None:
    book.accepted(at(date(2025, 11, 17)))
    book.extended(6, POLICY)
    book.extended(4, POLICY)


def _excluded(book: Ledger) -> None:
    book.accepted(at(date(2025, 11, 17)))
    book.exclusion_started(at(date(2025, 11, 19)))  # an expert review
    assert deadline(book, "DECISION:DECIDE") is None
    book.exclusion_ended(at(date(2025, 12, 1)))


@pytest.mark.parametrize(("edge", "steps", "clock", "due"), [
    # 补正 notice on Wed 19 Nov; the complete file arrives Mon 24 Nov and counts as received then
    ("补正 before acceptance", _supplement_before_acceptance, ACCEPTANCE, date(2025, 12, 1)),
    ("a second 补正 notice", _second_notice, ACCEPTANCE, date(2025, 12, 1)),
    # 20 days from 17 Nov (15 Dec), but 19 and 20 Nov are the applicant's: 17 Dec
    ("补正 after acceptance", _supplement_after_acceptance, "DECISION:DECIDE", date(2025, 12, 17)),
    # 20 + 10 working days from 17 Nov
    ("延期", _extended, "DECISION:DECIDE", date(2025, 12, 29)),
    # 18 and 19 Nov count, 20 Nov - 1 Dec do not, then 18 more from 2 Dec
    ("excluded period (§45)", _excluded, "DECISION:DECIDE", date(2025, 12, 25)),
])
def test_stops_and_extensions_move_the_deadline(edge, steps, clock, due):
    book = ledger(at(date(2025, 11, 17)))
    steps(book)
    assert deadline(book, clock) == due, edge


def test_a_notice_pauses_only_the_acceptance_clock_and_no_deemed_acceptance_follows():
    book = ledger(at(date(2025, 11, 17)))
    book.supplement_requested(at(date(2025, 11, 19)))
    assert book.next_alert_at(CALENDAR, POLICY) is None
    book.materials_arrived(at(date(2025, 11, 24)))
    alerts = book.advance(start_of(date(2025, 11, 26)), CALENDAR, POLICY)
    assert alerts == []
    assert book.deemed_accepted_on is None
    assert book.supplement_notices == 1


@pytest.mark.parametrize(("granted", "asked"), [([], 11), ([6], 5), ([], 0), ([], -1)])
def test_an_extension_beyond_ten_working_days_in_all_is_refused(granted, asked):
    book = ledger(at(date(2025, 11, 17)))
    book.accepted(at(date(2025, 11, 17)))
    for n in granted:
        book.extended(n, POLICY)
    with pytest.raises(ClockError, match="an extension takes 1 to 10 working days in all"):
        book.extended(asked, POLICY)


def test_an_extension_needs_a_running_decision():
    with pytest.raises(ClockError, match="no decision leg is running"):
        ledger(at(date(2025, 11, 17))).extended(5, POLICY)


def test_a_law_may_allow_a_longer_extension():
    book = ledger(at(date(2025, 11, 17)))
    book.accepted(at(date(2025, 11, 17)))
    book.extended(15, SlaPolicy(max_extension_working_days=15))
    assert deadline(book, "DECISION:DECIDE") == date(2026, 1, 6)


# ---------------------------------------------------------------------------- legs and parties

def test_joint_legs_run_one_after_another_each_on_its_party():
    book = ledger(at(date(2025, 11, 17)), legs=PENSION)
    book.accepted(at(date(2025, 11, 17)))
    assert book.deadlines(CALENDAR) == {"DECISION:CONTACT_LETTER": date(2025, 11, 20)}
    book.leg_completed("CONTACT_LETTER", at(date(2025, 11, 19)))
    assert book.deadlines(CALENDAR) == {"DECISION:TRANSFER": date(2025, 11, 26)}
    assert book.clock("DECISION", "TRANSFER").party == "430000"


def test_a_leg_failing_after_another_completed_ends_every_clock_and_names_the_completed_leg():
    book = ledger(at(date(2025, 11, 17)), legs=PENSION)
    book.accepted(at(date(2025, 11, 17)))
    book.leg_completed("CONTACT_LETTER", at(date(2025, 11, 19)))
    completed = book.leg_failed("TRANSFER", at(date(2025, 11, 21)))
    assert [(c.step, c.party) for c in completed] == [("CONTACT_LETTER", "420000")]
    assert [(c.name, c.status) for c in book.clocks] == [
        (RECEIPT, DONE), (ACCEPTANCE, DONE), ("DECISION:CONTACT_LETTER", DONE), ("DECISION:TRANSFER", FAILED),
        ("DECISION:COMPLETE", STOPPED), (DELIVERY, STOPPED)]
    assert book.ended == LEG_FAILED
    assert book.next_alert_at(CALENDAR, POLICY) is None


def test_originals_in_transit_are_the_windows_clock_until_the_authority_acts():
    book = ledger(at(date(2025, 11, 17)), posted=True)
    transit = book.clock(TRANSIT)
    assert (transit.party, deadline(book, TRANSIT)) == ("WIN-430102-01", date(2025, 11, 20))
    book.supplement_requested(at(date(2025, 11, 18)))
    assert transit.status == DONE


def test_an_approval_is_served_within_ten_working_days_and_delivery_ends_the_ledger():
    book = ledger(at(date(2025, 11, 17)))
    book.accepted(at(date(2025, 11, 17)))
    book.decided("APPROVED", at(date(2025, 11, 24)))
    assert book.deadlines(CALENDAR) == {DELIVERY: date(2025, 12, 8)}
    assert book.clock(DELIVERY).party == "ems"
    book.delivered(at(date(2025, 11, 27)))
    assert (book.ended, book.clock(DELIVERY).status) == (DELIVERED, DONE)
    assert book.next_alert_at(CALENDAR, POLICY) is None


def test_a_denial_ends_the_ledger():
    book = ledger(at(date(2025, 11, 17)))
    book.accepted(at(date(2025, 11, 17)))
    book.decided("DENIED", at(date(2025, 11, 24)))
    assert book.ended == DENIED
    assert book.clock(DELIVERY).status == STOPPED


# ---------------------------------------------------------------------------- alerts

def test_yellow_two_working_days_before_red_on_the_last_day_breach_after_it():
    book = ledger(at(date(2025, 11, 17)), legs=[DecisionLeg("420000", "DECIDE", 5)])
    book.accepted(at(date(2025, 11, 17)))  # due Monday 24 Nov
    moments = [(start_of(date(2025, 11, 20)), YELLOW), (start_of(date(2025, 11, 24)), RED),
               (start_of(date(2025, 11, 25)), BREACHED)]
    for moment, level in moments:
        assert book.next_alert_at(CALENDAR, POLICY) == moment
        assert book.advance(moment - timedelta(milliseconds=1), CALENDAR, POLICY) == []
        [alert] = book.advance(moment, CALENDAR, POLICY)
        assert (alert.level, alert.leg, alert.party, alert.deadline) == (level, "DECISION", "420000",
                                                                         date(2025, 11, 24))
    assert book.advance(start_of(date(2026, 1, 1)), CALENDAR, POLICY) == []  # each alert once
    assert book.next_alert_at(CALENDAR, POLICY) is None


def test_a_moved_deadline_gets_its_own_alerts():
    book = ledger(at(date(2025, 11, 17)), legs=[DecisionLeg("420000", "DECIDE", 5)])
    book.accepted(at(date(2025, 11, 17)))
    book.advance(start_of(date(2025, 11, 20)), CALENDAR, POLICY)  # yellow for 24 Nov
    book.extended(5, POLICY)  # now due 1 Dec
    assert book.next_alert_at(CALENDAR, POLICY) == start_of(date(2025, 11, 27))


def test_the_deadline_instant_is_the_end_of_the_beijing_day():
    assert end_of(date(2025, 11, 24)) == datetime(2025, 11, 24, 15, 59, 59, 999000, tzinfo=UTC)
    assert start_of(date(2025, 11, 25)) == datetime(2025, 11, 24, 16, 0, tzinfo=UTC)


def test_the_ledger_survives_its_state_store():
    book = ledger(at(date(2025, 11, 17)), legs=PENSION, posted=True)
    book.accepted(at(date(2025, 11, 17)))
    book.exclusion_started(at(date(2025, 11, 18)))
    book.advance(start_of(date(2025, 11, 19)), CALENDAR, POLICY)
    assert Ledger.from_state(book.to_state()) == book
    assert book.clock("DECISION", "CONTACT_LETTER").status == RUNNING


def test_a_deemed_acceptance_long_past_gives_the_decision_breach_without_stale_cards():
    book = ledger(at(date(2025, 11, 17)), legs=[DecisionLeg("420000", "DECIDE", 2)])
    alerts = book.advance(start_of(date(2025, 11, 25)), CALENDAR, POLICY)
    # looked at only once the acceptance deadline passed, its cards are stale; accepted from
    # 17 Nov by law, the decision was due 19 Nov, so its cards are stale as well
    assert [(a.level, a.leg, a.deadline, a.consequence) for a in alerts] == [
        (BREACHED, ACCEPTANCE, date(2025, 11, 24), DEEMED_ACCEPTED), (BREACHED, "DECISION", date(2025, 11, 19), "")]
    assert book.advance(start_of(date(2025, 12, 31)), CALENDAR, POLICY) == []


def test_a_result_held_for_promised_materials_stops_the_delivery_clock_until_they_arrive():
    book = ledger(at(date(2025, 11, 17)))
    book.accepted(at(date(2025, 11, 17)))
    book.decided("APPROVED", at(date(2025, 11, 24)))
    book.supplement_requested(at(date(2025, 11, 25)), by_authority=False)  # 容缺 promise missed
    assert deadline(book, DELIVERY) is None
    book.materials_arrived(at(date(2025, 11, 28)))
    # 10 working days from 24 Nov (8 Dec), less 26-28 Nov: 11 Dec
    assert deadline(book, DELIVERY) == date(2025, 12, 11)


def test_a_missed_promise_before_acceptance_is_not_the_authoritys_notice():
    book = ledger(at(date(2025, 11, 17)))
    book.supplement_requested(at(date(2025, 11, 18)), by_authority=False)
    assert book.supplement_notices == 0
    assert deadline(book, ACCEPTANCE) == date(2025, 11, 24)


def test_a_decision_without_a_word_of_acceptance_ends_the_acceptance_clock_too():
    book = ledger(at(date(2025, 11, 17)), posted=True)
    book.decided("APPROVED", at(date(2025, 11, 18)))  # 即办: decided on the spot
    assert [(c.leg, c.status) for c in book.clocks if c.leg != DELIVERY] == [
        (RECEIPT, DONE), (TRANSIT, DONE), (ACCEPTANCE, DONE), ("DECISION", DONE)]
    assert book.deadlines(CALENDAR) == {DELIVERY: date(2025, 12, 2)}


def test_the_shipped_policy_is_the_law_and_a_bad_one_is_refused(tmp_path):
    assert SlaPolicy.load() == SlaPolicy()
    path = tmp_path / "sla.toml"
    path.write_text("yellow_working_days_before = 3\n")
    assert SlaPolicy.load(path) == SlaPolicy(yellow_working_days_before=3)
    path.write_text('acceptance_working_days = -1\nyelow = 2\ndelivery_working_days = "10"\n')
    with pytest.raises(ValueError, match=r"sla.toml: unknown key yelow; acceptance_working_days must be a whole "
                                         r"number >= 0; delivery_working_days must be a whole number >= 0$"):
        SlaPolicy.load(path)
