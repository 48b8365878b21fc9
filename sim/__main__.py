"""python -m sim [--deny-matters CODE,...] [--supplement-matters CODE,...] [--supplement-share F]
[--refuse-matters CODE,...] [--broken-commitment-matters CODE,...] [--deny-legs CODE:STEP,...]
[--carrier-ledger FILE]
[--carrier-delay S] [--windows ID,...] [--window-journal FILE] [--delivery HOST:PORT,...]
[--absent-authorities ID,...]: every declared authority
partner (but the absent ones, which a real partner system answers for), the carrier, the
e-licence wallet and the windows (sim/carrier.py); the carrier also posts applications'
paper originals to the deciding authority (资料寄递)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

from services.routing.catalogue import Catalogue
from sim.carrier import WindowJournal, carrier, originals, run_windows, wallet
from sim.partners import Answers, authority, run_partner
from tongban import telemetry, topics
from tongban.codec import SchemaRegistry
from tongban.config import SERVICE_PORTS, ConfigError, load_settings
from tongban.grpc_tls import listen_address
from tongban.partners import authorities
from tongban.pii import PiiCipher
from tongban.pii_policy import party_keyring


async def run(answers: Answers, carrier_ledger: Path | None, carrier_delay: float, windows: str,
              absent: frozenset[str] = frozenset(), window_journal: Path | None = None,
              delivery: str = "") -> None:
    settings = load_settings("partner-sim")
    telemetry.setup(settings)
    registry = SchemaRegistry.load()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    # Each partner holds its own personal-data key only (var/pii/<id>.keys), as it would at home.
    try:
        ciphers = {pid: PiiCipher(party_keyring(pid)) for pid in [*authorities(), "ems", "wallet"]}
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    tasks = [
        run_partner(settings, registry, pid, f"tongban.partner.{pid}.assignments",
                    authority(pid, answers, ciphers[pid]), stopping)
        for pid in authorities() if pid not in absent
    ]
    # Results the carrier hands to a window (结果转送); the windows the simulator operates record them.
    handed: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    operated = set(filter(None, windows.split(",")))
    targets = [t for t in delivery.split(",") if t] or [
        listen_address("127.0.0.1", int(os.environ.get("TONGBAN_GRPC_PORT_DELIVERY") or SERVICE_PORTS["delivery"]))]
    journal = WindowJournal(window_journal)

    def hand_to_window(application_id: str, window_id: str) -> None:
        journal.handed(application_id, window_id)  # before the carrier moves on: kept across a restart
        handed.put_nowait((application_id, window_id))

    tasks += [
        run_partner(settings, registry, "ems", "tongban.partner.ems.dispatches",
                    carrier(ciphers["ems"], carrier_ledger, hand_to_window, carrier_delay), stopping),
        # 资料寄递: the carrier collects the originals of the applications routed to another authority.
        run_partner(settings, registry, topics.CARRIER, topics.APPLICATION_ROUTED, originals(Catalogue.load()),
                    stopping, stream="originals"),
        run_partner(settings, registry, "wallet", "tongban.partner.wallet.dispatches", wallet(ciphers["wallet"]),
                    stopping),
        run_windows(targets, handed, lambda w: windows == "*" or w in operated, stopping, journal),
    ]
    await asyncio.gather(*tasks)


def codes(listed: str) -> frozenset[str]:
    return frozenset(filter(None, listed.split(",")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deny-matters", default="", help="matter codes the simulated authorities deny")
    parser.add_argument("--supplement-matters", default="",
                        help="matter codes the simulated authorities first answer with a 补正 notice")
    parser.add_argument("--supplement-share", type=float, default=0.0,
                        help="share (0..1) of the other assignments answered with a 补正 notice first")
    parser.add_argument("--refuse-matters", default="", help="matter codes the simulated authorities do not accept")
    parser.add_argument("--broken-commitment-matters", default="",
                        help="matter codes whose 告知承诺 the simulated authorities find broken when checking")
    parser.add_argument("--deny-legs", default="",
                        help="joint-matter legs (CODE:STEP,...) the simulated authorities deny")
    parser.add_argument("--carrier-ledger", type=Path, help="a file where the carrier notes every parcel")
    parser.add_argument("--carrier-delay", type=float, default=0.0,
                        help="seconds the carrier takes to report a parcel delivered or returned")
    parser.add_argument("--absent-authorities", default="",
                        help="authority ids the simulator does not answer for (a real partner system does)")
    parser.add_argument("--window-journal", type=Path,
                        help="a file where the windows keep the results handed to them, to carry on after a restart")
    parser.add_argument("--delivery", default="",
                        help="delivery instances the windows call (HOST:PORT,...; default the one of "
                             "TONGBAN_GRPC_PORT_DELIVERY)")
    parser.add_argument("--windows", default="*",
                        help="window ids whose arrivals and pick-ups the simulator records ('*' every one, '' none)")
    args = parser.parse_args()
    answers = Answers(codes(args.deny_matters), codes(args.supplement_matters), args.supplement_share,
                      codes(args.refuse_matters), codes(args.broken_commitment_matters), codes(args.deny_legs))
    try:
        asyncio.run(run(answers, args.carrier_ledger, args.carrier_delay, args.windows,
                        codes(args.absent_authorities), args.window_journal, args.delivery))
    except ConfigError as exc:
        raise SystemExit(f"partner simulator: configuration error: {exc}") from None


if __name__ == "__main__":
    main()
