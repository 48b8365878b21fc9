"""Where finished aggregates go: the service's own MongoDB-wire database, append-only.

Only inserts and reads by `_id`, the operations whose cost stays flat on FerretDB v1
(its updates and deletes scan the collection). A revived aggregate that finishes again is
a new document (`<key>~<version>`), never an update.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from tongban.store import retry_transient

COLLECTION = "archive"
DUPLICATE_KEY = 11000


class MongoArchive:
    def __init__(self, db: AsyncDatabase) -> None:
        self._docs = db[COLLECTION]

    async def insert(self, docs: list[dict[str, Any]]) -> None:
        try:
            await retry_transient(self._docs.insert_many, docs, ordered=False)
        except BulkWriteError as exc:
            # Already archived by an attempt whose transaction then aborted: the first stays.
            if any(error.get("code") != DUPLICATE_KEY for error in exc.details.get("writeErrors", [])):
                raise

    async def load(self, doc_id: str) -> dict[str, Any] | None:
        return await retry_transient(self._docs.find_one, {"_id": doc_id})

