"""The service's own MongoDB-wire database (FerretDB v1 locally, any MongoDB by URI).

FerretDB v1 gives single-document atomicity only, so every fact a handler produces lives
in one aggregate document written with an optimistic version check (see runtime.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pymongo import ASCENDING, AsyncMongoClient, uri_parser
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from tongban.config import Settings
from tongban.telemetry import RUNTIME

log = logging.getLogger(__name__)
T = TypeVar("T")

AGGREGATES = "aggregates"


def is_transient(exc: BaseException) -> bool:
    """Outages and lock contention: wait and try again, never dead-letter."""
    if isinstance(exc, (AutoReconnect, ConnectionFailure, ServerSelectionTimeoutError)):
        return True
    # FerretDB's SQLite handler allows one writer per database file.
    return isinstance(exc, OperationFailure) and not isinstance(exc, DuplicateKeyError) and (
        "database is locked" in str(exc) or "SQLITE_BUSY" in str(exc)
    )


async def retry_transient(op: Callable[..., Awaitable[T]], *args: Any, attempts: int = 8, **kwargs: Any) -> T:
    """Call `op(*args, **kwargs)`, retrying through lock contention; outages surface after a while."""
    delay = 0.05
    for attempt in range(attempts):
        try:
            return await op(*args, **kwargs)
        except Exception as exc:
            if not is_transient(exc) or attempt == attempts - 1:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


async def measured(operation: str, collection: str, op: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """`retry_transient(op, ...)`, its time recorded as `tongban.store.call.duration` by operation
    (insert, find ...) and collection family (`archive`, not the shard: labels stay few). The
    time is what the caller waited, retries through lock contention included; a call that
    fails is timed too, since an outage shows first as slow calls."""
    started = time.perf_counter()
    try:
        return await retry_transient(op, *args, **kwargs)
    finally:
        RUNTIME.store_duration.record(time.perf_counter() - started,
                                      {"operation": operation, "collection": collection})


def retryable_writes(uri: str) -> bool:
    """Whether the driver retries writes, from the URI: as its `retryWrites` says when it says;
    else on for a replica set (`replicaSet=`, or `mongodb+srv://`, which names one), off
    otherwise. A standalone server, FerretDB v1 included, has no retryable writes (our own
    retry handles its lock contention); a sharded cluster's mongos URI says `retryWrites=true`."""
    if uri.startswith("mongodb+srv://"):  # parsing it would resolve the SRV record here
        return "retrywrites=false" not in uri.lower()
    options = uri_parser.parse_uri(uri)["options"]  # validated: retryWrites comes back a bool
    if "retryWrites" in options:
        return bool(options["retryWrites"])
    return "replicaSet" in options


def connect(settings: Settings) -> tuple[AsyncMongoClient, AsyncDatabase]:
    client: AsyncMongoClient = AsyncMongoClient(
        settings.mongo_uri, retryWrites=retryable_writes(settings.mongo_uri), serverSelectionTimeoutMS=5000,
        tz_aware=True,
    )
    return client, client[settings.database]


async def ensure_indexes(db: AsyncDatabase) -> None:
    aggregates = db[AGGREGATES]
    await retry_transient(aggregates.create_index, [("next_due_at", ASCENDING)])
    await retry_transient(aggregates.create_index, [("pending", ASCENDING)])
