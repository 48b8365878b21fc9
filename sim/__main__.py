"""python -m sim [--deny-matters CODE,...]: every declared authority partner and the carrier."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from sim.partners import authority, carrier, run_partner
from tongban import telemetry
from tongban.codec import SchemaRegistry
from tongban.config import ConfigError, load_settings
from tongban.partners import authorities
from tongban.pii import PiiCipher
from tongban.pii_policy import party_keyring


async def run(deny_matters: frozenset[str], carrier_ledger: Path | None) -> None:
    settings = load_settings("partner-sim")
    telemetry.setup(settings)
    registry = SchemaRegistry.load()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    # Each partner holds its own personal-data key only (var/pii/<id>.keys), as it would at home.
    try:
        ciphers = {pid: PiiCipher(party_keyring(pid)) for pid in [*authorities(), "ems"]}
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    tasks = [
        run_partner(settings, registry, pid, f"tongban.partner.{pid}.assignments",
                    authority(pid, deny_matters, ciphers[pid]), stopping)
        for pid in authorities()
    ]
    tasks.append(run_partner(settings, registry, "ems", "tongban.partner.ems.dispatches",
                             carrier(ciphers["ems"], carrier_ledger), stopping))
    await asyncio.gather(*tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deny-matters", default="", help="matter codes the simulated authorities deny")
    parser.add_argument("--carrier-ledger", type=Path, help="a file where the carrier notes every parcel")
    args = parser.parse_args()
    try:
        asyncio.run(run(frozenset(filter(None, args.deny_matters.split(","))), args.carrier_ledger))
    except ConfigError as exc:
        raise SystemExit(f"partner simulator: configuration error: {exc}") from None


if __name__ == "__main__":
    main()
