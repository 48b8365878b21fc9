"""The simulated carrier (EMS), e-licence wallet and receiving window.

- The **carrier** reads `tongban.partner.ems.dispatches`. It dispatches each parcel once,
  deduplicating on the dispatch id in its own store (its ledger, one JSON line per dispatch
  record it is handed, `physical` telling the first from a repeat), and reports ACCEPTED,
  IN_TRANSIT, then DELIVERED or RETURNED on `tongban.partner.ems.receipts`. What it does is
  told by the address it reads (test addresses): 查无此址 returns the parcel as WRONG_ADDRESS,
  拒收 as REFUSED, 无人签收 as NOT_COLLECTED; 承运故障 makes it fail once after dispatching,
  before it acknowledges (it reads the record again and must not dispatch twice). Told a
  delay, it reports delivery or return that many seconds after taking a parcel in.
- The **wallet** reads `tongban.partner.wallet.dispatches` and records an e-licence for the
  holder it can identify (RECORDED), else refuses.
- A **window** (a service-hall window system: the caller `tongban/windows.toml` names for
  that window, e.g. `changsha-window`) records the arrival of a result the carrier handed to
  it (结果转送) and the applicant's pick-up, through delivery's gRPC API, for the windows it
  is told to operate.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import grpc

from sim.partners import PartnerFault, Reply, Respond
from tongban import windows
from tongban.events import now_utc
from tongban.grpc_tls import client_channel
from tongban.pii import PiiCipher, PiiError
from tongban.telemetry import log as log_fields

log = logging.getLogger(__name__)

RECEIPTS = "tongban.partner.ems.receipts"
RECEIPT = "tongban.delivery.PostalReceipt"
RETURNS = {"查无此址": "WRONG_ADDRESS", "拒收": "REFUSED", "无人签收": "NOT_COLLECTED"}
FAULT = "承运故障"
WINDOW_CALLER = "changsha-window"  # the Changsha windows' system, for a window the registry does not know
WINDOWS_AT_ONCE = 64  # results the simulated windows handle at the same time

HandedToWindow = Callable[[str, str], None]  # (application id, window id)


def dispatched_before(ledger: Path | None) -> set[str]:
    """The carrier's store: the dispatch ids it has physically dispatched."""
    if ledger is None or not ledger.exists():
        return set()
    lines = [json.loads(line) for line in ledger.read_text().splitlines() if line]
    return {line["dispatch_id"] for line in lines if line.get("physical", True)}


def carrier(cipher: PiiCipher, ledger: Path | None = None, handed_to_window: HandedToWindow | None = None,
            delay: float = 0.0) -> Respond:
    dispatched = dispatched_before(ledger)
    faulted: set[str] = set()

    def note(dispatch: dict, physical: bool) -> None:
        if ledger is not None:
            with ledger.open("a", encoding="utf-8") as parcels:
                parcels.write(json.dumps({"dispatch_id": dispatch["dispatch_id"],
                                          "application_id": dispatch["application_id"],
                                          "attempt": dispatch.get("attempt", 1),
                                          "purpose": dispatch.get("purpose", "TO_APPLICANT"),
                                          "physical": physical}) + "\n")

    def respond(event_type: str, dispatch: dict) -> list[Reply]:
        if event_type != "tongban.delivery.PostalDispatch":
            return []
        dispatch_id = dispatch["dispatch_id"]
        physical = dispatch_id not in dispatched
        note(dispatch, physical)
        dispatched.add(dispatch_id)
        try:  # the carrier must read the address to deliver
            address = cipher.open(dispatch["address"], record="tongban.delivery.PostalDispatch", path="address",
                                  subject=dispatch["application_id"])
        except PiiError:
            address = None
        if address and FAULT in address and dispatch_id not in faulted:
            faulted.add(dispatch_id)
            raise PartnerFault("the carrier failed after dispatching, before acknowledging")
        returned = "WRONG_ADDRESS" if address is None else next((r for k, r in RETURNS.items() if k in address), None)
        tracking = "EMS" + hashlib.sha256(dispatch_id.encode()).hexdigest()[:10].upper()

        def receipt(status: str, reason: str | None = None, after: float = 0.0) -> Reply:
            body = {"dispatch_id": dispatch_id, "application_id": dispatch["application_id"],
                    "tracking_number": tracking, "status": status, "at": now_utc(), "return_reason": reason}
            return Reply(RECEIPTS, RECEIPT, body, qualifier=status, delay=after)

        ending = receipt("RETURNED", returned, delay) if returned else receipt("DELIVERED", after=delay)
        if not returned and dispatch.get("purpose") == "TO_WINDOW" and handed_to_window is not None:
            handed_to_window(dispatch["application_id"], dispatch.get("window_id", ""))
        return [receipt("ACCEPTED"), receipt("IN_TRANSIT"), ending]

    return respond


def wallet(cipher: PiiCipher) -> Respond:
    def respond(event_type: str, entry: dict) -> list[Reply]:
        if event_type != "tongban.delivery.WalletEntry":
            return []
        try:  # the wallet finds the holder's card holder by their ID number
            cipher.open(entry["holder_id_number"], record="tongban.delivery.WalletEntry", path="holder_id_number",
                        subject=entry["application_id"])
            status, reason = "RECORDED", None
        except PiiError:
            status, reason = "REFUSED", "holder unreadable"
        body = {"dispatch_id": entry["dispatch_id"], "application_id": entry["application_id"], "status": status,
                "reason": reason, "at": now_utc()}
        return [Reply("tongban.partner.wallet.receipts", "tongban.delivery.WalletReceipt", body)]

    return respond


async def run_windows(target: str, handed: asyncio.Queue[tuple[str, str]], operated: Callable[[str], bool],
                      stopping: asyncio.Event) -> None:
    """The windows record each result the carrier handed them, then the applicant's pick-up."""
    from services.delivery import delivery_pb2, delivery_pb2_grpc  # the window's client of delivery's API

    async with contextlib.AsyncExitStack() as channels:
        stubs: dict[str, delivery_pb2_grpc.DeliveryStub] = {}  # one channel per window system, kept open

        async def stub_for(window_id: str) -> delivery_pb2_grpc.DeliveryStub:
            window = windows.registry().window(window_id)
            caller = window.systems[0] if window else WINDOW_CALLER  # delivery accepts only the window's own system
            if caller not in stubs:
                channel = await channels.enter_async_context(client_channel(target, caller))
                stubs[caller] = delivery_pb2_grpc.DeliveryStub(channel)
            return stubs[caller]

        async def call(method: str, request: delivery_pb2.WindowAct) -> None:
            stub = await stub_for(request.window_id)
            for _ in range(120):  # until delivery has applied what came before (it answers FAILED_PRECONDITION)
                try:
                    await getattr(stub, method)(request, timeout=10)
                    return
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE,
                                          grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.NOT_FOUND):
                        log_fields(log, logging.WARNING, "window call refused", method=method, code=exc.code().name)
                        return
                await asyncio.sleep(0.5)

        async def serve(act: delivery_pb2.WindowAct) -> None:
            async with busy:
                await call("RecordArrival", act)
                await call("ConfirmPickUp", act)

        # Many windows work at once: each result is served on its own, so one that waits for
        # delivery to catch up holds back no other.
        busy = asyncio.Semaphore(WINDOWS_AT_ONCE)
        serving: set[asyncio.Task] = set()
        while not stopping.is_set():
            try:
                application_id, window_id = await asyncio.wait_for(handed.get(), timeout=0.5)
            except TimeoutError:
                continue
            if operated(window_id):
                task = asyncio.create_task(serve(delivery_pb2.WindowAct(application_id=application_id,
                                                                        window_id=window_id)))
                serving.add(task)
                task.add_done_callback(serving.discard)
        for task in serving:
            task.cancel()
