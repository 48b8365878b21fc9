"""`tongban manual`: delivery's manual-handling queue, as an operator.

Like `tongban review`, the command imports no service: it learns delivery's API from the
server itself through gRPC server reflection. Each delivery instance lists the queue of the
partitions it serves and says which; the command asks every instance it is given, merges the
answers and names the partitions none answered for, whose waiting results are missing from
the list.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc

from tongban.config import SERVICE_PORTS
from tongban.ops import review

SERVICE = "tongban.delivery.v1.Delivery"
OUTCOMES = ("POST", "WINDOW")  # post again (optionally to a corrected address), or window pick-up


def default_targets() -> list[str]:
    return [f"127.0.0.1:{os.environ.get('TONGBAN_GRPC_PORT_DELIVERY', SERVICE_PORTS['delivery'])}"]


@dataclass
class Listing:
    entries: list[dict[str, Any]]  # oldest first
    partition_count: int  # 0: no instance answered
    covered: set[int] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)  # target -> its status and details

    @property
    def uncovered(self) -> list[int]:
        return sorted(set(range(self.partition_count)) - self.covered)

    @property
    def complete(self) -> bool:
        return self.partition_count > 0 and not self.uncovered

    def as_json(self) -> dict[str, Any]:
        return {"entries": self.entries, "partition_count": self.partition_count,
                "partitions_answered": sorted(self.covered), "partitions_missing": self.uncovered,
                "complete": self.complete, "failed_targets": self.failed}


def merge(replies: list[dict[str, Any]], failed: dict[str, str] | None = None) -> Listing:
    """One listing from the instances' replies. Two instances may both answer for a partition
    (a rebalance between the two calls): an application listed twice is shown once, as the
    later queueing says (a result may have been resolved and queued again)."""
    by_application: dict[str, dict[str, Any]] = {}
    for reply in replies:
        for entry in reply.get("entries", []):
            seen = by_application.get(entry["application_id"])
            if seen is None or _queued_at(entry) > _queued_at(seen):
                by_application[entry["application_id"]] = entry
    covered = {int(p) for reply in replies for p in reply.get("partitions", [])}
    count = max((int(reply.get("partition_count", 0)) for reply in replies), default=0)
    entries = sorted(by_application.values(), key=lambda e: (*_queued_at(e), e["application_id"]))
    return Listing(entries, count, covered, dict(failed or {}))


def _queued_at(entry: dict[str, Any]) -> tuple[int, int]:
    return int(entry.get("since_millis", 0)), int(entry.get("attempt", 0))


def listing(targets: list[str], **kwargs: Any) -> Listing:
    """Ask every target; one that does not answer is named in the listing, not fatal."""
    replies, failed = [], {}
    for target in targets:
        try:
            replies.append(review.call(target, "ListManual", {}, service=SERVICE, **kwargs))
        except grpc.RpcError as exc:
            failed[target] = f"{exc.code().name}: {exc.details()}"
    return merge(replies, failed)


def resolve(targets: list[str], application_id: str, outcome: str, reason: str, address: str = "",
            reference: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """Send a waiting result on by `outcome`; the instance that owns the application applies it.
    A target that answers UNAVAILABLE (no verdict from the owner in time) passes the request to
    the next. A `reference` makes a repeated resolution the same request (default: a new one)."""
    request = {"application_id": application_id, "method": outcome, "postal_address": address,
               "request_reference": reference or f"manual-{uuid.uuid4().hex[:16]}", "reason": reason}
    unavailable: grpc.RpcError | None = None
    for target in targets:
        try:
            return review.call(target, "Resolve", request, service=SERVICE, **kwargs)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            unavailable = exc
    assert unavailable is not None, "at least one target is asked"
    raise unavailable
