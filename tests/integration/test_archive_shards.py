"""The archive on a real MongoDB-wire store: spread over shards by id, every document found
again by its id, a replayed insert keeps the first copy."""

import os
import secrets

import pytest
from pymongo import AsyncMongoClient

from tongban.runtime.archive import SHARDS, MongoArchive, collection_for, collections

pytestmark = pytest.mark.integration
MONGO = os.environ.get("TONGBAN_MONGO_URI", "mongodb://127.0.0.1:27217/")


async def test_documents_spread_over_the_shards_and_each_is_read_back_by_id():
    client = AsyncMongoClient(MONGO, tz_aware=True)
    db = client[f"t{secrets.token_hex(3)}_tongban_archive_probe"]
    try:
        archive = MongoArchive(db)
        docs = [{"_id": f"TB{n:04d}~1", "key": f"TB{n:04d}", "version": 1, "state": {"n": n}} for n in range(200)]
        await archive.insert(docs)
        present = set(await db.list_collection_names())
        assert present <= set(collections())
        assert len(present) > SHARDS // 2, "spread, not one collection"
        for name in present:
            ids = [d["_id"] for d in await db[name].find({}, {"_id": 1}).to_list(None)]
            assert ids
            assert all(collection_for(i) == name for i in ids)
        for doc in (docs[0], docs[77], docs[-1]):
            assert await archive.load(doc["_id"]) == doc
        assert await archive.load("TB9999~1") is None

        # a batch replayed after an aborted transaction: the first copy stays, the new one lands
        await archive.insert([{**docs[5], "state": {"n": -1}}, {"_id": "TB0200~1", "key": "TB0200", "version": 1}])
        assert (await archive.load(docs[5]["_id"]))["state"] == {"n": 5}
        assert await archive.load("TB0200~1") is not None
    finally:
        await client.drop_database(db.name)
        await client.close()
