"""Everything a handler imports: the handler contract `(event, state) -> Outcome` and the
one wiring object each service hands to the runtime.

Handlers are plain async functions over plain data. They never produce, commit or touch a
store; the runtime (tongban.runtime) keeps every guarantee of DESIGN §4 around them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

TIMER_FIRED = "tongban.runtime.TimerFired"


@dataclass(frozen=True)
class Event:
    """One input: a decoded record, a command from an API, or a timer that fired.

    `key` is the aggregate the event belongs to; `topic` is the logical topic it came from
    ("command" for commands, "timer" for timers)."""

    event_id: str
    event_type: str
    key: str
    payload: dict[str, Any]
    envelope: dict[str, Any]
    topic: str


@dataclass(frozen=True)
class Emit:
    """An outgoing event; `qualifier` tells apart several events of one type from one cause.
    `correlation_id` names the application it is about when that is not the cause's (an event
    one aggregate publishes for another, e.g. intake's numbering counter for an application):
    personal fields are sealed for it. `source_partner` names the partner an event comes from
    (the envelope's field), where a service republishes what a partner sent (intake's
    ApplicationReceived of a partner's submission)."""

    topic: str
    event_type: str
    key: str
    payload: dict[str, Any]
    qualifier: str = ""
    correlation_id: str = ""
    source_partner: str = ""


@dataclass(frozen=True)
class Timer:
    """A durable deadline; setting a timer of the same name replaces it."""

    name: str
    due_at: datetime
    payload: dict[str, Any] | None = None


@dataclass
class Outcome:
    """What one input changed. `state=None` keeps the stored state. `finished=True` says the
    aggregate's work is done: the runtime archives its state to the document store and keeps
    only a small marker in the hot state (so late events and replays are still recognised)."""

    state: dict[str, Any] | None = None
    emits: list[Emit] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    cancel_timers: list[str] = field(default_factory=list)
    finished: bool = False


class Rejected(Exception):
    """Content that breaks a rule. The message is the dead-letter reason: no personal data."""


Handler = Callable[[Event, dict[str, Any] | None], Awaitable[Outcome]]
KeyOf = Callable[[Event], str]


@dataclass(frozen=True)
class Wiring:
    """One service, as the runtime sees it.

    - `inputs`: logical topics it consumes (all must have the same partition count);
    - `handlers`: event type -> handler, for records on those topics;
    - `commands`: command type -> handler, for requests its API writes to its command topic;
    - `timers`: timer name -> handler;
    - `keys`: event type -> the aggregate key, where it is not the record key (the runtime
      repartitions such records so each aggregate has one owner);
    - `business_ids`: event type -> the business fact an event records (a rating id, a
      work order's id and stage). Like the event id, it is applied once within the replay
      horizon, so a partner resending the same fact under a new event id changes nothing."""

    service: str
    inputs: list[str]
    handlers: dict[str, Handler]
    commands: dict[str, Handler] = field(default_factory=dict)
    timers: dict[str, Handler] = field(default_factory=dict)
    keys: dict[str, KeyOf] = field(default_factory=dict)
    business_ids: dict[str, KeyOf] = field(default_factory=dict)
