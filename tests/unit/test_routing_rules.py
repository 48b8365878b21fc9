"""Routing's rules through its handler, with the catalogue, partner registry and calendar it
runs with: one decision per application, published, and the work done after it."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import pytest

from services.routing import handlers
from services.routing.domain import Catalogue, PartnerRegistry
from services.routing.ledger import start_of
from tongban.events import millis
from tongban.handling import TIMER_FIRED, Event, Outcome, Rejected, Timer
from tongban.workdays import SHANGHAI, WorkingCalendar

APP = "TBUNIT"
MONDAY = datetime(2025, 9, 22, 2, 0, tzinfo=UTC)  # 10:00 in Beijing
RULES = (Catalogue.load(), PartnerRegistry.load(), WorkingCalendar.load())
RECEIVED = "tongban.application.ApplicationReceived"
NAME, ID_NUMBER = "张三", "420106198506123417"


def received(**changes) -> dict:
    return {"application_id": APP, "matter_code": "KSTB-MED-01", "channel": "PORTAL", "receiving_division": "430102",
            "home_division": "420106",
            "applicant": {"kind": "PERSON", "name": NAME, "id_number": ID_NUMBER, "phone": None},
            "materials": [], "delivery_method": "ELECTRONIC", "postal_address": None, "submitted_at": MONDAY,
            **changes}


async def route(**changes) -> Outcome:
    body = received(**changes)
    # Handlers are made inside each test (not at import) so that mutation testing sees which test runs them.
    return await handlers.make_handlers(*RULES)[RECEIVED](Event("id-1", RECEIVED, APP, body, {"occurred_at": MONDAY},
                                          "tongban.application.received"), None)


def test_routing_reads_received_applications_and_the_lifecycle_its_clocks_run_on():
    assert handlers.INPUTS == ["tongban.application.received", "tongban.application.accepted",
                               "tongban.application.decided", "tongban.application.delivered",
                               "tongban.application.routed", "tongban.partner.ems.originals"]
    assert sorted(handlers.make_handlers(*RULES)) == sorted([
        RECEIVED, "tongban.application.ApplicationAccepted", "tongban.application.ApplicationRefused",
        "tongban.application.SupplementRequested", "tongban.application.MaterialsSupplemented",
        "tongban.application.ApplicationClockChanged", "tongban.application.ApplicationClosed",
        "tongban.application.ApplicationWithdrawn",
        "tongban.application.ApplicationDecided", "tongban.application.ApplicationDelivered",
        "tongban.application.LegCompleted", "tongban.application.LegFailed",
        "tongban.application.ApplicationUnderReview", "tongban.application.ReviewResolved",
        "tongban.application.BundleMemberHeld", "tongban.application.BundleReleased", *handlers.TIMERS,
        "tongban.partner.MaterialsDispatched", "tongban.partner.MaterialsReceived", *handlers.COMMANDS])
    assert list(handlers.make_timers(RULES[2])) == ["sla"]


async def test_a_routable_application_is_routed_to_its_home_authority_and_published():
    outcome = await route()
    [emit] = outcome.emits
    assert (emit.topic, emit.event_type, emit.key) == (
        "tongban.application.routed", "tongban.application.ApplicationRouted", APP)
    assert emit.payload == {
        "application_id": APP, "matter_code": "KSTB-MED-01", "mode": "FULLY_ONLINE",
        "deciding_partner": "420000", "deciding_division": "420106",
        "legs": [{"partner_id": "420000", "division_code": "420106", "step": "DECIDE", "working_days": 2}],
        "promised_working_days": 2,
        # two working days after Monday, to the last millisecond of Wednesday in Beijing
        "due_at": datetime(2025, 9, 24, 15, 59, 59, 999000, tzinfo=UTC),
    }


async def test_the_routing_decision_is_kept_with_its_ledger_and_the_work_goes_on_until_the_application_ends():
    outcome = await route()
    assert outcome.state["decision"] == outcome.emits[0].payload
    assert outcome.state["ledger"]["received_on"] == "2025-09-22"
    assert outcome.finished is False


async def test_a_window_application_is_received_here_and_handled_there():
    outcome = await route(channel="WINDOW")
    assert outcome.emits[0].payload["mode"] == "RECEIVE_HERE_HANDLE_THERE"


async def test_a_joint_matter_gets_its_legs_alternating_from_home():
    outcome = await route(matter_code="KSTB-SOC-01", channel="WINDOW")
    payload = outcome.emits[0].payload
    assert payload["mode"] == "JOINT"
    assert [leg["partner_id"] for leg in payload["legs"]][:2] == ["420000", "430000"]
    assert all(set(leg) == {"partner_id", "division_code", "step", "working_days"} for leg in payload["legs"])


# A matter not in the catalogue is refused at once: tests/unit/test_review_queue.py
@pytest.mark.parametrize(("changes", "reason"), [
    ({"home_division": "990000"}, "home division is not a known GB/T 2260 code"),
    ({"home_division": "370102", "receiving_division": "430102"},
     "no partner agreement covers home division 370102 for files received in 430102"),
])
async def test_an_unroutable_application_is_published_with_its_reason_and_waits_for_review(changes, reason):
    outcome = await route(**changes)
    [emit] = outcome.emits
    assert (emit.topic, emit.event_type, emit.key) == (
        "tongban.application.routed", "tongban.application.ApplicationUnderReview", APP)
    assert emit.payload == {"application_id": APP, "matter_code": changes.get("matter_code", "KSTB-MED-01"),
                            "reason": reason}
    assert outcome.state["review"]["reason"] == reason  # the operator's review queue: tests/unit/test_review_queue.py
    assert outcome.finished is False


async def test_an_unroutable_reason_never_echoes_personal_data_typed_into_a_field():
    outcome = await route(home_division=ID_NUMBER, channel=NAME)
    reason = outcome.emits[0].payload["reason"]
    assert ID_NUMBER not in reason
    assert NAME not in reason
    assert ID_NUMBER not in repr(outcome.state)
    assert NAME not in repr(outcome.state)


async def test_routing_keeps_no_personal_data():
    outcome = await route()
    assert NAME not in repr(outcome.state)
    assert ID_NUMBER not in repr(outcome.state)


async def test_an_unknown_receiving_division_is_unroutable_with_its_reason():
    outcome = await route(receiving_division="990000")
    assert outcome.emits[0].payload["reason"] == "receiving division is not a known GB/T 2260 code"


# ---------------------------------------------------------------------------- the SLA ledger
# KSTB-MED-01 is promised in 2 working days by the home authority 420000. Received Monday
# 22 Sep 2025: acceptance is due in 5 working days, on the make-up Sunday 28 Sep.
CALENDAR = RULES[2]
SLA_TOPIC = "tongban.sla.breached"
BREACHED, WARNING = "tongban.sla.SlaBreached", "tongban.sla.SlaWarning"


def beijing(d: date, hour: int = 10) -> datetime:
    return datetime.combine(d, time(hour), SHANGHAI).astimezone(UTC)


def lifecycle(event_type: str, topic: str = "tongban.application.accepted", **payload) -> tuple:
    return f"tongban.application.{event_type}", {"application_id": APP, **payload}, topic


def accepted(d: date) -> tuple:
    return lifecycle("ApplicationAccepted", deciding_partner="420000", accepted_at=beijing(d))


def decided(d: date, outcome: str = "APPROVED") -> tuple:
    return lifecycle("ApplicationDecided", "tongban.application.decided", deciding_partner="420000",
                     outcome=outcome, result_reference="LIC-1", reason=None, decided_at=beijing(d))


def clock_changed(kind: str, working_days: int = 0, d: date = date(2025, 9, 24)) -> tuple:
    return lifecycle("ApplicationClockChanged", deciding_partner="420000", kind=kind, working_days=working_days,
                     reason="专家评审", changed_at=beijing(d))


RECEIVED_STEP = (RECEIVED, received(), "tongban.application.received")


@dataclass
class Fed:
    state: dict | None
    outcomes: list[Outcome]
    timer: Timer | None  # the pending SLA timer, as the runtime holds it

    @property
    def emits(self) -> list:
        return [e for o in self.outcomes for e in o.emits]

    def sla(self) -> list[tuple]:
        return [(e.event_type, e.payload.get("level"), e.payload["leg"], e.payload["party"],
                 e.payload["deadline"].astimezone(SHANGHAI).date()) for e in self.emits if e.topic == SLA_TOPIC]


async def feed(*steps, clock: handlers.SlaClock = handlers.WALL_CLOCK) -> Fed:
    """Routing's handlers and timer over the steps: an event (type, payload, topic), or a
    moment on the wall clock up to which the pending timer fires, as the runtime fires it."""
    events = handlers.make_handlers(*RULES, clock=clock)
    timers = handlers.make_timers(CALENDAR, clock=clock)
    fed = Fed(None, [], None)

    def took(outcome: Outcome) -> None:
        fed.state = outcome.state if outcome.state is not None else fed.state
        fed.outcomes.append(outcome)
        if "sla" in outcome.cancel_timers:
            fed.timer = None
        fed.timer = next((t for t in outcome.timers if t.name == "sla"), fed.timer)

    for step in steps:
        if isinstance(step, datetime):
            while fed.timer is not None and fed.timer.due_at <= step:
                fired, fed.timer = fed.timer, None
                payload = {"timer_id": f"{APP}:sla:{millis(fired.due_at)}", "name": "sla", "payload": fired.payload}
                took(await timers["sla"](Event(f"timer:{payload['timer_id']}", TIMER_FIRED, APP, payload,
                                              {"correlation_id": APP}, "timer"), fed.state))
            continue
        event_type, payload, topic = step
        took(await events[event_type](Event(f"id-{len(fed.outcomes)}", event_type, APP, payload,
                                            {"occurred_at": MONDAY}, topic), fed.state))
    return fed


async def test_an_application_that_keeps_its_deadlines_ends_without_an_alert():
    fed = await feed(RECEIVED_STEP, accepted(date(2025, 9, 23)), beijing(date(2025, 9, 24)),
                     decided(date(2025, 9, 24)),
                     lifecycle("ApplicationDelivered", "tongban.application.delivered", method="POST",
                               dispatch_id="D1", tracking_number="EMS1", delivered_at=beijing(date(2025, 9, 26))),
                     beijing(date(2026, 1, 1)))
    assert fed.sla() == []
    assert fed.timer is None
    assert fed.outcomes[-1].finished is True
    assert fed.state["ledger"]["ended"] == "DELIVERED"


async def test_receipt_sets_the_timer_at_the_first_card_of_the_acceptance_clock():
    fed = await feed(RECEIVED_STEP)
    # yellow two working days before 28 Sep: Thursday 25 Sep, 00:00 in Beijing
    assert fed.timer.due_at == start_of(date(2025, 9, 25))
    assert fed.timer.payload == {"at_ms": millis(start_of(date(2025, 9, 25)))}


async def test_a_passing_decision_deadline_warns_then_breaches_naming_the_party_and_leg():
    # accepted Tue 23 Sep: 2 working days, due Thursday 25 Sep
    fed = await feed(RECEIVED_STEP, accepted(date(2025, 9, 23)), beijing(date(2025, 9, 25), 9))
    assert fed.sla() == [(WARNING, "RED", "DECISION", "420000", date(2025, 9, 25))]
    fed = await feed(RECEIVED_STEP, accepted(date(2025, 9, 23)), beijing(date(2025, 9, 26), 9))
    breach = fed.emits[-1]
    assert (breach.topic, breach.event_type, breach.key) == (SLA_TOPIC, BREACHED, APP)
    assert breach.payload == {"application_id": APP, "matter_code": "KSTB-MED-01", "party": "420000",
                              "leg": "DECISION", "step": "DECIDE",
                              "deadline": datetime(2025, 9, 25, 15, 59, 59, 999000, tzinfo=UTC), "consequence": ""}
    assert fed.outcomes[-1].finished is False  # a breach ends nothing: the work is still owed
    assert NAME not in repr(fed.emits)
    assert ID_NUMBER not in repr(fed.emits)


async def test_no_acceptance_and_no_notice_in_five_days_is_acceptance_by_law():
    fed = await feed(RECEIVED_STEP, beijing(date(2025, 9, 29), 9))
    assert fed.sla() == [(WARNING, "YELLOW", "ACCEPTANCE", "420000", date(2025, 9, 28)),
                         (WARNING, "RED", "ACCEPTANCE", "420000", date(2025, 9, 28)),
                         (BREACHED, None, "ACCEPTANCE", "420000", date(2025, 9, 28)),
                         # accepted from 22 Sep, so the 2 working days ended on 24 Sep
                         (BREACHED, None, "DECISION", "420000", date(2025, 9, 24))]
    assert [e.payload["consequence"] for e in fed.emits if e.event_type == BREACHED] == ["DEEMED_ACCEPTED", ""]
    assert fed.state["ledger"]["deemed_accepted_on"] == "2025-09-22"
    assert fed.timer is None  # nothing more is due until the decision


NOTICE = lifecycle("SupplementRequested", deciding_partner="420000", cause="AUTHORITY",
                   missing_materials={"FORM": "未签名"}, requested_at=beijing(date(2025, 9, 24)),
                   supplement_by=beijing(date(2025, 10, 24)))


async def test_a_supplement_notice_stops_the_timer_and_the_supplied_file_starts_acceptance_over():
    fed = await feed(RECEIVED_STEP, NOTICE)
    assert fed.timer is None
    assert fed.outcomes[-1].cancel_timers == ["sla"]
    supplied = lifecycle("MaterialsSupplemented", assignment_id=f"{APP}:420000", deciding_partner="420000",
                         materials=["FORM"], supplemented_at=beijing(date(2025, 10, 13)))
    fed = await feed(RECEIVED_STEP, NOTICE, beijing(date(2025, 10, 10)), supplied, beijing(date(2025, 10, 17)))
    # five working days from Monday 13 Oct: due Monday 20 Oct, yellow on Thursday 16 Oct
    assert fed.sla() == [(WARNING, "YELLOW", "ACCEPTANCE", "420000", date(2025, 10, 20))]


async def test_an_extension_moves_the_timer_and_one_beyond_the_law_is_rejected():
    fed = await feed(RECEIVED_STEP, accepted(date(2025, 9, 23)))
    before = fed.timer.due_at
    fed = await feed(RECEIVED_STEP, accepted(date(2025, 9, 23)), clock_changed("EXTENDED", 5))
    assert fed.timer.due_at > before
    assert fed.state["ledger"]["clocks"][2]["extension"] == 5
    with pytest.raises(Rejected, match="an extension takes 1 to 10 working days in all"):
        await feed(RECEIVED_STEP, accepted(date(2025, 9, 23)), clock_changed("EXTENDED", 11))


async def test_an_excluded_period_stops_the_timer_until_it_ends():
    fed = await feed(RECEIVED_STEP, accepted(date(2025, 9, 23)), clock_changed("EXCLUSION_STARTED"),
                     beijing(date(2025, 12, 31)))
    assert fed.sla() == []
    assert fed.timer is None
    fed = await feed(RECEIVED_STEP, accepted(date(2025, 9, 23)), clock_changed("EXCLUSION_STARTED"),
                     clock_changed("EXCLUSION_ENDED", d=date(2025, 10, 20)), beijing(date(2025, 10, 23)))
    # 24 Sep counted, 25 Sep - 20 Oct not: the second day is Tuesday 21 Oct; the yellow card
    # (due 17 Oct, two working days before) goes out as soon as the period ends
    assert fed.sla() == [(WARNING, "YELLOW", "DECISION", "420000", date(2025, 10, 21)),
                         (WARNING, "RED", "DECISION", "420000", date(2025, 10, 21)),
                         (BREACHED, None, "DECISION", "420000", date(2025, 10, 21))]


@pytest.mark.parametrize("ending", [
    lifecycle("ApplicationClosed", status="WITHDRAWN", reason="申请人撤回", closed_at=MONDAY),
    lifecycle("ApplicationWithdrawn", "tongban.application.received", reason="申请人撤回", withdrawn_at=MONDAY),
    lifecycle("ApplicationRefused", deciding_partner="420000", reason="不属于本机关职权范围", remedy=""),
    decided(date(2025, 9, 24), "DENIED"),
])
async def test_the_end_of_the_application_ends_the_work_and_its_timer(ending):
    fed = await feed(RECEIVED_STEP, ending, accepted(date(2025, 9, 23)), beijing(date(2026, 1, 1)))
    ended = fed.outcomes[1]
    assert (ended.finished, ended.cancel_timers) == (True, ["sla"])
    assert fed.outcomes[2].state is None  # a late fact changes nothing
    assert fed.sla() == []


async def test_lifecycle_facts_of_an_application_routing_never_routed_change_nothing():
    fed = await feed(accepted(date(2025, 9, 23)), decided(date(2025, 9, 24)))
    assert [o.state for o in fed.outcomes] == [None, None]
    fed = await feed((RECEIVED, received(matter_code="KSTB-NOPE-99"), "tongban.application.received"),
                     accepted(date(2025, 9, 23)))
    assert fed.outcomes[-1].state is None


async def test_a_clock_running_ahead_sets_every_timer_that_much_earlier_on_the_wall_clock():
    ahead = handlers.SlaClock(timedelta(days=30))
    fed = await feed(RECEIVED_STEP, clock=ahead)
    assert fed.timer.due_at == start_of(date(2025, 9, 25)) - timedelta(days=30)
    # thirty days early on the wall clock, the acceptance deadline has passed
    fed = await feed(RECEIVED_STEP, beijing(date(2025, 9, 1)), clock=ahead)
    assert (BREACHED, None, "ACCEPTANCE", "420000", date(2025, 9, 28)) in fed.sla()
