"""The SLA ledger over the real broker: routing alone, its ledger clock running 40 days ahead
of the wall clock (TONGBAN_SLA_CLOCK_AHEAD_DAYS), so an application received now is past its
deadlines at once and the durable timers fire without any waiting on the calendar."""

import asyncio
import secrets

import pytest

from devtools.launcher import ROOT, Stack
from tests.pii_parties import sealed_by
from tests.support import REGISTRY, Sink, produce
from tongban.events import encode_event, now_utc
from tongban.grpc_tls import tls_dir
from tongban.ops import certs

pytestmark = pytest.mark.integration

RECEIVED = "tongban.application.received"
AHEAD_DAYS = "40"


@pytest.fixture(scope="module")
def routing(namespace):
    """Routing alone: nothing else answers, so only its own timers move the application."""
    stack = Stack({"TONGBAN_NAMESPACE": namespace, "TONGBAN_SESSION_TIMEOUT_MS": "3000", "TONGBAN_LOG_LEVEL": "INFO"},
                  ROOT / "var" / "test" / namespace.rstrip("-"))
    certs.setup(tls_dir(stack.env), [stack.env.get("TONGBAN_GRPC_HOST", "")])  # as start_all does
    stack.start("routing", {"TONGBAN_SLA_CLOCK_AHEAD_DAYS": AHEAD_DAYS})
    try:
        asyncio.run(stack.wait_healthy(("routing",)))
        yield stack
    finally:
        stack.stop_all()


def received(application_id: str, delivery_method: str = "ELECTRONIC") -> bytes:
    body = {"application_id": application_id, "matter_code": "KSTB-MED-01", "channel": "PORTAL",
            "receiving_division": "430102", "home_division": "420106",
            "applicant": {"kind": "PERSON", "name": "示例", "id_number": "420106198506123417", "phone": None},
            "materials": [], "delivery_method": delivery_method,
            "postal_address": "长沙市岳麓区示例路1号" if delivery_method == "POST" else None, "submitted_at": now_utc(),
            "application_number": "", "window_id": "", "places": {}, "bundle_id": "", "commitments": [],
            "deferred_materials": {}}
    _, value = encode_event(REGISTRY, "tongban.application.ApplicationReceived", body, cause_id=application_id,
                            correlation_id=application_id, source_system="tongban-intake",
                            **sealed_by("intake", RECEIVED))
    return value


async def test_a_deadline_passing_under_the_controlled_clock_breaches_naming_the_party(routing, namespace):
    application_id = "TBSLA" + secrets.token_hex(6).upper()
    async with Sink(namespace, ["tongban.application.routed", "tongban.sla.breached"]) as sink:
        await produce(namespace, RECEIVED, application_id.encode(), received(application_id))

        def breached(seen) -> bool:
            return len(seen.events("tongban.sla.SlaBreached", application_id)) == 2

        seen = await sink.wait_for(breached, within=60)
    [routed] = seen.events("tongban.application.ApplicationRouted", application_id)
    acceptance, decision = seen.events("tongban.sla.SlaBreached", application_id)
    # Neither acceptance nor 补正 notice in 5 working days: accepted by law from the day
    # received, so the decision's 2 working days ran from then as well.
    assert (acceptance["leg"], acceptance["party"], acceptance["consequence"]) == (
        "ACCEPTANCE", routed["deciding_partner"], "DEEMED_ACCEPTED")
    assert (decision["leg"], decision["step"], decision["party"], decision["matter_code"]) == (
        "DECISION", "DECIDE", routed["deciding_partner"], "KSTB-MED-01")
    assert decision["deadline"] < acceptance["deadline"]
    assert {e["_topic"] for e in seen.events("tongban.sla.SlaBreached")} == {"tongban.sla.breached"}
    # the yellow and red cards of the acceptance clock came first, each once
    cards = [(w["leg"], w["level"]) for w in seen.events("tongban.sla.SlaWarning", application_id)]
    assert cards == [("ACCEPTANCE", "YELLOW"), ("ACCEPTANCE", "RED")]
    # nothing personal travels on the SLA topic
    raw = b"".join(r.value for r in seen.records if r.topic == namespace + "tongban.sla.breached")
    assert "示例".encode() not in raw
    assert b"420106198506123417" not in raw


def decided(application_id: str, deciding_partner: str) -> bytes:
    body = {"application_id": application_id, "deciding_partner": deciding_partner, "outcome": "APPROVED",
            "result_reference": "LIC-1", "reason": None, "decided_at": now_utc()}
    _, value = encode_event(REGISTRY, "tongban.application.ApplicationDecided", body, cause_id=f"{application_id}-d",
                            correlation_id=application_id, source_system="tongban-delivery")
    return value


async def test_routing_runs_the_delivery_clock_from_the_decision_it_reads_and_names_the_carrier(routing, namespace):
    application_id = "TBSLA" + secrets.token_hex(6).upper()
    async with Sink(namespace, ["tongban.application.routed", "tongban.sla.breached"]) as sink:
        await produce(namespace, RECEIVED, application_id.encode(), received(application_id, "POST"))
        # the decision is read only once routing holds the application (another topic: no order between them)
        seen = await sink.wait_for(lambda s: s.events("tongban.application.ApplicationRouted", application_id))
        [routed] = seen.events("tongban.application.ApplicationRouted", application_id)
        await produce(namespace, "tongban.application.decided", application_id.encode(),
                      decided(application_id, routed["deciding_partner"]))

        def delivery_breached(seen) -> list:
            return [b for b in seen.events("tongban.sla.SlaBreached", application_id) if b["leg"] == "DELIVERY"]

        seen = await sink.wait_for(delivery_breached, within=60)
    [breach] = delivery_breached(seen)
    # 行政许可法 §44: served within 10 working days of the decision, by the carrier for a postal result
    assert (breach["party"], breach["step"], breach["consequence"]) == ("ems", "", "")
    assert breach["deadline"] > now_utc()  # it is the ledger's clock, 40 days ahead, that passed it
