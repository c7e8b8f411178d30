"""Start and stop a real CNCF Distribution registry (Debian's ``docker-registry``) on loopback.

Used by the test session (``tests/conftest.py``), the bench, ``make demo`` and
``hack/registry.py`` (the command line)::

    reg = start_registry(tmp_dir)                      # free port, no auth
    reg = start_registry(tmp_dir, htpasswd=("alice", "wonderland"))
    reg.host   # "127.0.0.1:PORT"
    reg.url    # "http://127.0.0.1:PORT"
    mark = reg.log_offset()
    ...                                                # talk to the registry
    count_requests(reg.log_path, "GET", "/manifests/", since=mark)
    reg.stop()

A registry started with ``detach()`` keeps running after this Python process exits; ``attach``
finds it again from its state directory (pid file)::

    python hack/registry.py start --port 5001 --state DIR [--htpasswd USER:PASS]
    python hack/registry.py status --state DIR
    python hack/registry.py stop --state DIR

The registry's access log (Apache "combined" format, on its stdout) and its application log
(logrus, on stderr) both go to ``log_path``. A line of the access log looks like::

  127.0.0.1 - - [28/Nov/2026:00:16:05 +0000] "GET /v2/a/manifests/1 HTTP/1.1" 404 93 "" "curl/7.88"

``count_requests`` counts only those lines, so each HTTP request is counted exactly once.
The access line is written when the response has completed, which can be a moment after
the client has read it: use ``await_requests`` when counting right after a request.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import LoggedProcess, free_port, spawn
from tests.support.token_server import TokenAuth

__all__ = [
    "AccessLogEntry",
    "RegistryError",
    "RegistryNotInstalledError",
    "RegistryProcess",
    "attach",
    "await_requests",
    "count_requests",
    "default_state",
    "find_registry_binary",
    "parse_access_log",
    "start_registry",
]

REGISTRY_BINARIES = ("docker-registry", "registry")
"""Names the Distribution registry binary has (Debian: docker-registry; upstream: registry)."""

PID_FILE = "registry.pid"
HOST_FILE = "registry.host"
LOG_FILE = "registry.log"
CONFIG_FILE = "config.yml"
HTPASSWD_FILE = "htpasswd"

_ACCESS_LINE = re.compile(
    r"^(?P<remote>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "
    r'"(?P<method>[A-Z]+) (?P<uri>\S+) (?P<proto>HTTP/[0-9.]+)" '
    r"(?P<status>\d{3}) (?P<size>\d+|-)"
)


class RegistryError(RuntimeError):
    """The registry could not be started, or stopped, as asked."""


class RegistryNotInstalledError(RegistryError):
    """No registry binary (Debian package ``docker-registry``) or ``htpasswd`` is installed."""


@dataclass(frozen=True)
class AccessLogEntry:
    """One line of the registry's access log."""

    method: str
    uri: str
    status: int
    user: str


def parse_access_log(log_path: str | os.PathLike[str], *, since: int = 0) -> list[AccessLogEntry]:
    """Every access-log line of ``log_path`` from byte offset ``since`` on; other lines skipped."""
    entries: list[AccessLogEntry] = []
    with open(log_path, "rb") as f:
        f.seek(since)
        for raw in f:
            match = _ACCESS_LINE.match(raw.decode("utf-8", "replace"))
            if match:
                entries.append(
                    AccessLogEntry(
                        method=match["method"],
                        uri=match["uri"],
                        status=int(match["status"]),
                        user=match["user"],
                    )
                )
    return entries


def count_requests(
    log_path: str | os.PathLike[str],
    method: str,
    path_substring: str,
    *,
    status: int | None = None,
    since: int = 0,
) -> int:
    """How many ``method`` requests whose URI contains ``path_substring`` the registry logged.

    ``status`` keeps only responses with that HTTP status (e.g. 200, leaving out 401
    challenges); ``since`` is a byte offset into the log (see ``RegistryProcess.log_offset``)
    so that a test counts only its own requests on a shared registry.
    """
    wanted = method.upper()
    return sum(
        1
        for e in parse_access_log(log_path, since=since)
        if e.method == wanted and path_substring in e.uri and (status is None or e.status == status)
    )


def await_requests(
    log_path: str | os.PathLike[str],
    method: str,
    path_substring: str,
    at_least: int,
    *,
    status: int | None = None,
    since: int = 0,
    timeout: float = 5.0,
    settle: float = 0.2,
) -> int:
    """Wait until ``at_least`` matching requests are logged (or ``timeout``), then return the count.

    After reaching ``at_least`` it waits ``settle`` seconds more and counts again, so requests
    beyond the expected number are seen too (an "exactly N" assertion stays meaningful).
    """
    deadline = time.monotonic() + timeout
    while True:
        n = count_requests(log_path, method, path_substring, status=status, since=since)
        if n >= at_least or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if n >= at_least and settle > 0:
        time.sleep(settle)
        n = count_requests(log_path, method, path_substring, status=status, since=since)
    return n


def find_registry_binary() -> str:
    """The registry binary: ``$IMAGEGATE_REGISTRY_BIN``, else ``docker-registry``/``registry``."""
    explicit = os.environ.get("IMAGEGATE_REGISTRY_BIN")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise RegistryNotInstalledError(f"IMAGEGATE_REGISTRY_BIN={explicit} is not executable")
        return explicit
    for name in REGISTRY_BINARIES:
        found = shutil.which(name)
        if found:
            return found
    raise RegistryNotInstalledError(
        "no Distribution registry binary (docker-registry) on PATH: "
        "run hack/install-deps.sh (Debian package docker-registry)"
    )


@dataclass
class RegistryProcess:
    """A running registry. ``stop()`` ends it; it is also a context manager."""

    host: str
    state_dir: Path
    config_path: Path
    process: LoggedProcess
    credentials: tuple[str, str] | None = None
    scheme: str = "http"
    """``https`` when started with ``tls``."""

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def log_offset(self) -> int:
        """Current size of the log: pass it as ``since`` to count only later requests."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def count_requests(
        self, method: str, path_substring: str, *, status: int | None = None, since: int = 0
    ) -> int:
        return count_requests(self.log_path, method, path_substring, status=status, since=since)

    def log_tail(self, lines: int = 30) -> str:
        return self.process.log_tail(lines)

    def alive(self) -> bool:
        return self.process.alive()

    def ready(self) -> bool:
        """``GET /v2/`` answers (200, or 401 when auth is on): the registry is serving."""
        return _ready(self.url)

    def detach(self) -> RegistryProcess:
        """Leave the registry running after this Python process exits (``stop()`` still works,
        by pid). Used by ``hack/registry.py start`` and the demo."""
        self.process.detach()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the registry (SIGTERM, then SIGKILL after ``timeout``). Safe to call twice."""
        try:
            self.process.stop(timeout)
        finally:
            pid_file = self.state_dir / PID_FILE
            with contextlib.suppress(FileNotFoundError, ValueError):
                if int(pid_file.read_text().strip()) == self.pid:
                    pid_file.unlink()

    def __enter__(self) -> RegistryProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _make_htpasswd(path: Path, user: str, password: str) -> None:
    tool = shutil.which("htpasswd")
    if tool is None:
        raise RegistryNotInstalledError(
            "htpasswd not found: run hack/install-deps.sh (Debian package apache2-utils)"
        )
    out = subprocess.run(
        [tool, "-Bbn", user, password], check=True, capture_output=True, text=True
    ).stdout
    path.write_text(out.strip() + "\n")
    path.chmod(0o600)


def _write_config(
    state_dir: Path,
    port: int,
    auth: bool,
    *,
    bind: str = "127.0.0.1",
    tls: tuple[Path, Path] | None = None,
    token: TokenAuth | None = None,
) -> Path:
    storage = state_dir / "data"
    storage.mkdir(parents=True, exist_ok=True)
    lines = [
        "version: 0.1",
        "log:",
        "  level: info",
        "  formatter: text",
        "  accesslog:",
        "    disabled: false",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {storage}",
        "  delete:",
        "    enabled: true",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "http:",
        f"  addr: {bind}:{port}",
        "  secret: imagegate-test-registry",
        "  headers:",
        "    X-Content-Type-Options: [nosniff]",
    ]
    if tls is not None:  # Go's server then speaks HTTP/2 too (ALPN h2)
        lines += ["  tls:", f"    certificate: {tls[0]}", f"    key: {tls[1]}"]
    if token is not None:
        lines += [
            "auth:",
            "  token:",
            f"    realm: {token.realm}",
            f"    service: {token.service}",
            f"    issuer: {token.issuer}",
            f"    rootcertbundle: {token.rootcertbundle}",
        ]
    elif auth:
        lines += [
            "auth:",
            "  htpasswd:",
            "    realm: imagegate-test",
            f"    path: {state_dir / HTPASSWD_FILE}",
        ]
    config = state_dir / CONFIG_FILE
    config.write_text("\n".join(lines) + "\n")
    return config


def _ready(url: str, context: ssl.SSLContext | None = None) -> bool:
    """``GET /v2/`` answers 200, or 401 when auth is on: the registry is serving."""
    try:
        with urllib.request.urlopen(f"{url}/v2/", timeout=1.0, context=context) as resp:
            return int(resp.status) == 200
    except urllib.error.HTTPError as e:
        return e.code == 401
    except (urllib.error.URLError, OSError):
        return False


def start_registry(
    state_dir: str | os.PathLike[str],
    port: int = 0,
    htpasswd: tuple[str, str] | None = None,
    *,
    timeout: float = 30.0,
    bind: str = "127.0.0.1",
    tls: tuple[Path, Path] | None = None,
    ca: Path | None = None,
    token: TokenAuth | None = None,
) -> RegistryProcess:
    """Start a registry storing under ``state_dir``, on 127.0.0.1:``port`` (0: a free port).

    With ``htpasswd=(user, password)`` the registry asks for Basic credentials (bcrypt
    htpasswd file made with ``htpasswd -Bbn``). Returns once ``GET /v2/`` answers.
    Raises ``RegistryNotInstalledError`` when the binary is missing and ``RegistryError``
    (with the log tail) when it does not come up.

    ``bind`` is the address listened on (imagegate speaks plain HTTP to loopback, so an HTTPS
    registry under test listens elsewhere); ``tls=(cert, key)`` serves HTTPS (and HTTP/2),
    checked ready with ``ca`` trusted; ``token`` (``tests.support.token_server``) asks for
    Bearer tokens from that token server instead of Basic credentials.
    """
    binary = find_registry_binary()
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    if htpasswd is not None:
        _make_htpasswd(state / HTPASSWD_FILE, *htpasswd)
    attempts = 1 if port else 3  # a free port can be taken by someone else before we bind it
    last_error: RegistryError | None = None
    for _ in range(attempts):
        try:
            return _start_once(
                binary, state, port or free_port(), htpasswd, timeout,
                bind=bind, tls=tls, ca=ca, token=token,
            )  # fmt: skip
        except RegistryError as e:
            last_error = e
            if "address already in use" not in str(e):
                raise
    assert last_error is not None
    raise last_error


def _start_once(
    binary: str,
    state: Path,
    port: int,
    htpasswd: tuple[str, str] | None,
    timeout: float,
    *,
    bind: str = "127.0.0.1",
    tls: tuple[Path, Path] | None = None,
    ca: Path | None = None,
    token: TokenAuth | None = None,
) -> RegistryProcess:
    config = _write_config(state, port, auth=htpasswd is not None, bind=bind, tls=tls, token=token)
    process = spawn(
        "registry", [binary, "serve", str(config)], state / LOG_FILE, marker=str(config)
    )
    reg = RegistryProcess(
        f"{bind}:{port}", state, config, process, htpasswd, "https" if tls else "http"
    )
    context = ssl.create_default_context(cafile=str(ca)) if tls and ca else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            reg.stop()
            raise RegistryError(
                f"registry exited with code {process.exit_code()} on {reg.host}; "
                f"log {reg.log_path}:\n{reg.log_tail()}"
            )
        if _ready(reg.url, context) if context else reg.ready():
            (state / PID_FILE).write_text(f"{process.pid}\n")
            (state / HOST_FILE).write_text(f"{reg.host}\n")
            return reg
        time.sleep(0.05)
    reg.stop()
    raise RegistryError(
        f"registry on {reg.host} did not answer GET /v2/ within {timeout:.0f}s; "
        f"log {reg.log_path}:\n{reg.log_tail()}"
    )


def attach(state_dir: str | os.PathLike[str]) -> RegistryProcess | None:
    """The registry that ``detach()`` left running under ``state_dir``, or None."""
    state = Path(state_dir).resolve()
    try:
        pid = int((state / PID_FILE).read_text().strip())
        host = (state / HOST_FILE).read_text().strip()
    except (FileNotFoundError, ValueError):
        return None
    config = state / CONFIG_FILE
    process = LoggedProcess("registry", pid, state / LOG_FILE, marker=str(config))
    if not process.alive():
        return None
    return RegistryProcess(host, state, config, process)


def default_state() -> Path:
    """``$IMAGEGATE_STATE/registry`` (``/tmp/imagegate/registry``)."""
    return Path(os.environ.get("IMAGEGATE_STATE", "/tmp/imagegate")) / "registry"
