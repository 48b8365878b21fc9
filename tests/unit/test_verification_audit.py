"""The audit chain's rule (services.datasharing.audit.check_chain): an edited entry, a
missing one, a rewritten tail and a cut tail are each found, and the first broken entry named."""

from datetime import UTC, datetime

import pytest

from services.datasharing import audit as audit_module
from services.datasharing.anchor import _anchor_if_moved
from services.datasharing.audit import (
    GENESIS,
    Access,
    AuditChain,
    Head,
    accesses_for,
    check_chain,
    check_extension,
    collection_of,
    entry_hash,
    new_entry,
)
from tongban.codec import SchemaRegistry
from tongban.config import load_settings

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def access(n: int, answer: str = "MATCH") -> Access:
    return Access("tongban-verification", f"TB{n}", "KSTB-PSB-01", "HOUSEHOLD", "受理核验", "basis", answer)


def chain(n: int) -> list[dict]:
    entries, head = [], Head(0, GENESIS)
    for i in range(1, n + 1):
        entry = new_entry("mps", head, access(i), T0)
        entries.append(entry)
        head = Head(entry["sequence"], entry["hash"])
    return entries


def head_of(entries: list[dict]) -> Head:
    return Head(entries[-1]["sequence"], entries[-1]["hash"])


def test_an_untouched_chain_holds_with_and_without_its_anchor():
    entries = chain(5)
    assert check_chain(entries, None) is None
    assert check_chain(entries, head_of(entries)) is None
    assert check_chain(entries, Head(3, entries[2]["hash"])) is None, "entries after the last anchor are fine"
    assert [e["prev"] for e in entries[1:]] == [e["hash"] for e in entries[:-1]]


def test_an_edited_entry_is_named():
    entries = chain(5)
    entries[2] = {**entries[2], "requester": "someone-else"}
    broken = check_chain(entries, head_of(entries))
    assert (broken.sequence, broken.why) == (3, "its content does not match its hash (edited)")


def test_an_edited_entry_whose_hash_was_recomputed_breaks_the_next_link():
    entries = chain(5)
    edited = {**entries[2], "answer": "NO_MATCH"}
    entries[2] = {**edited, "hash": entry_hash(edited)}
    assert check_chain(entries, None).sequence == 4


def test_a_rewritten_tail_is_consistent_in_itself_but_not_with_the_anchor():
    entries = chain(5)
    anchor = head_of(entries)
    forged = entries[:2]
    for i in range(3):  # from entry 3 on, other answers, every hash recomputed
        forged.append(new_entry("mps", head_of(forged), access(90 + i, "NOT_FOUND"), T0))
    assert check_chain(forged, None) is None, "rehashed: only the anchor can tell"
    broken = check_chain(forged, anchor)
    assert (broken.sequence, broken.why) == (5, "differs from the anchored head (the tail up to it was rewritten)")


@pytest.mark.parametrize(("cut", "expected"), [
    (lambda e: e[:3], (4, "missing: the anchored head is entry 5")),
    (lambda e: e[:1] + e[2:], (2, "missing (the chain jumps to entry 3)")),
])
def test_missing_entries_are_named(cut, expected):
    entries = chain(5)
    broken = check_chain(cut(entries), head_of(entries))
    assert (broken.sequence, broken.why) == expected


def test_the_hash_covers_the_previous_entry():
    a, b = chain(2)
    assert b["prev"] == a["hash"]
    assert entry_hash({**b, "prev": GENESIS}) != b["hash"]


def test_an_anchorer_anchors_only_a_head_that_extends_the_last_anchor():
    entries = chain(6)
    anchor = Head(3, entries[2]["hash"])
    assert check_extension(entries[2:], anchor) is None
    assert check_extension(entries, None) is None, "nothing anchored yet: the whole chain must hold"
    forged = entries[:2]
    for i in range(4):
        forged.append(new_entry("mps", head_of(forged), access(80 + i), T0))
    assert check_extension(forged[2:], anchor).sequence == 3, "the anchored entry was rewritten"
    edited = [*entries[2:4], {**entries[4], "answer": "DENIED"}, *entries[5:]]
    assert check_extension(edited, anchor).sequence == 5


# -- anchoring without scanning the store ------------------------------------------------


class Documents:
    """One audit block as the chain uses it: the one sorted read of the head, range reads of
    a chain, inserts. Counts the reads and the entries they return (every read scans the
    collection on FerretDB v1, so the anchor must ask once per round, for new entries only)."""

    def __init__(self, store: "Store") -> None:
        self.docs: dict[str, dict] = {}
        self.store = store

    async def create_index(self, keys: list) -> None:
        pass

    async def find_one(self, query: dict, projection: dict | None = None, sort: list | None = None) -> dict | None:
        self.store.sorted_reads += 1
        mine = sorted((d for d in self.docs.values() if d["chain"] == query["chain"]), key=lambda d: d["sequence"])
        return mine[-1] if mine else None

    def find(self, query: dict, projection: dict | None = None) -> "Cursor":
        self.store.range_reads += 1
        found = [{k: v for k, v in d.items() if k != "_id"} for d in self.docs.values() if matches(d, query)]
        self.store.entries_read += len(found)
        return Cursor(found[::-1])  # a store returns no particular order

    async def insert_one(self, doc: dict) -> None:
        self.docs[doc["_id"]] = doc


def matches(doc: dict, query: dict) -> bool:
    for field, wanted in query.items():
        if isinstance(wanted, dict):
            if not wanted.get("$gte", doc[field]) <= doc[field] <= wanted.get("$lte", doc[field]):
                return False
        elif doc[field] != wanted:
            return False
    return True


class Store:
    """The data-sharing database: a collection per name, created by its first use."""

    def __init__(self) -> None:
        self.collections: dict[str, Documents] = {}
        self.range_reads = self.entries_read = self.sorted_reads = 0

    def __getitem__(self, name: str) -> Documents:
        return self.collections.setdefault(name, Documents(self))

    async def list_collection_names(self) -> list[str]:
        return list(self.collections)

    def entry(self, chain: str, sequence: int) -> dict:
        return self[collection_of(chain, sequence)].docs[f"{chain}:{sequence}"]


class Cursor:
    def __init__(self, docs: list[dict]) -> None:
        self.docs = docs

    async def to_list(self, length: int | None) -> list[dict]:
        return self.docs


class Producer:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send_and_wait(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append(value)


async def test_the_anchor_reads_new_entries_once_per_round_and_nothing_while_idle():
    store, producer = Store(), Producer()
    audit = AuditChain(store, "mps")  # type: ignore[arg-type]
    settings, registry = load_settings("datasharing", {}), SchemaRegistry.load()
    for n in range(1, 4):
        await audit.append(access(n))
    assert store.sorted_reads == 0, "an empty store: the chain starts at genesis"
    anchored = await _anchor_if_moved(producer, settings, registry, audit, None)
    assert anchored == Head(3, store.entry("mps", 3)["hash"])
    assert (store.range_reads, store.entries_read, len(producer.sent)) == (1, 3, 1)
    for n in range(4, 6):
        await audit.append(access(n))
    anchored = await _anchor_if_moved(producer, settings, registry, audit, anchored)
    assert anchored == Head(5, store.entry("mps", 5)["hash"])
    assert (store.range_reads, store.entries_read) == (2, 3 + 3), "from the anchored entry to the head, in one read"
    idle = await _anchor_if_moved(producer, settings, registry, audit, anchored)
    assert (idle, store.range_reads, store.sorted_reads, len(producer.sent)) == (anchored, 2, 0, 2)
    del store[collection_of("mps", 5)].docs["mps:5"]  # an entry gone: the head is not anchored over a gap
    audit._head = Head(6, "x" * 64)
    assert await _anchor_if_moved(producer, settings, registry, audit, anchored) == anchored
    assert len(producer.sent) == 2


async def test_a_chain_kept_in_blocks_reads_only_the_blocks_it_needs(monkeypatch):
    monkeypatch.setattr(audit_module, "BLOCK", 3)
    store, producer = Store(), Producer()
    settings, registry = load_settings("datasharing", {}), SchemaRegistry.load()
    writer = AuditChain(store, "mps")  # type: ignore[arg-type]
    for n in range(1, 11):
        await writer.append(access(n))
    await AuditChain(store, "moe").append(access(4))  # type: ignore[arg-type]
    assert sorted(store.collections) == ["audit_moe_000000", *(f"audit_mps_{b:06d}" for b in range(4))]
    assert [len(store[f"audit_mps_{b:06d}"].docs) for b in range(4)] == [3, 3, 3, 1]

    restarted = AuditChain(store, "mps")  # type: ignore[arg-type]
    assert await restarted.head() == Head(10, store.entry("mps", 10)["hash"])
    assert store.sorted_reads == 1, "the head is found in the last block alone"

    anchored = Head(5, store.entry("mps", 5)["hash"])
    head = await _anchor_if_moved(producer, settings, registry, restarted, anchored)
    assert head == Head(10, store.entry("mps", 10)["hash"])
    # entries 5..10 are in blocks 1 to 3 (4-6, 7-9, 10): one read each
    assert (store.range_reads, store.entries_read) == (3, 6)

    everything = await restarted.entries()
    assert [e["sequence"] for e in everything] == list(range(1, 11))
    assert check_chain(everything, head) is None
    assert [e["sequence"] for e in await restarted.entries(since=8)] == [8, 9, 10]
    assert [(e["chain"], e["sequence"]) for e in await accesses_for(store, "TB4")] in (  # type: ignore[arg-type]
        [("mps", 4), ("moe", 1)], [("moe", 1), ("mps", 4)])
