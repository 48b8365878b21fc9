"""One hop of a bench chain as its own process: python -m devtools.bench.hop raw|runtime PREFIX INDEX

Runs until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys

from devtools.bench.chain import HOP_MAINS


async def main(kind: str, prefix: str, index: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await HOP_MAINS[kind](prefix, index, stop)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in HOP_MAINS:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
