"""Delivery's window and operator calls with two instances: the one that does not own the
file hands the request to the owner through the command topic instead of refusing it."""

import pytest

from services.delivery import handlers
from services.delivery.api import DeliveryServicer
from tongban.handling import Outcome, Rejected
from tongban.runtime import NotReady


class Aborted(Exception):
    pass


class Context:
    async def abort(self, code, message):
        raise Aborted(code, message)


class Runtime:
    def __init__(self, state: dict | None, owned: bool = True) -> None:
        self.state, self.owned = state, owned
        self.submitted: list[tuple[str, str, str]] = []

    async def state_of(self, key: str) -> dict | None:
        if not self.owned:
            raise NotReady("another instance owns it")
        return self.state

    async def submit(self, command: str, key: str, command_id: str, payload: dict) -> None:
        self.submitted.append((command, key, command_id))


async def refuse(event, state):
    raise Rejected("the result is not waiting at a window")


async def accept(event, state):
    return Outcome(state=state)


def servicer(runtime: Runtime, handler) -> DeliveryServicer:
    return DeliveryServicer(runtime, {handlers.RECORD_ARRIVAL: handler})  # type: ignore[arg-type]


async def test_the_instance_that_does_not_own_the_file_hands_the_act_to_its_owner():
    runtime = Runtime(None, owned=False)
    await servicer(runtime, refuse)._command(Context(), handlers.RECORD_ARRIVAL, "TB1", "arrival:TB1:w1", {})
    assert runtime.submitted == [(handlers.RECORD_ARRIVAL, "TB1", "arrival:TB1:w1")]


async def test_the_owner_tries_the_act_first_and_refuses_a_broken_rule_without_writing():
    runtime = Runtime({"result": {"method": "WINDOW"}})
    with pytest.raises(Rejected):
        await servicer(runtime, refuse)._command(Context(), handlers.RECORD_ARRIVAL, "TB1", "arrival:TB1:w1", {})
    assert runtime.submitted == []
    await servicer(runtime, accept)._command(Context(), handlers.RECORD_ARRIVAL, "TB1", "arrival:TB1:w1", {})
    assert runtime.submitted == [(handlers.RECORD_ARRIVAL, "TB1", "arrival:TB1:w1")]


async def test_an_unknown_file_on_its_owner_is_not_found():
    runtime = Runtime(None)
    with pytest.raises(Aborted):
        await servicer(runtime, accept)._command(Context(), handlers.RECORD_ARRIVAL, "TB9", "arrival:TB9:w1", {})
    assert runtime.submitted == []
