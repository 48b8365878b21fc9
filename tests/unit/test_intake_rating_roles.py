"""好差评 in 异地代收代办 through intake's handlers: both the receiving window and the deciding
authority are rated, each against its own party and division taken from the application;
one online rating per rated party (一事一评), one on site per interaction (一次一评); each
rateable from the moment its service was given. No broker."""

from datetime import UTC, datetime, timedelta

import pytest

from services.intake import domain, handlers
from tongban import topics
from tongban.codec import SchemaRegistry
from tongban.events import encode_event
from tongban.handling import Event, Outcome, Rejected

APP = "TBRATEROLES"
T0 = datetime(2026, 12, 4, 1, 0, tzinfo=UTC)
P = "tongban.application."
WINDOW = "HN-430103-KSTB-01"
SUBMITTED = {"application_id": APP, "matter_code": "KSTB-MKT-01", "channel": "WINDOW",
             "receiving_division": "430103", "home_division": "440300",
             "applicant": {"kind": "COMPANY", "name": "示例公司", "id_number": "91430100MA4L00000F", "phone": None},
             "materials": [{"code": "APPLICATION_FORM", "name": "申请书", "provided": True, "original_checked": True}],
             "delivery_method": "ELECTRONIC", "postal_address": None, "submitted_at": T0, "window_id": WINDOW,
             "places": {}, "bundle_id": "", "commitments": [], "deferred_materials": {},
             "received_by": {"source_system": "changsha-window", "role": "window"},
             "fingerprints": {"matter_code": "a1b2c3"}}
ONLINE_SUBMITTED = {**SUBMITTED, "channel": "PORTAL", "window_id": "",
                    "received_by": {"source_system": "hunan-portal", "role": "portal"}}
ROUTED = (P + "ApplicationRouted", {"application_id": APP, "matter_code": "KSTB-MKT-01",
                                    "mode": "RECEIVE_HERE_HANDLE_THERE", "deciding_partner": "440000",
                                    "deciding_division": "440304", "legs": [], "promised_working_days": 3,
                                    "due_at": T0 + timedelta(days=3)})
ACCEPTED = (P + "ApplicationAccepted", {"application_id": APP, "deciding_partner": "440000", "accepted_at": T0})
REFUSED = (P + "ApplicationRefused", {"application_id": APP, "deciding_partner": "440000",
                                      "reason": "不属于本机关职权范围"})
APPROVED = (P + "ApplicationDecided", {"application_id": APP, "deciding_partner": "440000", "outcome": "APPROVED",
                                       "result_reference": "LIC-1", "reason": None, "decided_at": T0})


def event(event_type: str, payload: dict, n: int) -> Event:
    return Event(f"id-{n}-{event_type}", event_type, APP, payload,
                 {"occurred_at": T0 + timedelta(minutes=n), "correlation_id": APP}, "command")


def rating(role: str = "", channel: str = "ONLINE", interaction: str = "", level: int = 4,
           ref: str = "r1") -> tuple:
    """A Rate command as the API hands it over (its id is the rating's cause)."""
    return ("rate", ref, {"level": level, "channel": channel, "comment": None, "rated_at": T0,
                          "rated_role": role, "interaction_id": interaction})


async def feed(*steps, submitted: dict = SUBMITTED) -> tuple[dict | None, list[Outcome]]:
    """Submit, then each step: an event (type, payload) or a rating; a rating refused by the
    handler is recorded as its Rejected (the runtime dead-letters it)."""
    state = (await handlers.submit(event(handlers.SUBMIT, submitted, 0), None)).state
    outcomes: list = []
    for n, step in enumerate(steps, start=1):
        try:
            if step[0] == "rate":
                _, ref, body = step
                outcome = await handlers.rate(Event(f"rate:{APP}:{ref}", handlers.RATE, APP, body,
                                                    {"occurred_at": T0}, "command"), state)
            else:
                outcome = await handlers.HANDLERS[step[0]](event(step[0], step[1], n), state)
        except Rejected as refused:
            outcomes.append(refused)
            continue
        state = outcome.state if outcome.state is not None else state
        outcomes.append(outcome)
    return state, outcomes


def published(outcome: Outcome) -> dict:
    [emit] = outcome.emits
    assert (emit.topic, emit.event_type, emit.key) == (topics.FEEDBACK_RATINGS, topics.SERVICE_RATING_EVENT, APP)
    return emit.payload


async def test_the_receiving_window_is_rated_once_received_against_its_own_division():
    _, [outcome] = await feed(rating("RECEIVING"))
    rated = published(outcome)
    assert (rated["rated_role"], rated["party"], rated["division_code"]) == ("RECEIVING", WINDOW, "430103")


async def test_the_deciding_authority_is_rated_against_its_own_division_once_it_decided():
    _, outcomes = await feed(ROUTED, ACCEPTED, rating("DECIDING", ref="early"), APPROVED, rating("DECIDING"))
    assert isinstance(outcomes[2], Rejected)
    assert "once it has decided" in str(outcomes[2])
    rated = published(outcomes[4])
    assert (rated["rated_role"], rated["party"], rated["division_code"]) == ("DECIDING", "440000", "440304")


async def test_both_parties_of_one_application_are_rated_each_once_online():
    state, outcomes = await feed(ROUTED, APPROVED, rating("RECEIVING", ref="a", level=2),
                                 rating("DECIDING", ref="b", level=5), rating("RECEIVING", ref="c", level=5))
    assert [published(o)["party"] for o in outcomes[2:4]] == [WINDOW, "440000"]
    assert isinstance(outcomes[4], Rejected)
    assert "already rated online for RECEIVING" in str(outcomes[4])
    assert "一事一评" in str(outcomes[4])
    assert [(r["rated_role"], r["level"]) for r in state["ratings"]] == [("RECEIVING", 2), ("DECIDING", 5)]


async def test_on_site_each_interaction_is_rated_once():
    state, outcomes = await feed(rating("RECEIVING", "ONSITE", "visit-1", ref="a"),
                                 rating("RECEIVING", "ONSITE", "visit-2", ref="b"),
                                 rating("RECEIVING", "ONSITE", "visit-1", ref="c"),
                                 rating("RECEIVING", "ONSITE", "", ref="d"),
                                 rating("RECEIVING", "ONLINE", ref="e"))
    assert [published(o)["interaction_id"] for o in outcomes[:2]] == ["visit-1", "visit-2"]
    assert "一次一评" in str(outcomes[2])
    assert "interaction_id is required on site" in str(outcomes[3])
    assert published(outcomes[4])["interaction_id"] is None, "an online rating is another kind"
    assert len(state["ratings"]) == 3


async def test_a_refused_application_lets_the_authority_be_rated_for_its_non_acceptance():
    _, outcomes = await feed(ROUTED, REFUSED, rating("DECIDING"))
    assert published(outcomes[2])["party"] == "440000"


async def test_an_application_that_came_in_online_has_no_receiving_window_to_rate():
    _, [refused] = await feed(rating("RECEIVING"), submitted=ONLINE_SUBMITTED)
    assert isinstance(refused, Rejected)
    assert "came in online" in str(refused)


async def test_a_rating_without_a_role_rates_the_whole_service_once_decided():
    _, outcomes = await feed(ROUTED, rating(ref="early"), APPROVED, rating())
    assert "once it is concluded or decided" in str(outcomes[1])
    rated = published(outcomes[3])
    assert (rated["rated_role"], rated["party"], rated["division_code"]) == ("SERVICE", "440000", "430103")


async def test_an_unknown_role_is_refused_by_name():
    _, [refused] = await feed(rating("CLERK"))
    assert "rated_role must be one of SERVICE, RECEIVING, DECIDING" in str(refused)


def test_the_rated_party_never_comes_from_the_caller():
    view = {"window_id": WINDOW, "receiving_division": "430103", "deciding_partner": "440000",
            "home_division": "440300"}
    assert domain.rated_party(view, "RECEIVING") == (WINDOW, "430103")
    assert domain.rated_party(view, "DECIDING") == ("440000", "440300"), "the home division before routing names one"


@pytest.mark.parametrize("channel", ["ONLINE", "MOBILE", "HOTLINE"])
async def test_every_channel_but_on_site_is_one_rating_per_matter(channel):
    _, outcomes = await feed(rating("RECEIVING", channel, ref="a"), rating("RECEIVING", "ONLINE", ref="b"))
    assert published(outcomes[0])["channel"] == channel
    assert isinstance(outcomes[1], Rejected)


async def test_the_published_rating_is_a_service_rating_v2_with_its_role_and_interaction():
    _, [outcome] = await feed(rating("RECEIVING", "ONSITE", "visit-1"))
    registry = SchemaRegistry.load()
    _, framed = encode_event(registry, topics.SERVICE_RATING_EVENT, published(outcome), cause_id="c",
                             correlation_id=APP, source_system="tongban-intake")
    _, record = registry.decode(framed)
    assert (record["envelope"]["schema_version"], record["rated_role"], record["interaction_id"],
            record["party"]) == (2, "RECEIVING", "visit-1", WINDOW)
