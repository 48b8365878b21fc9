"""The audit trail of evidence access: one hash chain per provider, insert-only.

Every access (who, for which application, what, why, when, the answer) is an entry whose
hash covers its content and the previous entry's hash; a unique (chain, sequence) index
keeps two entries from claiming one place. An edited entry breaks its own hash. A tail
rewritten with fresh hashes is consistent in itself, so the chain's head is also anchored
outside the store (published to a compacted topic, see `services.datasharing.anchor`) and
checking compares the stored chain with the last anchor.

`check_chain` is the pure rule; `AuditChain` is the store edge: inserts, which stay cheap on
FerretDB v1, and few reads, since there every read scans the collection.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from tongban.events import millis, now_utc
from tongban.store import retry_transient

COLLECTION = "audit"
GENESIS = "0" * 64
# What an entry records; the hash covers exactly these, in this order, and the previous hash.
CONTENT = ("chain", "sequence", "at_millis", "requester", "application_id", "matter_code", "evidence_type",
           "purpose", "legal_basis", "answer", "reason", "prev")


@dataclass(frozen=True)
class Access:
    requester: str
    application_id: str
    matter_code: str
    evidence_type: str
    purpose: str
    legal_basis: str
    answer: str  # MATCH, NO_MATCH, NOT_FOUND, EVIDENCE or DENIED
    reason: str = ""


@dataclass(frozen=True)
class Head:
    sequence: int  # 0: an empty chain
    hash: str


@dataclass(frozen=True)
class Broken:
    """The first entry that does not hold, and why."""

    sequence: int
    why: str

    def __str__(self) -> str:
        return f"entry {self.sequence}: {self.why}"


def entry_hash(entry: dict[str, Any]) -> str:
    content = json.dumps([entry[k] for k in CONTENT], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(content.encode()).hexdigest()


def new_entry(chain: str, head: Head, access: Access, at: datetime) -> dict[str, Any]:
    entry: dict[str, Any] = {"chain": chain, "sequence": head.sequence + 1, "at_millis": millis(at),
                             **{k: getattr(access, k) for k in ("requester", "application_id", "matter_code",
                                                                "evidence_type", "purpose", "legal_basis",
                                                                "answer", "reason")},
                             "prev": head.hash}
    return {**entry, "hash": entry_hash(entry)}


def _links(entries: Sequence[dict[str, Any]], prev: Head) -> tuple[Broken | None, Head]:
    """Each entry follows the one before (sequence and previous hash) and hashes to what it says."""
    for entry in entries:
        if entry["sequence"] != prev.sequence + 1:
            return Broken(prev.sequence + 1, f"missing (the chain jumps to entry {entry['sequence']})"), prev
        if entry["prev"] != prev.hash:
            return Broken(entry["sequence"], "does not follow the entry before it"), prev
        if entry_hash(entry) != entry["hash"]:
            return Broken(entry["sequence"], "its content does not match its hash (edited)"), prev
        prev = Head(entry["sequence"], entry["hash"])
    return None, prev


def check_chain(entries: Sequence[dict[str, Any]], anchor: Head | None) -> Broken | None:
    """Entries in sequence order, from the first. Each must link to the one before, and the
    anchored head must be in the chain as anchored (a rewritten tail or a cut one cannot
    match it)."""
    broken, last = _links(entries, Head(0, GENESIS))
    if broken is not None or anchor is None or anchor.sequence == 0:
        return broken
    if anchor.sequence > last.sequence:
        return Broken(last.sequence + 1, f"missing: the anchored head is entry {anchor.sequence}")
    if entries[anchor.sequence - 1]["hash"] != anchor.hash:
        return Broken(anchor.sequence, "differs from the anchored head (the tail up to it was rewritten)")
    return None


def check_extension(entries: Sequence[dict[str, Any]], anchor: Head | None) -> Broken | None:
    """Entries from the anchored one on (all of them without an anchor): what an anchorer
    checks before anchoring a new head, so a tampered store is never anchored."""
    if anchor is None or anchor.sequence == 0:
        return _links(entries, Head(0, GENESIS))[0]
    if not entries or entries[0]["sequence"] != anchor.sequence or entries[0]["hash"] != anchor.hash:
        return Broken(anchor.sequence, "differs from the anchored head (the tail up to it was rewritten)")
    return _links(entries[1:], anchor)[0]


class AuditChain:
    """One provider's chain in the data-sharing audit collection."""

    def __init__(self, db: AsyncDatabase, chain: str) -> None:
        self.db = db
        self._docs = db[COLLECTION]
        self.chain = chain
        self._head: Head | None = None
        self._lock = asyncio.Lock()

    async def ensure_indexes(self) -> None:
        await retry_transient(self._docs.create_index, [("chain", ASCENDING), ("sequence", ASCENDING)], unique=True)
        await retry_transient(self._docs.create_index, [("application_id", ASCENDING)])

    async def head(self) -> Head:
        """The chain's last entry. This process appends to the chain, so after one look it
        knows its head without asking the store: on FerretDB v1 a sorted query scans the whole
        collection, a cost that would grow with every access ever recorded."""
        if self._head is None:
            last = await retry_transient(self._docs.find_one, {"chain": self.chain}, sort=[("sequence", DESCENDING)])
            self._head = Head(last["sequence"], last["hash"]) if last else Head(0, GENESIS)
        return self._head

    async def append(self, access: Access) -> Head:
        """Append one access; returns its place. Entries of one chain are appended one at a
        time; a place taken meanwhile (another writer of the chain) is re-read and retried."""
        async with self._lock:
            while True:
                head = await self.head()
                entry = new_entry(self.chain, head, access, now_utc())
                try:
                    await retry_transient(self._docs.insert_one, {"_id": f"{self.chain}:{entry['sequence']}", **entry})
                except DuplicateKeyError:
                    self._head = None
                    continue
                self._head = Head(entry["sequence"], entry["hash"])
                return self._head

    async def entries_between(self, first: int, last: int) -> list[dict[str, Any]]:
        """Entries first..last, in one query; stops at the first one missing. The anchor asks
        once per round, never once per entry: FerretDB v1 on SQLite answers every filter,
        even `_id` equality, by scanning the collection (its `_id` index is built on another
        expression than the pushed-down filter, docs/platform.md), so per-entry reads made
        anchoring cost grow with the square of the chain's length."""
        async def read() -> list[dict[str, Any]]:
            cursor = self._docs.find({"chain": self.chain, "sequence": {"$gte": first, "$lte": last}}, {"_id": 0})
            return await cursor.to_list(None)

        by_sequence = {entry["sequence"]: entry for entry in await retry_transient(read)}
        found = []
        for sequence in range(first, last + 1):
            if sequence not in by_sequence:
                break
            found.append(by_sequence[sequence])
        return found

    async def entries(self, since: int = 1) -> list[dict[str, Any]]:
        cursor = self._docs.find({"chain": self.chain, "sequence": {"$gte": since}}, {"_id": 0}).sort(
            "sequence", ASCENDING)
        return await cursor.to_list(None)


async def accesses_for(db: AsyncDatabase, application_id: str) -> list[dict[str, Any]]:
    """Every recorded access about one application, over all providers' chains, oldest first
    (what PIPL art. 35 lets the applicant see: who consulted which record, why, when)."""
    cursor = db[COLLECTION].find({"application_id": application_id}, {"_id": 0}).sort("at_millis", ASCENDING)
    return await cursor.to_list(None)
