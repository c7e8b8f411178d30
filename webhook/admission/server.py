"""Running the webhook app under uvicorn with HTTPS and certificate rotation."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from types import FrameType

import uvicorn
import uvloop
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from webhook.admission.tls import CertFiles, CertReloader

log = logging.getLogger(__name__)


class _GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's head.

    uvicorn times out idle keep-alive connections but not a client that sends a request's
    head a byte at a time: 300 such clients would hold 300 connections for as long as they
    like. The head of every request must now arrive within `head_timeout` seconds of the
    connection (or of its first byte on a kept-alive one), else the connection is closed.
    """

    head_timeout = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        log.debug("closing a connection whose request head did not arrive in time")
        if not self.transport.is_closing():
            self.transport.close()


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
    keep_alive: float = 5.0,
) -> None:
    """Serve until SIGTERM (after `shutdown_delay` seconds) or SIGINT. One worker: the registry
    caches live in this process."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(certs.cert) if certs else None,
        ssl_keyfile=str(certs.key) if certs else None,
        http=type("GuardedHttpTools", (_GuardedHttpTools,), {"head_timeout": head_timeout}),
        log_config=None,  # JSON logging is configured by the CLI
        access_log=False,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=int(max(keep_alive, 1)),
    )
    config.load()
    server = _DrainingServer(config, shutdown_delay)

    async def main() -> None:
        watcher: asyncio.Task[None] | None = None
        if certs is not None and config.ssl is not None:
            watcher = asyncio.create_task(CertReloader(config.ssl, certs, reload_seconds).run())
        try:
            await server.serve()
        finally:
            if watcher is not None:
                watcher.cancel()

    uvloop.run(main())
