"""Where finished aggregates go: the service's own MongoDB-wire database, append-only.

Only inserts and reads by `_id`. A revived aggregate that finishes again is a new document
(`<key>~<version>`), never an update. The one deletion is the operator's retention purge
(`finished_before`, run by `tongban.ops.retention`), never the services.

The archive is spread over `SHARDS` collections by a hash of the document id. On MongoDB
that changes nothing (each read uses its `_id` index). On FerretDB v1 with SQLite, the
embedded default, every read scans its collection, even one by `_id` (docs/platform.md):
there a read costs one shard's size, 1/64 of the archive, instead of all of it. Inserts
stay flat either way.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from datetime import datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from tongban.store import measured, retry_transient

COLLECTION = "archive"
SHARDS = 64
DUPLICATE_KEY = 11000


def collection_for(doc_id: str) -> str:
    """The shard that holds `doc_id` (crc32: the same on every process and every run)."""
    return f"{COLLECTION}_{zlib.crc32(doc_id.encode()) % SHARDS:02d}"


def collections() -> list[str]:
    """Every shard's name, for tools that read the whole archive."""
    return [f"{COLLECTION}_{n:02d}" for n in range(SHARDS)]


class MongoArchive:
    def __init__(self, db: AsyncDatabase) -> None:
        self._db = db

    async def insert(self, docs: list[dict[str, Any]]) -> None:
        by_shard: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for doc in docs:
            by_shard[collection_for(doc["_id"])].append(doc)
        for name, shard_docs in by_shard.items():
            try:
                await measured("insert", COLLECTION, self._db[name].insert_many, shard_docs, ordered=False)
            except BulkWriteError as exc:
                # Already archived by an attempt whose transaction then aborted: the first stays.
                if any(error.get("code") != DUPLICATE_KEY for error in exc.details.get("writeErrors", [])):
                    raise

    async def load(self, doc_id: str) -> dict[str, Any] | None:
        return await measured("find", COLLECTION, self._db[collection_for(doc_id)].find_one, {"_id": doc_id})

    async def finished_before(self, cutoff: datetime, *, delete: bool) -> dict[str, int]:
        """Per shard present, the documents whose `finished_at` is before `cutoff`: counted, or
        deleted when `delete`. A document without `finished_at` never matches. On FerretDB v1
        each call scans its shard (no index serves `finished_at`): 64 scans of 1/64 of the
        archive, fine for a daily operator job; on MongoDB too, unless the operator indexes it."""
        wanted = {"finished_at": {"$lt": cutoff}}
        names = set(await retry_transient(self._db.list_collection_names))
        found = {}
        for name in (n for n in collections() if n in names):
            if delete:
                found[name] = (await retry_transient(self._db[name].delete_many, wanted)).deleted_count
            else:
                found[name] = await retry_transient(self._db[name].count_documents, wanted)
        return found
