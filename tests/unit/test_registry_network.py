"""The registry connections' asyncio network backend (webhook.registry.network), on real sockets
and on both event loops the code runs on (asyncio: CLI and tests; uvloop: the webhook)."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvloop

from tests.support.certs import TestCA
from webhook.registry import network
from webhook.registry.auth import Keyring
from webhook.registry.client import RegistryClient
from webhook.registry.network import PooledTransport
from webhook.registry.reference import Reference
from webhook.registry.tls import registry_ssl_context
from webhook.settings import RegistrySettings

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def loop(request: pytest.FixtureRequest) -> Iterator[asyncio.AbstractEventLoop]:
    lp = LOOPS[request.param]()
    yield lp
    lp.close()


def _client(timeout: float = 5.0) -> httpx.AsyncClient:
    transport = PooledTransport(
        verify=registry_ssl_context(None), http2=True, limits=httpx.Limits(keepalive_expiry=60)
    )
    return httpx.AsyncClient(transport=transport, timeout=timeout)


class _Server:
    """A plain HTTP server on loopback that counts the connections it accepts."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.accepted = 0
        self.url = ""
        self.ssl: ssl.SSLContext | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> _Server:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.ssl)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        try:
            await self.handler(reader, writer)
        finally:
            writer.close()


def _answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def test_a_connection_is_reused_and_one_the_server_closed_is_replaced(
    loop: asyncio.AbstractEventLoop,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):  # two requests on this connection, then hang up while idle
            await reader.readuntil(b"\r\n\r\n")
            writer.write(_answer(b"ok"))
            await writer.drain()

    async def main() -> tuple[list[bytes], int]:
        async with _Server(handler) as server, _client() as client:
            bodies = []
            for _ in range(2):
                bodies.append((await client.get(server.url)).content)
            await asyncio.sleep(0.2)  # the close reaches us: the idle connection is readable
            bodies.append((await client.get(server.url)).content)
            return bodies, server.accepted

    bodies, connections = loop.run_until_complete(main())
    assert bodies == [b"ok", b"ok", b"ok"]
    assert connections == 2


def test_a_server_that_never_answers_is_a_read_timeout(loop: asyncio.AbstractEventLoop) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(5)

    async def main() -> float:
        async with _Server(handler) as server, _client(timeout=0.3) as client:
            started = loop.time()
            with pytest.raises(httpx.ReadTimeout):
                await client.get(server.url)
            return loop.time() - started

    assert 0.25 <= loop.run_until_complete(main()) < 2.0


def test_an_unreachable_port_is_a_connect_error(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> None:
        async with _Server(lambda r, w: asyncio.sleep(0)) as server:
            url = server.url
        async with _client() as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(url)

    loop.run_until_complete(main())


def test_a_large_body_read_slowly_arrives_whole_with_the_socket_paused(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = hashlib.sha256(b"seed").digest() * (8 * 1024 * 1024 // 32)  # 8 MiB
    held: list[int] = []
    received = network._Protocol.data_received

    def data_received(self: network._Protocol, data: bytes) -> None:
        received(self, data)
        held.append(len(self.buffer))

    monkeypatch.setattr(network._Protocol, "data_received", data_received)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(_answer(body))
        await writer.drain()

    async def main() -> tuple[str, int]:
        async with (
            _Server(handler) as server,
            _client() as client,
            client.stream("GET", server.url) as response,
        ):
            digest = hashlib.sha256()
            pieces = 0
            async for chunk in response.aiter_raw():
                digest.update(chunk)
                pieces += 1
                if pieces % 16 == 0:
                    await asyncio.sleep(0.001)  # a slow consumer (a layer into a file)
            return digest.hexdigest(), pieces

    digest, pieces = loop.run_until_complete(main())
    assert digest == hashlib.sha256(body).hexdigest()
    assert pieces > 8
    # the socket stops being read at the high-water mark: memory is bounded, not the body
    assert max(held) <= network._HIGH_WATER + 1024 * 1024 < len(body)


def test_registries_are_still_reached_through_an_environment_proxy(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpx honours HTTP(S)_PROXY only with its own transport: with one set, the registry
    client keeps it (and the proxy sees the registry request), as before the asyncio backend."""
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b"\r\n", 1)[0])
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async def main() -> int:
        async with _Server(proxy) as server:
            monkeypatch.setenv("HTTP_PROXY", server.url)
            client = RegistryClient(RegistrySettings(), Keyring.empty())
            ref = Reference.parse("127.0.0.1:9/proxied/app:1")
            try:
                reply = await client.transport.request(
                    "GET", ref, "manifests/1", what="manifest", retry=False
                )
            finally:
                await client.aclose()
            return reply.status

    assert loop.run_until_complete(main()) == 404
    assert seen == [b"GET http://127.0.0.1:9/v2/proxied/app/manifests/1 HTTP/1.1"]


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "h2"])
def test_a_large_body_over_tls_read_slowly_arrives_whole(
    loop: asyncio.AbstractEventLoop, tmp_path: Path, http2: bool
) -> None:
    """Over TLS the socket is paused and resumed through the TLS transport (pausing the TCP
    one underneath would stall the download for good)."""
    ca = TestCA.create(tmp_path / "ca")
    cert, key = ca.issue(tmp_path / "server", ["127.0.0.1"])
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    served.set_alpn_protocols(["http/1.1"])  # the h2 client falls back to HTTP/1.1
    body = hashlib.sha256(b"tls").digest() * (4 * 1024 * 1024 // 32)  # 4 MiB

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(_answer(body))
        await writer.drain()

    async def main() -> str:
        server = _Server(handler)
        server.ssl = served
        transport = PooledTransport(
            verify=registry_ssl_context(ca.cert_path), http2=http2, limits=httpx.Limits()
        )
        async with server, httpx.AsyncClient(transport=transport, timeout=10) as client:
            url = server.url.replace("http://", "https://")
            async with client.stream("GET", url) as response:
                digest = hashlib.sha256()
                async for chunk in response.aiter_raw():
                    digest.update(chunk)
                    await asyncio.sleep(0.0005)
                return digest.hexdigest()

    assert loop.run_until_complete(main()) == hashlib.sha256(body).hexdigest()


def test_a_peer_that_stops_reading_an_upload_is_a_write_timeout(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """A layer push to a registry that stops reading waits (writes pause), then times out."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(5)  # never reads the body

    async def main() -> float:
        async with _Server(handler) as server, _client(timeout=0.5) as client:
            started = loop.time()
            with pytest.raises(httpx.WriteTimeout):
                await client.put(server.url, content=b"x" * (64 * 1024 * 1024))
            return loop.time() - started

    assert 0.4 <= loop.run_until_complete(main()) < 4.0
