"""The simulated windows (sim/carrier.py): an act is tried again, the same request on the next
delivery instance, while the answer says nothing about it (UNAVAILABLE, CANCELLED,
DEADLINE_EXCEEDED), and ends at OK or a refusal; the journal carries open acts over a restart."""

import asyncio

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata

import sim.carrier
from sim.carrier import WindowJournal, settle


def failure(code: grpc.StatusCode) -> AioRpcError:
    return AioRpcError(code, Metadata(), Metadata(), details=code.name)


@pytest.fixture(autouse=True)
def no_back_off(monkeypatch):
    monkeypatch.setattr(sim.carrier, "BACK_OFF_S", (0.0, 0.0))


def instances(*answers: grpc.StatusCode | None):
    """An act answered in this order (None: OK), noting which instance each try went to."""
    tried: list[tuple[str, int]] = []
    left = list(answers)

    async def act(method: str, target: int) -> None:
        tried.append((method, target))
        code = left.pop(0)
        if code is not None:
            raise failure(code)

    return act, tried


async def test_an_act_is_tried_again_on_the_next_instance_until_it_is_done():
    act, tried = instances(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                           grpc.StatusCode.DEADLINE_EXCEEDED, None)
    assert await settle(act, "ConfirmPickUp", 2, 1, asyncio.Event()) == "OK"
    assert tried == [("ConfirmPickUp", 1), ("ConfirmPickUp", 0), ("ConfirmPickUp", 1), ("ConfirmPickUp", 0)]


@pytest.mark.parametrize("code", [grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND,
                                  grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT])
async def test_a_refusal_ends_the_act(code):
    act, tried = instances(grpc.StatusCode.UNAVAILABLE, code, None)
    assert await settle(act, "RecordArrival", 2, 0, asyncio.Event()) == code.name
    assert len(tried) == 2


async def test_a_stopping_window_leaves_the_act_open():
    stopping = asyncio.Event()
    stopping.set()
    act, tried = instances(grpc.StatusCode.UNAVAILABLE)
    assert await settle(act, "RecordArrival", 2, 0, stopping) == "STOPPED"
    assert len(tried) == 1


def test_the_journal_gives_back_the_results_handed_over_and_not_settled_in_their_order(tmp_path):
    journal = WindowJournal(tmp_path / "windows.jsonl")
    for application_id in ("TB1", "TB2", "TB3", "TB1"):  # TB1 handed twice (the carrier read it again)
        journal.handed(application_id, "W1")
    journal.settled("TB2", "W1", "OK")
    journal.settled("TB3", "W1", "FAILED_PRECONDITION")
    assert WindowJournal(tmp_path / "windows.jsonl").still_open() == [("TB1", "W1")]
    assert WindowJournal().still_open() == []


def test_the_journal_knows_what_was_settled_before_a_restart(tmp_path):
    journal = WindowJournal(tmp_path / "windows.jsonl")
    journal.handed("TB1", "W1")
    journal.settled("TB1", "W1", "OK")
    journal.handed("TB1", "W1")  # the carrier, restarted, hands the same parcel over again
    restarted = WindowJournal(tmp_path / "windows.jsonl")
    assert ("TB1", "W1") in restarted.done
    assert restarted.still_open() == []
