"""Delivery's manual-handling queue as operators list it: each way a result lands in the queue,
through delivery's real handlers, gives its reason code and nothing personal; the runtime lists
only unfinished files of the partitions it serves; ListManual over real gRPC with mutual TLS on
a fake runtime; and the operator command's merge of several instances' answers, which names
the partitions nobody answered for."""

from datetime import UTC, datetime

import grpc
import pytest

from services.delivery import delivery_pb2, delivery_pb2_grpc, manual_queue
from services.delivery.api import DeliveryServicer
from tests.unit.test_delivery_channels import by, dispatch, feed, fired, redirect, wallet
from tests.unit.test_delivery_rules import APP, ID_NUMBER, T0, decision, receipt
from tongban.bus import partition_for
from tongban.config import load_settings
from tongban.events import millis
from tongban.grpc_tls import client_channel, server_credentials
from tongban.ops import manual
from tongban.runtime.core import ENTRY, Entry, Task
from tongban.runtime.service import ServiceRuntime
from tongban.runtime.state import MemoryStore

OPERATOR = "tongban-operator"
PERSONAL = (ID_NUMBER, "示例", "13800000000", "长沙")


async def returned_three_times() -> dict:
    state, _ = await feed(*by("POST", address="长沙市示例路1号"), decision("APPROVED"))
    for attempt in (1, 2):
        state, _ = await feed(receipt("RETURNED", dispatch(attempt), return_reason="NOT_COLLECTED"),
                              fired("post_retry", {"attempt": attempt}), state=state)
    state, _ = await feed(receipt("RETURNED", dispatch(3), return_reason="拒收 13800000000"), state=state)
    return state


async def queued_by(case: str) -> dict:
    if case == "RETURNED_TOO_OFTEN":
        return await returned_three_times()
    steps = {
        "WALLET_REFUSED": (*by("ELECTRONIC"), decision("APPROVED"),
                           wallet("REFUSED", reason=f"holder {ID_NUMBER} 13800000000 has no wallet")),
        "NO_HAND_OVER_WINDOW": (*by("WINDOW", window_id="", division="440305"), decision("APPROVED")),
        "WRONG_ADDRESS_NOT_CORRECTED": (*by("POST", address="长沙"), decision("APPROVED"),
                                        receipt("RETURNED", dispatch(1), return_reason="WRONG_ADDRESS"),
                                        fired("post_retry", {"attempt": 1})),
        "TRANSFER_RETURNED": (*by("WINDOW"), decision("APPROVED"),
                              receipt("RETURNED", dispatch(1), return_reason="REFUSED")),
        "NO_POSTAL_ADDRESS": (*by("POST", address=None), decision("APPROVED")),
    }[case]
    state, _ = await feed(*steps)
    return state


@pytest.mark.parametrize("case", [code for _, code in manual_queue.REASONS])
async def test_each_way_into_the_queue_has_its_reason_code_and_nothing_personal(case):
    state = await queued_by(case)
    assert state["result"]["status"] == "MANUAL"
    entry = manual_queue.waiting(APP, state)
    assert entry is not None
    assert (entry.application_id, entry.reason_code, entry.matter_code) == (APP, case, "KSTB-MKT-01")
    assert entry.since_ms == millis(T0), "the time it entered the queue"
    assert not [p for p in PERSONAL if p in repr(entry)], repr(entry)


async def test_carrier_return_codes_are_listed_and_free_text_among_them_is_not():
    entry = manual_queue.waiting(APP, await returned_three_times())
    assert entry is not None
    assert (entry.method, entry.attempt, entry.deciding_partner) == ("POST", 3, "440000")
    assert entry.return_reasons == ("NOT_COLLECTED", "NOT_COLLECTED", manual_queue.OTHER)


async def test_a_result_on_its_way_or_resolved_is_not_in_the_queue():
    on_its_way, _ = await feed(*by("POST", address="长沙"), decision("APPROVED"))
    assert manual_queue.waiting(APP, on_its_way) is None
    resolved, _ = await feed(redirect("WINDOW", operator=True), state=await returned_three_times())
    assert manual_queue.waiting(APP, resolved) is None
    assert manual_queue.waiting(APP, {}) is None


def test_an_unknown_reason_is_other_and_a_file_queued_before_times_were_kept_sorts_first():
    assert manual_queue.reason_code("something new") == manual_queue.OTHER
    old = manual_queue.waiting("TBOLD", {"result": {"status": "MANUAL", "manual_reason": "no postal address"}})
    new = manual_queue.waiting("TBNEW", {"result": {"status": "MANUAL", "manual_reason": "x",
                                                    "manual_since": datetime(2026, 1, 1, tzinfo=UTC)}})
    assert old is not None
    assert new is not None
    assert old.since_ms == 0
    assert [e.application_id for e in manual_queue.oldest_first([new, old])] == ["TBOLD", "TBNEW"]


# ---------------------------------------------------------------------------- the runtime's scan

def task(partition: int, entries: dict[str, Entry], active: bool = True) -> Task:
    store = MemoryStore()
    store.write({ENTRY + key.encode(): entry.pack() for key, entry in entries.items()}, 1)
    made = Task(None, partition, store, None)  # type: ignore[arg-type]  # the scan needs the store alone
    made.active = active
    return made


async def test_the_runtime_lists_unfinished_files_of_the_partitions_it_serves_only():
    runtime = ServiceRuntime(load_settings("delivery", {}), None, None, None)  # type: ignore[arg-type]
    waiting = {"result": {"status": "MANUAL", "manual_reason": "no postal address"}}
    runtime.tasks = {
        0: task(0, {"TBA": Entry(waiting), "TBB": Entry({"result": {"status": "DISPATCHED"}}),
                    "TBDONE": Entry(waiting, finished=True, archived=1, finished_at=T0),
                    "TBGONE": Entry(None, finished=True, archived=1, finished_at=T0)}),
        1: task(1, {"TBC": Entry(waiting)}, active=False),  # lost in a rebalance, not yet dropped
        2: task(2, {"TBD": Entry(waiting)}),
    }
    partitions, found = await runtime.owned_states(manual_queue.waiting)
    assert partitions == [0, 2]
    assert sorted(e.application_id for e in found) == ["TBA", "TBD"]
    seen = []
    assert await runtime.owned_states(lambda key, file: seen.append(key), manual_queue.MARK) == ([0, 2], [])
    assert sorted(seen) == ["TBA", "TBD"], "only entries holding the mark are decoded"


# ---------------------------------------------------------------------------- ListManual

class FakeRuntime:
    """Serves partitions 0 and 2 of 3."""

    partitions = 3

    def __init__(self, files: dict[str, dict]) -> None:
        self.files = files

    async def owned_states(self, pick, contains=b""):
        assert contains == manual_queue.MARK
        return [0, 2], [found for key, file in self.files.items() if (found := pick(key, file)) is not None]


@pytest.fixture
async def api(tls):
    files = {APP: await returned_three_times(), "TBOTHER": (await feed(*by("POST", address="长沙"),
                                                                         decision("APPROVED")))[0]}
    server = grpc.aio.server()
    delivery_pb2_grpc.add_DeliveryServicer_to_server(DeliveryServicer(FakeRuntime(files)), server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(tls, "delivery"))
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def list_manual(target: str, tls, caller: str = OPERATOR) -> delivery_pb2.ListManualReply:
    async with client_channel(target, caller, tls) as channel:
        return await delivery_pb2_grpc.DeliveryStub(channel).ListManual(delivery_pb2.ListManualRequest(), timeout=5)


async def test_an_operator_lists_the_queue_of_this_instance_with_its_partitions(api, tls):
    reply = await list_manual(api, tls)
    [entry] = reply.entries
    assert (entry.application_id, entry.reason_code, entry.method, entry.attempt) == (
        APP, "RETURNED_TOO_OFTEN", "POST", 3)
    assert list(entry.return_reasons) == ["NOT_COLLECTED", "NOT_COLLECTED", "OTHER"]
    assert (entry.since_millis, entry.partition) == (millis(T0), partition_for(APP, 3))
    assert (list(reply.partitions), reply.partition_count) == ([0, 2], 3)
    assert not [p for p in PERSONAL if p in str(reply)]


@pytest.mark.parametrize("caller", ["hunan-portal", "changsha-window"])
async def test_only_operators_list_the_queue(api, tls, caller):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await list_manual(api, tls, caller)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


# ---------------------------------------------------------------------------- the command's merge

def entry(application_id: str, since: int, attempt: int = 1) -> dict:
    return {"application_id": application_id, "since_millis": str(since), "attempt": attempt}


def test_answers_of_several_instances_merge_oldest_first_and_cover_every_partition():
    merged = manual.merge([{"entries": [entry("TBB", 20)], "partitions": [1, 3], "partition_count": 4},
                           {"entries": [entry("TBA", 10)], "partitions": [0, 2], "partition_count": 4}])
    assert [e["application_id"] for e in merged.entries] == ["TBA", "TBB"]
    assert (merged.complete, merged.uncovered) == (True, [])


def test_a_partition_nobody_answered_for_is_named_and_the_listing_is_incomplete():
    merged = manual.merge([{"entries": [entry("TBA", 10)], "partitions": [0, 2], "partition_count": 4}],
                          {"10.0.0.6:50054": "UNAVAILABLE: connection refused"})
    assert (merged.complete, merged.uncovered) == (False, [1, 3])
    shown = merged.as_json()
    assert (shown["partitions_missing"], shown["failed_targets"]) == ([1, 3], {"10.0.0.6:50054":
                                                                                "UNAVAILABLE: connection refused"})


def test_no_answer_at_all_is_not_complete():
    assert not manual.merge([], {"a:1": "UNAVAILABLE: x"}).complete


def test_an_application_both_instances_listed_during_a_rebalance_is_shown_once_as_last_queued():
    merged = manual.merge([{"entries": [entry("TBA", 10, attempt=2)], "partitions": [0], "partition_count": 1},
                           {"entries": [entry("TBA", 30, attempt=3)], "partitions": [0], "partition_count": 1}])
    [only] = merged.entries
    assert (only["since_millis"], only["attempt"]) == ("30", 3)
