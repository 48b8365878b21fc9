"""The catalogue over the real broker and the running routing service: every matter is
published as MatterChanged v2 on the compacted catalogue topic, the query API answers over
gRPC, and an ApplicationReceived v2 is decided at the place its matter's rule names."""

import asyncio
import secrets
import time

import pytest

from services.routing import routing_pb2, routing_pb2_grpc
from services.routing.catalogue import Catalogue
from tests.pii_parties import sealed_by
from tests.support import REGISTRY, Sink, produce
from tongban import topics
from tongban.events import encode_event, now_utc
from tongban.grpc_tls import DEFAULT_CALLER, client_channel

pytestmark = pytest.mark.integration

CATALOGUE = Catalogue.load()


async def test_routing_publishes_every_matter_of_its_catalogue_once(stack, namespace):
    codes = {m.code for m in CATALOGUE.all()}
    async with Sink(namespace, [topics.CATALOGUE_CHANGES]) as sink:
        seen = await sink.wait_for(
            lambda s: {e["_key"] for e in s.events(topics.MATTER_CHANGED_EVENT)} >= codes, within=90)
    events = seen.events(topics.MATTER_CHANGED_EVENT)
    assert sorted(e["_key"] for e in events) == sorted(codes)  # a fresh namespace: each matter once, added
    assert {e["change"] for e in events} == {"ADDED"}
    pension = next(e for e in events if e["_key"] == "KSTB-SOC-01")
    assert pension["envelope"]["schema_version"] == 2
    assert pension["version"] == CATALOGUE.get("KSTB-SOC-01").version
    assert (pension["place"], [leg["place"] for leg in pension["legs"]]) == (
        "INSURED_AFTER", ["INSURED_AFTER", "INSURED_BEFORE", "INSURED_AFTER"])
    assert any(m["shared_evidence"] == "DATA_CHECK" for m in pension["materials"])


async def test_the_catalogue_search_answers_over_grpc(stack):
    async with client_channel(stack.grpc_target("routing"), DEFAULT_CALLER) as channel:
        reply = await routing_pb2_grpc.CatalogueStub(channel).FindMatters(
            routing_pb2.FindMattersRequest(keyword="不动产", division="440103"), timeout=10)
    assert [(m.code, m.deciding_partner) for m in reply.matters] == [("KSTB-NRA-01", "440000"),
                                                                     ("KSTB-NRA-02", "440000")]
    assert all(m.legal_basis and m.guide for m in reply.matters)


def received(application_id: str, places: dict[str, str]) -> dict:
    """An ApplicationReceived v2 as intake writes it: a mortgage registration received at a
    Changsha window for a property in Guangzhou, the applicant registered in Beijing."""
    return {
        "application_id": application_id, "matter_code": "KSTB-NRA-01", "channel": "WINDOW",
        "receiving_division": "430102", "home_division": "110101",
        "applicant": {"kind": "PERSON", "name": "示例庚", "id_number": "110101199001011237", "phone": None},
        "materials": [{"code": code, "name": code, "provided": True, "original_checked": True}
                      for code in ("APPLICATION_FORM", "RESIDENT_ID", "PROPERTY_CERTIFICATE", "MORTGAGE_CONTRACT")],
        "delivery_method": "ELECTRONIC", "postal_address": None, "submitted_at": now_utc(),
        "window_id": "HN-430102-KSTB-01", "places": places,
    }


async def test_an_application_is_decided_at_the_place_its_matter_names(stack, namespace):
    at_property = "TBPL" + secrets.token_hex(6).upper()
    no_property = "TBPL" + secrets.token_hex(6).upper()
    for application_id, places in ((at_property, {"HOUSEHOLD": "110101", "PROPERTY": "440103"}),
                                   (no_property, {"HOUSEHOLD": "110101"})):
        _, value = encode_event(REGISTRY, "tongban.application.ApplicationReceived", received(application_id, places),
                                cause_id=application_id, correlation_id=application_id, source_system="tongban-intake",
                                **sealed_by("intake", topics.APPLICATION_RECEIVED))
        await produce(namespace, topics.APPLICATION_RECEIVED, application_id.encode(), value)
    async with Sink(namespace, [topics.APPLICATION_ROUTED]) as sink:
        seen = await sink.wait_for(lambda s: s.events(topics.APPLICATION_ROUTED_EVENT, at_property)
                                   and s.events(topics.APPLICATION_UNDER_REVIEW_EVENT, no_property), within=60)
    [routed] = seen.events(topics.APPLICATION_ROUTED_EVENT, at_property)
    assert (routed["deciding_partner"], routed["deciding_division"], routed["mode"]) == (
        "440000", "440103", "RECEIVE_HERE_HANDLE_THERE")
    [unroutable] = seen.events(topics.APPLICATION_UNDER_REVIEW_EVENT, no_property)  # an operator may route it
    assert unroutable["reason"] == ("the matter is handled at the PROPERTY place; "
                                    "the application names no PROPERTY division")


async def published_lines(log, within: float = 60) -> list[str]:
    """The routing log's publication reports, once there are two (the first start's and the restart's)."""
    deadline = time.monotonic() + within
    while len(lines := [line for line in log.read_text().splitlines() if "catalogue published" in line]) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError("routing did not report its catalogue publication after the restart")
        await asyncio.sleep(0.2)
    return lines


async def test_a_restart_with_the_same_catalogue_publishes_nothing(stack, namespace):
    stack.stop("routing")
    stack.start("routing")
    await stack.wait_healthy(("routing",))
    lines = await published_lines(stack.log_dir / "routing.log")
    assert f"0 of {len(CATALOGUE.all())} matters changed" in lines[-1]
    # the report comes after the last send was acknowledged: the topic holds each matter once
    async with Sink(namespace, [topics.CATALOGUE_CHANGES]) as sink:
        seen = await sink.wait_for(lambda s: len(s.events(topics.MATTER_CHANGED_EVENT)) >= len(CATALOGUE.all()))
    assert len(seen.events(topics.MATTER_CHANGED_EVENT)) == len(CATALOGUE.all())
