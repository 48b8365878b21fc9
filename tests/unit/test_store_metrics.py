"""Store-call latency: the archive's inserts and reads are timed as
`tongban.store.call.duration` by operation and collection family (never a shard or an id),
failed calls included, and the histogram reaches the service's Prometheus scrape."""

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import generate_latest
from pymongo.errors import OperationFailure

from tongban import store, telemetry
from tongban.runtime.archive import MongoArchive, collection_for


class FakeCollection:
    def __init__(self, docs: dict, fail: bool = False) -> None:
        self.docs = docs
        self.fail = fail

    async def insert_many(self, docs, ordered: bool = True) -> None:
        for doc in docs:
            self.docs[doc["_id"]] = doc

    async def find_one(self, query):
        if self.fail:
            raise OperationFailure("unauthorized")
        return self.docs.get(query["_id"])


class FakeDb:
    def __init__(self, fail: bool = False) -> None:
        self.docs: dict = {}
        self.fail = fail

    def __getitem__(self, name: str) -> FakeCollection:
        return FakeCollection(self.docs, self.fail)


@pytest.fixture
def measured(monkeypatch):
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    monkeypatch.setattr(store, "RUNTIME", telemetry.RuntimeMetrics(provider.get_meter("test")))
    yield reader
    provider.shutdown()


def calls(reader: InMemoryMetricReader) -> dict[tuple, int]:
    """(operation, collection) -> how many calls the histogram counted."""
    found = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "tongban.store.call.duration":
                    assert metric.unit == "s"
                    for point in metric.data.data_points:
                        found[(point.attributes["operation"], point.attributes["collection"])] = point.count
                        assert set(point.attributes) == {"operation", "collection"}
    return found


async def test_archive_inserts_and_reads_are_timed_by_operation_and_collection_family(measured):
    archive = MongoArchive(FakeDb())  # type: ignore[arg-type]
    await archive.insert([{"_id": "TB1~1"}, {"_id": "TB2~1"}, {"_id": "TB3~1"}])
    assert await archive.load("TB1~1") == {"_id": "TB1~1"}
    assert await archive.load("TB9~1") is None
    shards = len({collection_for(i) for i in ("TB1~1", "TB2~1", "TB3~1")})
    assert calls(measured) == {("insert", "archive"): shards, ("find", "archive"): 2}


async def test_a_failed_call_is_timed_too(measured):
    archive = MongoArchive(FakeDb(fail=True))  # type: ignore[arg-type]
    with pytest.raises(OperationFailure):
        await archive.load("TB1~1")
    assert calls(measured) == {("find", "archive"): 1}


async def test_the_histogram_reaches_the_services_scrape():
    provider, registry = telemetry.metrics_provider("delivery")
    measures = telemetry.RuntimeMetrics(provider.get_meter("scrape"))
    measures.store_duration.record(0.003, {"operation": "find", "collection": "archive"})
    text = generate_latest(registry).decode()
    provider.shutdown()
    assert 'tongban_store_call_duration_seconds_count{collection="archive",operation="find"} 1.0' in text
    assert 'tongban_store_call_duration_seconds_bucket{collection="archive",le="0.005",operation="find"} 1.0' in text
