"""`tongban stuck`: which event moves an application to which stage and who acts next, and
which applications count as stuck (pure rules, no broker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tongban import topics
from tongban.ops.stuck import APPLICANT, DELIVERY, ROUTING, VERIFICATION, Progress, follow, progress_topics, step, stuck

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
APP = "tongban.application"


@pytest.mark.parametrize(("topic", "event_type", "body", "expected"), [
    (topics.APPLICATION_RECEIVED, f"{APP}.ApplicationReceived", {}, ("received", ROUTING, False)),
    (topics.APPLICATION_ROUTED, f"{APP}.ApplicationRouted", {}, ("routed", VERIFICATION, False)),
    (topics.APPLICATION_ROUTED, f"{APP}.ApplicationUnroutable", {}, ("unroutable", "", True)),
    (topics.APPLICATION_VERIFIED, f"{APP}.ApplicationVerified", {}, ("verified", DELIVERY, False)),
    (topics.APPLICATION_VERIFIED, f"{APP}.ApplicationVerificationFailed", {"outcome": "FAILED"},
     ("verification failed", "", True)),
    (topics.APPLICATION_VERIFIED, f"{APP}.ApplicationVerificationFailed", {"outcome": "SUPPLEMENT_REQUIRED"},
     ("verification asks for materials", APPLICANT, False)),
    (topics.partner_assignments("420000"), "tongban.partner.MatterAssigned", {},
     ("assigned to the deciding authority", "partner-420000", False)),
    (topics.partner_decisions("420000"), "tongban.partner.AuthorityDecision", {"outcome": "APPROVED"},
     ("authority decided", DELIVERY, False)),
    (topics.APPLICATION_ACCEPTED, f"{APP}.ApplicationAccepted", {"deciding_partner": "360000"},
     ("accepted", "partner-360000", False)),
    (topics.APPLICATION_ACCEPTED, f"{APP}.SupplementRequested", {}, ("supplement requested", APPLICANT, False)),
    (topics.APPLICATION_ACCEPTED, f"{APP}.ApplicationRefused", {}, ("refused", "", True)),
    (topics.APPLICATION_DECIDED, f"{APP}.ApplicationDecided", {"outcome": "APPROVED"}, ("decided", DELIVERY, False)),
    (topics.APPLICATION_DECIDED, f"{APP}.ApplicationDecided", {"outcome": "DENIED"}, ("decided", "", True)),
    (topics.POSTAL_DISPATCHES, "tongban.delivery.PostalDispatch", {}, ("result dispatched", "partner-ems", False)),
    (topics.APPLICATION_DELIVERED, f"{APP}.DeliveryProgress", {"stage": "IN_TRANSIT"},
     ("delivery: in_transit", DELIVERY, False)),
    (topics.APPLICATION_DELIVERED, f"{APP}.ApplicationDelivered", {}, ("delivered", "", True)),
    (topics.APPLICATION_ACCEPTED, f"{APP}.ApplicationClosed", {"status": "WITHDRAWN"}, ("closed", "", True)),
    ("tongban.sla.breached", "tongban.sla.SlaBreached", {}, None),
])
def test_each_event_moves_an_application_to_a_stage_and_names_who_acts_next(topic, event_type, body, expected):
    assert step(topic, event_type, body) == expected


def events(app: str, *steps: tuple[str, str, dict, int]):
    return [(topic, app, event_type, body, T0 + timedelta(minutes=minute)) for topic, event_type, body, minute in steps]


RECEIVED = (topics.APPLICATION_RECEIVED, f"{APP}.ApplicationReceived", {}, 0)
ASSIGNED = (topics.partner_assignments("420000"), "tongban.partner.MatterAssigned", {}, 2)
DELIVERED = (topics.APPLICATION_DELIVERED, f"{APP}.ApplicationDelivered", {}, 9)
BREACHED = ("tongban.sla.breached", "tongban.sla.SlaBreached", {}, 50)


def test_the_latest_step_counts_whatever_order_the_topics_were_read_in():
    progress = follow(events("A", ASSIGNED, BREACHED, RECEIVED))
    assert progress == {"A": Progress("A", "assigned to the deciding authority", "partner-420000",
                                      T0 + timedelta(minutes=2))}


def test_a_finished_application_stays_finished():
    late = (topics.APPLICATION_DELIVERED, f"{APP}.DeliveryProgress", {"stage": "ARRIVED"}, 20)
    assert follow(events("A", RECEIVED, DELIVERED, late))["A"].finished


def test_stuck_are_the_unfinished_idle_ones_by_stage_and_party_oldest_first():
    progress = follow(events("A", RECEIVED, ASSIGNED) + events("B", RECEIVED, DELIVERED)
                      + events("C", (*ASSIGNED[:3], 1)) + events("D", (*RECEIVED[:3], 55)))
    found = stuck(progress, T0 + timedelta(hours=1), timedelta(minutes=30))
    assert {key: [p.application_id for p in apps] for key, apps in found.items()} == \
        {("assigned to the deciding authority", "partner-420000"): ["C", "A"]}
    assert stuck(progress, T0 + timedelta(hours=1), timedelta(hours=2)) == {}


def test_the_progress_topics_are_the_lifecycle_and_partner_streams():
    chosen = progress_topics([topics.APPLICATION_RECEIVED, topics.partner_decisions("ems"), topics.FEEDBACK_RATINGS,
                              topics.SCHEMAS, topics.dlq("tongban-routing"), "tongban.sla.breached"])
    assert chosen == [topics.APPLICATION_RECEIVED, topics.partner_decisions("ems")]
