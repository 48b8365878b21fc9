"""Readiness probes used by the infra scripts (run with the repo's .venv).

    python infra/scripts/wait_ready.py kafka [--timeout S]   # metadata request via aiokafka
    python infra/scripts/wait_ready.py mongo [--timeout S]   # ping via pymongo

Targets come from TONGBAN_KAFKA_BOOTSTRAP / TONGBAN_MONGO_URI (local defaults otherwise);
With SASL (the local broker's default) it logs in as the broker's `admin`, its secret from
the secrets file, unless TONGBAN_KAFKA_USERNAME/_PASSWORD say otherwise.
Exit code 0 when the target answered within the timeout. Kafka options come from
tongban.config, the one place the TONGBAN_KAFKA_* variables are read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def kafka_settings() -> dict:
    from tongban.config import load_settings

    return load_settings("ops", local_defaults=True).kafka_client_options()


async def kafka_ready(request_timeout: float) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(request_timeout_ms=int(request_timeout * 1000), **kafka_settings())
    try:
        await asyncio.wait_for(admin.start(), request_timeout)
        cluster = await asyncio.wait_for(admin.describe_cluster(), request_timeout)
        if not cluster.get("brokers"):
            raise RuntimeError("no brokers in metadata")
    finally:
        await admin.close()


def mongo_ready(timeout: float) -> None:
    from pymongo import MongoClient

    uri = os.environ.get("TONGBAN_MONGO_URI") or "mongodb://127.0.0.1:27217/"
    client = MongoClient(uri, serverSelectionTimeoutMS=int(timeout * 1000), connectTimeoutMS=int(timeout * 1000))
    try:
        client.admin.command("ping")
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["kafka", "mongo"])
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--wait", type=float, default=0.0, help="keep retrying for this many seconds")
    args = parser.parse_args()
    deadline = time.monotonic() + args.wait
    while True:
        try:
            if args.what == "kafka":
                asyncio.run(kafka_ready(args.timeout))
            else:
                mongo_ready(args.timeout)
            return 0
        except Exception as exc:  # any failure means "not ready yet"
            if time.monotonic() >= deadline:
                print(f"{args.what}: not ready: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 1
            time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
