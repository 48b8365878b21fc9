"""The shared runtime's own guarantees, in-process, over the real broker and store: durable
timers fire once through the outbox, concurrent commands on one key all count (optimistic
versioning on FerretDB), a repeated command id is applied once."""

import asyncio
import os
from datetime import timedelta

import pytest

from tests.support import REGISTRY, Sink, drop_namespace, new_namespace
from tongban import store
from tongban.config import load_settings
from tongban.events import now_utc
from tongban.runtime import Emit, Event, Outcome, ServiceRuntime, Timer

pytestmark = pytest.mark.integration

ROUTED = "tongban.application.routed"
UNROUTABLE = "tongban.application.ApplicationUnroutable"


@pytest.fixture(scope="module")
def namespace():
    namespace = new_namespace()
    yield namespace
    drop_namespace(namespace)


async def count(event: Event, state: dict | None) -> Outcome:
    return Outcome(state={"count": (state or {}).get("count", 0) + 1})


async def schedule(event: Event, state: dict | None) -> Outcome:
    return Outcome(state={"scheduled": True}, timers=[Timer("remind", now_utc() + timedelta(seconds=1), {"n": 7})])


async def remind(event: Event, state: dict | None) -> Outcome:
    body = {"application_id": event.key, "matter_code": "KSTB-MED-01",
            "reason": f"reminder {event.payload['payload']['n']}"}
    return Outcome(state={**state, "reminded": True}, emits=[Emit(ROUTED, UNROUTABLE, event.key, body)])


@pytest.fixture
async def runtime(namespace):
    env = {**os.environ, "TONGBAN_NAMESPACE": namespace, "TONGBAN_SESSION_TIMEOUT_MS": "3000"}
    settings = load_settings("routing", env)
    client, db = store.connect(settings)
    runtime = ServiceRuntime(settings, REGISTRY, db, inputs=["tongban.application.received"], handlers={},
                             commands={"count": count, "schedule": schedule}, timers={"remind": remind})
    await runtime.start()
    yield runtime
    await runtime.stop()
    await client.close()


async def test_a_durable_timer_fires_once_through_the_outbox(runtime, namespace):
    key = "TBTIMER" + namespace.upper().strip("-")
    await runtime.execute("schedule", key, "schedule-1", {})
    async with Sink(namespace, [ROUTED]) as sink:
        seen = await sink.wait_for(lambda s: s.events(UNROUTABLE, key), timeout=30)
        seen = await sink.poll(3)  # a second firing would show now
    fired = seen.events(UNROUTABLE, key)
    assert len(fired) == 1
    assert fired[0]["reason"] == "reminder 7"
    assert fired[0]["envelope"]["causation_id"].startswith(f"timer:{key}:remind:")
    doc = await runtime.aggregates.find_one({"_id": key})
    assert doc["timers"] == [] and doc["next_due_at"] is None and doc["outbox"] == []
    assert doc["state"] == {"scheduled": True, "reminded": True}


async def test_concurrent_commands_on_one_key_all_count_and_a_repeated_id_counts_once(runtime):
    key = "TBCOUNT"
    await asyncio.gather(*(runtime.execute("count", key, f"c-{n}", {}) for n in range(12)))
    assert (await runtime.state_of(key)) == {"count": 12}
    await runtime.execute("count", key, "c-3", {})
    assert (await runtime.state_of(key)) == {"count": 12}
