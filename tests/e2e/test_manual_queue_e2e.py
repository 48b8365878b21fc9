"""Delivery's manual-handling queue over the real broker, through the operator command: a parcel
the applicant keeps refusing exhausts its attempts and waits for an operator; `tongban manual
list --json` (reflection, mutual TLS, no service imported) shows it in codes only; `tongban
manual resolve` sends it on to a corrected address with the operator's reason; an independent
consumer sees the resolution and the delivery, and the queue no longer lists it. Delivery's own
metrics endpoint has timed the finished file's archive insert (tongban.store.call.duration)."""

import asyncio
import json
import time
import urllib.request

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from devtools.launcher import free_port
from tests.e2e.test_result_channels import POLICY, PROGRESS, TOPICS, delivered, hand_over, has_stage
from tests.support import Sink, settle, start_stack
from tongban.ops.cli import cli

pytestmark = pytest.mark.integration

REFUSING_ADDRESS = "湖南省长沙市拒收路8号"  # the simulated carrier's recipient refuses every parcel there
CORRECTED_ADDRESS = "湖南省长沙市岳麓区示例路5号"
PHONE = "13912345678"


@pytest.fixture(scope="module")
def stack(namespace):
    metrics = free_port()
    stack = start_stack(namespace, env={**POLICY, "TONGBAN_METRICS_PORT_DELIVERY": str(metrics)},
                        only=("delivery", "sim"))
    stack.metrics = f"127.0.0.1:{metrics}"
    yield stack
    stack.stop_all()


def manual(*args: str):
    return CliRunner().invoke(cli, ["manual", *args])


async def listed(target: str, until, within: float = 60) -> dict:
    """`tongban manual list --json` once `until(document)` holds."""
    deadline = time.monotonic() + within
    while True:
        shown = await asyncio.to_thread(manual, "list", "--json", "--target", target)
        assert shown.exit_code == 0, shown.output
        document = json.loads(shown.stdout)
        if until(document):
            return document
        if time.monotonic() > deadline:
            raise TimeoutError(f"the queue did not show what was awaited: {document}")
        await asyncio.sleep(0.3)


def archive_calls(target: str, operation: str) -> float:
    """How many archive calls of `operation` delivery's own metrics endpoint has counted."""
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "tongban_store_call_duration_seconds_count"
               and sample.labels == {"operation": operation, "collection": "archive"})


def ids(document: dict) -> list[str]:
    return [e["application_id"] for e in document["entries"]]


async def test_an_operator_lists_and_resolves_a_result_in_manual_handling(stack, namespace):
    target = stack.grpc_target("delivery")
    inserts_before = archive_calls(stack.metrics, "insert")
    application_id = await hand_over(namespace, "KSTB-MKT-01", "POST", REFUSING_ADDRESS)
    async with Sink(namespace, TOPICS) as sink:
        await sink.wait_for(has_stage(application_id, "MANUAL_HANDLING"), 120)
        document = await listed(target, lambda d: application_id in ids(d))
        assert document["complete"]
        assert document["partitions_missing"] == []
        assert document["partitions_answered"] == list(range(document["partition_count"]))
        [entry] = [e for e in document["entries"] if e["application_id"] == application_id]
        assert (entry["matter_code"], entry["method"], entry["reason_code"], entry["attempt"]) == (
            "KSTB-MKT-01", "POST", "RETURNED_TOO_OFTEN", 2)
        assert entry["return_reasons"] == ["REFUSED", "REFUSED"]
        assert int(entry["since_millis"]) > 0
        assert "拒收路" not in json.dumps(document, ensure_ascii=False), "no address in the listing"

        refused = await asyncio.to_thread(manual, "resolve", "TBNOTWAITING", "--outcome", "POST", "--reason", "r",
                                          "--target", target)
        assert refused.exit_code == 2, refused.output
        resolved = await asyncio.to_thread(
            manual, "resolve", application_id, "--outcome", "post", "--address", CORRECTED_ADDRESS,
            "--reason", f"地址已与申请人 {PHONE} 核实", "--target", target)
        assert resolved.exit_code == 0, resolved.output
        await sink.wait_for(delivered(application_id), 90)
        seen = await settle(namespace, TOPICS, application_id, sink)
    [told] = [e for e in seen.events(PROGRESS, application_id) if e["stage"] == "RESOLVED"]
    assert told["detail"].startswith("an operator sent it on by POST: 地址已与申请人 ")
    assert PHONE not in told["detail"], "the operator's reason is scrubbed"
    parcels = seen.events("tongban.delivery.PostalDispatch", application_id)
    assert [p["attempt"] for p in parcels] == [1, 2, 3]
    [done] = seen.events("tongban.application.ApplicationDelivered", application_id)
    assert done["dispatch_id"] == parcels[-1]["dispatch_id"]
    await listed(target, lambda d: application_id not in ids(d))
    assert archive_calls(stack.metrics, "insert") > inserts_before, "the finished file's archive insert was timed"


def test_a_listing_no_instance_answers_fails():
    shown = manual("list", "--json", "--target", "127.0.0.1:1")
    assert shown.exit_code == 2
    document = json.loads(shown.stdout)
    assert (document["complete"], document["entries"], list(document["failed_targets"])) == (
        False, [], ["127.0.0.1:1"])
