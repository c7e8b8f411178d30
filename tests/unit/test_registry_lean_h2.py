"""The lean client's HTTP/2 path (webhook/registry/lean.py) against a real TLS socket server
speaking HTTP/2 with the h2 library, answering each stream as the test scripts: well-formed,
reset, cut, oversized, GOAWAY; and a TLS server without HTTP/2 (the origin goes to httpx)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import httpx
import pytest

from tests.support.certs import TestCA
from webhook.registry.lean import LeanHTTP

# stream's request headers → what to do: ("answer", status, headers, body) | ("reset",) |
# ("goaway",) | ("close",)
Plan = Callable[[dict[bytes, bytes]], tuple]


@dataclass
class H2Server:
    plan: Plan
    alpn: list[str]
    port: int = 0
    connections: int = 0
    open_connections: int = 0
    max_streams: int = 100
    requests: list[dict[bytes, bytes]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # answers "hold" streams
    held: list[asyncio.Future[None]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_connections += 1
        try:
            await self._serve(reader, writer)
        finally:
            self.open_connections -= 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams})
        writer.write(conn.data_to_send())
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        headers = dict(event.headers)
                        self.requests.append(headers)
                        act = self.plan(headers)
                        if act[0] == "hold":
                            self.held.append(
                                asyncio.ensure_future(self._later(conn, writer, event.stream_id))
                            )
                        elif not self._act(conn, writer, event.stream_id, act):
                            return
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _later(
        self, conn: h2.connection.H2Connection, writer: asyncio.StreamWriter, sid: int
    ) -> None:
        await self.release.wait()
        conn.send_headers(sid, [(b":status", b"200"), (b"content-length", b"4")])
        conn.send_data(sid, b"late", end_stream=True)
        writer.write(conn.data_to_send())

    @staticmethod
    def _act(
        conn: h2.connection.H2Connection, writer: asyncio.StreamWriter, sid: int, act: tuple
    ) -> bool:
        if act[0] == "answer":
            _, status, headers, body = act
            conn.send_headers(sid, [(b":status", str(status).encode()), *headers])
            conn.send_data(sid, body, end_stream=True)
        elif act[0] == "reset":
            conn.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
        elif act[0] == "goaway":
            conn.close_connection()
        elif act[0] == "half":  # headers and part of the body, then the connection drops
            conn.send_headers(sid, [(b":status", b"200"), (b"content-length", b"100")])
            conn.send_data(sid, b"only ten..")
            writer.write(conn.data_to_send())
            writer.close()
            return False
        return True


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestCA, Path, Path]:
    directory = tmp_path_factory.mktemp("h2ca")
    authority = TestCA.create(directory / "ca")
    cert, key = authority.issue(directory / "serving", ["127.0.0.1"])
    return authority, cert, key


@asynccontextmanager
async def serving(
    ca: tuple[TestCA, Path, Path], plan: Plan, alpn: list[str] | None = None, max_streams: int = 100
) -> AsyncIterator[H2Server]:
    _, cert, key = ca
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server_alpn = ["h2"] if alpn is None else alpn
    if server_alpn:
        context.set_alpn_protocols(server_alpn)
    h2server = H2Server(plan, server_alpn, max_streams=max_streams)
    server = await asyncio.start_server(h2server.handle, "127.0.0.1", 0, ssl=context)
    h2server.port = server.sockets[0].getsockname()[1]
    try:
        yield h2server
    finally:
        server.close()


def client(ca: tuple[TestCA, Path, Path], keepalive: float = 90) -> LeanHTTP:
    context = ssl.create_default_context(cafile=str(ca[0].cert_path))
    return LeanHTTP(keepalive, "imagegate/test", context)


def answer(body: bytes, status: int = 200) -> Plan:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return lambda request: ("answer", status, headers, body)


async def get(
    lean: LeanHTTP, port: int, cap: int = 1024, path: str = "/v2/a/manifests/1"
) -> tuple[int, bytes]:
    reply = await lean.get_h2("127.0.0.1", port, path, [("Accept", "x/y")], cap)
    return reply.status, reply.body


async def test_parallel_gets_share_one_connection(ca: tuple[TestCA, Path, Path]) -> None:
    async with serving(ca, answer(b'{"a":1}')) as server:
        lean = client(ca)
        replies = await asyncio.gather(*(get(lean, server.port) for _ in range(8)))
        assert replies == [(200, b'{"a":1}')] * 8
        assert await get(lean, server.port) == (200, b'{"a":1}')
        await lean.aclose()
    assert server.connections == 1
    first = server.requests[0]
    assert (first[b":method"], first[b":scheme"], first[b":path"]) == (
        b"GET",
        b"https",
        b"/v2/a/manifests/1",
    )
    assert first[b":authority"] == f"127.0.0.1:{server.port}".encode()
    assert first[b"accept"] == b"x/y"
    assert first[b"user-agent"] == b"imagegate/test"


async def test_a_reset_stream_fails_that_get_only(ca: tuple[TestCA, Path, Path]) -> None:
    def plan(request: dict[bytes, bytes]) -> tuple:
        if request[b":path"].endswith(b"/bad"):
            return ("reset",)
        return answer(b"{}")(request)

    async with serving(ca, plan) as server:
        lean = client(ca)
        bad = get(lean, server.port, path="/v2/a/bad")
        good = get(lean, server.port)
        results = await asyncio.gather(bad, good, return_exceptions=True)
        assert isinstance(results[0], httpx.ReadError)
        assert "reset" in str(results[0])
        assert results[1] == (200, b"{}")


async def test_goaway_and_a_dropped_connection_fail_the_open_gets_and_the_next_reconnects(
    ca: tuple[TestCA, Path, Path],
) -> None:
    actions = iter([("goaway",), ("half",)])

    def plan(request: dict[bytes, bytes]) -> tuple:
        return next(actions, None) or answer(b"{}")(request)

    async with serving(ca, plan) as server:
        lean = client(ca)
        with pytest.raises(httpx.ReadError, match="GOAWAY"):
            await get(lean, server.port)
        with pytest.raises(httpx.ReadError, match="mid-answer"):
            await get(lean, server.port)
        assert await get(lean, server.port) == (200, b"{}")
    assert server.connections == 3


async def test_a_body_over_the_cap_is_cut_and_its_stream_reset(
    ca: tuple[TestCA, Path, Path],
) -> None:
    async with serving(ca, answer(b"x" * 5000)) as server:
        lean = client(ca)
        status, body = await get(lean, server.port, cap=100)
        assert (status, len(body)) == (200, 101)
        assert await get(lean, server.port, cap=10_000) == (200, b"x" * 5000)
    assert server.connections == 1  # the connection survives a reset stream


async def test_a_registry_without_http2_is_left_to_httpx(ca: tuple[TestCA, Path, Path]) -> None:
    async with serving(ca, answer(b"{}"), alpn=[]) as server:
        lean = client(ca)
        assert lean.speaks_h2("127.0.0.1", server.port)
        with pytest.raises(httpx.UnsupportedProtocol):
            await get(lean, server.port)
        assert not lean.speaks_h2("127.0.0.1", server.port)


async def test_an_untrusted_certificate_is_a_connect_error_with_its_cause(
    ca: tuple[TestCA, Path, Path], tmp_path: Path
) -> None:
    stranger = TestCA.create(tmp_path / "stranger")
    async with serving(ca, answer(b"{}")) as server:
        lean = LeanHTTP(90, "t", ssl.create_default_context(cafile=str(stranger.cert_path)))
        with pytest.raises(httpx.ConnectError) as caught:
            await get(lean, server.port)
        assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)


async def test_a_cancelled_get_resets_its_stream_and_the_connection_goes_on(
    ca: tuple[TestCA, Path, Path],
) -> None:
    def plan(request: dict[bytes, bytes]) -> tuple:
        if request[b":path"].endswith(b"/slow"):
            return ("ignore",)  # never answered
        return answer(b"{}")(request)

    async with serving(ca, plan) as server:
        lean = client(ca)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await get(lean, server.port, path="/v2/a/slow")
        assert await get(lean, server.port) == (200, b"{}")
    assert server.connections == 1


async def test_a_header_with_line_breaks_is_refused_before_sending(
    ca: tuple[TestCA, Path, Path],
) -> None:
    async with serving(ca, answer(b"{}")) as server:
        lean = client(ca)
        with pytest.raises(httpx.LocalProtocolError, match="CR, LF or NUL"):
            await lean.get_h2("127.0.0.1", server.port, "/v2/x", [("Authorization", "a\r\nb")], 9)
    assert server.connections == 0


async def test_a_connection_full_of_streams_is_replaced_and_closes_when_done(
    ca: tuple[TestCA, Path, Path],
) -> None:
    """A registry allowing one stream per connection: a GET while the connection's one stream
    is busy opens another, and the replaced connection closes once its GET is answered."""

    def plan(request: dict[bytes, bytes]) -> tuple:
        return ("hold",) if request[b":path"].endswith(b"/slow") else answer(b"{}")(request)

    async with serving(ca, plan, max_streams=1) as server:
        lean = client(ca)
        assert await get(lean, server.port) == (200, b"{}")  # the server's SETTINGS are known
        held = asyncio.ensure_future(get(lean, server.port, path="/v2/a/slow"))
        await asyncio.sleep(0.1)
        assert await get(lean, server.port) == (200, b"{}")  # on a second connection
        assert (server.connections, server.open_connections) == (2, 2)
        server.release.set()
        assert await held == (200, b"late")
        await asyncio.sleep(0.1)
        assert server.open_connections == 1  # the replaced one closed after its last GET
        await lean.aclose()
        await asyncio.sleep(0.1)
        assert server.open_connections == 0
