"""Start, stop and show a real Distribution registry on loopback, from a shell.

The registry keeps running after ``start`` returns (pid file in STATE); the harness itself is
``tests/support/registry.py``, which the tests, the bench and ``make demo`` use::

    python hack/registry.py start [--port 5001] [--state DIR] [--htpasswd USER:PASS]
    python hack/registry.py status [--state DIR]
    python hack/registry.py stop [--state DIR]

STATE defaults to ``$IMAGEGATE_STATE/registry`` (``/tmp/imagegate/registry``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a script: hack/ is on the path

from tests.support import registry as harness


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hack/registry.py", description="A local Distribution registry for imagegate."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start a registry in the background (idempotent)")
    start.add_argument("--port", type=int, default=5001, help="0 picks a free port")
    start.add_argument("--htpasswd", metavar="USER:PASS", help="require Basic auth")
    for p in (start, sub.add_parser("stop"), sub.add_parser("status")):
        p.add_argument("--state", default=str(harness.default_state()), help="state directory")
    args = parser.parse_args(argv)

    running = harness.attach(args.state)
    if args.command == "status":
        if running is None or not running.ready():
            print(f"no registry running for {args.state}", file=sys.stderr)
            return 1
        print(running.host)
        return 0
    if args.command == "stop":
        if running is None:
            print(f"no registry running for {args.state}", file=sys.stderr)
        else:
            running.stop()
            print(f"stopped registry pid {running.pid} on {running.host}", file=sys.stderr)
        return 0

    creds: tuple[str, str] | None = None
    if args.htpasswd:
        user, sep, password = args.htpasswd.partition(":")
        if not sep:
            parser.error("--htpasswd wants USER:PASS")
        creds = (user, password)
    if running is not None:
        if args.port in (0, running.port) and running.ready():
            print(running.host)
            print(f"registry already running (pid {running.pid})", file=sys.stderr)
            return 0
        running.stop()
    try:
        reg = harness.start_registry(args.state, args.port, creds)
    except harness.RegistryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, harness.RegistryNotInstalledError) else 1
    reg.detach()
    print(reg.host)
    print(f"registry pid {reg.pid} on {reg.url}; log {reg.log_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
