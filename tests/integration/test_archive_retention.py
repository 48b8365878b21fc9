"""The archive retention purge on the real MongoDB-wire store (FerretDB): archived cases
finished longer ago than their service's declared days are deleted, shard by shard; newer
ones, those without `finished_at`, a dry run, another service's archive and another
namespace's are left alone. Driven through both command lines; checked by reading the store."""

import json
import os
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from pymongo import MongoClient

from tongban.ops.__main__ import main as ops_main
from tongban.ops.cli import cli
from tongban.runtime.archive import collection_for

pytestmark = pytest.mark.integration
MONGO = os.environ.get("TONGBAN_MONGO_URI", "mongodb://127.0.0.1:27217/")
DAYS = 30


def declaration(tmp_path):
    path = tmp_path / "retention.toml"
    path.write_text("[archive]\n" + "".join(f"{s} = {DAYS}\n" for s in
                                            ("intake", "routing", "verification", "delivery", "feedback")))
    return str(path)


def seed(db, prefix: str, count: int, finished_at: datetime | None) -> set[str]:
    """`count` archived cases in their shards, as the runtime writes them."""
    ids = set()
    for n in range(count):
        doc_id = f"{prefix}{n:03d}~1"
        doc = {"_id": doc_id, "key": doc_id[:-2], "version": 1, "state": {"n": n}}
        if finished_at is not None:
            doc["finished_at"] = finished_at
        db[collection_for(doc_id)].insert_one(doc)
        ids.add(doc_id)
    return ids


def stored(db) -> set[str]:
    return {d["_id"] for name in db.list_collection_names() if name.startswith("archive_")
            for d in db[name].find({}, {"_id": 1})}


def test_purge_deletes_only_cases_older_than_the_retention_of_the_named_service(tmp_path, capsys):
    namespace, other = f"t{secrets.token_hex(3)}-", f"t{secrets.token_hex(3)}-"
    file = declaration(tmp_path)
    client = MongoClient(MONGO, tz_aware=True)
    delivery = client[f"{namespace.replace('-', '_')}tongban_delivery"]
    routing = client[f"{namespace.replace('-', '_')}tongban_routing"]
    elsewhere = client[f"{other.replace('-', '_')}tongban_delivery"]
    now = datetime.now(UTC)
    try:
        old = seed(delivery, "TBOLD", 40, now - timedelta(days=DAYS + 15))
        just_old = seed(delivery, "TBEDGE", 1, now - timedelta(days=DAYS, hours=1))
        new = seed(delivery, "TBNEW", 40, now - timedelta(days=DAYS - 1))
        undated = seed(delivery, "TBUNDATED", 2, None)
        routing_old = seed(routing, "TBROUTED", 10, now - timedelta(days=DAYS + 15))
        elsewhere_old = seed(elsewhere, "TBOTHER", 5, now - timedelta(days=DAYS + 15))
        assert len({collection_for(i) for i in old}) > 10, "spread over many shards"

        # the plan counts what is due, per service, and deletes nothing (exit 1: something is due)
        result = CliRunner().invoke(cli, ["--namespace", namespace, "retention", "plan", "--service", "delivery",
                                          "--service", "routing", "--file", file, "--json"])
        assert result.exit_code == 1, result.output
        plan = {a["service"]: a for a in json.loads(result.output)["archives"]}
        assert (plan["delivery"]["due"], plan["routing"]["due"]) == (41, 10)
        assert sum(plan["delivery"]["shards"].values()) == 41
        assert stored(delivery) == old | just_old | new | undated

        assert ops_main(["retention", "purge", "--service", "delivery", "--namespace", namespace, "--file", file,
                         "--dry-run"]) == 0
        assert "delivery      keep 30 days: 41 to delete" in capsys.readouterr().out
        assert stored(delivery) == old | just_old | new | undated, "a dry run deletes nothing"

        assert ops_main(["retention", "purge", "--service", "delivery", "--namespace", namespace,
                         "--file", file]) == 0
        assert "delivery      keep 30 days: 41 deleted" in capsys.readouterr().out
        assert stored(delivery) == new | undated
        assert stored(routing) == routing_old, "another service's archive is untouched"
        assert stored(elsewhere) == elsewhere_old, "another namespace's archive is untouched"

        assert ops_main(["retention", "plan", "--service", "delivery", "--namespace", namespace,
                         "--file", file]) == 0, "nothing is due any more"
    finally:
        for db in (delivery, routing, elsewhere):
            client.drop_database(db.name)
        client.close()
