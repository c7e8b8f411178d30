"""httpcore's network layer on plain asyncio: the registry connections' sockets.

httpcore's default backend goes through anyio: a cancel scope per read and write, and, for
every idle connection in the pool, `getpeername` plus a `poll` system call each time the
pool assigns a request (to see whether the server hung up). A cold admission makes 2 to 10
registry requests with a dozen connections pooled: with the rest of anyio's per-read work,
15-20 % of a registry request's CPU. Here a connection is an asyncio protocol whose buffer
and end-of-file flag answer "is the idle connection readable?" without a system call, and
reads and writes are a buffer operation plus `asyncio.timeout` only when they must wait.

Same behaviour as the anyio backend where it matters: httpcore's timeouts and exceptions
(ConnectTimeout, ReadError…; the `ssl.SSLError` stays the cause of a TLS failure), TLS and
ALPN (HTTP/2) by `loop.start_tls`, back-pressure both ways (a slow reader pauses the socket,
a slow peer pauses writes), and a dead or chattering idle connection is dropped by the pool.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Any, cast

import httpcore
import httpx

__all__ = ["AsyncioBackend", "PooledTransport"]

# Received bytes held before the socket stops being read (a layer streams into a file at the
# consumer's pace; a manifest is far smaller).
_HIGH_WATER = 256 * 1024
# anyio's (and RFC 8305's) delay before racing the next address of a name.
_HAPPY_EYEBALLS_DELAY = 0.25

SocketOption = Any  # httpcore's SOCKET_OPTION: what `socket.setsockopt` takes


class _Protocol(asyncio.Protocol):
    """Buffers what arrives and wakes the one reader; pauses the socket when it has enough."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.read_paused = False
        self._reader: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
            self.read_paused = True
        _wake(self._reader)

    def eof_received(self) -> bool:
        self.eof = True
        _wake(self._reader)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        _wake(self._reader)
        _wake(self._writable)

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        _wake(self._writable)

    async def wait_readable(self) -> None:
        self._reader = asyncio.get_running_loop().create_future()
        try:
            await self._reader
        finally:
            self._reader = None

    @property
    def write_paused(self) -> bool:
        return self._writable is not None and not self._writable.done()

    async def wait_writable(self) -> None:
        if self._writable is not None:
            await self._writable


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One TCP (or TLS) connection as httpcore wants it."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109 - httpcore's interface
        p = self._protocol
        if not p.buffer and not p.eof:
            try:
                async with asyncio.timeout(timeout):
                    await p.wait_readable()
            except TimeoutError:
                raise httpcore.ReadTimeout(f"no data for {timeout}s") from None
        if p.buffer:
            data = bytes(p.buffer[:max_bytes])
            del p.buffer[:max_bytes]
            if p.read_paused and len(p.buffer) <= _HIGH_WATER // 4:
                p.read_paused = False
                self._transport.resume_reading()
            return data
        if p.error is not None:
            raise httpcore.ReadError(str(p.error) or type(p.error).__name__) from p.error
        return b""  # the peer closed: httpcore's end of stream

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109 - httpcore's interface
        if not buffer:
            return
        p = self._protocol
        if self._transport.is_closing() or p.error is not None:
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(buffer)
        if p.write_paused:  # the kernel's and the transport's buffers are full
            try:
                async with asyncio.timeout(timeout):
                    await p.wait_writable()
            except TimeoutError:
                raise httpcore.WriteTimeout(f"peer not reading for {timeout}s") from None
        if p.error is not None:
            raise httpcore.WriteError(str(p.error) or "connection lost") from p.error

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                tls = await loop.start_tls(
                    self._transport,
                    self._protocol,
                    ssl_context,
                    server_hostname=server_hostname,
                    ssl_handshake_timeout=timeout,
                )
        except TimeoutError as exc:
            self._transport.close()
            raise httpcore.ConnectTimeout(f"TLS handshake took over {timeout}s") from exc
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        if tls is None:  # the peer went away during the handshake
            raise httpcore.ConnectError("connection closed during the TLS handshake")
        # From now on the protocol hears the TLS transport: pause and resume reading there
        # (pausing the TCP one underneath would never be resumed by the TLS layer).
        self._protocol.transport = tls
        return AsyncioStream(tls, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # an idle connection with data or EOF is done for
            return bool(self._protocol.buffer) or self._protocol.eof
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """Connects with `loop.create_connection` (TCP_NODELAY, Happy Eyeballs between addresses)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        # uvloop (the webhook's loop) tries a name's addresses one after another
        racing: dict[str, Any] = (
            {"happy_eyeballs_delay": _HAPPY_EYEBALLS_DELAY}
            if isinstance(loop, asyncio.BaseEventLoop)
            else {}
        )
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    _Protocol,
                    host,
                    port,
                    local_addr=(local_address, 0) if local_address else None,
                    **racing,
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"no connection within {timeout}s") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        for option in socket_options or ():
            transport.get_extra_info("socket").setsockopt(*option)
        return AsyncioStream(transport, protocol)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("registries are reached over TCP")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class PooledTransport(httpx.AsyncHTTPTransport):
    """httpx's HTTP transport (its request/response mapping and exception translation) over
    a connection pool on `AsyncioBackend`, with the same TLS, HTTP/2 and pool limits."""

    def __init__(
        self, *, verify: ssl.SSLContext | bool, http2: bool, limits: httpx.Limits, retries: int = 0
    ) -> None:
        super().__init__(verify=verify, http2=http2, limits=limits, retries=retries)
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise TypeError("httpx.AsyncHTTPTransport no longer keeps its pool in `_pool`")
        # as httpx builds it: `True` is certifi's bundle, or SSL_CERT_FILE / SSL_CERT_DIR
        context = (
            verify
            if isinstance(verify, ssl.SSLContext)
            else httpx.create_ssl_context(verify=verify, trust_env=True)
        )
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=http2,
            retries=retries,
            network_backend=AsyncioBackend(),
        )
