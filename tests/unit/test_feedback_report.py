"""The supervision report's figures from facts and flags, no broker (devtools.report)."""

from datetime import UTC, datetime, timedelta

from devtools.report import figures, html_report
from tongban import topics

T0 = datetime(2026, 11, 5, tzinfo=UTC)


def fact(fact_id: str, party: str, kind: str = "RATING", bad: bool = False, counted: bool = True,
         reason: str | None = None) -> tuple[str, dict]:
    return topics.SUPERVISION_FACT_EVENT, {"fact_id": fact_id, "kind": kind, "matter_code": "M1",
                                           "division_code": "420100", "party": party, "rated_role": "SERVICE",
                                           "bad": bad, "counted": counted, "reason": reason, "occurred_at": T0}


def flag(event_type: str, flag_id: str, party: str) -> tuple[str, dict]:
    return event_type, {"flag_id": flag_id, "matter_code": "M1", "division_code": "420100", "party": party,
                        "reason": "rule complaints", "rule": "complaints", "window": "7d"}


def test_withdrawn_facts_count_nowhere_and_cleared_flags_no_longer_stand():
    report = figures([
        fact("R1", "A", bad=True), fact("R2", "A"), fact("R3", "A", bad=True), fact("R1", "A", bad=True),
        fact("R3", "A", bad=True, counted=False, reason="申诉复核 upheld: 误评"),
        fact("W1", "B", kind="COMPLAINT"), fact("W1", "B", kind="COMPLAINT", counted=False),
        fact("W1", "C", kind="COMPLAINT"), fact("S1", "C", kind="SLA_BREACH"),
        (topics.RECTIFICATION_OVERDUE_EVENT, {"party": "A", "division_code": "420100", "rating_id": "R1"}),
        flag(topics.MATTER_FLAGGED_EVENT, "f1", "C"), flag(topics.MATTER_FLAGGED_EVENT, "f2", "B"),
        flag(topics.MATTER_FLAG_CLEARED_EVENT, "f2", "B")])
    by_party = {p.party: p for p in report.parties}
    assert (by_party["A"].ratings, by_party["A"].bad_ratings, by_party["A"].overdue_rectifications) == (2, 1, 1)
    assert "B" not in by_party, "a reassigned order counts against its final unit only"
    assert (by_party["C"].complaints, by_party["C"].sla_breaches, by_party["C"].flags) == (1, 1, 1)
    assert report.excluded == [
        {"rating_id": "R3", "matter_code": "M1", "party": "A", "reason": "申诉复核 upheld: 误评"}]
    assert [f["flag_id"] for f in report.standing_flags] == ["f1"]
    assert [p.party for p in report.rankings["bad-rating rate"]] == ["A"]
    assert report.public["ratings"] == 2
    assert report.public["satisfaction (ratings 1-3)"] == "50.0%"
    assert report.notice == ["A (420100): 0 standing flag(s), 1 overdue rectification(s)",
                             "C (420100): 1 standing flag(s), 0 overdue rectification(s)"]


def test_the_html_report_is_self_contained_and_escapes_what_it_shows():
    page = html_report(figures([fact("R1", "<b>A</b>", bad=True)]))
    assert "&lt;b&gt;A&lt;/b&gt;" in page
    assert "<b>A</b>" not in page.replace('"party": "<b>A<\\/b>"', "")
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", ""), "no external resources"
    assert page.count('<figure class="chart"') == 4


def matter(code: str, source: str, modes: list[str], at: datetime, change: str = "ADDED") -> tuple[str, dict]:
    return topics.MATTER_CHANGED_EVENT, {"envelope": {"occurred_at": at}, "matter_code": code, "source": source,
                                         "modes": modes, "change": change}


def lifecycle(event_type: str, application: str, at: datetime) -> tuple[str, dict]:
    return event_type, {"envelope": {"occurred_at": at}, "application_id": application}


def test_rollout_against_the_plan_and_public_figures():
    early, late = datetime(2020, 11, 1, tzinfo=UTC), datetime(2022, 3, 1, tzinfo=UTC)
    report = figures([
        matter("A", "国办发[2020]35号 附件，2020年底前", ["FULLY_ONLINE"], early),
        matter("A", "国办发[2020]35号 附件，2020年底前", ["FULLY_ONLINE"], late, change="UPDATED"),
        matter("B", "国办发[2020]35号 附件，2020年底前", ["FULLY_ONLINE"], late),
        matter("C", "国办发[2020]35号 附件，2021年底前", ["JOINT"], early, change="WITHDRAWN"),
        matter("D", "试点", ["FULLY_ONLINE"], late),
        lifecycle(topics.APPLICATION_RECEIVED_EVENT, "TB1", T0),
        lifecycle(topics.APPLICATION_DECIDED_EVENT, "TB1", T0 + timedelta(days=2, hours=3)),
        lifecycle(topics.APPLICATION_RECEIVED_EVENT, "TB2", T0),
        lifecycle(topics.APPLICATION_DECIDED_EVENT, "TB2", T0 + timedelta(days=1, hours=3)),
        lifecycle(topics.APPLICATION_RECEIVED_EVENT, "TB3", T0)])
    assert report.rollout == [
        {"due": "2020-12-31", "mode": "FULLY_ONLINE", "planned": 2, "live": 2, "live_in_time": 1},
        {"due": "2021-12-31", "mode": "JOINT", "planned": 1, "live": 0, "live_in_time": 0},
        {"due": "no deadline", "mode": "FULLY_ONLINE", "planned": 1, "live": 1, "live_in_time": 0}]
    assert report.public["matters live (catalogue)"] == 3
    assert (report.public["applications received"], report.public["applications decided"]) == (3, 2)
    assert report.public["average handling time (received to decided)"] == "1 day, 15:00:00"


def timed(fact_id: str, party: str, kind: str, at: datetime, matter: str = "M1", division: str = "420000",
          counted: bool = True) -> tuple[str, dict]:
    return topics.SUPERVISION_FACT_EVENT, {"fact_id": fact_id, "kind": kind, "matter_code": matter,
                                           "division_code": division, "party": party, "rated_role": "SERVICE",
                                           "bad": False, "counted": counted, "reason": None, "occurred_at": at}


def test_the_sla_breach_rate_is_breaches_per_decision_per_matter_division_and_party_over_the_window():
    old = T0 - timedelta(days=40)
    report = figures([
        *(timed(f"D{n}", "420000", "DECISION", T0) for n in range(4)),
        timed("B1", "420000", "SLA_BREACH", T0), timed("B2", "420000", "SLA_BREACH", old),  # B2: before the window
        timed("D1", "420000", "DECISION", T0, matter="M2"), timed("B1", "420000", "SLA_BREACH", T0, matter="M2"),
        timed("B3", "420000", "SLA_BREACH", T0, matter="M2"),
        timed("B9", "ems", "SLA_BREACH", T0, division="-"),  # nothing decided: no rate
        timed("B4", "440000", "SLA_BREACH", T0, division="440000"),
        timed("B4", "440000", "SLA_BREACH", T0, division="440000", counted=False),  # withdrawn
    ], window=timedelta(days=30))
    assert [(r["matter_code"], r["division_code"], r["party"], r["sla_breaches"], r["decided"], r["rate"])
            for r in report.breach_rates] == [("M2", "420000", "420000", 2, 1, 2.0),
                                              ("M1", "420000", "420000", 1, 4, 0.25),
                                              ("M1", "-", "ems", 1, 0, None)]
    assert report.window == (T0 - timedelta(days=30), T0)
    by_party = {(p.party, p.division_code): p for p in report.parties}
    assert (by_party["420000", "420000"].decided, by_party["420000", "420000"].sla_breaches) == (5, 4)
    assert by_party["420000", "420000"].sla_breach_rate == 4 / 5, "all time, in the party table"
    assert report.public["matters rated or complained about"] == 2, "decisions alone rate nothing"
    page = html_report(report)
    assert "<td>M2</td><td>420000</td><td>420000</td><td>2</td><td>1</td><td>200%</td>" in page
    assert "<td>M1</td><td>-</td><td>ems</td><td>1</td><td>0</td><td>-</td>" in page
