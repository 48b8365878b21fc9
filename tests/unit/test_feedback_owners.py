"""Two (here three) instances of feedback are correct (issue 16): every aggregate is written
only by the task that owns its key's partition. Feedback's real wiring runs on the real
runtime core, one task per partition over in-memory stores and transactions; inputs arrive
on the partition of their record key, as a producer puts them, and what a task forwards
through the repartition topic is handed to the task of the partition it names."""

from datetime import UTC, datetime, timedelta

from test_runtime_core import Rec  # a consumed record, as the runtime's own tests build them

from services.feedback import __main__ as feedback_main
from services.feedback import handlers
from tests.pii_parties import cipher
from tongban import topics
from tongban.bus import partition_for
from tongban.codec import SchemaRegistry
from tongban.config import load_settings
from tongban.events import encode_event
from tongban.runtime.core import ENTRY, Context, OutRecord, Task, unpack
from tongban.runtime.memory import MemoryArchive, MemoryTransactions
from tongban.runtime.state import MemoryStore

REGISTRY = SchemaRegistry.load()
NS = "tfo-"
SETTINGS = load_settings("feedback", {"TONGBAN_NAMESPACE": NS})
PARTITIONS = 3
T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
MATTER, DIVISION, PARTY = "KSTB-MKT-01", "430102", "430000"




class Instances:
    """One task per partition, each with its own store and its own transactions."""

    def __init__(self) -> None:
        async def has_topic(topic: str) -> bool:
            return True

        async def learn(fingerprint: bytes) -> None:
            return None

        self.ctx = Context(SETTINGS, REGISTRY, feedback_main.wiring(SETTINGS), MemoryArchive(), PARTITIONS, has_topic,
                           learn)
        self.buses = [MemoryTransactions(SETTINGS.changelog_topic) for _ in range(PARTITIONS)]
        self.stores = [MemoryStore() for _ in range(PARTITIONS)]
        self.tasks = [Task(self.ctx, p, self.stores[p], self.buses[p]) for p in range(PARTITIONS)]
        self.offset = 0
        self.forwarded = 0

    def rec(self, topic: str, key: str, value: bytes, partition: int | None = None, headers: tuple = ()) -> Rec:
        self.offset += 1
        where = partition_for(key, PARTITIONS) if partition is None else partition
        return Rec(topic, where, self.offset, key.encode(), value, headers)

    async def feed(self, records: list[Rec]) -> None:
        """Each record to the task of its partition, then whatever they forward, until none is left."""
        seen = [0] * PARTITIONS
        while records:
            for p in range(PARTITIONS):
                mine = [r for r in records if r.partition == p]
                if mine:
                    await self.tasks[p].process(mine)
            records = []
            for p, bus in enumerate(self.buses):
                new, seen[p] = bus.records[seen[p]:], len(bus.records)
                for out in new:
                    if out.topic == SETTINGS.repartition_topic:
                        assert out.key is not None
                        assert out.partition is not None
                        assert out.value is not None
                        self.forwarded += 1
                        records.append(self.rec(out.topic, out.key.decode(), out.value, out.partition,
                                                tuple(out.headers)))

    def aggregates(self, partition: int) -> set[str]:
        return {k[len(ENTRY):].decode() for k, _ in self.stores[partition].items(ENTRY)}

    def changelog_keys(self, partition: int) -> set[str]:
        return {r.key.decode()[len(ENTRY):] for r in self.buses[partition].on(SETTINGS.changelog_topic)
                if r.key is not None and r.key.startswith(ENTRY)}

    def on(self, topic: str) -> list[OutRecord]:
        return [r for bus in self.buses for r in bus.on(NS + topic)]


def event(event_type: str, body: dict, cause: str, key: str) -> bytes:
    return encode_event(REGISTRY, event_type, body, cause_id=cause, correlation_id=key, source_system="test")[1]


def rating(n: int, application: str, channel: str, level: int = 4) -> bytes:
    body = {"rating_id": f"R{n}", "application_id": application, "matter_code": MATTER, "division_code": DIVISION,
            "party": PARTY, "level": level, "channel": channel, "comment": None, "rated_at": T0,
            "rated_role": "SERVICE", "interaction_id": f"visit-{n}", "indicator_set": "GB/T 39735-2020:v1"}
    return event(handlers.RATING, body, f"R{n}", application)


def work_order(order: str, stage: str, unit: str | None, at: datetime) -> bytes:
    body = {"work_order_id": order, "stage": stage, "matter_code": MATTER, "division_code": DIVISION,
            "application_id": None, "category": "COMPLAINT", "content": "办理太慢", "occurred_at": at,
            "caller_hash": "c0ffee", "handling_unit": unit}
    # what the caller said is sealed for the hotline, as the hotline writes it
    return encode_event(REGISTRY, handlers.WORK_ORDER, body, cause_id=f"{order}|{stage}", correlation_id=order,
                        source_system="12345", cipher=cipher("12345"), recipients=("12345",))[1]


def routed(application: str) -> bytes:
    body = {"application_id": application, "matter_code": MATTER, "mode": "ONLINE", "deciding_partner": PARTY,
            "deciding_division": DIVISION, "legs": [], "promised_working_days": 5, "due_at": T0}
    return event(handlers.ROUTED, body, f"routed-{application}", application)


def decided(application: str) -> bytes:
    body = {"application_id": application, "deciding_partner": PARTY, "outcome": "APPROVED",
            "result_reference": None, "reason": None, "decided_at": T0}
    return event(handlers.DECIDED, body, f"decided-{application}", application)


APPLICATIONS = [f"TB{n:04d}" for n in range(12)]


async def test_every_feedback_aggregate_lives_only_in_the_store_of_its_keys_partition():
    """Ratings of one application from several channel topics, duplicate work orders with
    different ids (one aggregate per caller × matter × division), routed and decided
    applications: each aggregate is written by one task, the owner of its key."""
    run = Instances()
    online = [(topics.FEEDBACK_RATINGS_PORTAL, "ONLINE"), (topics.FEEDBACK_RATINGS_MOBILE, "MOBILE"),
              (topics.FEEDBACK_RATINGS_WEBSITE, "WEBSITE")]
    records = [run.rec(NS + topic, a, rating(n * 10 + i, a, channel)) for n, a in enumerate(APPLICATIONS)
               for i, (topic, channel) in enumerate([online[n % 3], (topics.FEEDBACK_RATINGS_HALL, "ONSITE")])]
    orders = [f"WO{n}" for n in range(6)]  # one caller: one duplicate group, spread over the partitions
    records += [run.rec(NS + topics.FEEDBACK_WORKORDERS, o, work_order(o, "RECEIVED", None, T0 + timedelta(hours=n)))
                for n, o in enumerate(orders)]
    records += [run.rec(NS + topics.FEEDBACK_WORKORDERS, orders[0],
                        work_order(orders[0], "DISPATCHED", "unit-a", T0 + timedelta(hours=9)))]
    records += [run.rec(NS + t, a, value) for a in APPLICATIONS
                for t, value in ((topics.APPLICATION_ROUTED, routed(a)), (topics.APPLICATION_DECIDED, decided(a)))]
    await run.feed(records)

    assert run.forwarded > 0, "ratings and work orders are re-keyed to their aggregates"
    owners: dict[str, list[int]] = {}
    for p in range(PARTITIONS):
        assert run.changelog_keys(p) == run.aggregates(p), "the changelog holds what the store holds"
        for key in run.aggregates(p):
            owners.setdefault(key, []).append(p)
    assert {key: ps for key, ps in owners.items() if ps != [partition_for(key, PARTITIONS)]} == {}, \
        "an aggregate written by a task that does not own its key"
    assert {f"application|{a}" for a in APPLICATIONS} | set(APPLICATIONS) | {f"c0ffee|{MATTER}|{DIVISION}"} \
        == set(owners), "one aggregate per application's ratings, per application, per duplicate group"
    dead = [r for bus in run.buses for r in bus.on(SETTINGS.dlq_topic)]
    assert dead == [], [dict(r.headers).get("tongban.dlq.error.message") for r in dead]


async def test_counted_facts_are_keyed_by_their_group_so_one_partition_of_the_facts_topic_holds_each_group():
    """Matter × division × party is aggregated only after this re-key: the faust table that
    counts a group is the one of the facts topic's partition its key hashes to."""
    run = Instances()
    records = [run.rec(NS + topics.FEEDBACK_RATINGS_PORTAL, a, rating(n, a, "ONLINE"))
               for n, a in enumerate(APPLICATIONS)]
    records += [run.rec(NS + t, a, value) for a in APPLICATIONS
                for t, value in ((topics.APPLICATION_ROUTED, routed(a)), (topics.APPLICATION_DECIDED, decided(a)))]
    await run.feed(records)
    facts = run.on(topics.FEEDBACK_FACTS)
    assert len(facts) == 2 * len(APPLICATIONS), "a rating and a decision per application"
    for record in facts:
        _, body = REGISTRY.decode(record.value)
        assert record.key == f"{body['matter_code']}|{body['division_code']}|{body['party']}".encode()
        assert record.partition is None, "placed by the producer's partitioner on the key (murmur2), as faust reads it"
    # ratings against the rated division; decisions where the party's breaches are counted
    assert {r.key for r in facts} == {f"{MATTER}|{DIVISION}|{PARTY}".encode(), f"{MATTER}|{PARTY}|{PARTY}".encode()}


async def test_the_second_online_rating_of_an_application_is_refused_whichever_channel_and_partition_it_came_on():
    run = Instances()
    a = APPLICATIONS[0]
    await run.feed([run.rec(NS + topics.FEEDBACK_RATINGS_PORTAL, a, rating(1, a, "ONLINE"))])
    await run.feed([run.rec(NS + topics.FEEDBACK_RATINGS_MOBILE, a, rating(2, a, "MOBILE"),
                            partition=(partition_for(a, PARTITIONS) + 1) % PARTITIONS)])  # another partitioner
    [dead] = [r for bus in run.buses for r in bus.on(SETTINGS.dlq_topic)]
    reason = dict(dead.headers)["tongban.dlq.error.message"].decode()
    assert reason.startswith(f"一事一评: this matter was already rated for application {a}")
    # forwarded to its owner first, which refused it: the record still names the channel it came on
    assert dict(dead.headers)["tongban.origin.topic"] == (NS + topics.FEEDBACK_RATINGS_MOBILE).encode()
    [entry] = [unpack(s.get(ENTRY + f"application|{a}".encode())) for s in run.stores
               if s.get(ENTRY + f"application|{a}".encode())]
    assert list(entry["state"]["ratings"]) == ["R1"]
