"""资料寄递 with the simulated carrier, all services over the real broker: a file received at a
Changsha window for Guangdong, whose matter needs paper originals, is collected by the carrier
and signed for by Guangdong (tongban.partner.ems.originals); routing's transit clock ends on the
signature, and the applicant's Track shows the parcel. Sinks: the carrier's topic, routing's
changelog (its committed state, while the file waits for a 补正), its archived ledger once the
result is delivered, and intake's Track."""

import secrets

import pytest

from services.intake import intake_pb2, intake_pb2_grpc
from sim.samples import SUPPLEMENT_MATTER, samples
from tests.e2e.test_originals_transit_e2e import archived
from tests.support import Sink, start_stack, submit, wait_terminal
from tongban import topics
from tongban.grpc_tls import client_channel
from tongban.runtime.core import ENTRY, Entry

pytestmark = pytest.mark.integration

CHANGELOG = topics.changelog("tongban-routing")
REQUESTED = "tongban.application.SupplementRequested"


@pytest.fixture(scope="module")
def stack(namespace):
    # The authority first asks for a 补正: the file waits for the test, so nothing ends the
    # ledger before the carrier's receipt is in, whatever the machine's speed.
    stack = start_stack(namespace, {"TONGBAN_SUPPLEMENT_PERIOD_SECONDS": "300"},
                        sim_args=("--supplement-matters", SUPPLEMENT_MATTER))
    yield stack
    stack.stop_all()


def committed_ledger(seen, namespace: str, application_id: str) -> dict | None:
    """Routing's latest committed ledger of the application, from its changelog."""
    entries = [r for r in seen.records if r.topic == namespace + CHANGELOG
               and r.key == ENTRY + application_id.encode() and r.value is not None]
    state = Entry.unpack(entries[-1].value).state if entries else None
    return (state or {}).get("ledger")


def once(events: list[dict]) -> list[dict]:
    return list({e["envelope"]["event_id"]: e for e in events}.values())


def transit(ledger: dict | None) -> dict | None:
    return next((c for c in (ledger or {}).get("clocks", []) if c["leg"] == "TRANSIT"), None)


async def test_the_carrier_posts_the_originals_and_the_authority_signature_ends_transit(stack, namespace):
    request = next(s.request for s in samples(secrets.token_hex(4)) if s.request.matter_code == SUPPLEMENT_MATTER)
    assert request.channel == "WINDOW"  # received here, decided in Guangdong: originals travel
    async with Sink(namespace, [topics.APPLICATION_ROUTED, topics.POSTAL_ORIGINALS, topics.APPLICATION_ACCEPTED,
                                CHANGELOG]) as sink:
        application_id = await submit(stack, request)
        seen = await sink.wait_for(lambda s: transit(committed_ledger(s, namespace, application_id)) is not None
                                   and transit(committed_ledger(s, namespace, application_id))["status"] == "DONE"
                                   and s.events(REQUESTED, application_id), within=90)
        [routed] = seen.events(topics.APPLICATION_ROUTED_EVENT, application_id)
        # The carrier writes at least once (a resend has the same event id): one fact of each.
        [dispatched] = once(seen.events(topics.MATERIALS_DISPATCHED_EVENT, application_id))
        [received] = once(seen.events(topics.MATERIALS_RECEIVED_EVENT, application_id))
        [notice] = seen.events(REQUESTED, application_id)
    authority = routed["deciding_partner"]
    assert (routed["mode"], authority) == ("RECEIVE_HERE_HANDLE_THERE", "440000")
    assert (dispatched["to_party"], received["received_by"]) == (authority, authority)
    assert received["tracking_number"] == dispatched["tracking_number"]
    for event in (dispatched, received):
        envelope = event["envelope"]
        assert (envelope["source_system"], envelope["source_partner"]) == ("partner-ems", topics.CARRIER)
        assert (envelope["causation_id"], envelope["correlation_id"]) == (
            routed["envelope"]["event_id"], application_id)
    # Routing took the parcel and ended transit while the authority still waits for the 补正.
    ledger = committed_ledger(seen, namespace, application_id)
    assert (ledger["originals_tracked"], ledger["parcels"]) == (True, [dispatched["tracking_number"]])
    assert transit(ledger)["party"] == request.window_id

    async with client_channel(stack.grpc_target("intake")) as channel:
        await intake_pb2_grpc.IntakeStub(channel).SupplementMaterials(intake_pb2.SupplementRequest(
            application_id=application_id,
            materials=[intake_pb2.Material(code=code, provided=True) for code in notice["missing_materials"]]),
            timeout=10)
    progress = await wait_terminal(stack, application_id, within=120)
    assert progress.stage == "DELIVERED", [h.stage for h in progress.history]
    # The applicant's Track shows the parcel: its tracking number, taken and signed for.
    parcel = dispatched["tracking_number"]
    assert [(h.stage, h.detail) for h in progress.history if h.stage.startswith("ORIGINALS_")] == [
        ("ORIGINALS_DISPATCHED", f"{parcel} to {authority}"),
        ("ORIGINALS_RECEIVED", f"{parcel} signed for by {authority}")]

    ledger = (await archived(namespace, application_id))["state"]["ledger"]
    clocks = {c["leg"]: c for c in ledger["clocks"]}
    assert clocks["TRANSIT"]["status"] == "DONE"
    assert (ledger["parcels"], ledger["ended"]) == ([dispatched["tracking_number"]], "DELIVERED")
