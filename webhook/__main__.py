"""The `imagegate` command (and `python -m webhook`): a SIGTERM handler first, then the CLI.

In a container imagegate is PID 1, and the kernel drops the signals PID 1 has no handler for: a
SIGTERM arriving while the CLI is still importing, or while a command without handlers of its
own runs (`check`, `rebuild`; `serve` and `operator` install theirs once started), would be
ignored until the kubelet's SIGKILL, 30 s later. So the handler is installed before anything
heavy is imported.
"""

from __future__ import annotations

import signal
from types import FrameType


def _terminated(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _terminated)
    from webhook.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
