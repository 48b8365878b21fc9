"""python -m services.datasharing serve PROVIDER | check-chain PROVIDER

- `serve`: run one data-sharing provider (its gRPC DataSharing API, its record store, its
  audit chain, anchored every TONGBAN_ANCHOR_SECONDS, default 10).
- `check-chain`: check a provider's audit chain against itself and its last anchor; exits 0
  if it holds, else 1 naming the first broken entry. Runs as the operator, who reads the
  anchors (infra/topics.toml).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from services.datasharing.anchor import last_anchor
from services.datasharing.audit import AuditChain, Broken, Head, check_chain
from services.datasharing.server import serve
from tongban import store
from tongban.codec import SchemaRegistry
from tongban.config import ConfigError, Settings, load_settings

SERVICE = "datasharing"  # Kafka principal tongban-datasharing, database tongban_datasharing
OPERATOR = "operator"


async def check(provider: str, env: dict[str, str] | None = None) -> tuple[int, Head | None, Broken | None]:
    """(entries checked, the last anchor, the first broken entry or None)."""
    settings = load_settings(SERVICE, env)
    operator: Settings = load_settings(OPERATOR, env)
    client, db = store.connect(settings)
    try:
        entries = await AuditChain(db, provider).entries()
    finally:
        await client.close()
    anchor = await last_anchor(operator, SchemaRegistry.load(), provider)
    return len(entries), anchor, check_chain(entries, anchor)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve").add_argument("provider")
    commands.add_parser("check-chain").add_argument("provider")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            settings = load_settings(SERVICE)
            settings.kafka_client_options()
            asyncio.run(serve(settings, args.provider, float(os.environ.get("TONGBAN_ANCHOR_SECONDS") or 10)))
            return 0
        entries, anchor, broken = asyncio.run(check(args.provider))
    except ConfigError as exc:
        raise SystemExit(f"datasharing: configuration error: {exc}") from None
    if broken is None:
        anchored = f"the anchored head (entry {anchor.sequence}) matches" if anchor else "no anchor yet"
        print(f"chain {args.provider}: {entries} entries hold; {anchored}")
        return 0
    print(f"chain {args.provider}: broken at {broken}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
