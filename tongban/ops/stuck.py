"""Where applications stand, from the lifecycle and partner topics (keyed by application id):
one application's history and the step it waits at (`tongban app`), and the stuck ones, with
no progress beyond a threshold, grouped by stage and the party they wait for (`tongban stuck`).

The rules (`step`) are pure: which event moves an application to which stage, who acts next,
and which events end it. Only ids, stages and parties are kept: nothing personal.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tongban.codec import CodecError, SchemaRegistry
from tongban.ops.records import read_to_end, timestamp
from tongban.ops.topics import load_declared

ROUTING, VERIFICATION, DELIVERY, APPLICANT = "tongban-routing", "tongban-verification", "tongban-delivery", "applicant"
# Topics whose records move an application on (all keyed by application id).
PROGRESS_TOPIC = re.compile(r"^tongban\.(application\.[a-z]+|partner\.[^.]+\.(assignments|decisions|dispatches|"
                            r"receipts))$")
_PARTNER_TOPIC = re.compile(r"^tongban\.partner\.([^.]+)\.")


@dataclass(frozen=True)
class Progress:
    """Where one application stands: its last step, who acts next, since when."""

    application_id: str
    stage: str
    waiting_for: str
    since: datetime
    finished: bool = False

    def as_json(self, now: datetime) -> dict[str, Any]:
        return {"application_id": self.application_id, "stage": self.stage, "waiting_for": self.waiting_for,
                "since": self.since.isoformat(), "idle_seconds": int((now - self.since).total_seconds())}


Step = tuple[str, str, str, dict[str, Any], datetime]  # topic, application id, event type, body, time


def _partner(name: Any) -> str:
    return f"partner-{name}" if name else DELIVERY


def step(topic: str, event_type: str, body: dict[str, Any]) -> tuple[str, str, bool] | None:
    """(stage, who acts next, finished) after this event, or None when it moves nothing on
    (an SLA warning, a notice, a rating)."""
    name = event_type.rsplit(".", 1)[-1]
    on_partner = _PARTNER_TOPIC.match(topic)
    partner = f"partner-{on_partner.group(1)}" if on_partner else DELIVERY
    outcome = str(body.get("outcome") or "")
    if name == "ApplicationReceived":
        return "received", ROUTING, False
    if name == "ApplicationRouted":
        return "routed", VERIFICATION, False
    if name == "ApplicationVerified":
        return "verified", DELIVERY, False
    if name == "ApplicationVerificationFailed":
        # 补正 before acceptance: the applicant supplies the listed materials; otherwise rejected.
        return ("verification asks for materials", APPLICANT, False) if outcome == "SUPPLEMENT_REQUIRED" \
            else ("verification failed", "", True)
    if name == "MatterAssigned":
        return "assigned to the deciding authority", partner, False
    if name in ("AuthorityAcceptance", "AuthorityClockChange", "CommitmentCheckResult"):
        return f"authority: {name.removeprefix('Authority').lower()}", DELIVERY, False
    if name == "AuthorityDecision":
        return "authority decided", DELIVERY, False
    if name in ("ApplicationAccepted", "MaterialsSupplemented", "ApplicationClockChanged"):
        return name.removeprefix("Application").lower(), _partner(body.get("deciding_partner")), False
    if name == "SupplementRequested":
        return "supplement requested", APPLICANT, False
    if name == "ApplicationDecided":
        return ("decided", DELIVERY, False) if outcome == "APPROVED" else ("decided", "", True)
    if name in ("PostalDispatch", "WalletEntry"):
        return "result dispatched", partner, False
    if name in ("PostalReceipt", "WalletReceipt", "DeliveryProgress"):
        stage = str(body.get("stage") or body.get("status") or "").lower()
        return f"delivery: {stage}" if stage else "delivery", DELIVERY, False
    if name in ("ApplicationDelivered", "ApplicationUnroutable", "ApplicationRefused", "ApplicationClosed",
                "ApplicationWithdrawn"):
        return name.removeprefix("Application").lower(), "", True
    return None


def follow(events: Iterable[Step]) -> dict[str, Progress]:
    """Each application's progress from its events (topic, application id, event type, body,
    time), in any order: the latest event that moves it on counts, and one that finished it
    stays finished."""
    progress: dict[str, Progress] = {}
    for topic, application_id, event_type, body, at in sorted(events, key=lambda e: e[4]):
        moved = step(topic, event_type, body)
        if moved is None:
            continue
        current = progress.get(application_id)
        if current is not None and current.finished:
            continue
        stage, waiting_for, finished = moved
        progress[application_id] = Progress(application_id, stage, waiting_for, at, finished)
    return progress


def stuck(progress: dict[str, Progress], now: datetime, threshold: timedelta) -> dict[tuple[str, str], list[Progress]]:
    """Unfinished applications idle for longer than `threshold`, by (stage, party), oldest first."""
    groups: dict[tuple[str, str], list[Progress]] = defaultdict(list)
    for p in sorted(progress.values(), key=lambda p: p.since):
        if not p.finished and now - p.since > threshold:
            groups[(p.stage, p.waiting_for)].append(p)
    return dict(groups)


def progress_topics(declared: Iterable[str]) -> list[str]:
    """Of the declared topic names (without namespace), those that move applications on."""
    return [t for t in declared if PROGRESS_TOPIC.match(t)]


async def events(namespace: str, registry: SchemaRegistry, bootstrap: str | None = None) -> list[Step]:
    """Every event the progress topics hold now, personal fields masked."""
    names = progress_topics(s.declared_name for s in load_declared(""))
    out: list[Step] = []
    for record in await read_to_end([namespace + t for t in names], bootstrap):
        if record.key is None or record.value is None:
            continue
        try:
            event_type, body = registry.decode(record.value)
        except CodecError:
            continue  # not an event this tool knows: the services dead-letter it, `dlq list` shows it
        out.append((record.topic.removeprefix(namespace), record.key.decode("utf-8", "replace"), event_type,
                    registry.mask(event_type, body), timestamp(record.timestamp)))
    return sorted(out, key=lambda e: e[4])


async def read(namespace: str, registry: SchemaRegistry, bootstrap: str | None = None) -> dict[str, Progress]:
    """Every application's progress from what the progress topics hold now."""
    return follow(await events(namespace, registry, bootstrap))
