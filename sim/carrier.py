"""The simulated carrier (EMS), e-licence wallet and receiving window.

- The **carrier** reads `tongban.partner.ems.dispatches`. It dispatches each parcel once,
  deduplicating on the dispatch id in its own store (its ledger, one JSON line per dispatch
  record it is handed, `physical` telling the first from a repeat), and reports ACCEPTED,
  IN_TRANSIT, then DELIVERED or RETURNED on `tongban.partner.ems.receipts`. What it does is
  told by the address it reads (test addresses): 查无此址 returns the parcel as WRONG_ADDRESS,
  拒收 as REFUSED, 无人签收 as NOT_COLLECTED; 承运故障 makes it fail once after dispatching,
  before it acknowledges (it reads the record again and must not dispatch twice). Told a
  delay, it reports delivery or return that many seconds after taking a parcel in.
- The carrier also carries **originals** (资料寄递): it reads `tongban.application.routed` and,
  for each application received here and decided elsewhere (收受分离) whose matter needs paper
  originals data sharing cannot supply (routing's own rule, `originals_travel`), collects them
  at the receiving window (MaterialsDispatched) and has the deciding authority sign for them
  (MaterialsReceived) on `tongban.partner.ems.originals`, which ends the SLA ledger's transit clock.
- The **wallet** reads `tongban.partner.wallet.dispatches` and records an e-licence for the
  holder it can identify (RECORDED), else refuses.
- A **window** (a service-hall window system: the caller `tongban/windows.toml` names for
  that window, e.g. `changsha-window`) records the arrival of a result the carrier handed to
  it (结果转送) and the applicant's pick-up, through delivery's gRPC API, for the windows it
  is told to operate. It asks any delivery instance and tries an act again (another instance,
  the same request) until it is done or refused; its journal keeps the open ones across a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import grpc

from services.routing.catalogue import RECEIVE_HERE_HANDLE_THERE, Catalogue
from services.routing.ledger import originals_travel
from sim.partners import PartnerFault, Reply, Respond
from tongban import topics, windows
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
RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)
CALL_TIMEOUT_S = 10.0
BACK_OFF_S = (0.25, 4.0)  # the first and the longest pause between two tries of one act

HandedToWindow = Callable[[str, str], None]  # (application id, window id)
# Where the carrier collects originals: ApplicationRouted does not name the window, and every
# application is received in Hunan, so the parcel is marked as collected in the province.
COLLECTED_IN = "430000"


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


def originals(catalogue: Catalogue) -> Respond:
    """资料寄递 for a routed application whose paper originals must reach the deciding authority:
    the same rule as routing's ledger (received here, decided there, and a required material
    data sharing cannot supply), else routing would refuse the parcel. The authority signs at
    once: the simulation does not wait the days a parcel takes."""

    def respond(event_type: str, routed: dict) -> list[Reply]:
        if event_type != topics.APPLICATION_ROUTED_EVENT or routed["mode"] != RECEIVE_HERE_HANDLE_THERE:
            return []
        matter = catalogue.get(routed["matter_code"])
        if matter is None or not originals_travel(matter.required_materials):
            return []
        application_id, authority = routed["application_id"], routed["deciding_partner"]
        # One parcel per application: routed again (an operator's re-route), it is the same one.
        tracking = "EMS" + hashlib.sha256(f"originals|{application_id}".encode()).hexdigest()[:10].upper()
        dispatched = {"application_id": application_id, "tracking_number": tracking, "from_party": COLLECTED_IN,
                      "to_party": authority, "dispatched_at": now_utc()}
        received = {"application_id": application_id, "tracking_number": tracking, "received_by": authority,
                    "received_at": now_utc()}
        return [Reply(topics.POSTAL_ORIGINALS, topics.MATERIALS_DISPATCHED_EVENT, dispatched),
                Reply(topics.POSTAL_ORIGINALS, topics.MATERIALS_RECEIVED_EVENT, received)]

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


class WindowJournal:
    """The windows' own record (one JSON line each) of the results handed to them and of the
    ones they are done with, so a window system that restarts carries on with those still open:
    the carrier does not hand a parcel over twice. Without a file it is kept in memory only."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.done = {(line["application_id"], line["window_id"]) for line in self._lines() if "outcome" in line}

    def _lines(self) -> list[dict]:
        if self.path is None or not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def _write(self, line: dict) -> None:
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as journal:
                journal.write(json.dumps(line) + "\n")

    def handed(self, application_id: str, window_id: str) -> None:
        self._write({"application_id": application_id, "window_id": window_id})

    def settled(self, application_id: str, window_id: str, outcome: str) -> None:
        self.done.add((application_id, window_id))
        self._write({"application_id": application_id, "window_id": window_id, "outcome": outcome})

    def still_open(self) -> list[tuple[str, str]]:
        """Results handed over and not yet picked up or refused, in the order they came."""
        handed = [(line["application_id"], line["window_id"]) for line in self._lines() if "outcome" not in line]
        return [act for act in dict.fromkeys(handed) if act not in self.done]


async def settle(act: Callable[[str, int], Awaitable[object]], method: str, targets: int, first: int,
                 stopping: asyncio.Event) -> str:
    """Make one window act until delivery answers for good: OK, or the code it was refused
    with (the owner's verdict). UNAVAILABLE, CANCELLED and DEADLINE_EXCEEDED say nothing about
    the act (an instance down or moving its partitions, the owner's verdict late): the same
    request again on the next instance, after a back-off. STOPPED if the simulator stops first."""
    delay, attempt = BACK_OFF_S[0], 0
    while True:
        try:
            await act(method, (first + attempt) % targets)
            return "OK"
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRIED:
                return str(exc.code().name)
        if stopping.is_set():
            return "STOPPED"
        await asyncio.sleep(delay)
        delay, attempt = min(delay * 2, BACK_OFF_S[1]), attempt + 1


async def run_windows(targets: list[str], handed: asyncio.Queue[tuple[str, str]], operated: Callable[[str], bool],
                      stopping: asyncio.Event, journal: WindowJournal | None = None) -> None:
    """The windows record each result the carrier handed them, then the applicant's pick-up,
    calling the delivery instances at `targets` (any of them answers with the owner's verdict)."""
    from services.delivery import delivery_pb2, delivery_pb2_grpc  # the window's client of delivery's API

    journal = journal or WindowJournal()
    async with contextlib.AsyncExitStack() as channels:
        stubs: dict[tuple[str, str], delivery_pb2_grpc.DeliveryStub] = {}  # per window system and instance, kept open

        async def stub_for(window_id: str, target: str) -> delivery_pb2_grpc.DeliveryStub:
            window = windows.registry().window(window_id)
            caller = window.systems[0] if window else WINDOW_CALLER  # delivery accepts only the window's own system
            if (caller, target) not in stubs:
                channel = await channels.enter_async_context(client_channel(target, caller))
                stubs[caller, target] = delivery_pb2_grpc.DeliveryStub(channel)
            return stubs[caller, target]

        async def serve(application_id: str, window_id: str, first: int) -> None:
            request = delivery_pb2.WindowAct(application_id=application_id, window_id=window_id)

            async def act(method: str, target: int) -> object:
                stub = await stub_for(window_id, targets[target])
                return await getattr(stub, method)(request, timeout=CALL_TIMEOUT_S)

            async with busy:
                outcome = await settle(act, "RecordArrival", len(targets), first, stopping)
                if outcome == "OK":
                    outcome = await settle(act, "ConfirmPickUp", len(targets), first, stopping)
                if outcome == "STOPPED":
                    return  # still open: the next start carries on with it
                if outcome != "OK":
                    log_fields(log, logging.WARNING, "window act refused", code=outcome)
                journal.settled(application_id, window_id, outcome)

        # Many windows work at once: each result is served on its own, so one that waits for
        # delivery to catch up holds back no other.
        busy = asyncio.Semaphore(WINDOWS_AT_ONCE)
        serving: dict[tuple[str, str], asyncio.Task] = {}

        def forget(act: tuple[str, str], _: asyncio.Task) -> None:
            serving.pop(act, None)

        for left_open in journal.still_open():
            handed.put_nowait(left_open)
        turn = itertools.count()  # the instance each result is first asked at, in turn
        while not stopping.is_set():
            try:
                application_id, window_id = await asyncio.wait_for(handed.get(), timeout=0.5)
            except TimeoutError:
                continue
            # A result the carrier hands over again (it read its dispatch again after a restart)
            # was picked up already: the window knows it, and does not record it a second time.
            act = (application_id, window_id)
            if operated(window_id) and act not in serving and act not in journal.done:
                serving[act] = asyncio.create_task(serve(application_id, window_id, next(turn)))
                serving[act].add_done_callback(partial(forget, act))
        for task in list(serving.values()):
            task.cancel()
