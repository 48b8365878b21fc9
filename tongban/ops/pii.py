"""Personal-data keys and re-sealing: the operator's side of `tongban.pii`.

    python -m tongban.ops.pii keys                 # a key file per party where missing (make setup)
    python -m tongban.ops.pii list                 # parties, key ids, which key seals
    python -m tongban.ops.pii rotate PARTY         # a new key seals; the old ones still open
    python -m tongban.ops.pii reseal [--service S] [--namespace NS] [--dry-run]
    python -m tongban.ops.pii retire PARTY KEY_ID  # an old key no longer opens anything

Key files are `<TONGBAN_PII_KEY_DIR>/<party>.keys` (default `var/pii/`, mode 600 in a 700
directory, git-ignored), one per party of `tongban.pii_policy.parties()`. New keys are of the
suite TONGBAN_PII_CIPHER names (`aes-256-gcm` by default, `sm4-gcm`); `keys` also gives a
party that has no key of that suite one, which is how a switch to SM4 starts.

`keys` adopts the v1 file `var/pii.keys` (one key shared by everyone) when it makes a new
party file: the shared key follows the party's new key, so records sealed before the
migration still open, until `reseal` has rewritten what can be rewritten and the topics'
retention has aged out the rest; then `retire` it from every party.

Rotation, in order:
1. `rotate PARTY`, then restart the party's processes and those that seal for it (intake
   seals for verification and delivery; delivery for every partner): the new key seals.
2. `reseal`: rewrites every sealed value in the services' archives (finished work) whose
   keys are not the current ones, v1 values included, in place by `_id`.
3. Wait out what cannot be rewritten: records on topics (their `retention.ms` in
   infra/topics.toml: 7 days, dead letters 30 days) and the hot state of unfinished
   aggregates in the changelogs (kept until the aggregate finishes; delivery and
   verification drop the personal fields then).
4. `retire PARTY OLD_KEY_ID`, and restart the party's processes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tongban import pii_policy, topics
from tongban.codec import SchemaRegistry
from tongban.pii import PREFIX, V2, PiiCipher, PiiError, current_key, new_key, parse_keys, write_key_file
from tongban.runtime import archive

SERVICES = ("intake", "routing", "verification", "delivery", "feedback")
# Where a service's archived state keeps (part of) a record as received: v1 values there can
# be bound to that record's fields when they are re-sealed. v2 values carry their place.
RECEIVED_PARTS = {
    "delivery": {"received": topics.APPLICATION_RECEIVED_EVENT},
    "verification": {"application": topics.APPLICATION_RECEIVED_EVENT},
}
RECORD_TOPICS = {topics.APPLICATION_RECEIVED_EVENT: topics.APPLICATION_RECEIVED}


# ------------------------------------------------------------------------------ key files
def ensure_keys(env: Mapping[str, str] | None = None) -> list[str]:
    """Make what is missing: a key file for each party, a key of the configured suite in each
    file. Returns what was done, one line each."""
    env = os.environ if env is None else env
    suite = pii_policy.suite_of(env)
    legacy = {}
    if pii_policy.LEGACY_KEY_FILE.exists():
        legacy = parse_keys(pii_policy.LEGACY_KEY_FILE.read_text())
    done = []
    for party in pii_policy.parties():
        path = pii_policy.key_file(party, env)
        if not path.exists():
            keys = [new_key(suite=suite), *[k for k in legacy.values()]]
            note = f"party {party}" + (f"; after the first key, the v1 shared key(s) {', '.join(legacy)} "
                                      "(retire once re-sealed and aged out)" if legacy else "")
            write_key_file(path, keys, note)
            done.append(f"created  {path} ({keys[0].key_id}{' + v1 ' + ','.join(legacy) if legacy else ''})")
            continue
        keys = list(parse_keys(path.read_text()).values())
        if not any(k.suite == suite for k in keys):
            fresh = new_key(suite=suite)
            write_key_file(path, [fresh, *keys], f"party {party}")
            done.append(f"added    {fresh.key_id} ({suite}) to {path}")
    return done


def rotate(party: str, env: Mapping[str, str] | None = None) -> str:
    """Put a new key of the configured suite first; returns its id."""
    env = os.environ if env is None else env
    keys = pii_policy.read_party_keys(party, env)
    fresh = new_key(suite=pii_policy.suite_of(env))
    write_key_file(pii_policy.key_file(party, env), [fresh, *keys.values()], f"party {party}")
    return fresh.key_id


def retire(party: str, key_id: str, env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    keys = pii_policy.read_party_keys(party, env)
    if key_id not in keys:
        raise SystemExit(f"party {party} has no key {key_id}")
    if current_key(keys, pii_policy.suite_of(env), party).key_id == key_id:
        raise SystemExit(f"{key_id} is party {party}'s current key; rotate first")
    write_key_file(pii_policy.key_file(party, env), [k for k in keys.values() if k.key_id != key_id],
                   f"party {party}")


# ------------------------------------------------------------------------------ re-sealing
@dataclass
class Counts:
    resealed: int = 0
    current: int = 0
    unplaced_v1: int = 0  # v1 values outside a known place: no field to bind them to
    failed: int = 0  # do not open with any key held (retired, tampered)
    documents: int = 0
    paths: list[str] = field(default_factory=list)

    def add(self, other: Counts) -> None:
        self.resealed += other.resealed
        self.current += other.current
        self.unplaced_v1 += other.unplaced_v1
        self.failed += other.failed
        self.documents += other.documents


def reseal_state(state: Any, cipher: PiiCipher, registry: SchemaRegistry, *, service: str, subject: str,
                 counts: Counts) -> Any:
    """A copy of an archived state with every stale sealed value sealed afresh with the
    current keys of the same recipients, bound to the same place."""

    def value(text: str, bind: Callable[[str], str] | None = None) -> str:
        try:
            if text.startswith(PREFIX):
                if bind is None:
                    counts.unplaced_v1 += 1
                    return text
                counts.resealed += 1
                return bind(text)
            if not text.startswith(V2):
                return text
            if not cipher.stale(text):
                counts.current += 1
                return text
            counts.resealed += 1
            return cipher.reseal(text)
        except PiiError:
            counts.failed += 1
            return text

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return value(node)
        if isinstance(node, list):
            return [walk(item) for item in node]
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        return node

    if not isinstance(state, dict):
        return walk(state)
    out = {}
    for name, part in state.items():
        record = RECEIVED_PARTS.get(service, {}).get(name)
        if record is None or not isinstance(part, dict):
            out[name] = walk(part)
            continue
        recipients = pii_policy.recipients(RECORD_TOPICS[record])

        def place(path: str, text: Any, record: str = record, recipients: tuple = recipients) -> Any:
            if not isinstance(text, str):
                return text
            return value(text, lambda v1: cipher.reseal(v1, record=record, path=path, subject=subject,
                                                        recipients=recipients))

        out[name] = registry.map_pii_paths(record, part, place)  # sealed values lie only in its pii fields
    return out


def reseal_archives(services: list[str], namespace: str, *, dry_run: bool, mongo_uri: str,
                    env: Mapping[str, str] | None = None) -> dict[str, Counts]:
    from pymongo import MongoClient

    cipher = PiiCipher(pii_policy.operator_keyring(env))
    registry = SchemaRegistry.load()
    client: MongoClient = MongoClient(mongo_uri, retryWrites=False, serverSelectionTimeoutMS=5000, tz_aware=True)
    results = {}
    try:
        for service in services:
            db = client[f"{namespace.replace('-', '_')}tongban_{service}"]
            counts = Counts()
            present = set(db.list_collection_names())
            for docs in (db[name] for name in archive.collections() if name in present):
                for doc in docs.find({}):
                    before = Counts()
                    state = reseal_state(doc.get("state"), cipher, registry, service=service,
                                         subject=str(doc.get("key", "")), counts=before)
                    counts.add(before)
                    if before.resealed:
                        counts.documents += 1
                        if not dry_run:
                            docs.replace_one({"_id": doc["_id"]}, {**doc, "state": state})
            results[service] = counts
    finally:
        client.close()
    return results


# ------------------------------------------------------------------------------ the command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tongban.ops.pii", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("keys", help="a key file per party, a key of the configured suite in each (make setup)")
    sub.add_parser("list", help="parties and their keys")
    p = sub.add_parser("rotate", help="a new key seals for PARTY; old keys still open")
    p.add_argument("party")
    p = sub.add_parser("retire", help="remove an old key of PARTY")
    p.add_argument("party")
    p.add_argument("key_id")
    p = sub.add_parser("reseal", help="re-seal the archives' values sealed with old keys (and v1 values)")
    p.add_argument("--service", action="append", choices=SERVICES, help="default: every service")
    p.add_argument("--namespace", default=None, help="default: $TONGBAN_NAMESPACE")
    p.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.what == "keys":
            done = ensure_keys()
            print("\n".join(done) if done else f"personal-data keys: every party has one in {pii_policy.key_dir()}")
        elif args.what == "list":
            suite = pii_policy.suite_of(os.environ)
            for party in pii_policy.parties():
                path = pii_policy.key_file(party)
                if not path.exists():
                    print(f"{party:14} NO KEY FILE ({path})")
                    continue
                keys = parse_keys(path.read_text())
                sealing = current_key(keys, suite, party).key_id if any(k.suite == suite for k in keys.values()) \
                    else None
                shown = " ".join(f"{k.key_id}({k.suite}){'*' if k.key_id == sealing else ''}" for k in keys.values())
                print(f"{party:14} {oct(path.stat().st_mode & 0o777)} {shown}")
            print(f"* seals ({suite}); every listed key opens")
        elif args.what == "rotate":
            key_id = rotate(args.party)
            sealers = [s for s in pii_policy.SERVICES_WITH_KEYS if args.party in pii_policy.seals_for(s)]
            print(f"rotated  {args.party}: {key_id} seals from now on; restart {args.party}'s processes"
                  + (f" and {', '.join(sealers)}" if sealers else "") + "; then reseal")
        elif args.what == "retire":
            retire(args.party, args.key_id)
            print(f"retired  {args.key_id} of {args.party}: what it alone sealed no longer opens")
        else:
            namespace = os.environ.get("TONGBAN_NAMESPACE", "") if args.namespace is None else args.namespace
            results = reseal_archives(args.service or list(SERVICES), namespace, dry_run=args.dry_run,
                                      mongo_uri=os.environ.get("TONGBAN_MONGO_URI", "mongodb://127.0.0.1:27217/"))
            for service, c in results.items():
                verb = "to re-seal" if args.dry_run else "re-sealed"
                print(f"{service:13} {c.resealed} values {verb} in {c.documents} documents, {c.current} current, "
                      f"{c.failed} that no key opens, {c.unplaced_v1} v1 values outside a known field")
    except (ValueError, PiiError) as exc:
        raise SystemExit(f"tongban.ops.pii: {exc}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
