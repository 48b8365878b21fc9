"""The audit chain's rule (services.datasharing.audit.check_chain): an edited entry, a
missing one, a rewritten tail and a cut tail are each found, and the first broken entry named."""

from datetime import UTC, datetime

import pytest

from services.datasharing.anchor import _anchor_if_moved
from services.datasharing.audit import (
    COLLECTION,
    GENESIS,
    Access,
    AuditChain,
    Head,
    check_chain,
    check_extension,
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
    """The audit collection as the chain uses it: the one sorted read of the head, range reads
    of a chain, inserts. Counts the reads and the entries they return (every read scans the
    collection on FerretDB v1, so the anchor must ask once per round, for new entries only)."""

    def __init__(self) -> None:
        self.docs: dict[str, dict] = {}
        self.range_reads = 0
        self.entries_read = 0
        self.sorted_reads = 0

    async def find_one(self, query: dict, projection: dict | None = None, sort: list | None = None) -> dict | None:
        self.sorted_reads += 1
        mine = sorted((d for d in self.docs.values() if d["chain"] == query["chain"]), key=lambda d: d["sequence"])
        return mine[-1] if mine else None

    def find(self, query: dict, projection: dict | None = None) -> "Cursor":
        self.range_reads += 1
        bounds = query["sequence"]
        found = [{k: v for k, v in d.items() if k != "_id"} for d in self.docs.values()
                 if d["chain"] == query["chain"] and bounds["$gte"] <= d["sequence"] <= bounds["$lte"]]
        self.entries_read += len(found)
        return Cursor(found[::-1])  # a store returns no particular order

    async def insert_one(self, doc: dict) -> None:
        self.docs[doc["_id"]] = doc


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
    docs, producer = Documents(), Producer()
    audit = AuditChain({COLLECTION: docs}, "mps")  # type: ignore[arg-type]
    settings, registry = load_settings("datasharing", {}), SchemaRegistry.load()
    for n in range(1, 4):
        await audit.append(access(n))
    assert docs.sorted_reads == 1, "the head is read from the store once, then known"
    anchored = await _anchor_if_moved(producer, settings, registry, audit, None)
    assert anchored == Head(3, docs.docs["mps:3"]["hash"])
    assert (docs.range_reads, docs.entries_read, len(producer.sent)) == (1, 3, 1)
    for n in range(4, 6):
        await audit.append(access(n))
    anchored = await _anchor_if_moved(producer, settings, registry, audit, anchored)
    assert anchored == Head(5, docs.docs["mps:5"]["hash"])
    assert (docs.range_reads, docs.entries_read) == (2, 3 + 3), "from the anchored entry to the head, in one read"
    idle = await _anchor_if_moved(producer, settings, registry, audit, anchored)
    assert (idle, docs.range_reads, docs.sorted_reads, len(producer.sent)) == (anchored, 2, 1, 2)
    del docs.docs["mps:5"]  # an entry gone from the store: the head is not anchored over a gap
    audit._head = Head(6, "x" * 64)
    assert await _anchor_if_moved(producer, settings, registry, audit, anchored) == anchored
    assert len(producer.sent) == 2
