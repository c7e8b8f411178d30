"""A real `imagegate serve` process (uvicorn, HTTPS, self-signed) for the webhook tests."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from hack.registry import free_port
from webhook.admission.tls import CertFiles


@dataclass
class WebhookServer:
    url: str
    ca: Path
    log: Path
    process: subprocess.Popen[bytes]

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self._trust(), timeout=30, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, verify=self._trust(), timeout=60, **kwargs)

    def _trust(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_webhook(
    directory: Path,
    args: list[str],
    env: dict[str, str] | None = None,
    *,
    certs: CertFiles | None = None,
    port: int | None = None,
) -> WebhookServer:
    """Start `imagegate serve` on 127.0.0.1 and wait for /healthz.

    Without `certs` the server makes its own (`--self-signed`); without a Kubernetes API
    (`IMAGEGATE_WEBHOOK_KUBERNETES=off` unless `env` says otherwise).
    """
    port = port or free_port()
    log = directory / "serve.log"
    environment = {**os.environ, "IMAGEGATE_WEBHOOK_KUBERNETES": "off", **(env or {})}
    if certs is None:
        tls = ["--self-signed", "--san", "127.0.0.1", "--cert-dir", str(directory / "tls")]
        ca = directory / "tls" / "ca.crt"
    else:
        assert certs.ca is not None
        tls, ca = ["--tls-cert", str(certs.cert), "--tls-key", str(certs.key)], certs.ca
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "webhook", "serve", *tls,
             "--host", "127.0.0.1", "--port", str(port), *args],
            stdout=out, stderr=subprocess.STDOUT, env=environment,
        )  # fmt: skip
    server = WebhookServer(f"https://127.0.0.1:{port}", ca, log, process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"imagegate serve exited {process.returncode}:\n{server.logs()}")
        try:
            with server.client() as http:
                if http.get("/healthz").status_code == 200:
                    return server
        except (httpx.TransportError, OSError):
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"imagegate serve did not answer /healthz:\n{server.logs()}")
