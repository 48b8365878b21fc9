"""A joint matter's legs (多地联办) in intake's progress view, through its handlers: each leg's
party, step, state and times, learned from routing's legs and delivery's LegCompleted /
LegFailed, in any order; and Track and Watch showing them over gRPC. No broker."""

from datetime import UTC, datetime, timedelta

import pytest
from test_intake_api import PORTAL, TLS_DIR, company_at_window, deliver_event, intake  # noqa: F401 (a fixture)
from test_intake_api_auth import tls  # noqa: F401 (a fixture)

from services.intake import domain, handlers, intake_pb2, intake_pb2_grpc
from tongban import topics
from tongban.events import millis, now_utc
from tongban.grpc_tls import client_channel
from tongban.handling import Event, Outcome

APP = "TBJOINT"
T0 = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
P = "tongban.application."
PENSION = "KSTB-SOC-01"
LEGS = [{"partner_id": "440000", "division_code": "440103", "step": "CONTACT_LETTER", "working_days": 15},
        {"partner_id": "420000", "division_code": "420106", "step": "FUND_TRANSFER", "working_days": 15},
        {"partner_id": "440000", "division_code": "440103", "step": "COMPLETION", "working_days": 15}]


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def routed_body(application_id: str = APP, mode: str = "JOINT", legs: list | None = None) -> dict:
    return {"application_id": application_id, "matter_code": PENSION, "mode": mode, "deciding_partner": "440000",
            "deciding_division": "440103", "legs": LEGS if legs is None else legs, "promised_working_days": 45,
            "due_at": at(60 * 24 * 60)}


ROUTED = (P + "ApplicationRouted", routed_body())
VERIFIED = (P + "ApplicationVerified", {"application_id": APP, "checks": []})
ACCEPTED = (P + "ApplicationAccepted", {"application_id": APP, "deciding_partner": "440000", "accepted_at": at(3)})


def leg_completed(n: int, minutes: int, partner: str, step: str, application_id: str = APP) -> tuple:
    return (topics.LEG_COMPLETED_EVENT, {
        "application_id": application_id, "assignment_id": f"{application_id}:{partner}:{n}", "partner_id": partner,
        "step": step, "leg": n, "legs": 3, "result_reference": f"REF-{n}", "completed_at": at(minutes)})


def leg_failed(n: int, minutes: int, partner: str, step: str, done: list[tuple[int, str, str]]) -> tuple:
    return (topics.LEG_FAILED_EVENT, {
        "application_id": APP, "assignment_id": f"{APP}:{partner}:{n}", "partner_id": partner, "step": step,
        "leg": n, "legs": 3, "reason": "转移资金不足，联系 13800000000",
        "compensated": [{"assignment_id": f"{APP}:{p}:{k}", "partner_id": p, "step": s} for k, p, s in done],
        "failed_at": at(minutes)})


def decided(outcome: str, minutes: int) -> tuple:
    return (P + "ApplicationDecided", {
        "application_id": APP, "deciding_partner": "440000", "outcome": outcome,
        "result_reference": "LETTER-3" if outcome == "APPROVED" else None,
        "reason": None if outcome == "APPROVED" else "leg 2 of 3 (FUND_TRANSFER) failed", "decided_at": at(minutes)})


def event(event_type: str, payload: dict, n: int) -> Event:
    return Event(f"id-{n}-{event_type}", event_type, APP, payload, {"occurred_at": at(n), "correlation_id": APP},
                 "test")


async def feed(*steps, state: dict | None = None) -> tuple[dict, list[Outcome]]:
    """Each step as (event type, payload); step n happens n minutes after T0."""
    outcomes = []
    for n, (event_type, payload) in enumerate(steps, start=1):
        outcome = await handlers.HANDLERS[event_type](event(event_type, payload, n), state)
        state = outcome.state if outcome.state is not None else state
        outcomes.append(outcome)
    assert state is not None
    return state, outcomes


def legs(view: dict) -> list[tuple]:
    return [(leg["number"], leg.get("step"), leg.get("party"), leg["state"]) for leg in view["legs"]]


def submitted() -> dict:
    return domain.new_progress(APP, PENSION, T0, "gd-portal", "portal")


async def test_the_legs_wait_in_order_until_the_first_is_assigned_once_routed_and_verified():
    view, _ = await feed(ROUTED, state=submitted())
    assert legs(view) == [(1, "CONTACT_LETTER", "440000", "WAITING"), (2, "FUND_TRANSFER", "420000", "WAITING"),
                          (3, "COMPLETION", "440000", "WAITING")]
    view, _ = await feed(VERIFIED, state=view)
    assert [leg["state"] for leg in view["legs"]] == ["ASSIGNED", "WAITING", "WAITING"]
    assert view["legs"][0]["assigned_at"] == at(1)  # when the last of routed and verified was there
    assert domain.acting_party(view) == "440000"


async def test_each_leg_completes_in_turn_the_next_party_holds_it_and_the_last_is_the_decision():
    view, _ = await feed(ROUTED, VERIFIED, ACCEPTED, leg_completed(1, 10, "440000", "CONTACT_LETTER"),
                         state=submitted())
    assert [leg["state"] for leg in view["legs"]] == ["COMPLETED", "ASSIGNED", "WAITING"]
    first, second = view["legs"][:2]
    assert (first["completed_at"], first["result_reference"]) == (at(10), "REF-1")
    assert second["assigned_at"] == at(10)  # assigned in the same transaction as leg 1's completion
    assert domain.acting_party(view) == "420000"
    assert domain.responsible_for(view["stage"], domain.acting_party(view)) == "DECIDING_AUTHORITY:420000"
    view, outcomes = await feed(leg_completed(2, 20, "420000", "FUND_TRANSFER"), decided("APPROVED", 30), state=view)
    assert [leg["state"] for leg in view["legs"]] == ["COMPLETED"] * 3
    assert view["legs"][2]["completed_at"] == at(30)
    assert view["stage"] == "DECIDED"
    assert not outcomes[-1].finished
    leg_steps = [(h["stage"], h["leg"], h["party"]) for h in view["history"] if "leg" in h]
    assert leg_steps == [("LEG_ASSIGNED", 1, "440000"), ("LEG_COMPLETED", 1, "440000"), ("LEG_ASSIGNED", 2, "420000"),
                         ("LEG_COMPLETED", 2, "420000"), ("LEG_ASSIGNED", 3, "440000"), ("LEG_COMPLETED", 3, "440000")]
    assert [h["sequence"] for h in view["history"]] == list(range(1, len(view["history"]) + 1))


async def test_a_failed_second_leg_undoes_the_first_and_the_third_never_runs():
    view, _ = await feed(ROUTED, VERIFIED, leg_completed(1, 10, "440000", "CONTACT_LETTER"),
                         leg_failed(2, 20, "420000", "FUND_TRANSFER", [(1, "440000", "CONTACT_LETTER")]),
                         state=submitted())
    assert [leg["state"] for leg in view["legs"]] == ["CANCELLED", "FAILED", "CANCELLED"]
    first, second, third = view["legs"]
    assert (first["completed_at"], first["cancelled_at"]) == (at(10), at(20))  # done, then undone
    assert first["detail"] == "undone: leg 2 failed"
    assert second["failed_at"] == at(20)
    assert "13800000000" not in second["detail"]
    assert second["detail"].startswith("转移资金不足")
    assert "assigned_at" not in third
    assert third["detail"] == "not run: leg 2 failed"
    view, outcomes = await feed(decided("DENIED", 21), state=view)
    assert (view["stage"], outcomes[-1].finished) == ("DENIED", True)
    assert [leg["state"] for leg in view["legs"]] == ["CANCELLED", "FAILED", "CANCELLED"]


async def test_leg_results_read_before_the_routing_keep_their_state_and_learn_their_step():
    view, _ = await feed(leg_completed(1, 10, "440000", "CONTACT_LETTER"), state=submitted())
    assert [(leg["number"], leg["state"]) for leg in view["legs"]] == [(1, "COMPLETED"), (2, "ASSIGNED")]
    assert view["legs"][1]["party"] == ""  # LegCompleted does not name the next party; the routing does
    view, _ = await feed(ROUTED, VERIFIED, state=view)
    assert legs(view) == [(1, "CONTACT_LETTER", "440000", "COMPLETED"), (2, "FUND_TRANSFER", "420000", "ASSIGNED"),
                          (3, "COMPLETION", "440000", "WAITING")]
    assert view["legs"][0]["completed_at"] == at(10)


async def test_a_withdrawal_between_legs_cancels_the_open_ones_and_delivery_s_close_undoes_the_done_one():
    view, _ = await feed(ROUTED, VERIFIED, leg_completed(1, 10, "440000", "CONTACT_LETTER"), state=submitted())
    outcome = await handlers.withdraw(Event("w", handlers.WITHDRAW, APP, {"withdrawn_at": at(11), "reason": ""},
                                            {"occurred_at": at(11)}, "command"), view)
    view = outcome.state
    assert [leg["state"] for leg in view["legs"]] == ["COMPLETED", "CANCELLED", "CANCELLED"]
    view, _ = await feed((P + "ApplicationClosed", {"application_id": APP, "status": "WITHDRAWN",
                                                   "reason": "withdrawn by the applicant", "closed_at": at(12)}),
                         state=view)
    assert [leg["state"] for leg in view["legs"]] == ["CANCELLED"] * 3
    assert view["legs"][0]["cancelled_at"] == at(12)


async def test_the_first_party_refusing_to_accept_fails_its_leg_and_the_rest_never_run():
    view, _ = await feed(ROUTED, VERIFIED, (P + "ApplicationRefused", {
        "application_id": APP, "deciding_partner": "440000", "reason": "不属于本机关职权范围"}), state=submitted())
    assert view["stage"] == "REJECTED"
    assert [leg["state"] for leg in view["legs"]] == ["FAILED", "CANCELLED", "CANCELLED"]
    assert view["legs"][0]["detail"] == "不属于本机关职权范围"


async def test_a_matter_that_is_not_joint_has_no_legs_in_its_view():
    single = [{"partner_id": "440000", "division_code": "440300", "step": "DECIDE", "working_days": 3}]
    view, _ = await feed((P + "ApplicationRouted", routed_body(mode="RECEIVE_HERE_HANDLE_THERE", legs=single)),
                         VERIFIED, decided("APPROVED", 5), state=submitted())
    assert "legs" not in view
    assert not any(h["stage"].startswith("LEG_") for h in view["history"])


async def test_a_leg_event_already_applied_changes_nothing():
    view, _ = await feed(ROUTED, VERIFIED, leg_completed(1, 10, "440000", "CONTACT_LETTER"), state=submitted())
    again, _ = await feed(leg_completed(1, 10, "440000", "CONTACT_LETTER"), state=view)
    assert again == view


# ---------------------------------------------------------------------------- over gRPC

@pytest.mark.parametrize("method", ["Track", "Watch"])
async def test_track_and_watch_show_each_leg_with_its_party_state_and_times(intake, method):  # noqa: F811
    call, runtime, port = intake
    application_id = (await call("Submit", company_at_window())).application_id
    await deliver_event(runtime, application_id, P + "ApplicationRouted", routed_body(application_id))
    await deliver_event(runtime, application_id, P + "ApplicationVerified",
                        {"application_id": application_id, "checks": []})
    completed_at = now_utc()
    body = {**leg_completed(1, 0, "440000", "CONTACT_LETTER", application_id)[1], "completed_at": completed_at}
    await deliver_event(runtime, application_id, topics.LEG_COMPLETED_EVENT, body)
    if method == "Track":
        progress = await call("Track", intake_pb2.TrackRequest(application_id=application_id))
        assert [(leg.number, leg.step, leg.party, leg.division, leg.state) for leg in progress.legs] == [
            (1, "CONTACT_LETTER", "440000", "440103", "COMPLETED"),
            (2, "FUND_TRANSFER", "420000", "420106", "ASSIGNED"),
            (3, "COMPLETION", "440000", "440103", "WAITING")]
        first, second, third = progress.legs
        assert first.completed_at_millis == millis(completed_at)
        assert first.result_reference == "REF-1"
        assert first.assigned_at_millis > 0
        assert second.assigned_at_millis == millis(completed_at)
        assert (third.assigned_at_millis, third.completed_at_millis) == (0, 0)
        assert progress.responsible == "DECIDING_AUTHORITY:420000"  # the party of the leg in hand
        return
    async with client_channel(f"127.0.0.1:{port}", PORTAL, TLS_DIR[0]) as channel:
        stream = intake_pb2_grpc.IntakeStub(channel).Watch(
            intake_pb2.WatchRequest(application_id=application_id), timeout=10)
        steps = [await stream.read() for _ in range(7)]
        stream.cancel()
    assert [(s.stage, s.leg, s.party) for s in steps][4:] == [
        ("LEG_ASSIGNED", 1, "440000"), ("LEG_COMPLETED", 1, "440000"), ("LEG_ASSIGNED", 2, "420000")]
    assert steps[6].responsible == "DECIDING_AUTHORITY:420000"
