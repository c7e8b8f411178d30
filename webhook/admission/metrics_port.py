"""`GET /metrics` over plain HTTP on a port of its own, in the webhook's event loop.

Prometheus (a ServiceMonitor or PodMonitor) scrapes plain HTTP without the webhook's CA, and a
NetworkPolicy can open the metrics port to the monitoring namespace while the admission port
stays open to the API server only. One scrape is one small GET, so this is a deliberately tiny
HTTP/1.1 server (asyncio streams, one request per connection) rather than a second uvicorn,
which would fight the first over signal handlers. It serves `/metrics` and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


class MetricsServer:
    """Serves `render()` (the Prometheus text exposition; None while the app starts: 503)."""

    def __init__(
        self,
        render: Callable[[], bytes | None],
        host: str,
        port: int,
        *,
        timeout: float = 10.0,
    ) -> None:
        self._render = render
        self._host = host
        self._port = port
        self._timeout = timeout  # for the request head, and for writing the answer
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (the one asked for, or the one picked for port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Bind and listen; `OSError` when the port cannot be bound."""
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=MAX_HEAD_BYTES
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), self._timeout)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(self._timeout):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return  # slow, truncated or oversized: just close
            status, body, extra = self._answer(head)
            reason = _REASONS[status]
            content_type = CONTENT_TYPE_LATEST if status == 200 else "text/plain; charset=utf-8"
            lines = [
                f"HTTP/1.1 {status} {reason}",
                f"Content-Type: {content_type}",
                f"Content-Length: {len(body)}",
                "Connection: close",
                *extra,
            ]
            method = head.split(b" ", 1)[0]
            payload = ("\r\n".join(lines) + "\r\n\r\n").encode() + (
                b"" if method == b"HEAD" else body
            )
            writer.write(payload)
            async with asyncio.timeout(self._timeout):
                await writer.drain()
        except (ConnectionError, TimeoutError):
            pass
        except Exception as err:  # a scrape must never take the webhook down
            log.warning("metrics request failed", extra={"error": repr(err)})
        finally:
            writer.close()

    def _answer(self, head: bytes) -> tuple[int, bytes, list[str]]:
        request_line = head.split(b"\r\n", 1)[0]
        fields = request_line.split(b" ")
        if len(fields) != 3 or not fields[2].startswith(b"HTTP/1."):
            return 400, b"not an HTTP/1.x request\n", []
        method, target = fields[0], fields[1]
        if target.split(b"?", 1)[0] != b"/metrics":
            return 404, b"only /metrics is served on this port\n", []
        if method not in (b"GET", b"HEAD"):
            return 405, b"GET /metrics\n", ["Allow: GET, HEAD"]
        body = self._render()
        if body is None:
            return 503, b"imagegate is starting\n", []
        return 200, body, []
