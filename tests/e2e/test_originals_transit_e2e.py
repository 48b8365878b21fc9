"""资料寄递 over the real broker: routing alone reads the carrier's tracking of an application's
paper originals (tongban.partner.ems.originals). The deciding authority accepting on scanned
copies does not end the window's transit clock; the authority signing for the parcel does, on
the day it signs. The archived ledger (routing's own store, read here directly) is the sink."""

import asyncio
import os
import secrets
import time
from datetime import timedelta

import pytest
from pymongo import AsyncMongoClient

from devtools.launcher import ROOT, Stack
from tests.pii_parties import sealed_by
from tests.support import REGISTRY, Sink, produce
from tongban import topics
from tongban.events import encode_event, now_utc
from tongban.grpc_tls import tls_dir
from tongban.ops import certs
from tongban.runtime.archive import collection_for
from tongban.workdays import SHANGHAI

pytestmark = pytest.mark.integration

DLQ = topics.dlq("tongban-routing")


@pytest.fixture(scope="module")
def routing(namespace):
    """Routing alone: the test plays intake, delivery and the carrier."""
    stack = Stack({"TONGBAN_NAMESPACE": namespace, "TONGBAN_SESSION_TIMEOUT_MS": "3000", "TONGBAN_LOG_LEVEL": "INFO"},
                  ROOT / "var" / "test" / namespace.rstrip("-"))
    certs.setup(tls_dir(stack.env), [stack.env.get("TONGBAN_GRPC_HOST", "")])
    stack.start("routing")
    try:
        asyncio.run(stack.wait_healthy(("routing",)))
        yield stack
    finally:
        stack.stop_all()


def event(event_type: str, body: dict, cause: str, application_id: str, source: str, **sealing) -> bytes:
    _, value = encode_event(REGISTRY, event_type, body, cause_id=cause, correlation_id=application_id,
                            source_system=source, **sealing)
    return value


def received(application_id: str) -> bytes:
    """At a window in 430102 for a matter whose residence proof data sharing cannot supply."""
    body = {"application_id": application_id, "matter_code": "KSTB-MED-01", "channel": "WINDOW",
            "receiving_division": "430102", "home_division": "420106",
            "applicant": {"kind": "PERSON", "name": "示例", "id_number": "420106198506123417", "phone": None},
            "materials": [], "delivery_method": "ELECTRONIC", "postal_address": None, "submitted_at": now_utc(),
            "application_number": "", "window_id": "", "places": {}, "bundle_id": "", "commitments": [],
            "deferred_materials": {}}
    return event(topics.APPLICATION_RECEIVED_EVENT, body, application_id, application_id, "tongban-intake",
                 **sealed_by("intake", topics.APPLICATION_RECEIVED))


def carrier(event_type: str, body: dict, cause: str) -> bytes:
    return event(event_type, body, cause, body["application_id"], "partner-ems", source_partner=topics.CARRIER)


def rejected(seen, application_id: str, reason: str) -> bool:
    return any(r.topic.endswith(DLQ) and r.key == application_id.encode()
               and reason in dict(r.headers)["tongban.dlq.error.message"].decode() for r in seen.records)


async def archived(namespace: str, application_id: str, within: float = 60) -> dict:
    client = AsyncMongoClient(os.environ.get("TONGBAN_MONGO_URI", "mongodb://127.0.0.1:27217/"))
    db = client[f"{namespace.replace('-', '_')}tongban_routing"]
    deadline = time.monotonic() + within
    try:
        while (doc := await db[collection_for(application_id)].find_one({"_id": application_id})) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{application_id} was not archived by routing within {within}s")
            await asyncio.sleep(0.3)
        return doc
    finally:
        await client.close()


async def test_transit_ends_when_the_deciding_authority_signs_for_the_originals(routing, namespace):
    app = "TBORIG" + secrets.token_hex(6).upper()
    now = now_utc()
    signed_at = now + timedelta(days=1)  # a day after the authority accepted on the scanned copies
    async with Sink(namespace, [topics.APPLICATION_ROUTED, DLQ]) as sink:
        await produce(namespace, topics.APPLICATION_RECEIVED, app.encode(), received(app))
        seen = await sink.wait_for(lambda s: s.events(topics.APPLICATION_ROUTED_EVENT, app))
        [routed] = seen.events(topics.APPLICATION_ROUTED_EVENT, app)
        assert routed["mode"] == "RECEIVE_HERE_HANDLE_THERE"
        authority = routed["deciding_partner"]

        await produce(namespace, topics.APPLICATION_ACCEPTED, app.encode(), event(
            topics.APPLICATION_ACCEPTED_EVENT, {"application_id": app, "deciding_partner": authority,
                                                "accepted_at": now}, f"{app}-accepted", app, "tongban-delivery"))
        # A bad clock change after it on the same partition: its dead letter shows the acceptance was applied.
        await produce(namespace, topics.APPLICATION_ACCEPTED, app.encode(), event(
            topics.APPLICATION_CLOCK_CHANGED_EVENT, {"application_id": app, "deciding_partner": authority,
                                                     "kind": "PAUSED", "working_days": 0, "reason": "",
                                                     "changed_at": now}, f"{app}-bad", app, "tongban-delivery"))
        await sink.wait_for(lambda s: rejected(s, app, "clock change kind is not one of"))

        parcel = "EMS" + secrets.token_hex(5).upper()
        for event_type, body in (
                (topics.MATERIALS_DISPATCHED_EVENT, {"application_id": app, "tracking_number": parcel,
                                                     "from_party": "430102", "to_party": authority,
                                                     "dispatched_at": now}),
                (topics.MATERIALS_RECEIVED_EVENT, {"application_id": app, "tracking_number": parcel,
                                                   "received_by": authority, "received_at": signed_at}),
                # signed for by a party that does not decide it: refused, and (same partition) a barrier
                (topics.MATERIALS_RECEIVED_EVENT, {"application_id": app, "tracking_number": parcel,
                                                   "received_by": "360000", "received_at": signed_at})):
            await produce(namespace, topics.POSTAL_ORIGINALS, app.encode(),
                          carrier(event_type, body, f"{parcel}-{body.get('received_by', 'out')}"))
        seen = await sink.wait_for(lambda s: rejected(s, app, "signed for by a party that does not decide"))
        assert parcel.encode() not in b"".join(dict(r.headers)["tongban.dlq.error.message"] for r in seen.records
                                               if r.topic.endswith(DLQ))

    await produce(namespace, topics.APPLICATION_DELIVERED, app.encode(), event(
        topics.APPLICATION_DELIVERED_EVENT, {"application_id": app, "method": "ELECTRONIC", "dispatch_id": "D1",
                                             "tracking_number": None, "delivered_at": signed_at + timedelta(days=1)},
        f"{app}-delivered", app, "tongban-delivery"))
    ledger = (await archived(namespace, app))["state"]["ledger"]
    clocks = {c["leg"]: c for c in ledger["clocks"]}
    assert (clocks["ACCEPTANCE"]["status"], clocks["ACCEPTANCE"]["ended_on"]) == (
        "DONE", now.astimezone(SHANGHAI).date().isoformat())
    assert (clocks["TRANSIT"]["status"], clocks["TRANSIT"]["ended_on"], clocks["TRANSIT"]["party"]) == (
        "DONE", signed_at.astimezone(SHANGHAI).date().isoformat(), "430102")
    assert (ledger["originals_tracked"], ledger["parcels"], ledger["ended"]) == (True, [parcel], "DELIVERED")
