"""The audit trail of evidence access: one hash chain per provider, insert-only.

Every access (who, for which application, what, why, when, the answer) is an entry whose
hash covers its content and the previous entry's hash; its `_id`, `<chain>:<sequence>`,
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

PREFIX = "audit_"  # then `<chain>_<block>`: see `collection_of`
BLOCK = 1_000
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


def collection_of(chain: str, sequence: int) -> str:
    """The collection holding entry `sequence` of `chain`: each chain is kept in blocks of
    `BLOCK` entries, one collection each, so that what a round of anchoring reads (the
    entries since the last anchor) costs the same after a million accesses as after ten.
    On FerretDB v1 every read scans its whole collection (docs/platform.md); one shared
    collection made each round cost grow with every access ever recorded."""
    return f"{PREFIX}{chain}_{(sequence - 1) // BLOCK:06d}"


def _blocks(names: Sequence[str], chain: str) -> list[int]:
    """The block numbers of `chain` among the store's collection names, in order."""
    prefix = f"{PREFIX}{chain}_"
    return sorted(int(name[len(prefix):]) for name in names
                  if name.startswith(prefix) and name[len(prefix):].isdigit() and len(name) == len(prefix) + 6)


class AuditChain:
    """One provider's chain in the data-sharing store, in blocks of `BLOCK` entries."""

    def __init__(self, db: AsyncDatabase, chain: str) -> None:
        self.db = db
        self.chain = chain
        self._head: Head | None = None
        self._indexed: set[str] = set()
        self._lock = asyncio.Lock()

    async def ensure_indexes(self) -> None:
        """Read the head (the store is reachable) and index the block it is in."""
        head = await self.head()
        await self._index(collection_of(self.chain, head.sequence + 1))

    async def _index(self, name: str) -> None:
        # `_id` is `<chain>:<sequence>`, unique in its block: two writers cannot both take one
        # place. The application index serves `accesses_for` on MongoDB.
        if name not in self._indexed:
            await retry_transient(self.db[name].create_index, [("application_id", ASCENDING)])
            self._indexed.add(name)

    async def head(self) -> Head:
        """The chain's last entry. This process appends to the chain, so after one look it
        knows its head without asking the store again."""
        if self._head is None:
            self._head = Head(0, GENESIS)
            names = await retry_transient(self.db.list_collection_names)
            for block in reversed(_blocks(names, self.chain)):
                last = await retry_transient(self.db[collection_of(self.chain, block * BLOCK + 1)].find_one,
                                             {"chain": self.chain}, sort=[("sequence", DESCENDING)])
                if last is not None:
                    self._head = Head(last["sequence"], last["hash"])
                    break
        return self._head

    async def append(self, access: Access) -> Head:
        """Append one access; returns its place. Entries of one chain are appended one at a
        time; a place taken meanwhile (another writer of the chain) is re-read and retried."""
        async with self._lock:
            while True:
                head = await self.head()
                entry = new_entry(self.chain, head, access, now_utc())
                name = collection_of(self.chain, entry["sequence"])
                await self._index(name)
                try:
                    await retry_transient(self.db[name].insert_one,
                                          {"_id": f"{self.chain}:{entry['sequence']}", **entry})
                except DuplicateKeyError:
                    self._head = None
                    continue
                self._head = Head(entry["sequence"], entry["hash"])
                return self._head

    async def entries_between(self, first: int, last: int) -> list[dict[str, Any]]:
        """Entries first..last, one query per block they are in; stops at the first one
        missing. The anchor asks once per round, never once per entry: per-entry reads made
        anchoring cost grow with the square of the chain's length."""
        by_sequence: dict[int, dict[str, Any]] = {}
        for block in range((first - 1) // BLOCK, (last - 1) // BLOCK + 1):
            by_sequence.update(await self._read(collection_of(self.chain, block * BLOCK + 1), first, last))
        found = []
        for sequence in range(first, last + 1):
            if sequence not in by_sequence:
                break
            found.append(by_sequence[sequence])
        return found

    async def _read(self, name: str, first: int, last: int) -> dict[int, dict[str, Any]]:
        async def read() -> list[dict[str, Any]]:
            query = {"chain": self.chain, "sequence": {"$gte": first, "$lte": last}}
            return await self.db[name].find(query, {"_id": 0}).to_list(None)

        return {entry["sequence"]: entry for entry in await retry_transient(read)}

    async def entries(self, since: int = 1) -> list[dict[str, Any]]:
        """Every entry from `since` on, in sequence order (the check of the whole chain)."""
        names = await retry_transient(self.db.list_collection_names)
        found: list[dict[str, Any]] = []
        for block in _blocks(names, self.chain):
            if (block + 1) * BLOCK < since:
                continue
            cursor = self.db[collection_of(self.chain, block * BLOCK + 1)].find(
                {"chain": self.chain, "sequence": {"$gte": since}}, {"_id": 0})
            found.extend(sorted(await cursor.to_list(None), key=lambda entry: entry["sequence"]))
        return found


async def accesses_for(db: AsyncDatabase, application_id: str) -> list[dict[str, Any]]:
    """Every recorded access about one application, over all providers' chains, oldest first
    (what PIPL art. 35 lets the applicant see: who consulted which record, why, when). It
    asks every block: on MongoDB an index read each; on FerretDB v1 a scan of the whole
    trail, which is why only this rare, per-applicant read does it."""
    found: list[dict[str, Any]] = []
    for name in await db.list_collection_names():
        if name.startswith(PREFIX):
            found.extend(await db[name].find({"application_id": application_id}, {"_id": 0}).to_list(None))
    return sorted(found, key=lambda entry: (entry["at_millis"], entry["chain"], entry["sequence"]))
