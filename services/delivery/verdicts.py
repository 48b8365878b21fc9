"""The owner's verdict on a request to delivery's API, for whichever instance took the call.

Only the owner of an application's partition holds its file, and a window may call any
delivery instance. So the instance that took the call asks the owner through delivery's own
command topic: it writes a `delivery.TryRequest` keyed by the application; the owner tries
the request there, in the partition's order (after every request written before it), with
the very handler that would apply it, on the file as it stands, and writes its verdict back
on the command topic as a `delivery.Verdict` (OK, FAILED_PRECONDITION with the handler's
reason, NOT_FOUND without a file). The asking instance reads the command topic's verdicts
(`Verdicts`) and answers with it; only after an OK is the request itself written, under its
deterministic command id. A trial changes nothing, so asking again is always safe; no
verdict within the call's deadline is UNAVAILABLE (retry the same request).

Why not forward the gRPC call to the owner: an instance does not know which instance owns a
partition or where it listens, and a forwarded call would have to speak for the window
without the window's certificate. The command topic is the one place every instance writes
and the owner reads in order, and the owner's verdict needs nothing but what it already has.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from tongban import topics
from tongban.app import keep_beside
from tongban.bus import PacedConsumer
from tongban.codec import CodecError, SchemaRegistry
from tongban.handling import Emit, Event, Handler, Outcome, Rejected
from tongban.pii import PiiCipher, PiiError
from tongban.runtime import NotReady, ServiceRuntime
from tongban.runtime.core import COMMAND, pack, unpack
from tongban.scrub import scrub
from tongban.telemetry import log as log_fields

log = logging.getLogger(__name__)

TRY = "delivery.TryRequest"  # the owner tries a request and says how it went
VERDICT = "delivery.Verdict"  # its answer, for the instance that asked
COMMANDS = topics.commands("tongban-delivery")
NO_FILE = "no such application"


@dataclass(frozen=True)
class Verdict:
    probe: str  # the id of the TryRequest it answers
    code: str  # a grpc.StatusCode name: OK, FAILED_PRECONDITION, NOT_FOUND, INTERNAL
    reason: str = ""


def trial_handlers(requests: dict[str, Handler]) -> dict[str, Handler]:
    """The owner's side: the command handlers that try `requests` (by command type) and
    answer, to be wired beside them."""

    async def on_try(event: Event, state: dict | None) -> Outcome:
        p = event.payload
        code, reason = await _tried(requests.get(p["request"]), event, state)
        verdict = {"probe": event.event_id, "code": code, "reason": reason}
        body = {"command_type": VERDICT, "key": event.key, "body": base64.b64encode(pack(verdict)).decode()}
        return Outcome(emits=[Emit(COMMANDS, COMMAND, event.key, body)])

    async def on_verdict(event: Event, state: dict | None) -> Outcome:
        return Outcome()  # it is for the instance that asked; the file does not change

    return {TRY: on_try, VERDICT: on_verdict}


async def _tried(handler: Handler | None, event: Event, state: dict | None) -> tuple[str, str]:
    p = event.payload
    if handler is None:
        return "INVALID_ARGUMENT", f"{p['request']} is not a request of delivery's API"
    if state is None:
        return "NOT_FOUND", NO_FILE
    request = Event(p["command_id"], p["request"], event.key, p["payload"], event.envelope, "command")
    try:
        await handler(request, state)  # handlers are pure: this changes nothing
    except Rejected as exc:
        return "FAILED_PRECONDITION", scrub(str(exc))
    except Exception:
        # A bug, not the caller's fault; an answer it can read, the stack in the log (never its text).
        log.error("a request could not be tried", exc_info=True, extra={"fields": {"request": p["request"]}})
        return "INTERNAL", f"{p['request']} could not be tried"
    return "OK", ""


def read_verdict(registry: SchemaRegistry, cipher: PiiCipher, value: bytes | None) -> Verdict | None:
    """The verdict a command-topic record carries; None for any other record (requests, and
    whatever else was written there: the runtime dead-letters that, this reader skips it)."""
    if not value:
        return None
    try:
        event_type, body = registry.decode(value)
        if event_type != COMMAND or body.get("command_type") != VERDICT:
            return None
        opened = cipher.open(body["body"], record=COMMAND, path="body", subject=body["key"])
        doc = unpack(base64.b64decode(opened))
        return Verdict(doc["probe"], doc["code"], doc.get("reason", ""))
    except (CodecError, PiiError, KeyError, TypeError, ValueError):
        return None


class Verdicts:
    """The asking side: tries a request at the owner and waits for its verdict.

    One reader per process follows the command topic from its end (started at the first
    request, so an instance nobody calls reads nothing) and hands each verdict to the call
    waiting for it."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self._waiting: dict[str, asyncio.Future[Verdict]] = {}
        self._reader: asyncio.Task | None = None
        self._starting = asyncio.Lock()

    async def ask(self, request: str, key: str, command_id: str, payload: dict[str, Any],
                  within: float) -> Verdict | None:
        """The owner's verdict on `request`, or None if none came within `within` seconds."""
        try:
            async with asyncio.timeout(within):
                await self._start()
                probe = f"try:{command_id}:{secrets.token_hex(8)}"  # each trial is its own
                answer: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
                self._waiting[probe] = answer
                try:
                    await self.runtime.submit(TRY, key, probe,
                                              {"request": request, "command_id": command_id, "payload": payload})
                    return await answer
                finally:
                    self._waiting.pop(probe, None)
        except TimeoutError:
            return None

    async def _start(self) -> None:
        """Before the first trial is written: the reader's position is the topic's end then,
        so it cannot miss the verdict."""
        async with self._starting:
            if self._reader is not None and not self._reader.done():
                return
            if not self.runtime.partitions:
                raise NotReady("delivery is starting; retry")
            settings = self.runtime.settings
            consumer = PacedConsumer(group_id=None, enable_auto_commit=False, isolation_level="read_committed",
                                     client_id=f"tongban-{settings.service}-verdicts",
                                     **settings.kafka_client_options())
            await consumer.start()
            try:
                partitions = [TopicPartition(settings.commands_topic, p) for p in range(self.runtime.partitions)]
                consumer.assign(partitions)
                for tp, end in (await consumer.end_offsets(partitions)).items():
                    consumer.seek(tp, end)
            except BaseException:
                await consumer.stop()
                raise
            self._reader = keep_beside(asyncio.create_task(self._read(consumer), name="verdicts"))

    async def _read(self, consumer: PacedConsumer) -> None:
        try:
            while True:
                try:
                    batch = await consumer.getmany(timeout_ms=500)
                except KafkaError as exc:  # the broker is away: the position holds, read on when it is back
                    log_fields(log, logging.WARNING, "verdict reader paused", error=type(exc).__name__)
                    await asyncio.sleep(0.5)
                    continue
                for records in batch.values():
                    for record in records:
                        if self._waiting:
                            self.take(record.value)
        finally:
            await consumer.stop()

    def take(self, value: bytes | None) -> None:
        """Hand a record's verdict to the call waiting for it, if any."""
        verdict = read_verdict(self.runtime.registry, self.runtime.ctx.cipher, value)
        if verdict is None:
            return
        answer = self._waiting.get(verdict.probe)
        if answer is not None and not answer.done():
            answer.set_result(verdict)
