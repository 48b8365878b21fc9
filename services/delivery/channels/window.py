"""Window pick-up after 结果转送: the carrier takes the paper result from the deciding
authority to the receiving window, the window records its arrival (the applicant is told),
and the result is delivered when an authorised window confirms the applicant picked it up.
An uncollected result is reminded and, after a while, reported."""

from __future__ import annotations

from typing import Any

from services.delivery.channels.base import (
    HAND_OVER,
    Channel,
    Context,
    Delivered,
    ResultState,
    Step,
    attempt_of,
    carrier_dispatch,
    manual,
    progress,
)
from tongban.handling import Rejected, Timer

REMINDER = "pickup_reminder"
REPORT = "uncollected_report"
WAITING = ("AT_WINDOW", "UNCOLLECTED")  # may be picked up


class Window(Channel):
    method = "WINDOW"

    def start(self, ctx: Context, previous: ResultState | None) -> Step:
        result = attempt_of(ctx, previous, self.method, (previous or {}).get("attempt", 0) + 1,
                            status="TRANSFERRING", window_id=ctx.window_id)
        if not ctx.window_id:
            return manual(ctx, result, f"no window where the application was received may hand over results "
                                       f"of matter {ctx.matter_code}")
        parcel = carrier_dispatch(ctx, result, f"跨省通办窗口 {ctx.window_id}", f"window {ctx.window_id}", None,
                                  "TO_WINDOW", ctx.window_id)
        told = progress(ctx, result, "DISPATCHED", f"结果转送 to window {ctx.window_id}")
        return Step(result, emits=[parcel, told])

    def on_carrier(self, ctx: Context, result: ResultState, receipt: dict[str, Any]) -> Step:
        if receipt["dispatch_id"] != result["dispatch_id"] or result["status"] != "TRANSFERRING":
            return Step(result)
        tracked = {**result, "tracking_number": receipt["tracking_number"], "carrier_status": receipt["status"]}
        if receipt["status"] == "RETURNED":
            reason = receipt.get("return_reason") or "NOT_GIVEN"
            return manual(ctx, tracked, f"the transfer to window {result['window_id']} came back: {reason}")
        if "carrier_status" in result:
            return Step(tracked)  # on its way already; the window's own record says when it arrived
        return Step(tracked, emits=[progress(ctx, tracked, "IN_TRANSIT", "结果转送 with the carrier")])

    def on_arrival(self, ctx: Context, result: ResultState, window_id: str) -> Step:
        self._at_its_window(result, window_id)
        if result["status"] in WAITING:
            return Step(result)  # recorded already
        if result["status"] != "TRANSFERRING":
            raise Rejected("the result is not on its way to a window")
        arrived = {**result, "status": "AT_WINDOW", "arrived_at": ctx.now}
        told = progress(ctx, arrived, "ARRIVED_AT_WINDOW",
                        f"the result is at window {window_id}; the applicant is notified to collect it")
        policy = ctx.policy
        return Step(arrived, emits=[told], timers=[Timer(REMINDER, ctx.now + policy.pickup_reminder_after, {"n": 1}),
                                                   Timer(REPORT, ctx.now + policy.uncollected_report_after)])

    def on_pickup(self, ctx: Context, result: ResultState, window_id: str) -> Step:
        if result["status"] not in WAITING:
            raise Rejected("the result has not arrived at a window yet")
        self._at_its_window(result, window_id)
        refusal = ctx.authorised(window_id, ctx.matter_code, HAND_OVER, ctx.now)
        if refusal:
            raise Rejected(refusal)
        return Step({**result, "status": "PICKED_UP"}, cancel_timers=[REMINDER, REPORT],
                    delivered=Delivered(result["dispatch_id"], result.get("tracking_number"), ctx.now))

    def on_timer(self, ctx: Context, result: ResultState, name: str, payload: dict[str, Any]) -> Step:
        if result["status"] != "AT_WINDOW":
            return Step(result)
        if name == REMINDER:
            n = (payload or {}).get("n", 1)
            told = progress(ctx, result, "PICKUP_REMINDED", f"reminder {n}: the result waits at window "
                                                            f"{result['window_id']}")
            return Step(result, emits=[told],
                        timers=[Timer(REMINDER, ctx.now + ctx.policy.pickup_reminder_after, {"n": n + 1})])
        if name == REPORT:
            reported = {**result, "status": "UNCOLLECTED"}
            days = ctx.policy.uncollected_report_after
            told = progress(ctx, reported, "UNCOLLECTED_REPORTED", f"not collected within {days}")
            return Step(reported, emits=[told], cancel_timers=[REMINDER])
        return Step(result)

    @staticmethod
    def _at_its_window(result: ResultState, window_id: str) -> None:
        if window_id != result["window_id"]:
            raise Rejected(f"the result was sent to window {result['window_id']}, not to window {window_id}")


CHANNEL = Window()
