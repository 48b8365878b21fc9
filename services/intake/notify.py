"""The notification adapter: turns NoticeServed events (tongban.application.notices) into
messages to the applicant (SMS or app push) through a `Notifier`.

A message carries nothing personal but the application number: the applicant's contact is
looked up by the sender's own system from the number, and the notice's reasons and remedy
are read in Track. Sending is at least once; `notice_id` lets the sender drop a repeat.

`run_sender` runs in intake's process (services/intake/__main__.py) as its own Kafka
principal and consumer group (`tongban-notify`, infra/topics.toml): it commits a batch's
offsets only after every message of it was handed to the notifier, so a crash sends a
notice again and the notifier drops it by `notice_id`. Locally the notifier is a file of
JSON lines (TONGBAN_NOTIFY_FILE) or, without one, the console.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from aiokafka.errors import KafkaError

from services.intake import domain
from tongban import bus, telemetry, topics
from tongban.codec import CodecError, SchemaRegistry, UnknownSchema
from tongban.config import Settings

log = logging.getLogger(__name__)
SENDER = "tongban-notify"  # the sender's principal and consumer group
NOTIFY_FILE = "TONGBAN_NOTIFY_FILE"
RETRY_SECONDS = 1

_TEXT = {
    domain.RECEIPT: "已收到您的申请（编号{number}），正在转交有权机关。",
    domain.ACCEPTANCE: "您的申请（编号{number}）已受理。",
    domain.SUPPLEMENT: "您的申请（编号{number}）需要补正材料，请于{deadline}前补正，详情请查询办件进度。",
    domain.NON_ACCEPTANCE: "您的申请（编号{number}）不予受理，理由及救济途径请查询办件进度。",
    domain.DENIAL: "您的申请（编号{number}）未获许可，理由及救济途径请查询办件进度。",
}


@dataclass(frozen=True)
class Message:
    notice_id: str
    application_number: str
    kind: str
    text: str


class Notifier(Protocol):
    async def send(self, message: Message) -> None: ...


def message_for(notice: dict) -> Message | None:
    """The message for a NoticeServed body; None for a kind this adapter does not know (a
    newer writer), which is left to Track."""
    template = _TEXT.get(notice["kind"])
    if template is None:
        return None
    deadline = notice.get("deadline")
    when = deadline.astimezone(domain.BEIJING).strftime("%Y-%m-%d") if deadline else ""
    text = template.format(number=notice["application_number"] or notice["application_id"], deadline=when)
    return Message(notice["notice_id"], notice["application_number"], notice["kind"], text)


async def deliver(notices: Iterable[dict], notifier: Notifier) -> int:
    """Send one message per notice; returns how many were sent."""
    sent = 0
    for notice in notices:
        if (message := message_for(notice)) is not None:
            await notifier.send(message)
            sent += 1
    return sent


class SimulatedSender:
    """The local stand-in for the SMS gateway: keeps what it would have sent, once per notice."""

    def __init__(self) -> None:
        self.sent: dict[str, Message] = {}

    async def send(self, message: Message) -> None:
        self.sent.setdefault(message.notice_id, message)


class FileSender:
    """The local sender: one JSON line per message, in a file or (path None) on the console.
    A notice already in the file is not written again, across restarts too: the file is
    what the applicant received."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.sent: set[str] = set()
        if path is not None and path.exists():
            self.sent = {json.loads(line)["notice_id"] for line in path.read_text().splitlines() if line}

    async def send(self, message: Message) -> None:
        if message.notice_id in self.sent:
            return
        line = json.dumps(asdict(message), ensure_ascii=False) + "\n"
        if self.path is None:
            sys.stdout.write(line)
            sys.stdout.flush()
        else:
            await asyncio.to_thread(self._append, self.path, line)
        self.sent.add(message.notice_id)


    @staticmethod
    def _append(path: Path, line: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as sink:
            sink.write(line)


def local_notifier(env: dict[str, str] | None = None) -> FileSender:
    path = (os.environ if env is None else env).get(NOTIFY_FILE)
    return FileSender(Path(path) if path else None)


async def run_sender(settings: Settings, registry: SchemaRegistry, notifier: Notifier) -> None:
    """Send every notice on the notices topic, at least once, until cancelled."""
    settings = settings.as_principal(SENDER)
    while True:
        try:
            await _consume(settings, registry, notifier)
        except (KafkaError, OSError) as exc:
            telemetry.log(log, logging.WARNING, "notification sender paused", error=type(exc).__name__)
            await asyncio.sleep(RETRY_SECONDS)


async def _consume(settings: Settings, registry: SchemaRegistry, notifier: Notifier) -> None:
    consumer = bus.make_consumer(settings, [settings.topic(topics.APPLICATION_NOTICES)],
                                 group=settings.topic(SENDER))
    await consumer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                await deliver([n for record in records if (n := await _notice(settings, registry, record))],
                              notifier)
            if batch:
                await consumer.commit()
    finally:
        await consumer.stop()


async def _notice(settings: Settings, registry: SchemaRegistry, record) -> dict | None:
    """The NoticeServed body of a record; None (logged, left to Track) for one this sender
    cannot read even after learning the writers' schemas."""
    for attempt in range(2):
        try:
            event_type, body = registry.decode(record.value)
        except UnknownSchema:
            if attempt == 0:
                await bus.learn_schemas(settings, registry)
                continue
            break
        except CodecError:
            break
        return body if event_type == topics.NOTICE_SERVED_EVENT else None
    telemetry.log(log, logging.WARNING, "unreadable notice", partition=record.partition, offset=record.offset)
    return None
