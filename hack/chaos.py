#!/usr/bin/env python3
"""`make chaos`: `imagegate serve` against a registry that misbehaves in every way, long.

Starts a real `imagegate serve` (TLS, 8 s budget) and the ChaosRegistry of
tests/support/chaos.py on loopback, sends `--rounds` reviews of every fault (and reviews
naming every fault at once), and prints the figures: status counts, p50/p99, and the server's
RSS and open file descriptors before and after. Exits 1 on a 5xx, a malformed answer, or
file descriptors that do not come back.

    .venv/bin/python hack/chaos.py [--rounds 20] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a script: hack/ is on the path

from tests.support.chaos import ChaosRegistry, drive
from tests.support.webhook import start_webhook


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="reviews per fault")
    parser.add_argument("--concurrency", type=int, default=32, help="reviews in flight")
    args = parser.parse_args()
    registry = ChaosRegistry()
    with tempfile.TemporaryDirectory(prefix="imagegate-chaos-") as work:
        server = start_webhook(Path(work), [])
        try:
            figures = asyncio.run(drive(server, registry, args.rounds, args.concurrency))
        finally:
            server.stop()
            registry.close()
    print(f"chaos: {figures.summary()}")
    failed = [s for s in figures.statuses if s >= 500] or figures.malformed
    leaked = figures.fds[1] > figures.fds[0] + 64  # the keep-alive pool may keep some
    return 1 if failed or leaked else 0


if __name__ == "__main__":
    sys.exit(main())
