"""The lean plain-HTTP client (webhook/registry/lean.py) against a real socket server that
answers with exactly the bytes each test scripts: well-formed, broken and hostile answers."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest

from webhook.errors import InvalidImageData, RegistryError
from webhook.registry.lean import MAX_HEADER_BYTES, LeanHTTP
from webhook.registry.transport import _decoded, _host_port

Script = Callable[[bytes], bytes | None]  # request head → bytes to send (None: close)


@dataclass
class Scripted:
    """A TCP server answering each request head with `answer(head)`; None closes."""

    answer: Script
    port: int = 0
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    close_after_answer: bool = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                reply = self.answer(head)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(
    answer: Script, host: str = "127.0.0.1", **kwargs: bool
) -> AsyncIterator[Scripted]:
    scripted = Scripted(answer, **kwargs)
    server = await asyncio.start_server(scripted.handle, host, 0)
    scripted.port = server.sockets[0].getsockname()[1]
    try:
        yield scripted
    finally:
        server.close()


def ok(body: bytes, *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *extra, "", ""]
    return "\r\n".join(head).encode() + body


async def get(lean: LeanHTTP, port: int, cap: int = 1024) -> tuple[int, bytes]:
    reply = await lean.get("127.0.0.1", port, "/v2/app/manifests/1", [("Accept", "x/y")], cap)
    return reply.status, reply.body


async def test_answers_come_back_and_one_connection_serves_them_all() -> None:
    async with serving(lambda head: ok(b'{"a":1}')) as server:
        lean = LeanHTTP(90, "imagegate/test")
        for _ in range(3):
            assert await get(lean, server.port) == (200, b'{"a":1}')
        await lean.aclose()
    assert server.connections == 1
    assert server.heads[0].startswith(b"GET /v2/app/manifests/1 HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in server.heads[0]
    assert b"\r\nAccept: x/y\r\n" in server.heads[0]
    assert b"accept-encoding" not in server.heads[0].lower()  # no compression asked for


async def test_chunked_and_connection_delimited_bodies_are_read_whole() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    async with serving(lambda head: chunked) as server:
        assert await get(LeanHTTP(90, "t"), server.port) == (200, b"abcde")
    until_close = b"HTTP/1.1 200 OK\r\n\r\nto the end"
    async with serving(lambda head: until_close, close_after_answer=True) as server:
        lean = LeanHTTP(90, "t")
        assert await get(lean, server.port) == (200, b"to the end")
        assert await get(lean, server.port) == (200, b"to the end")
    assert server.connections == 2  # a body that ended with its connection: not reused


@pytest.mark.parametrize(
    ("reply", "error", "says"),
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..",
            httpx.ReadError,
            "closed the connection mid-answer",
            id="cut-mid-body",
        ),
        pytest.param(b"", httpx.ReadError, "mid-answer", id="closed-without-answer"),
        pytest.param(
            b"SSH-2.0-OpenSSH\r\n\r\n", httpx.RemoteProtocolError, "malformed", id="garbage"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n",
            httpx.RemoteProtocolError,
            "headers over",
            id="endless-headers",
        ),
    ],
)
async def test_broken_answers_are_httpx_errors(
    reply: bytes, error: type[Exception], says: str
) -> None:
    async with serving(lambda head: reply, close_after_answer=True) as server:
        lean = LeanHTTP(90, "t")
        with pytest.raises(error, match=says):
            await get(lean, server.port)


async def test_a_body_over_the_cap_is_cut_and_its_connection_closed() -> None:
    async with serving(lambda head: ok(b"x" * 5000)) as server:
        lean = LeanHTTP(90, "t")
        status, body = await get(lean, server.port, cap=100)
        assert (status, len(body)) == (200, 101)  # enough for the caller to refuse it
        await get(lean, server.port, cap=10_000)
    assert server.connections == 2


async def test_bytes_after_an_answer_close_the_connection() -> None:
    smuggled = ok(b"first") + ok(b"second, never asked for")
    async with serving(lambda head: smuggled) as server:
        lean = LeanHTTP(90, "t")
        assert await get(lean, server.port) == (200, b"first")
        await asyncio.sleep(0.05)
        assert await get(lean, server.port) == (200, b"first")  # a fresh connection
    assert server.connections == 2


async def test_a_connection_the_registry_dropped_while_idle_is_replaced() -> None:
    async with serving(lambda head: ok(b"{}"), close_after_answer=True) as server:
        lean = LeanHTTP(90, "t")
        await get(lean, server.port)
        await asyncio.sleep(0.05)  # the server's close has arrived
        assert await get(lean, server.port) == (200, b"{}")
    assert server.connections == 2


async def test_idle_connections_expire_after_keepalive_seconds() -> None:
    async with serving(lambda head: ok(b"{}")) as server:
        lean = LeanHTTP(0.05, "t")
        await get(lean, server.port)
        await asyncio.sleep(0.1)
        await get(lean, server.port)
    assert server.connections == 2


async def test_a_cancelled_exchange_never_leaves_its_connection_for_reuse() -> None:
    def stall_first(head: bytes) -> bytes | None:
        return b"" if len(server.heads) == 1 else ok(b"late")

    async with serving(stall_first) as server:
        lean = LeanHTTP(90, "t")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await get(lean, server.port)
        assert await get(lean, server.port) == (200, b"late")
    assert server.connections == 2


@pytest.mark.parametrize(
    "header", [("Authorization", "Bearer a\r\nX-Injected: 1"), ("Accept", "a\nb"), ("A", "\0")]
)
async def test_a_header_with_line_breaks_is_refused_before_sending(
    header: tuple[str, str],
) -> None:
    async with serving(lambda head: ok(b"{}")) as server:
        lean = LeanHTTP(90, "t")
        with pytest.raises(httpx.LocalProtocolError, match="CR, LF or NUL"):
            await lean.get("127.0.0.1", server.port, "/v2/x", [header], 100)
    assert server.heads == []


def test_compressed_bodies_are_decoded_within_the_cap() -> None:
    assert _decoded(gzip.compress(b"manifest"), "gzip", 100) == b"manifest"
    assert _decoded(zlib.compress(b"manifest"), "deflate", 100) == b"manifest"
    bomb = gzip.compress(b"\0" * 10_000_000)
    assert len(_decoded(bomb, "gzip", 1001)) == 1001  # the caller refuses it as too large
    with pytest.raises(httpx.DecodingError, match="ends early"):
        _decoded(gzip.compress(b"manifest")[:-12], "gzip", 100)
    with pytest.raises(httpx.DecodingError, match="br-encoded"):
        _decoded(b"...", "br", 100)


async def test_through_the_transport_errors_keep_their_meaning() -> None:
    """A registry on loopback speaks plain HTTP: the registry client's reads go lean."""
    from tests.unit.test_registry_client_faults import make_settings
    from webhook.registry.auth import Keyring
    from webhook.registry.client import RegistryClient
    from webhook.registry.reference import Reference

    big = ok(b"{" + b" " * 9000 + b"}", "Content-Type: application/vnd.oci.image.manifest.v1+json")
    async with serving(lambda head: big) as server:
        settings = make_settings(max_manifest_bytes=4096)
        async with RegistryClient(settings, Keyring.empty()) as client:
            assert client.transport._lean is not None
            with pytest.raises(InvalidImageData, match="over the limit 4096"):
                await client.get_manifest(Reference.parse(f"127.0.0.1:{server.port}/app:1"))
    garbage = serving(lambda head: b"nonsense\r\n\r\n", close_after_answer=True)
    async with garbage as server, RegistryClient(make_settings(retries=0), Keyring.empty()) as c:
        with pytest.raises(RegistryError, match=r"cannot reach registry .*malformed"):
            await c.get_manifest(Reference.parse(f"127.0.0.1:{server.port}/app:1"))


def test_registry_hosts_split_into_host_and_port() -> None:
    assert _host_port("127.0.0.1:5000") == ("127.0.0.1", 5000)
    assert _host_port("Registry.Local") == ("registry.local", 80)
    assert _host_port("[::1]:5001") == ("::1", 5001)
    assert _host_port("host:notaport") is None
    assert _host_port("host:99999") is None


async def test_an_ipv6_registry_is_reached_with_a_bracketed_host_header() -> None:
    async with serving(lambda head: ok(b"{}"), host="::1") as server:
        lean = LeanHTTP(90, "t")
        reply = await lean.get("::1", server.port, "/v2/app/manifests/1", [], 100)
        assert (reply.status, reply.body) == (200, b"{}")
    assert f"\r\nHost: [::1]:{server.port}\r\n".encode() in server.heads[0]
