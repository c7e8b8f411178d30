"""Running the webhook app under uvicorn with HTTPS and certificate rotation."""

from __future__ import annotations

import asyncio

import uvicorn
import uvloop
from fastapi import FastAPI

from webhook.admission.tls import CertFiles, CertReloader


def run(app: FastAPI, host: str, port: int, certs: CertFiles | None, reload_seconds: float) -> None:
    """Serve until SIGTERM/SIGINT. One worker: the registry caches live in this process."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(certs.cert) if certs else None,
        ssl_keyfile=str(certs.key) if certs else None,
        http="httptools",
        log_config=None,  # JSON logging is configured by the CLI
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    config.load()
    server = uvicorn.Server(config)

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
