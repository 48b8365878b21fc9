"""一件事一次办: the applications of a bundle are routed together. Pure rules.

Each matter of a bundle is its own application (its own number, progress and decision),
and every one carries the bundle's id (ApplicationReceived `bundle_id`). Routing holds each
of them (BundleMemberHeld) until the bundle's other matters are in; the bundle, one
aggregate of its own (`key`), then releases all of them at once (BundleReleased, one per
application): routed together when each is routable, or all to the review queue when one
is not, so no matter of a bundle runs while another of it cannot. Applications that make up
no bundle of the catalogue, or whose other matters do not arrive in time (WAIT), go to
review too, each with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from services.routing.catalogue import Catalogue

PREFIX = "bundle:"
ROUTE, REVIEW = "ROUTE", "REVIEW"  # BundleReleased.release
# A bundle is applied for in one sitting (one form, 一表申请); a day covers a submission that
# spans midnight or a retry after an outage, and is short enough for the applicant to be told.
WAIT = timedelta(days=1)
WAIT_TIMER = "bundle-wait"


def key(bundle_id: str) -> str:
    """The bundle's aggregate key in routing's state."""
    return f"{PREFIX}{bundle_id}"


@dataclass(frozen=True)
class Release:
    bundle_code: str
    applications: tuple[str, ...]
    release: str
    reason: str = ""


def joined(members: list[dict[str, Any]], member: dict[str, Any]) -> list[dict[str, Any]]:
    """The bundle's members with `member` (a BundleMemberHeld body); a redelivery changes nothing."""
    if any(m["application_id"] == member["application_id"] for m in members):
        return members
    kept = {k: member[k] for k in ("application_id", "matter_code", "routable", "reason")}
    return [*members, kept]


def release(catalogue: Catalogue, members: list[dict[str, Any]]) -> Release | None:
    """How the bundle's applications go on, or None while more of its matters may still come."""
    codes = [m["matter_code"] for m in members]
    arrived = [m["application_id"] for m in members]
    if twice := sorted({c for c in codes if codes.count(c) > 1}):
        return Release("", tuple(arrived), REVIEW, f"matter {', '.join(twice)} applied for twice in one bundle")
    fitting = [b for b in catalogue.bundles() if set(codes) <= set(b.matters)]
    if not fitting:
        return Release("", tuple(arrived), REVIEW,
                       f"the matters applied for together ({', '.join(codes)}) are not a bundle of the catalogue")
    bundle = next((b for b in fitting if set(b.matters) == set(codes)), None)
    if bundle is None:
        return None
    by_matter = {m["matter_code"]: m for m in members}
    ordered = tuple(by_matter[code]["application_id"] for code in bundle.matters)
    blocked = [f"{code} cannot be routed: {by_matter[code]['reason']}" for code in bundle.matters
               if not by_matter[code]["routable"]]
    if blocked:
        return Release(bundle.code, ordered, REVIEW, f"bundle {bundle.code}: {'; '.join(blocked)}")
    return Release(bundle.code, ordered, ROUTE)


def expired(members: list[dict[str, Any]]) -> Release:
    """The bundle's other matters did not arrive within WAIT: what did arrive goes to review."""
    arrived = ", ".join(m["matter_code"] for m in members)
    return Release("", tuple(m["application_id"] for m in members), REVIEW,
                   f"the bundle's other matters did not arrive within {WAIT.days} day(s) (arrived: {arrived})")


def late(bundle_id: str) -> Release:
    """A member arriving after its bundle was released is not routed alone."""
    return Release("", (), REVIEW, f"bundle {bundle_id} was released before this application arrived")
