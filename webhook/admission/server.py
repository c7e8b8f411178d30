"""Running the webhook app under uvicorn with HTTPS and certificate rotation, and the
plain-HTTP metrics port beside it in the same event loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
import uvloop
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from webhook.admission.metrics_port import MetricsServer
from webhook.admission.tls import CertFiles, CertReloader

log = logging.getLogger(__name__)


class _GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's head.

    uvicorn times out idle keep-alive connections but not a client that sends a request's
    head a byte at a time: 300 such clients would hold 300 connections for as long as they
    like. The head of every request must now arrive within `head_timeout` seconds of the
    connection (or of its first byte on a kept-alive one), else the connection is closed.

    One timer per connection, not per request: a request only notes when its head began (and
    that it is complete), and the timer, when it fires, closes the connection if a pending head
    is overdue or sets itself for when the pending one will be (arming and cancelling a timer
    per request cost a microsecond of every admission).
    """

    head_timeout = 10.0
    _head_timer: asyncio.TimerHandle | None = None
    _head_since: float | None = None  # loop time the pending head began; None: none pending

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_since = self.loop.time()
        self._head_timer = self.loop.call_at(self._head_since + self.head_timeout, self._check_head)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self._head_since = None
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and not isinstance(cycle.transport, _OneWrite):
            cycle.transport = _OneWrite(self.transport, cycle)  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _check_head(self) -> None:
        since, now = self._head_since, self.loop.time()
        # (the loop's clock has millisecond steps: a timer may fire a hair before its time)
        if since is not None and now - since >= self.head_timeout - 0.001:
            self._head_timer = None
            log.debug("closing a connection whose request head did not arrive in time")
            if not self.transport.is_closing():
                self.transport.close()
            return
        due = (now if since is None else since) + self.head_timeout
        self._head_timer = self.loop.call_at(due, self._check_head)


class _OneWrite:
    """The transport as one request/response cycle sees it: the response head is held until
    the first body write and goes out with it, as one `write`.

    uvicorn writes the status line and headers, then the body, as two writes: over TLS that is
    two records and two system calls per response, which on the admission hot path costs more
    than building the answer. A head is only held once the response has started (a
    `100 Continue` goes out at once) and never for HEAD requests (which have no body write);
    `close` sends a held head first, so an app that fails after starting a response leaves
    the same bytes on the wire as before.
    """

    __slots__ = ("_cycle", "_head", "_transport", "_waiting")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._waiting = True  # for the head of the response

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
            return
        if self._waiting and self._cycle.response_started:
            self._waiting = False
            if self._cycle.scope["method"] != "HEAD":
                self._head = data
                return
        self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def _flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _DrainingServer(uvicorn.Server):
    """uvicorn, except that SIGTERM stops it only after `delay` seconds of normal serving.

    A Pod being replaced gets SIGTERM while kube-proxy and the API server may still send it
    requests for a moment; closing the listener at once turns those into "connection refused",
    which failurePolicy Fail makes a refused admission. SIGINT or a second signal stop at once.
    """

    def __init__(self, config: uvicorn.Config, delay: float) -> None:
        super().__init__(config)
        self._delay = delay
        self._stop_at: float | None = None
        self._announced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self._delay > 0 and self._stop_at is None:
            self._stop_at = time.monotonic() + self._delay  # no logging in a signal handler
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._stop_at is not None and not self.should_exit:
            if not self._announced:
                self._announced = True
                log.info("SIGTERM: serving %.1f s more before shutting down", self._delay)
            if time.monotonic() >= self._stop_at:
                self.should_exit = True
        return await super().on_tick(counter)


def run(
    app: FastAPI,
    host: str,
    port: int,
    certs: CertFiles | None,
    reload_seconds: float,
    shutdown_delay: float = 0.0,
    head_timeout: float = 10.0,
    keep_alive: float = 120.0,
    *,
    metrics_port: int = 0,
    metrics: Callable[[], bytes | None] | None = None,
) -> None:
    """Serve until SIGTERM (after `shutdown_delay` seconds) or SIGINT. One worker: the registry
    caches live in this process. With `metrics_port` and `metrics` (the exposition, None
    until the app has started), `/metrics` is also served over plain HTTP on that port."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(certs.cert) if certs else None,
        ssl_keyfile=str(certs.key) if certs else None,
        http=type("GuardedHttpTools", (_GuardedHttpTools,), {"head_timeout": head_timeout}),
        log_config=None,  # JSON logging is configured by the CLI
        access_log=False,
        # The API server calls the webhook directly: no proxy to trust for X-Forwarded-For
        # (and one middleware less per request), and no server banner to hand out.
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=int(max(keep_alive, 1)),
    )
    config.load()
    server = _DrainingServer(config, shutdown_delay)

    async def main() -> None:
        watcher: asyncio.Task[None] | None = None
        if certs is not None and config.ssl is not None:
            watcher = asyncio.create_task(CertReloader(config.ssl, certs, reload_seconds).run())
        exporter = await _metrics_server(metrics, host, metrics_port)
        try:
            await server.serve()
        finally:
            if watcher is not None:
                watcher.cancel()
            if exporter is not None:
                await exporter.close()

    uvloop.run(main())


async def _metrics_server(
    metrics: Callable[[], bytes | None] | None, host: str, port: int
) -> MetricsServer | None:
    """The plain-HTTP metrics listener, started; None when off. A port that cannot be bound
    is logged, not fatal: admission (fail-closed in the cluster) matters more than scraping."""
    if not port or metrics is None:
        return None
    exporter = MetricsServer(metrics, host, port)
    try:
        await exporter.start()
    except OSError as err:
        log.error(
            "metrics port unavailable; /metrics stays on the HTTPS port only",
            extra={"port": port, "error": str(err)},
        )
        return None
    log.info("serving /metrics over plain HTTP", extra={"port": port})
    return exporter
