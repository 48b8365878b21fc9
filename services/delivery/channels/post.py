"""Post: the carrier takes the paper result to the applicant's address. A returned parcel
(wrong address, refused, not collected) is tried again after a while, to a corrected
address if the applicant gave one, or goes to window pick-up if the applicant chose that;
after the last attempt it waits in the manual-handling queue for an operator."""

from __future__ import annotations

from typing import Any

from services.delivery.channels.base import (
    Channel,
    Context,
    Delivered,
    Redirection,
    ResultState,
    Step,
    attempt_of,
    carrier_dispatch,
    manual,
    progress,
)
from tongban.handling import Rejected, Timer

RETRY = "post_retry"
MOVING = ("ACCEPTED", "IN_TRANSIT")  # the carrier has it and it is on its way
WRONG_ADDRESS = "WRONG_ADDRESS"


class Post(Channel):
    method = "POST"

    def refusal(self, ctx: Context) -> str | None:
        if not ctx.matter.postal_delivery:
            return f"POST refused: matter {ctx.matter_code} does not allow postal delivery of its result"
        return None

    def start(self, ctx: Context, previous: ResultState | None) -> Step:
        kept = {k: (previous or {})[k] for k in ("returns", "corrected_address") if k in (previous or {})}
        result = attempt_of(ctx, previous, self.method, (previous or {}).get("attempt", 0) + 1,
                            status="DISPATCHED", **kept)
        address = ctx.postal_address(result)
        if not address:
            return manual(ctx, result, "no postal address to send the result to")
        holder = ctx.holder()
        parcel = carrier_dispatch(ctx, result, holder["name"], address, holder.get("phone"), "TO_APPLICANT")
        return Step(result, emits=[parcel, progress(ctx, result, "DISPATCHED", f"posted, attempt {result['attempt']}")])

    def on_carrier(self, ctx: Context, result: ResultState, receipt: dict[str, Any]) -> Step:
        if receipt["dispatch_id"] != result["dispatch_id"] or result["status"] not in ("DISPATCHED", "IN_TRANSIT"):
            return Step(result)  # an earlier attempt's news, or one already acted on
        status = receipt["status"]
        tracked = {**result, "tracking_number": receipt["tracking_number"]}
        if status in MOVING:
            moving = {**tracked, "status": "IN_TRANSIT"}
            if result["status"] == "IN_TRANSIT":
                return Step(moving)
            return Step(moving, emits=[progress(ctx, moving, "IN_TRANSIT", "with the carrier")])
        if status == "DELIVERED":
            return Step({**tracked, "status": "DELIVERED"},
                        delivered=Delivered(receipt["dispatch_id"], receipt["tracking_number"], receipt["at"]))
        if status != "RETURNED":
            raise Rejected(f"carrier status {status} is not handled")
        return self._returned(ctx, tracked, receipt.get("return_reason") or "NOT_GIVEN")

    def _returned(self, ctx: Context, result: ResultState, reason: str) -> Step:
        returned = {**result, "status": "RETURNED", "returns": [*result.get("returns", []), reason]}
        told = progress(ctx, returned, "RETURNED", f"returned by the carrier: {reason}")
        if returned["attempt"] >= ctx.policy.post_attempts:
            queued = manual(ctx, returned, f"returned {returned['attempt']} times, last: {reason}")
            return Step(queued.result, emits=[told, *queued.emits])
        due = ctx.now + ctx.policy.retry_after
        waiting = progress(ctx, returned, "RETRY_SCHEDULED",
                           f"attempt {returned['attempt'] + 1} after {ctx.policy.retry_after}; "
                           "a corrected address or window pick-up may be given until then")
        return Step(returned, emits=[told, waiting], timers=[Timer(RETRY, due, {"attempt": returned["attempt"]})])

    def on_redirect(self, ctx: Context, result: ResultState, to: Redirection, operator: bool) -> Step:
        if result["status"] != "RETURNED":
            return super().on_redirect(ctx, result, to, operator)
        kept = {**result, "redirect": to.method}  # for the scheduled retry
        if to.address:
            kept["corrected_address"] = to.address
        return Step(kept)

    def on_timer(self, ctx: Context, result: ResultState, name: str, payload: dict[str, Any]) -> Step:
        if name != RETRY or result["status"] != "RETURNED" or payload.get("attempt") != result["attempt"]:
            return Step(result)
        if result.get("redirect") == "WINDOW":
            return Step(result, switch_to="WINDOW")
        if result["returns"][-1] == WRONG_ADDRESS and "corrected_address" not in result:
            return manual(ctx, result, "the address was wrong and no corrected address came")
        return self.start(ctx, result)


CHANNEL = Post()
