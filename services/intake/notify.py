"""The notification adapter: turns NoticeServed events (tongban.application.notices) into
messages to the applicant (SMS or app push) through a `Notifier`.

A message carries nothing personal but the application number: the applicant's contact is
looked up by the sender's own system from the number, and the notice's reasons and remedy
are read in Track. Sending is at least once; `notice_id` lets the sender drop a repeat.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from services.intake import domain

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
