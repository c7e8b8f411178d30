"""Background processes of the harnesses: free ports, and one way to start, find again and stop.

``spawn`` starts a process with its stdout and stderr appended to a log file, in a session of
its own (a Ctrl-C in the terminal is for pytest, not for it). The ``LoggedProcess`` it returns
stops it (``stop``: SIGTERM, then SIGKILL after a timeout) and can ``detach`` from it so that
it outlives this Python process; a later command finds it again by pid (``LoggedProcess`` with
``pid`` and ``marker``, no ``popen``) and stops it the same way. The ``marker``, a string in its
command line such as its state directory, keeps a reused pid from being mistaken for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = ["LoggedProcess", "free_port", "pid_alive", "spawn", "tail"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file (``(no log)`` when there is none)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid: int, marker: str | None = None) -> bool:
    """``pid`` runs (not a zombie) and, with a ``marker``, its command line contains it."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return marker is None or os.fsencode(marker) in cmdline


@dataclass
class LoggedProcess:
    """A background process writing to ``log_path``: started by ``spawn`` (``popen`` set) or
    found again by ``pid`` (``popen`` None, ``marker`` in its command line)."""

    name: str
    pid: int
    log_path: Path
    marker: str | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_file: IO[bytes] | None = field(default=None, repr=False)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_alive(self.pid, self.marker)

    def exit_code(self) -> int | None:
        """The exit status of a process this one started, once it has ended; else None."""
        return self.popen.poll() if self.popen is not None else None

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def detach(self) -> None:
        """Leave the process running after this Python process exits (``stop`` still works, by
        pid). The process keeps its own copy of the log's descriptor."""
        self.popen = None
        self._close_log()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; waits for it to end. Idempotent."""
        try:
            if self.alive():
                self._signal(signal.SIGTERM)
                if not self._ended_within(timeout):
                    self._signal(signal.SIGKILL)
                    self._ended_within(5.0)
        finally:
            self._close_log()

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.popen is not None:
                self.popen.send_signal(sig)
            else:
                os.kill(self.pid, sig)

    def _ended_within(self, timeout: float) -> bool:
        if self.popen is not None:
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _close_log(self) -> None:
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    marker: str | None = None,
) -> LoggedProcess:
    """Start ``argv`` in a new session, stdin closed, stdout and stderr appended to ``log_path``.
    ``OSError`` when it cannot be run."""
    log_file = open(log_path, "ab")  # noqa: SIM115 - owned by LoggedProcess, closed by stop/detach
    try:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    except OSError:
        log_file.close()
        raise
    return LoggedProcess(name, popen.pid, log_path, marker, popen, log_file)
