"""The operator's re-seal rewrites an archive in the real document store: values sealed with
an old key (v1 values included) are sealed again with the current keys, in place, and open
for the same parties at the same place."""

import os

import pytest
from pymongo import MongoClient

from tests.pii_parties import seal_v1
from tests.support import drop_namespace, new_namespace
from tongban import pii_policy
from tongban.ops import pii as ops
from tongban.pii import PREFIX, V2, PiiCipher, key_line, new_key
from tongban.runtime.archive import collection_for

pytestmark = pytest.mark.integration
RECEIVED = "tongban.application.ApplicationReceived"
MONGO = os.environ.get("TONGBAN_MONGO_URI", "mongodb://127.0.0.1:27217/")


def test_reseal_rewrites_old_and_v1_values_of_a_delivery_archive_in_place(tmp_path, monkeypatch):
    monkeypatch.setattr(pii_policy, "LEGACY_KEY_FILE", tmp_path / "none")
    env = {"TONGBAN_PII_KEY_DIR": str(tmp_path / "pii")}
    monkeypatch.setenv("TONGBAN_PII_KEY_DIR", env["TONGBAN_PII_KEY_DIR"])
    ops.ensure_keys(env)
    shared = new_key("k1")
    for party in ("verification", "delivery"):
        path = pii_policy.key_file(party, env)
        path.write_text(path.read_text() + key_line(shared) + "\n")
    old = PiiCipher(pii_policy.operator_keyring(env)).seal("13800000000", record=RECEIVED, path="applicant.phone",
                                                           subject="TBRESEAL", recipients=["verification", "delivery"])
    ops.rotate("delivery", env)
    namespace = new_namespace()
    client = MongoClient(MONGO)
    try:
        archive = client[f"{namespace.replace('-', '_')}tongban_delivery"][collection_for("TBRESEAL")]
        state = {"received": {"applicant": {"kind": "PERSON", "name": seal_v1("张三", shared), "id_number": None,
                                            "phone": old},
                              "materials": [], "delivery_method": "POST", "postal_address": seal_v1("长沙", shared)},
                 "decision": "APPROVED"}
        archive.insert_one({"_id": "TBRESEAL", "key": "TBRESEAL", "version": 1, "service": "delivery",
                            "state": state})
        dry = ops.reseal_archives(["delivery"], namespace, dry_run=True, mongo_uri=MONGO)["delivery"]
        assert (dry.resealed, dry.documents) == (3, 1)
        assert archive.find_one({"_id": "TBRESEAL"})["state"] == state, "a dry run writes nothing"

        done = ops.reseal_archives(["delivery"], namespace, dry_run=False, mongo_uri=MONGO)["delivery"]
        assert (done.resealed, done.documents, done.failed) == (3, 1, 0)
        rewritten = archive.find_one({"_id": "TBRESEAL"})["state"]
        delivery = PiiCipher(pii_policy.party_keyring("delivery", env))
        applicant = rewritten["received"]["applicant"]
        for field, value in (("name", "张三"), ("phone", "13800000000")):
            assert applicant[field].startswith(V2)
            assert delivery.open(applicant[field], record=RECEIVED, path=f"applicant.{field}",
                                 subject="TBRESEAL") == value
        assert not rewritten["received"]["postal_address"].startswith(PREFIX)
        assert rewritten["decision"] == "APPROVED"
        again = ops.reseal_archives(["delivery"], namespace, dry_run=False, mongo_uri=MONGO)["delivery"]
        assert (again.resealed, again.current) == (0, 3)
    finally:
        client.close()
        drop_namespace(namespace)
