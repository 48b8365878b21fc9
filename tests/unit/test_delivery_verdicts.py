"""The owner's verdict on a request to delivery's API (services/delivery/verdicts.py), on the
real runtime core over the in-memory store and transactions, with delivery's real handlers:
the owner tries a request on its file in the command topic's order, writes the verdict back
on the command topic and changes nothing; the API answers with it and writes the request only
after an OK."""

from __future__ import annotations

import asyncio
import tempfile
from types import SimpleNamespace

import grpc
import pytest

from services.delivery import handlers, verdicts
from services.delivery.api import DeliveryServicer
from services.delivery.verdicts import TRY, Verdict, Verdicts, read_verdict, trial_handlers
from tests.unit.test_delivery_channels import APP, WINDOW, arrival, by, decision, delivery_handlers, feed, pickup
from tests.unit.test_runtime_core import Rec  # a consumed record, as the runtime's own tests build them
from tongban import pii_policy
from tongban.bus import partition_for
from tongban.codec import SchemaRegistry
from tongban.config import load_settings
from tongban.handling import Wiring
from tongban.pii import new_key_line
from tongban.runtime.core import ENTRY, Context, Entry, Task, command_record, unpack
from tongban.runtime.memory import MemoryArchive, MemoryTransactions
from tongban.runtime.state import MemoryStore

REGISTRY = SchemaRegistry.load()
NS = "tv-"


def _partner_keys() -> dict[str, str]:
    """Delivery seals for the partners it dispatches to, so its settings need their keys: made
    for these tests in a directory of their own, not taken from make setup's var/pii (mutation
    runs copy no var/)."""
    env = {"TONGBAN_PII_KEY_DIR": tempfile.mkdtemp(prefix="tv-keys-")}
    for party in pii_policy.seals_for("delivery"):
        pii_policy.key_file(party, env).write_text(new_key_line() + "\n")
    return env


SETTINGS = load_settings("delivery", {"TONGBAN_NAMESPACE": NS, "TONGBAN_PII_KEYS": new_key_line(),
                                      "TONGBAN_PII_PARTY": "delivery", **_partner_keys()})
PARTITIONS = 3
PARTITION = partition_for(APP, PARTITIONS)
COMMANDS = NS + verdicts.COMMANDS


class Owner:
    """The task that owns APP's partition, wired as services/delivery/__main__.py wires it."""

    def __init__(self) -> None:
        every = delivery_handlers()
        commands = {name: every[name] for name in handlers.COMMANDS}
        commands |= trial_handlers(commands)
        wiring = Wiring("delivery", inputs=[], handlers={}, commands=commands, timers={})
        self.bus = MemoryTransactions(SETTINGS.changelog_topic)
        known = {COMMANDS, SETTINGS.dlq_topic, NS + "tongban.application.delivered"}

        async def has_topic(topic: str) -> bool:
            return topic in known

        async def learn(fingerprint: bytes) -> None:
            return None

        self.ctx = Context(SETTINGS, REGISTRY, wiring, MemoryArchive(), PARTITIONS, has_topic, learn)
        self.store = MemoryStore()
        self.task = Task(self.ctx, PARTITION, self.store, self.bus)
        self.offset = 0

    def holds(self, state: dict) -> None:
        self.store.write({ENTRY + APP.encode(): Entry(state).pack()}, 0)

    def state(self) -> dict | None:
        raw = self.store.get(ENTRY + APP.encode())
        return unpack(raw)["state"] if raw else None

    def command(self, command_type: str, command_id: str, payload: dict, key: str = APP) -> Rec:
        record = command_record(self.ctx, command_type, key, command_id, payload)
        self.offset += 1
        return Rec(record.topic, PARTITION, self.offset, record.key, record.value)

    def trial(self, request: str, probe: str, key: str = APP, window_id: str = WINDOW) -> Rec:
        return self.command(TRY, probe, {"request": request, "command_id": f"{request}:{key}",
                                         "payload": {"window_id": window_id}}, key)

    async def feed(self, *records: Rec) -> None:
        await self.task.process(list(records))

    def verdicts(self) -> dict[str, Verdict]:
        found = [read_verdict(REGISTRY, self.ctx.cipher, r.value) for r in self.bus.on(COMMANDS)]
        return {v.probe: v for v in found if v is not None}


async def file_at_the_window() -> dict:
    """A window result on its way to its window (the carrier has it)."""
    state, _ = await feed(*by("WINDOW"), decision("APPROVED"))
    assert state is not None
    return state


async def test_the_owner_tries_a_request_answers_on_the_command_topic_and_changes_nothing():
    owner = Owner()
    file = await file_at_the_window()
    owner.holds(file)
    await owner.feed(owner.trial(handlers.CONFIRM_PICKUP, "p1"), owner.trial(handlers.RECORD_ARRIVAL, "a1"),
                     owner.trial(handlers.RECORD_ARRIVAL, "w1", window_id="430103-W02"))
    found = owner.verdicts()
    assert found["p1"] == Verdict("p1", "FAILED_PRECONDITION", "the result has not arrived at a window yet")
    assert found["a1"] == Verdict("a1", "OK", "")
    assert found["w1"] == Verdict("w1", "FAILED_PRECONDITION",
                                  f"the result was sent to window {WINDOW}, not to window 430103-W02")
    assert owner.state() == file, "a trial changes nothing"
    assert not owner.bus.on(SETTINGS.dlq_topic), "a refused trial is an answer, not a dead letter"
    # the verdicts are keyed by the application: they stay in its partition
    assert {r.key for r in owner.bus.on(COMMANDS)} == {APP.encode()}


async def test_a_trial_comes_after_every_request_written_before_it():
    owner = Owner()
    owner.holds(await file_at_the_window())
    arrived = owner.command(handlers.RECORD_ARRIVAL, f"arrival:{APP}:{WINDOW}", {"window_id": WINDOW})
    await owner.feed(arrived, owner.trial(handlers.CONFIRM_PICKUP, "p2"))
    assert owner.verdicts()["p2"].code == "OK", "the pick-up is tried on the file its arrival changed"
    assert owner.state()["result"]["status"] == "AT_WINDOW"


async def test_no_file_is_not_found_and_a_request_the_api_does_not_have_is_refused():
    owner = Owner()
    other = next(k for k in (f"TBNONE{n}" for n in range(100)) if partition_for(k, PARTITIONS) == PARTITION)
    await owner.feed(owner.trial(handlers.RECORD_ARRIVAL, "n1", key=other),
                     owner.command(TRY, "x1", {"request": "delivery.Anything", "command_id": "c", "payload": {}}))
    found = owner.verdicts()
    assert found["n1"] == Verdict("n1", "NOT_FOUND", "no such application")
    assert found["x1"].code == "INVALID_ARGUMENT"
    assert owner.store.get(ENTRY + other.encode()) is None, "a trial makes no file"


async def test_a_delivered_file_answers_ok_to_a_repeated_pick_up_and_stays_finished():
    owner = Owner()
    state = await file_at_the_window()
    state, outcomes = await feed(arrival(), pickup(), state=state)
    assert outcomes[-1].finished
    owner.holds(state)
    await owner.feed(owner.trial(handlers.CONFIRM_PICKUP, "again"))
    assert owner.verdicts()["again"].code == "OK"
    assert owner.state() == state


# ---------------------------------------------------------------------------- the asking side

def asker(expected: int = 1) -> tuple[Verdicts, list[tuple], asyncio.Event]:
    """Verdicts over a runtime whose submit records what it was asked to write (the event is
    set once `expected` requests are written)."""
    submitted: list[tuple] = []
    written = asyncio.Event()

    async def submit(*args) -> None:
        submitted.append(args)
        if len(submitted) >= expected:
            written.set()

    runtime = SimpleNamespace(registry=REGISTRY, ctx=SimpleNamespace(cipher=SETTINGS.pii_cipher()), partitions=3,
                              submit=submit)
    ask = Verdicts(runtime)  # type: ignore[arg-type]
    ask._reader = asyncio.get_running_loop().create_future()  # type: ignore[assignment]  # no broker here
    return ask, submitted, written


async def test_each_verdict_goes_to_the_call_that_asked_for_it_and_garbage_is_skipped():
    owner = Owner()
    owner.holds(await file_at_the_window())
    ask, submitted, written = asker(expected=2)
    calls = [asyncio.create_task(ask.ask(r, APP, f"{r}:{APP}", {"window_id": WINDOW}, within=5))
             for r in (handlers.CONFIRM_PICKUP, handlers.RECORD_ARRIVAL)]
    await written.wait()
    # the owner reads what the callers wrote, and the reader sees its verdicts among other records
    await owner.feed(*(owner.command(args[0], args[2], args[3], args[1]) for args in submitted[::-1]))
    for value in [b"\x00garbage", None, *(r.value for r in owner.bus.on(COMMANDS))]:
        ask.take(value)
    pick_up, arrival_ = await asyncio.gather(*calls)
    assert (pick_up.code, arrival_.code) == ("FAILED_PRECONDITION", "OK")
    assert not ask._waiting


async def test_no_verdict_in_time_is_none_and_nothing_is_left_waiting():
    ask, submitted, _ = asker()
    assert await ask.ask(handlers.RECORD_ARRIVAL, APP, "c", {"window_id": WINDOW}, within=0.05) is None
    assert len(submitted) == 1, "the trial was written"
    assert not ask._waiting


# ---------------------------------------------------------------------------- the API's answers

class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self, remaining: float | None = 10.0) -> None:
        self.remaining = remaining
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def time_remaining(self) -> float | None:
        return self.remaining

    async def abort(self, code, details=""):
        self.code, self.details = code, details
        raise Aborted(code)


class FixedVerdicts:
    def __init__(self, verdict: Verdict | None) -> None:
        self.verdict = verdict
        self.asked: list[tuple] = []

    async def ask(self, request, key, command_id, payload, within):
        self.asked.append((request, key, command_id, within))
        return self.verdict


@pytest.mark.parametrize(("verdict", "code", "details"), [
    (Verdict("p", "FAILED_PRECONDITION", "the result has not arrived at a window yet"),
     grpc.StatusCode.FAILED_PRECONDITION, "the result has not arrived at a window yet"),
    (Verdict("p", "NOT_FOUND", "no such application"), grpc.StatusCode.NOT_FOUND, "no such application"),
    (None, grpc.StatusCode.UNAVAILABLE, "the application's owner did not answer in time; retry the same request"),
])
async def test_the_api_answers_with_the_owners_verdict_and_writes_nothing_unless_ok(verdict, code, details):
    submitted: list[tuple] = []

    async def submit(*args) -> None:
        submitted.append(args)

    fixed = FixedVerdicts(verdict)
    api = DeliveryServicer(SimpleNamespace(submit=submit), registry=object(),  # type: ignore[arg-type]
                           verdicts=fixed)  # type: ignore[arg-type]
    context = FakeContext()
    with pytest.raises(Aborted):
        await api._command(context, handlers.CONFIRM_PICKUP, APP, f"pickup:{APP}", {"window_id": WINDOW})
    assert (context.code, context.details) == (code, details)
    assert not submitted
    assert fixed.asked == [(handlers.CONFIRM_PICKUP, APP, f"pickup:{APP}", 9.5)], "within the caller's deadline"


async def test_an_ok_request_is_written_under_its_own_command_id_and_an_empty_id_is_invalid():
    submitted: list[tuple] = []

    async def submit(*args) -> None:
        submitted.append(args)

    fixed = FixedVerdicts(Verdict("p", "OK"))
    api = DeliveryServicer(SimpleNamespace(submit=submit), registry=object(),  # type: ignore[arg-type]
                           verdicts=fixed)  # type: ignore[arg-type]
    await api._command(FakeContext(None), handlers.CONFIRM_PICKUP, APP, f"pickup:{APP}", {"window_id": WINDOW})
    assert submitted == [(handlers.CONFIRM_PICKUP, APP, f"pickup:{APP}", {"window_id": WINDOW})]
    assert fixed.asked[0][3] == 10.0
    context = FakeContext()
    with pytest.raises(Aborted):
        await api._command(context, handlers.CONFIRM_PICKUP, "", "pickup:", {"window_id": WINDOW})
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(submitted) == 1, "nothing written for it"
