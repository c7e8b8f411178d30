"""Slow and vanishing clients against a real `imagegate serve` (issue 13.4).

A client that sends its request head or body a byte at a time must not hold a connection (and
a worker slot) for as long as it likes; one that disconnects mid-request is routine, not an
ERROR with a traceback. The server runs with 1 s limits so the tests are quick.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.support.webhook import WebhookServer, start_webhook

LIMIT = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookServer]:
    env = {
        "IMAGEGATE_WEBHOOK_HEADER_TIMEOUT_SECONDS": str(LIMIT),
        "IMAGEGATE_WEBHOOK_BODY_TIMEOUT_SECONDS": str(LIMIT),
    }
    webhook = start_webhook(tmp_path_factory.mktemp("slow"), [], env=env)
    yield webhook
    webhook.stop()


def connect(server: WebhookServer) -> ssl.SSLSocket:
    parts = urlsplit(server.url)
    context = ssl.create_default_context(cafile=str(server.ca))
    raw = socket.create_connection((parts.hostname, parts.port), timeout=10)
    return context.wrap_socket(raw, server_hostname=parts.hostname)


def closed_within(sock: ssl.SSLSocket, seconds: float) -> float:
    """Seconds until the server closed `sock` (reading nothing more), failing after `seconds`."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except (ConnectionResetError, ssl.SSLError, OSError):
        pass
    return time.monotonic() - started


def test_a_client_dribbling_its_request_head_is_cut_off(server: WebhookServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /validate HTTP/1.1\r\nHost: imagegate\r\n")
        started = time.monotonic()
        cut = False
        for byte in b"X-Slow: " + b"a" * 40:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                cut = True
                break
            time.sleep(0.1)
            if time.monotonic() - started > 4 * LIMIT:
                break
        elapsed = time.monotonic() - started if cut else closed_within(sock, 4 * LIMIT)
    assert elapsed < 3 * LIMIT


def test_a_client_dribbling_its_body_gets_408(server: WebhookServer) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /validate HTTP/1.1\r\nHost: imagegate\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b"{" * 10
        )
        sock.settimeout(4 * LIMIT)
        started = time.monotonic()
        answer = sock.recv(4096)
        assert time.monotonic() - started < 3 * LIMIT
        while b"not received" not in answer and (more := sock.recv(4096)):
            answer += more
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"not received within 1 s" in answer


def test_a_client_that_disconnects_mid_body_is_no_error(server: WebhookServer) -> None:
    before = len(server.logs())
    for _ in range(5):
        with connect(server) as sock:
            sock.sendall(
                b"POST /validate HTTP/1.1\r\nHost: imagegate\r\nContent-Length: 1000\r\n\r\n{"
            )
    time.sleep(2 * LIMIT)
    with server.client() as http:  # still serving
        assert http.get("/healthz").status_code == 200
    logged = server.logs()[before:]
    assert "Traceback" not in logged
    assert '"levelname": "ERROR"' not in logged
