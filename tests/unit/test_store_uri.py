"""Store settings follow the URI: retryable writes where the server has them (a MongoDB replica
set or a sharded cluster that says so), off for a standalone server such as FerretDB v1."""

from __future__ import annotations

import pytest

from tongban.store import retryable_writes


@pytest.mark.parametrize(("uri", "expected"), [
    ("mongodb://127.0.0.1:27217/", False),  # the embedded FerretDB v1: standalone
    ("mongodb://db-0,db-1,db-2/?replicaSet=rs0", True),
    ("mongodb://db-0,db-1,db-2/?replicaSet=rs0&retryWrites=false", False),  # the URI has the last word
    ("mongodb://mongos-0,mongos-1/?retryWrites=true", True),  # a sharded cluster says so
    ("mongodb://127.0.0.1:27217/?retryWrites=false", False),
    ("mongodb+srv://cluster0.example.org/", True),  # SRV names a replica set
    ("mongodb+srv://cluster0.example.org/?retryWrites=false", False),
])
def test_retryable_writes_follow_the_uri(uri: str, expected: bool):
    assert retryable_writes(uri) is expected
