"""A registry that misbehaves on purpose, and a driver that measures `imagegate serve` under it.

`ChaosRegistry` is a real HTTP server on loopback. The first path segment of a repository
names the fault it serves (`<host>/<fault>/app:N`), so one server plays every hostile
registry at once:

* stalls and drips: `stall` (never answers), `drip` (a manifest a byte a second);
* statuses: `error500`, `ratelimit` (429 with `Retry-After`), `unauthorized` (401 without a
  challenge), `realm-ssrf` (a Bearer challenge whose realm is a link-local http:// URL);
* bodies: `gzip-garbage`, `deep-json`, `not-json`, `huge` (a Content-Length over the limit),
  `config-not-object`, `lying-digest` (a Docker-Content-Digest the body does not hash to);
* redirects: `redirect-loop` (the manifest), `blob-redirect-loop` (the config blob);
* `healthy`: a small valid image, the control.

`drive` sends reviews of those images through `imagegate serve` (TLS, concurrently) and
returns the figures: status counts, latency percentiles, and the server process's RSS and open
file descriptors before and after. `hack/chaos.py` (`make chaos`) runs it long and prints the
figures; `tests/integration/test_chaos.py` runs it briefly inside `make test`.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.small_image import CONFIG, OCI_MANIFEST, manifest, review, sha256
from tests.support.webhook import WebhookServer

FAULTS = (
    "healthy",
    "stall",
    "drip",
    "error500",
    "ratelimit",
    "unauthorized",
    "realm-ssrf",
    "gzip-garbage",
    "deep-json",
    "not-json",
    "huge",
    "config-not-object",
    "lying-digest",
    "redirect-loop",
    "blob-redirect-loop",
)


class ChaosRegistry:
    """Serves every fault of FAULTS on 127.0.0.1 (see the module doc); `close()` releases
    stalled handlers."""

    def __init__(self) -> None:
        self.release = threading.Event()
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                parts = self.path.split("/")  # /v2/<fault>/app/manifests/<ref>
                fault = parts[2] if len(parts) > 2 else ""
                registry.answer(self, fault, "/blobs/" in self.path)

        class Server(ThreadingHTTPServer):
            request_queue_size = 256
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def image(self, fault: str, n: int) -> str:
        return f"{self.host}/{fault}/app:{n}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def answer(self, h: BaseHTTPRequestHandler, fault: str, blob: bool) -> None:
        config = b"[1, 2, 3]" if fault == "config-not-object" else CONFIG
        if fault == "stall":
            self.release.wait(120)
            return
        if fault == "drip" and not blob:
            body = manifest(config)
            self._head(h, 200, {"Content-Type": OCI_MANIFEST}, len(body))
            for i in range(len(body)):
                if self.release.wait(1.0):
                    return
                try:
                    h.wfile.write(body[i : i + 1])
                    h.wfile.flush()
                except OSError:  # the webhook gave up on it, as it should
                    return
            return
        simple: dict[str, tuple[int, dict[str, str], bytes]] = {
            "error500": (500, {}, b"internal error: db password is hunter2"),
            "ratelimit": (429, {"Retry-After": "1"}, b'{"errors":[{"code":"TOOMANYREQUESTS"}]}'),
            "unauthorized": (401, {}, b"go away"),
            "realm-ssrf": (
                401,
                {"WWW-Authenticate": 'Bearer realm="http://169.254.169.254/latest/meta-data"'},
                b"",
            ),
            "gzip-garbage": (200, {"Content-Encoding": "gzip", "Content-Type": OCI_MANIFEST}, b"x"),
            "deep-json": (200, {"Content-Type": OCI_MANIFEST}, b"[" * 100_000 + b"]" * 100_000),
            "not-json": (200, {"Content-Type": OCI_MANIFEST}, b"<html>hello</html>"),
            "redirect-loop": (302, {"Location": h.path}, b""),
        }
        if fault in simple and not (blob and fault == "redirect-loop"):
            status, headers, body = simple[fault]
            self._send(h, status, headers, body)
        elif fault == "huge" and not blob:
            self._head(h, 200, {"Content-Type": OCI_MANIFEST}, 50 * 1024 * 1024)
        elif blob and fault == "blob-redirect-loop":
            self._send(h, 302, {"Location": h.path}, b"")
        elif blob:
            self._send(h, 200, {"Content-Type": "application/octet-stream"}, config)
        else:
            body = manifest(config)
            headers = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha256(body)}
            if fault == "lying-digest":
                headers["Docker-Content-Digest"] = "sha256:" + "f" * 64
            self._send(h, 200, headers, body)

    def _head(
        self, h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], length: int
    ) -> None:
        h.send_response(status)
        for name, value in headers.items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(length))
        h.end_headers()

    def _send(
        self, h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes
    ) -> None:
        self._head(h, status, headers, len(body))
        if h.command != "HEAD":
            h.wfile.write(body)


@dataclass
class Figures:
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    rss_mb: tuple[float, float] = (0.0, 0.0)
    fds: tuple[int, int] = (0, 0)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(int(len(ordered) * q) - 1, 0)] if ordered else 0.0

    def summary(self) -> str:
        return (
            f"{len(self.latencies)} reviews, statuses {dict(sorted(self.statuses.items()))}, "
            f"malformed answers {len(self.malformed)}, "
            f"p50 {statistics.median(self.latencies) * 1000:.0f} ms, "
            f"p99 {self.percentile(0.99) * 1000:.0f} ms, "
            f"RSS {self.rss_mb[0]:.0f} -> {self.rss_mb[1]:.0f} MB, "
            f"open fds {self.fds[0]} -> {self.fds[1]}"
        )


def process_figures(pid: int) -> tuple[float, int]:
    """RSS (MB) and open file descriptors of process `pid`."""
    rss = 0.0
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


async def drive(
    server: WebhookServer, registry: ChaosRegistry, rounds: int, concurrency: int = 16
) -> Figures:
    """Send `rounds` reviews per fault (unique tags: nothing is served from cache) plus one
    review naming every fault at once per round; check every answer's shape."""
    figures = Figures()
    pid = server.process.pid
    rss_before, fds_before = process_figures(pid)
    reviews = [
        review({"image": registry.image(f, n)}, namespace="chaos")
        for n in range(rounds)
        for f in FAULTS
    ]
    reviews += [
        review(*({"image": registry.image(f, 1000 + n)} for f in FAULTS), namespace="chaos")
        for n in range(rounds)
    ]
    limit = asyncio.Semaphore(concurrency)
    async with server.async_client() as http:

        async def one(body: dict[str, Any]) -> None:
            async with limit:
                started = time.perf_counter()
                answer = await http.post("/validate", json=body)
                figures.latencies.append(time.perf_counter() - started)
            figures.statuses[answer.status_code] = figures.statuses.get(answer.status_code, 0) + 1
            try:
                data = answer.json()
                assert data["response"]["uid"] == body["request"]["uid"]
                assert isinstance(data["response"]["allowed"], bool)
            except (ValueError, KeyError, AssertionError):
                figures.malformed.append(answer.text[:200])

        await asyncio.gather(*(one(body) for body in reviews))
    await asyncio.sleep(1.0)  # let abandoned fetches be cancelled and connections close
    rss_after, fds_after = process_figures(pid)
    figures.rss_mb, figures.fds = (rss_before, rss_after), (fds_before, fds_after)
    return figures
