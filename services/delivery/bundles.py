"""一件事一次办 in delivery: one result when all of a bundle's matters are done. Pure rules.

Routing releases a bundle's applications together (services/routing/bundles.py; BundleReleased
ROUTE names every application of it). Each stays its own file here, with its own authority,
decision and channel, and keeps its bundle (`bundle`). Rules:

- An approved result is held (not dispatched) until every application of its bundle is
  *settled*: decided (approved or denied), not accepted (不予受理), closed (withdrawn, 补正
  expired), failed verification, or rejected by an operator (an application the catalogue no
  longer routed when its bundle was released waits in routing's review queue). Then the held
  results go out together, each by its own application's channel: one dispatch per
  application, since a channel carries one result and the applications may have chosen
  different channels (a combined parcel would need the carrier to take several results in
  one dispatch; PostalDispatch carries one result reference).
- An application that ends without a result does not hold the others: it counts as settled,
  with its outcome, and the others go out once the rest are settled, each with its own outcome.
- A result is held at most HOLD after the bundle's first application settled (an authority
  that never decides, or an applicant who never answers a 补正 before verification, must not
  keep the others' results forever): then what is held goes out, and each application
  settled later goes out as soon as it is.
- A bundle that went to review (BundleReleased REVIEW) is not held together: an operator
  routes or rejects each of its applications on its own.
- A result also held for 容缺 materials (acceptance.result_may_go_out) goes out when both
  holds are lifted, whichever is last.

The bundle is an aggregate of its own (`key`): each settled application tells it
(BundleMemberDecided, read back re-keyed to the bundle), and it answers each held application
(BundleResultsReleased), since one handler call sees only one key's state.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

PREFIX = "bundle:"
ROUTE = "ROUTE"  # BundleReleased.release of a bundle routed together
# Long enough for every authority of a bundle to decide within its promised limit (most are
# 20 working days or less), short enough that nobody waits a second month for a result.
HOLD = timedelta(days=30)
HOLD_TIMER = "bundle-hold"
APPROVED = "APPROVED"
NOT_ACCEPTED = "NOT_ACCEPTED"
VERIFICATION_FAILED = "VERIFICATION_FAILED"
UNROUTABLE = "UNROUTABLE"


def key(bundle_id: str) -> str:
    """The bundle's aggregate key in delivery's state."""
    return f"{PREFIX}{bundle_id}"


def membership(released: dict[str, Any]) -> dict[str, Any] | None:
    """What a file keeps of its BundleReleased: None unless its bundle was routed together."""
    if released["release"] != ROUTE:
        return None
    return {"bundle_id": released["bundle_id"], "applications": list(released["applications"]),
            "reported": False, "released": False}


def settlement(file: dict[str, Any]) -> str | None:
    """The application's outcome for its bundle once it is settled, else None."""
    if "closed" in file:
        return str(file["closed"])  # WITHDRAWN, SUPPLEMENT_EXPIRED
    if "decision" in file:
        return str(file["decision"])  # APPROVED, DENIED (a failed joint leg too)
    if file.get("acceptance") == "REFUSED":
        return NOT_ACCEPTED
    if file.get("verification_failed"):
        return VERIFICATION_FAILED
    if file.get("unroutable"):
        return UNROUTABLE
    return None


def ended(file: dict[str, Any]) -> bool:
    """The file's own work is done (the handlers finish it then): nothing more goes out for it."""
    return ("closed" in file or file.get("decision") == "DENIED" or file.get("acceptance") == "REFUSED"
            or bool(file.get("delivered")) or bool(file.get("unroutable")) or bool(file.get("verification_failed")))


def report_due(file: dict[str, Any]) -> bool:
    """The file belongs to a bundle routed together, is settled and has not told its bundle."""
    bundle = file.get("bundle")
    return bundle is not None and not bundle["reported"] and settlement(file) is not None


def report(application_id: str, file: dict[str, Any], at: datetime) -> dict[str, Any]:
    """The BundleMemberDecided body of a settled file."""
    bundle, outcome = file["bundle"], settlement(file)
    return {"application_id": application_id, "bundle_id": bundle["bundle_id"],
            "applications": bundle["applications"], "outcome": outcome,
            "held": outcome == APPROVED and "dispatch_id" not in file and not bundle["released"], "settled_at": at}


def holds(file: dict[str, Any]) -> bool:
    """The file's result waits for its bundle."""
    bundle = file.get("bundle")
    return bundle is not None and not bundle["released"]


# ---------------------------------------------------------------- the bundle's own aggregate
def joined(bundle: dict[str, Any] | None, member: dict[str, Any]) -> dict[str, Any]:
    """The bundle with one of its applications settled (a BundleMemberDecided body); a
    repeated report changes nothing and returns `bundle` itself."""
    if bundle is None:
        bundle = {"bundle_id": member["bundle_id"], "applications": list(member["applications"]),
                  "settled": {}, "held": [], "released": [], "expired": False}
    application_id = member["application_id"]
    if application_id in bundle["settled"]:
        return bundle
    held = [*bundle["held"], application_id] if member["held"] else bundle["held"]
    return {**bundle, "settled": {**bundle["settled"], application_id: member["outcome"]}, "held": held}


def complete(bundle: dict[str, Any]) -> bool:
    """Every application of the bundle is settled."""
    return set(bundle["applications"]) <= set(bundle["settled"])


def to_release(bundle: dict[str, Any]) -> list[str]:
    """The held results that go out now: none while an application of the bundle is unsettled
    and the hold lasts; then every held one not yet released."""
    if not (complete(bundle) or bundle["expired"]):
        return []
    return [a for a in bundle["held"] if a not in bundle["released"]]


def released(bundle: dict[str, Any], out: list[str]) -> dict[str, Any]:
    return {**bundle, "released": [*bundle["released"], *out]}


def release_body(bundle: dict[str, Any], application_id: str, at: datetime) -> dict[str, Any]:
    """The BundleResultsReleased body for one held application."""
    return {"application_id": application_id, "bundle_id": bundle["bundle_id"],
            "applications": bundle["applications"], "outcomes": dict(bundle["settled"]),
            "complete": complete(bundle), "released_at": at}
