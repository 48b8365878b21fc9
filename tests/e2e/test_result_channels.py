"""Results reach the applicant over the real broker and store: an e-licence through the
wallet, a paper result to the window and picked up there, post with a return retried to a
corrected address, retries exhausted into the manual queue and resolved by an operator,
POST refused for a matter without postal delivery; and the carrier, an independent party,
counts exactly one physical dispatch per attempt however often a decision is replayed or the
carrier itself fails."""

import asyncio
import json
import os
import secrets
from unittest import mock

import grpc
import pytest

from devtools.launcher import ROOT, Stack
from services.delivery import delivery_pb2, delivery_pb2_grpc
from sim.samples import DENIED_MATTER, resident_id
from tests.pii_parties import sealed_by
from tests.support import REGISTRY, Sink, produce, settle
from tongban.config import CRASH_POINTS
from tongban.events import encode_event, now_utc
from tongban.grpc_tls import client_channel, tls_dir
from tongban.ops import certs

pytestmark = pytest.mark.integration

WINDOW_CALLER, PORTAL, OPERATOR = "changsha-window", "hunan-portal", "tongban-operator"
SIM_WINDOW = "HN-430104-KSTB-01"  # the one window the simulator operates, as it operates every window in the demo
TEST_WINDOW = "HN-430103-KSTB-01"  # a window the tests operate (tongban/windows.toml)
OTHER_CHANGSHA_WINDOW = "HN-430102-KSTB-01"  # run by the same system, changsha-window
PROGRESS = "tongban.application.DeliveryProgress"
SIGKILL = -9
TOPICS = ["tongban.application.decided", "tongban.application.delivered", "tongban.partner.ems.dispatches",
          "tongban.partner.ems.receipts", "tongban.partner.wallet.dispatches", "tongban.partner.wallet.receipts"]
POLICY = {"TONGBAN_DELIVERY_POST_ATTEMPTS": "2", "TONGBAN_DELIVERY_RETRY_AFTER_SECONDS": "6",
          "TONGBAN_DELIVERY_PICKUP_REMINDER_SECONDS": "2", "TONGBAN_DELIVERY_UNCOLLECTED_REPORT_SECONDS": "5"}


@pytest.fixture(scope="module")
def stack(namespace):
    """Delivery and the partner simulator, with short delivery periods; the simulator operates
    one window (SIM_WINDOW), the tests are the others. The tests hand delivery its files as
    intake, routing and verification would, so what is tested here is delivery's part alone."""
    log_dir = ROOT / "var" / "test" / namespace.rstrip("-")
    with mock.patch.dict(os.environ, POLICY):
        stack = Stack({"TONGBAN_NAMESPACE": namespace, "TONGBAN_SESSION_TIMEOUT_MS": "3000",
                       "TONGBAN_TRACE_FILE": str(log_dir / "traces.jsonl"), "TONGBAN_LOG_LEVEL": "INFO"}, log_dir,
                      sim_args=("--deny-matters", DENIED_MATTER, "--carrier-ledger", str(log_dir / "carrier.jsonl"),
                                "--windows", SIM_WINDOW))
    certs.setup(tls_dir(stack.env), [stack.env.get("TONGBAN_GRPC_HOST", "")])
    for name in ("delivery", "sim"):
        stack.start(name)
    try:
        asyncio.run(stack.wait_healthy(("delivery",)))
        yield stack
    finally:
        stack.stop_all()


async def hand_over(namespace: str, matter: str, method: str, address: str | None = None,
                    window_id: str = "") -> str:
    """An application received, routed to Guangdong (440000) and verified, as the lifecycle
    topics carry it to delivery."""
    application_id = f"TBCH{secrets.token_hex(5).upper()}"
    applicant = {"kind": "PERSON", "name": "示例庚", "id_number": resident_id("440305", "19910203", "318"),
                 "phone": "13800000000"}
    received = {"application_id": application_id, "matter_code": matter, "channel": "WINDOW",
                "receiving_division": "430103", "home_division": "440305", "applicant": applicant,
                "materials": [{"code": "FORM", "name": "申请书", "provided": True, "original_checked": True}],
                "delivery_method": method, "postal_address": address, "submitted_at": now_utc(),
                "window_id": window_id}
    routed = {"application_id": application_id, "matter_code": matter, "mode": "RECEIVE_HERE_HANDLE_THERE",
              "deciding_partner": "440000", "deciding_division": "440305", "legs": [], "promised_working_days": 3,
              "due_at": now_utc()}
    verified = {"application_id": application_id, "checks": []}
    for topic, event_type, body, writer in [
            ("tongban.application.received", "tongban.application.ApplicationReceived", received, "intake"),
            ("tongban.application.routed", "tongban.application.ApplicationRouted", routed, "routing"),
            ("tongban.application.verified", "tongban.application.ApplicationVerified", verified, "verification")]:
        sealing = sealed_by(writer, topic) if writer == "intake" else {}
        _, value = encode_event(REGISTRY, event_type, body, cause_id=f"{application_id}-{writer}",
                                correlation_id=application_id, source_system=f"tongban-{writer}", **sealing)
        await produce(namespace, topic, application_id.encode(), value)
    return application_id


def physical_dispatches(stack: Stack, application_id: str) -> list[dict]:
    """The parcels the carrier's own ledger says it physically dispatched for this application."""
    ledger = stack.log_dir / "carrier.jsonl"
    lines = [json.loads(line) for line in ledger.read_text().splitlines()] if ledger.exists() else []
    return [p for p in lines if p["application_id"] == application_id and p["physical"]]


async def call(stack: Stack, method: str, caller: str, message, until_ok: bool = True):
    """Call delivery's API as `caller`; FAILED_PRECONDITION means delivery has not applied what
    came before yet (or refuses), so retry while `until_ok`."""
    for _ in range(120):
        try:
            async with client_channel(stack.grpc_target("delivery"), caller) as channel:
                return await getattr(delivery_pb2_grpc.DeliveryStub(channel), method)(message, timeout=10)
        except grpc.aio.AioRpcError as exc:
            if not until_ok or exc.code() not in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND,
                                                  grpc.StatusCode.UNAVAILABLE):
                raise
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{method} never succeeded")


def stages(seen, application_id: str) -> list[str]:
    return [e["stage"] for e in seen.events(PROGRESS, application_id)]


def has_stage(application_id: str, stage: str, count: int = 1):
    return lambda seen: stages(seen, application_id).count(stage) >= count


def delivered(application_id: str):
    return lambda seen: seen.events("tongban.application.ApplicationDelivered", application_id)


async def test_an_e_licence_is_delivered_when_the_wallet_confirms(stack, namespace):
    application_id = await hand_over(namespace, "KSTB-MED-01", "ELECTRONIC")  # 跨省异地就医备案
    async with Sink(namespace, TOPICS) as sink:
        await sink.wait_for(delivered(application_id), 90)
        seen = await settle(namespace, TOPICS, application_id, sink)
    [entry] = seen.events("tongban.delivery.WalletEntry", application_id)
    [answer] = seen.events("tongban.delivery.WalletReceipt", application_id)
    [done] = seen.events("tongban.application.ApplicationDelivered", application_id)
    [decided] = seen.events("tongban.application.ApplicationDecided", application_id)
    assert entry["licence_id"] == decided["result_reference"]
    assert entry["licence_id"].startswith("EL-440000-")
    assert entry["holder_id_number"].startswith("pii:"), "sealed for the wallet"
    assert (answer["status"], done["method"], done["dispatch_id"]) == ("RECORDED", "ELECTRONIC", entry["dispatch_id"])


async def test_a_result_goes_to_the_window_is_reminded_reported_and_delivered_at_pick_up(stack, namespace):
    application_id = await hand_over(namespace, "KSTB-SOC-02", "WINDOW", window_id=TEST_WINDOW)  # 社会保障卡申领
    async with Sink(namespace, TOPICS) as sink:
        seen = await sink.wait_for(lambda s: s.events("tongban.delivery.PostalDispatch", application_id), 90)
        [parcel] = seen.events("tongban.delivery.PostalDispatch", application_id)
        assert parcel["purpose"] == "TO_WINDOW"
        window_id = parcel["window_id"]
        act = delivery_pb2.WindowAct(application_id=application_id, window_id=window_id)
        with pytest.raises(grpc.aio.AioRpcError) as early:
            await call(stack, "ConfirmPickUp", WINDOW_CALLER, act, until_ok=False)
        assert early.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "has not arrived at a window yet" in early.value.details()
        await call(stack, "RecordArrival", WINDOW_CALLER, act)
        await sink.wait_for(has_stage(application_id, "UNCOLLECTED_REPORTED"), 60)
        assert stages(sink.seen, application_id).count("PICKUP_REMINDED") >= 1
        # another window of the same system, where the result was not sent
        elsewhere = delivery_pb2.WindowAct(application_id=application_id, window_id=OTHER_CHANGSHA_WINDOW)
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await call(stack, "ConfirmPickUp", WINDOW_CALLER, elsewhere, until_ok=False)
        assert wrong.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # a window system of another city, naming the right window: it does not speak for it
        for method in ("RecordArrival", "ConfirmPickUp"):
            with pytest.raises(grpc.aio.AioRpcError) as impostor:
                await call(stack, method, "xiangxi-window", act, until_ok=False)
            assert impostor.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "does not speak for that window" in impostor.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as not_a_window:
            await call(stack, "ConfirmPickUp", PORTAL, act, until_ok=False)
        assert not_a_window.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await call(stack, "ConfirmPickUp", WINDOW_CALLER, act)
        await sink.wait_for(delivered(application_id), 60)
        seen = await settle(namespace, TOPICS, application_id, sink)
    [done] = seen.events("tongban.application.ApplicationDelivered", application_id)
    assert (done["method"], done["dispatch_id"]) == ("WINDOW", parcel["dispatch_id"])
    assert "ARRIVED_AT_WINDOW" in stages(seen, application_id)
    assert len(physical_dispatches(stack, application_id)) == 1


async def test_the_simulated_window_records_arrival_and_pick_up_as_in_the_demo(stack, namespace):
    application_id = await hand_over(namespace, "KSTB-PSB-01", "WINDOW", window_id=SIM_WINDOW)  # 户口迁移
    async with Sink(namespace, TOPICS) as sink:
        await sink.wait_for(delivered(application_id), 90)
        seen = await settle(namespace, TOPICS, application_id, sink)
    assert sorted(stages(seen, application_id)) == ["ARRIVED_AT_WINDOW", "DISPATCHED", "IN_TRANSIT"]
    assert seen.events("tongban.application.ApplicationDelivered", application_id)[0]["method"] == "WINDOW"


async def test_a_returned_parcel_is_retried_to_the_corrected_address(stack, namespace):
    application_id = await hand_over(namespace, "KSTB-MKT-01", "POST", "湖南省长沙市查无此址路1号")
    async with Sink(namespace, TOPICS) as sink:
        await sink.wait_for(has_stage(application_id, "RETRY_SCHEDULED"), 90)
        redirect = delivery_pb2.RedirectRequest(application_id=application_id, method="POST",
                                                postal_address="湖南省长沙市天心区示例路2号", request_reference="r1")
        await call(stack, "Redirect", PORTAL, redirect)
        await sink.wait_for(delivered(application_id), 60)
        seen = await settle(namespace, TOPICS, application_id, sink)
    parcels = seen.events("tongban.delivery.PostalDispatch", application_id)
    assert [p["attempt"] for p in parcels] == [1, 2]
    assert parcels[0]["dispatch_id"] != parcels[1]["dispatch_id"]
    [done] = seen.events("tongban.application.ApplicationDelivered", application_id)
    assert done["dispatch_id"] == parcels[1]["dispatch_id"]
    assert [p["attempt"] for p in physical_dispatches(stack, application_id)] == [1, 2]


async def test_a_parcel_that_exhausts_its_retries_is_resolved_by_an_operator(stack, namespace):
    application_id = await hand_over(namespace, "KSTB-MKT-01", "POST", "湖南省长沙市拒收路1号")
    async with Sink(namespace, TOPICS) as sink:
        await sink.wait_for(has_stage(application_id, "MANUAL_HANDLING"), 120)
        pending = await call(stack, "Pending", OPERATOR, delivery_pb2.ResultRequest(application_id=application_id))
        assert (pending.status, pending.manual_reason) == ("MANUAL", "returned 2 times, last: REFUSED")
        resolve = delivery_pb2.RedirectRequest(application_id=application_id, method="POST",
                                               postal_address="湖南省长沙市岳麓区示例路3号", request_reference="op-1")
        with pytest.raises(grpc.aio.AioRpcError) as not_an_operator:
            await call(stack, "Resolve", PORTAL, resolve, until_ok=False)
        assert not_an_operator.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await call(stack, "Resolve", OPERATOR, resolve)
        await sink.wait_for(delivered(application_id), 60)
        seen = await settle(namespace, TOPICS, application_id, sink)
    assert [p["attempt"] for p in seen.events("tongban.delivery.PostalDispatch", application_id)] == [1, 2, 3]
    assert "RESOLVED" in stages(seen, application_id)


async def test_post_is_refused_for_a_matter_without_postal_delivery(stack, namespace):
    # 跨省异地就医备案 does not allow postal delivery of its result.
    application_id = await hand_over(namespace, "KSTB-MED-01", "POST", "湖南省长沙市示例路9号")
    async with Sink(namespace, TOPICS) as sink:
        seen = await sink.wait_for(has_stage(application_id, "POST_REFUSED"), 90)
    [refused] = [e for e in seen.events(PROGRESS, application_id) if e["stage"] == "POST_REFUSED"]
    assert refused["detail"].startswith("POST refused: matter KSTB-MED-01 does not allow postal delivery")
    assert refused["method"] == "WINDOW"


async def test_replayed_decisions_and_a_failing_carrier_give_one_physical_dispatch(stack, namespace):
    application_id = await hand_over(namespace, "KSTB-MKT-01", "POST", "湖南省长沙市承运故障路1号")
    async with Sink(namespace, [*TOPICS, "tongban.partner.440000.decisions"]) as sink:
        await sink.wait_for(delivered(application_id), 90)
        decision = next(r for r in sink.seen.records if r.topic == f"{namespace}tongban.partner.440000.decisions"
                        and r.key == application_id.encode()
                        and REGISTRY.decode(r.value)[0] == "tongban.partner.AuthorityDecision")
        for _ in range(3):  # the very record again, as a partner's redelivery would bring it
            await produce(namespace, "tongban.partner.440000.decisions", decision.key, decision.value,
                          [(k, v) for k, v in decision.headers])
        [parcel] = sink.seen.events("tongban.delivery.PostalDispatch", application_id)
        guessed = {"dispatch_id": "DSP" + parcel["dispatch_id"][3:][::-1], "application_id": application_id,
                   "tracking_number": "EMS0", "status": "DELIVERED", "at": now_utc(), "return_reason": None}
        _, forged = encode_event(REGISTRY, "tongban.delivery.PostalReceipt", guessed, cause_id=secrets.token_hex(4),
                                 correlation_id=application_id, source_system="partner-ems", source_partner="ems")
        await produce(namespace, "tongban.partner.ems.receipts", application_id.encode(), forged)
        dead = Sink(namespace, ["tongban.dlq.tongban-delivery"])
        async with dead:
            letters = await dead.wait_for(lambda s: any(
                dict(r.headers).get("tongban.dlq.error.message") == b"receipt for a dispatch this service did not make"
                and r.key == application_id.encode() for r in s.records), 60)
        assert letters
        seen = await settle(namespace, TOPICS, application_id, sink)
    assert len(seen.events("tongban.delivery.PostalDispatch", application_id)) == 1
    assert len(seen.events("tongban.application.ApplicationDelivered", application_id)) == 1
    ledger = [json.loads(line) for line in (stack.log_dir / "carrier.jsonl").read_text().splitlines()]
    handed = [p for p in ledger if p["application_id"] == application_id]
    assert len(handed) == 2, "the carrier failed once after dispatching and read the record again"
    assert len(physical_dispatches(stack, application_id)) == 1, "one physical dispatch"


@pytest.mark.parametrize("point", [p for p in CRASH_POINTS if p != "during_restore"])
async def test_delivery_dying_as_the_result_goes_out_still_gives_one_physical_dispatch(stack, namespace, point):
    """The authority answers only once delivery runs with a crash point: delivery dies in the
    first batch of the authority's answers (acceptance and decision are written together, so
    usually the batch that makes the dispatch), the simulator (the carrier included) restarts
    too, and the carrier still dispatches once."""
    assert stack.stop("sim") == 0
    application_id = await hand_over(namespace, "KSTB-MKT-01", "POST", "湖南省长沙市天心区示例路5号")
    async with Sink(namespace, [*TOPICS, "tongban.partner.440000.assignments"]) as sink:
        await sink.wait_for(lambda s: s.events("tongban.partner.MatterAssigned", application_id), 60)
        assert stack.stop("delivery") == 0
        stack.start("delivery", {"TONGBAN_CRASH_POINT": point})
        await stack.wait_healthy(("delivery",))
        stack.start("sim")
        assert await stack.wait_exit("delivery") == SIGKILL, "delivery did not reach its crash point"
        stack.start("delivery")
        await stack.wait_healthy(("delivery",))
        await sink.wait_for(delivered(application_id), 90)
        seen = await settle(namespace, TOPICS, application_id, sink)
    for event_type in ("tongban.application.ApplicationDecided", "tongban.delivery.PostalDispatch",
                       "tongban.application.ApplicationDelivered"):
        assert len(seen.events(event_type, application_id)) == 1, f"{event_type} is not on the wire exactly once"
    assert len(physical_dispatches(stack, application_id)) == 1
