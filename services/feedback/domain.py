"""Supervision rules: 好差评 ratings (国办发[2019]51号, GB/T 39734-2020 and 39735-2020),
12345 work orders (国办发[2020]53号) and SLA breaches become counted facts against a
matter × division × responsible party; windows of those facts flag problem matters.

Pure rules: no Kafka, no store. The handlers (handlers.py) apply the per-application and
per-work-order rules; the faust app (windows.py) applies the windowed flag rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

# ---------------------------------------------------------------------------- 好差评

LEVELS = range(1, 6)  # 1 非常满意 .. 5 非常不满意 (GB/T 39734-2020 §5.2)
BAD_LEVELS = (4, 5)  # 不满意 and 非常不满意 are 差评
# The indicator sets ratings are given against (GB/T 39735-2020); a new set is a new version
# added here, and ratings keep the version they were given against.
INDICATOR_SET = "GB/T 39735-2020:v1"
INDICATOR_SETS = frozenset({INDICATOR_SET})
ON_SITE_CHANNELS = frozenset({"ONSITE"})  # 一次一评: one rating per service interaction
ONLINE_CHANNELS = frozenset({"ONLINE", "MOBILE", "HOTLINE", "WEBSITE"})  # 一事一评: one per matter
RATED_ROLES = ("SERVICE", "RECEIVING", "DECIDING")  # SERVICE: one office did it all


class InvalidRating(ValueError):
    pass


@dataclass(frozen=True)
class ServiceRating:
    rating_id: str
    application_id: str | None
    matter_code: str
    division_code: str
    party: str
    level: int
    channel: str
    rated_role: str = "SERVICE"
    interaction_id: str | None = None
    indicator_set: str = INDICATOR_SET

    def __post_init__(self) -> None:
        # exact type: True and 4.0 compare equal to levels but are not levels
        if type(self.level) is not int or self.level not in LEVELS:
            raise InvalidRating(f"rating level must be 1..5, got {self.level!r}")
        if self.channel not in ON_SITE_CHANNELS | ONLINE_CHANNELS:
            raise InvalidRating(f"unknown rating channel {self.channel!r}")
        if self.rated_role not in RATED_ROLES:
            raise InvalidRating(f"rated role must be one of {', '.join(RATED_ROLES)}, got {self.rated_role!r}")
        if self.indicator_set not in INDICATOR_SETS:
            raise InvalidRating(f"unknown indicator set {self.indicator_set!r}")

    @property
    def is_bad(self) -> bool:
        return self.level in BAD_LEVELS

    @property
    def slot(self) -> str:
        """What the rating uses up: on site the interaction (一次一评), online the matter
        (一事一评); in 代收代办 the receiving window and the deciding authority each have
        their own slots, so both are rated once."""
        if self.channel in ON_SITE_CHANNELS:
            # a writer that cannot name the interaction (ServiceRating v1) rates the application's one visit
            return f"ON_SITE|{self.rated_role}|{self.interaction_id or 'visit'}"
        return f"ONLINE|{self.rated_role}"


def slot_taken(rating: ServiceRating, taken: Mapping[str, str]) -> str | None:
    """The refusal reason when this application's slot already holds another rating."""
    holder = taken.get(rating.slot)
    if holder is None or holder == rating.rating_id:
        return None
    kind = "一次一评: this service interaction" if rating.channel in ON_SITE_CHANNELS else "一事一评: this matter"
    return f"{kind} was already rated for application {rating.application_id} as {rating.rated_role} (rating {holder})"


def follow_up_of(rating: ServiceRating, taken: Mapping[str, str], cases: Mapping[str, Any]) -> str | None:
    """The bad rating this one follows up: the slot's rating was bad, its rectification has
    been answered (RESOLVED) and not yet followed up. The rater gets that one more rating."""
    holder = taken.get(rating.slot)
    case = cases.get(holder) if holder is not None else None
    if case is None or f"{rating.slot}|FOLLOW_UP" in taken:
        return None
    return holder if "RESOLVED" in case["done"] and "FOLLOW_UP_RATED" not in case["done"] else None


# ---------------------------------------------------------------------------- rectification

@dataclass(frozen=True)
class RectificationPolicy:
    """Deadlines of a bad rating's rectification (整改), in working days: call the rater
    back, then fix or explain and answer. Defaults per 国办发[2019]51号; a locality may set its own."""

    callback_days: int = 1
    resolve_days: int = 15


@dataclass(frozen=True)
class RectificationPolicies:
    """Deadlines per locality: the longest division-code prefix that has its own wins."""

    default: RectificationPolicy = RectificationPolicy()
    localities: Mapping[str, RectificationPolicy] = field(default_factory=dict)

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> RectificationPolicies:
        return cls(RectificationPolicy(**config.get("default", {})),
                   {prefix: RectificationPolicy(**spec) for prefix, spec in config.get("localities", {}).items()})

    def for_division(self, division_code: str) -> RectificationPolicy:
        prefixes = [p for p in self.localities if division_code.startswith(p)]
        return self.localities[max(prefixes, key=len)] if prefixes else self.default


RECTIFICATION_STEPS = ("CALLED_BACK", "RESOLVED", "FOLLOW_UP_RATED")
LOCAL_TIME = ZoneInfo("Asia/Shanghai")


def end_of_working_day(day: date) -> datetime:
    """A deadline of `day` runs until that day ends in Beijing time."""
    return datetime.combine(day + timedelta(days=1), time(0), LOCAL_TIME).astimezone(UTC)


def rectification_deadlines(rated_at: datetime, policy: RectificationPolicy,
                            add_working_days: Callable[[datetime, int], date]) -> dict[str, datetime]:
    """step -> deadline; `add_working_days` is the shared SLA calendar (tongban.workdays)."""
    return {"CALLED_BACK": end_of_working_day(add_working_days(rated_at, policy.callback_days)),
            "RESOLVED": end_of_working_day(add_working_days(rated_at, policy.resolve_days))}


# ---------------------------------------------------------------------------- 12345 work orders

WORK_ORDER_STAGES = (
    "RECEIVED",  # 受理
    "DISPATCHED",  # 派单 (to a handling unit, 承办单位)
    "HANDLING",  # 办理
    "ANSWERED",  # 答复
    "SUPERVISED",  # 督办
    "CLOSED",  # 办结
    "REVISITED",  # 回访
    "EVALUATED",  # 评价
    "RETURNED",  # 退单: the unit objects to the dispatch
    "REASSIGNED",  # 改派: to another unit after a 退单
    "EXTENDED",  # 延期
    "REOPENED",  # 重办
    "ANSWERED_ON_CALL",  # 即时办结: answered during the call, never dispatched
)
DISPATCHING_STAGES = frozenset({"DISPATCHED", "REASSIGNED"})  # they name the handling unit
CATEGORIES = ("CONSULTATION", "HELP", "COMPLAINT", "REPORT", "SUGGESTION")
COUNTED_CATEGORIES = frozenset({"COMPLAINT"})  # what counts against a handling unit


@dataclass(frozen=True)
class DuplicateRule:
    """Work orders from the same caller (hashed), about the same matter in the same
    division, received within `days` of the first, are one case (合并): counted once."""

    days: int = 7

    def merges(self, first_received: datetime, received: datetime) -> bool:
        return timedelta(0) <= received - first_received <= timedelta(days=self.days)


def duplicate_key(caller_hash: str | None, matter_code: str | None, division_code: str,
                  work_order_id: str) -> str:
    """The aggregate a work order belongs to: its duplicate group, or itself when the
    caller is unknown (a caller we cannot recognise cannot be merged)."""
    if caller_hash and matter_code:
        return f"{caller_hash}|{matter_code}|{division_code}"
    return f"order|{work_order_id}"


# ---------------------------------------------------------------------------- windows and flags

# DECISION: an application decided with the party holding a leg of it, what its SLA breaches are divided by
FACT_KINDS = ("RATING", "COMPLAINT", "SLA_BREACH", "DECISION")


@dataclass(frozen=True)
class WindowSpec:
    """Tumbling when step == size, hopping when step < size; windows start at whole
    multiples of the step since the epoch (UTC)."""

    name: str
    size_days: int
    step_days: int

    def windows(self, at: datetime) -> list[datetime]:
        """Starts of the windows of this spec that contain `at`, oldest first."""
        step = timedelta(days=self.step_days)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        latest = epoch + step * ((at - epoch) // step)
        count = -(-self.size_days // self.step_days)
        return [s for s in (latest - step * i for i in reversed(range(count))) if s + self.size() > at]

    def size(self) -> timedelta:
        return timedelta(days=self.size_days)


DEFAULT_WINDOWS = (WindowSpec("7d", 7, 7), WindowSpec("30d-hop7d", 30, 7))


@dataclass
class WindowCounts:
    """What a window holds: the counted facts by business id (so a fact counts once
    however often it arrives) as id -> (kind, bad)."""

    facts: dict[str, tuple[str, bool]] = field(default_factory=dict)

    def count(self, kind: str, bad: bool | None = None) -> int:
        return sum(1 for k, b in self.facts.values() if k == kind and (bad is None or b == bad))

    def metrics(self) -> dict[str, float]:
        ratings, bad = self.count("RATING"), self.count("RATING", True)
        breaches, decided = self.count("SLA_BREACH"), self.count("DECISION")
        # facts: every counted fact, the volume a count-based rule needs before it may flag
        return {"ratings": ratings, "bad_ratings": bad, "bad_rating_rate": bad / ratings if ratings else 0.0,
                "complaints": self.count("COMPLAINT"), "sla_breaches": breaches, "decided": decided,
                "sla_breach_rate": sla_breach_rate(breaches, decided), "facts": len(self.facts)}


def sla_breach_rate(breaches: int, decided: int) -> float:
    """Breaches per application decided (one application can breach several legs, so it can
    exceed 1). Without a decision it is 0: the rate rule's minimum volume of decisions keeps
    it from judging, and the count rule still sees the breaches."""
    return breaches / decided if decided else 0.0


@dataclass(frozen=True)
class FlagRule:
    """Flag when `metric` >= `threshold` once `volume` >= `min_volume`; clear when it is
    below `clear_below` (the gap is hysteresis: a matter near the line does not flap)."""

    name: str
    metric: str
    threshold: float
    clear_below: float
    volume: str
    min_volume: int = 1

    def __post_init__(self) -> None:
        if self.min_volume < 1 or not 0 <= self.clear_below <= self.threshold:
            raise ValueError(f"rule {self.name}: need min_volume >= 1 and 0 <= clear_below <= threshold")

    def crossed(self, metrics: Mapping[str, float]) -> bool:
        return metrics[self.volume] >= self.min_volume and metrics[self.metric] >= self.threshold

    def recovered(self, metrics: Mapping[str, float], *, own_window: bool) -> bool:
        """Under the clearing line: in the window that raised the flag (diluted, or its
        evidence withdrawn), or in a later one with enough facts of any kind to judge by
        (one good rating in a fresh week does not clear a matter)."""
        judged = own_window or metrics["facts"] >= self.min_volume
        return judged and metrics[self.metric] < self.clear_below


def load_rules(config: Mapping[str, Mapping]) -> list[FlagRule]:
    """Rules from configuration (feedback's flags.toml: `[rules.<name>]` tables)."""
    return [FlagRule(name=name, **spec) for name, spec in config.items()]


@dataclass(frozen=True)
class Verdict:
    kind: str  # "FLAG" or "CLEAR"
    rule: FlagRule
    window: str
    window_start: datetime
    flag_id: str


def flag_id(group: str, spec: WindowSpec, start: datetime, rule: FlagRule) -> str:
    """Derived from the window and the rule: a resend of the same verdict has the same id."""
    return f"{group}|{spec.name}|{start:%Y-%m-%d}|{rule.name}"


def evaluate(group: str, spec: WindowSpec, start: datetime, counts: WindowCounts, rules: Iterable[FlagRule],
             raised: Mapping[str, tuple[str, datetime]]) -> list[Verdict]:
    """Verdicts for one window after it changed; `raised` is rule -> (flag id, window start)
    of the flags standing for this group and spec. A flag is cleared by its own window, or
    any later one, recovering."""
    metrics = counts.metrics()
    out = []
    for rule in rules:
        standing = raised.get(rule.name)
        if standing is None and rule.crossed(metrics):
            out.append(Verdict("FLAG", rule, spec.name, start, flag_id(group, spec, start, rule)))
        elif standing is not None and start >= standing[1] and rule.recovered(metrics,
                                                                              own_window=start == standing[1]):
            out.append(Verdict("CLEAR", rule, spec.name, start, standing[0]))
    return out
