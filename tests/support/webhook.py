"""A real `imagegate serve` process (uvicorn, HTTPS) for the webhook, e2e tests and the bench."""

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
import yaml

from tests.support.manifests import image_policy
from tests.support.processes import LoggedProcess, free_port, spawn
from webhook.admission.tls import CertFiles


@dataclass
class WebhookServer:
    url: str
    ca: Path
    proc: LoggedProcess

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self.proc.popen is not None
        return self.proc.popen

    @property
    def log(self) -> Path:
        return self.proc.log_path

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self._trust(), timeout=30, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, verify=self._trust(), timeout=60, **kwargs)

    def _trust(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def logs(self) -> str:
        return self.proc.logs()

    def stop(self) -> None:
        self.proc.stop(10)

    def wait_ready(self, policy: str | None = None, timeout: float = 30) -> None:
        """Wait until ``/readyz`` answers 200 (and lists ImagePolicy ``policy``, when given)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.client() as http:
                answer = http.get("/readyz")
            if answer.status_code == 200 and (
                policy is None or policy in answer.json().get("policies", [])
            ):
                return
            time.sleep(0.2)
        wanted = f"loaded ImagePolicy {policy}" if policy else "became ready"
        raise RuntimeError(f"the webhook never {wanted}:\n{self.logs()}")


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
    # No plain-HTTP metrics listener unless asked: parallel servers would all try port 8081.
    defaults = {"IMAGEGATE_WEBHOOK_KUBERNETES": "off", "IMAGEGATE_WEBHOOK_METRICS_PORT": "0"}
    environment = {**os.environ, **defaults, **(env or {})}
    if certs is None:
        tls = ["--self-signed", "--san", "127.0.0.1", "--cert-dir", str(directory / "tls")]
        ca = directory / "tls" / "ca.crt"
    else:
        assert certs.ca is not None
        tls, ca = ["--tls-cert", str(certs.cert), "--tls-key", str(certs.key)], certs.ca
    argv = [sys.executable, "-m", "webhook", "serve", *tls,
            "--host", "127.0.0.1", "--port", str(port), *args]  # fmt: skip
    proc = spawn("imagegate serve", argv, directory / "serve.log", env=environment)
    server = WebhookServer(f"https://127.0.0.1:{port}", ca, proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"imagegate serve exited {proc.exit_code()}:\n{server.logs()}")
        try:
            with server.client() as http:
                if http.get("/healthz").status_code == 200:
                    return server
        except (httpx.TransportError, OSError):
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"imagegate serve did not answer /healthz:\n{server.logs()}")


def start_catch_all_webhook(directory: Path, base: str, env: dict[str, str]) -> WebhookServer:
    """`start_webhook` with one enforce ImagePolicy without `match`, approving `base`: it
    applies to every namespace, so whatever it admits unchecked, an exemption admitted."""
    everywhere = directory / "everywhere.yaml"
    everywhere.write_text(yaml.safe_dump(image_policy("everywhere", {}, base, mode="enforce")))
    return start_webhook(directory, ["--policy", str(everywhere)], env)
