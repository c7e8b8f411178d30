"""Small GETs to plain-HTTP registries without httpx's per-request machinery.

A cold admission is a handful of small GETs (manifests, configs, a token), and on a warm
connection httpx spent about 0.5 ms of CPU on each where the socket work is 0.05: its client
(URL objects, header merging, cookie extraction, the auth and redirect generators), httpcore's
pool (it scans every pooled connection, of every registry, several times per request) and
h11's pure-Python state machine. Measured with a real `docker-registry` on loopback
(`python bench/bench_cold.py`), that was two thirds of a cold admission's own time.

So the GETs the registry client reads whole (never a layer: those stream through httpx) go,
for `http://` origins, over this: one asyncio protocol per keep-alive connection, responses
parsed by httptools (llhttp, C; a dependency already, for uvicorn), idle connections kept per
origin. HTTPS registries stay on httpx, which speaks HTTP/2 to those that do (parallel fetches
then share one connection), as do proxies, redirects past the first hop, and every request
the caller streams. Failures are raised as the httpx exceptions the transport already maps
(`ConnectError`, `ReadError`, `RemoteProtocolError`), so a refused connection, a registry
that hangs up mid-answer or sends garbage is still that image's `onError` decision.

What a hostile registry cannot do here: hold a connection (the caller's deadline cancels the
exchange, and a cancelled or half-read connection is closed, never reused), make the webhook
buffer more than `cap` bytes of body or 64 KiB of headers, smuggle a second answer (bytes
after an answer, or while idle, close the connection), or inject headers (a value with CR, LF
or NUL, say a token from a token server, is refused before anything is sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Iterable
from typing import NamedTuple

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import httptools
import httpx

__all__ = ["LeanHTTP", "LeanReply"]

MAX_HEADER_BYTES = 64 * 1024
# Idle connections kept per origin; concurrency per registry is bounded by the checker.
MAX_IDLE_PER_ORIGIN = 32
_FORBIDDEN_IN_HEADERS = ("\r", "\n", "\0")


class LeanReply(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes  # at most `cap + 1` bytes: the caller sees that it is over its cap


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; at most one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[LeanReply] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._size = 0
        self._cap = 0
        self._delimited = False  # the answer says where it ends (Content-Length or chunked)
        self._headers_done = False
        self._done = False
        self._error: Exception | None = None  # why a callback stopped the parser
        self.reusable = False

    # -- one exchange ----------------------------------------------------------------------

    async def exchange(self, request: bytes, cap: int) -> LeanReply:
        assert self.transport is not None
        assert self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self._headers, self._header_bytes, self._body, self._size = [], 0, [], 0
        self._cap, self._delimited, self._headers_done, self._done = cap, False, False, False
        self._error = None
        self.reusable = False
        self.transport.write(request)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    def _finish(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        assert self._parser is not None
        status = self._parser.get_status_code()
        self.reusable = self._done and self._parser.should_keep_alive()
        body = b"".join(self._body)[: self._cap + 1]
        waiter.set_result(LeanReply(status, self._headers, body))

    def _fail(self, error: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    def close(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are no subclasses

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: a second answer is never read
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the registry answered with an upgrade"))
        except httptools.HttpParserError as err:
            self._fail(self._error or httpx.RemoteProtocolError(f"malformed HTTP answer: {err}"))

    def eof_received(self) -> bool:
        self._ended()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)
        self.closed = True

    def _ended(self, exc: Exception | None = None) -> None:
        if self._waiter is None or self._waiter.done():
            self.closed = True
            return
        if self._headers_done and not self._delimited:  # a body that ends with the connection
            self._done = True
            self._finish()
            self.reusable = False
            return
        why = f" ({exc})" if exc else ""
        self._fail(httpx.ReadError(f"the registry closed the connection mid-answer{why}"))

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._done:  # a second answer in the bytes of the first: never read, never reused
            self._done = False
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > MAX_HEADER_BYTES:
            self._error = httpx.RemoteProtocolError(f"headers over {MAX_HEADER_BYTES} bytes")
            raise self._error
        lower = name.lower()
        if lower in (b"content-length", b"transfer-encoding"):
            self._delimited = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        self._body.append(body)
        if self._size > self._cap:  # enough to say it is too large; the rest is not read
            self._done = False
            self._finish()
            self.close()

    def on_message_complete(self) -> None:
        self._done = True
        self._finish()


class _Stream:
    __slots__ = ("body", "future", "headers", "size", "status")

    def __init__(self, future: asyncio.Future[LeanReply]) -> None:
        self.future = future
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = 0


class _H2Connection(asyncio.Protocol):
    """One HTTP/2 connection over TLS, shared by every concurrent GET to its origin (the h2
    library's state machine; flow control is acknowledged as data is read)."""

    def __init__(self, authority: bytes, user_agent: bytes) -> None:
        # What we send is built here from vetted values (`_vet`), lower-case names and no
        # connection headers, so the h2 library's per-request checks of it (a sixth of a GET's
        # CPU) are skipped; what the registry sends is still validated.
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings.max_header_list_size = MAX_HEADER_BYTES
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.retired = False  # replaced by a newer connection: closes when its last GET ends
        self.idle_since = time.monotonic()
        self.speaks_h2 = False
        self._authority = authority
        self._user_agent = user_agent
        self._streams: dict[int, _Stream] = {}
        self._caps: dict[int, int] = {}

    @property
    def busy(self) -> bool:
        limit = self.h2.remote_settings.max_concurrent_streams
        return self.closed or len(self._streams) >= min(limit, 100)

    async def exchange(self, target: str, headers: list[tuple[str, str]], cap: int) -> LeanReply:
        if self.closed or self.transport is None:
            raise httpx.ReadError("the registry closed the connection")
        stream_id = self.h2.get_next_available_stream_id()
        stream = _Stream(asyncio.get_running_loop().create_future())
        self._streams[stream_id] = stream
        self._caps[stream_id] = cap
        fields = [
            (b":method", b"GET"),
            (b":authority", self._authority),
            (b":scheme", b"https"),
            (b":path", target.encode("latin-1")),
            (b"user-agent", self._user_agent),
            *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers),
        ]
        try:
            self.h2.send_headers(stream_id, fields, end_stream=True)
            self._flush()
            return await stream.future
        except h2.exceptions.ProtocolError as err:
            self._lost(httpx.RemoteProtocolError(f"HTTP/2: {err}"))
            raise httpx.RemoteProtocolError(f"HTTP/2: {err}") from None
        except BaseException:  # a deadline or a cancellation: the stream alone is given up
            if not stream.future.done() and not self.closed:
                self._reset(stream_id)
            raise
        finally:
            self._streams.pop(stream_id, None)
            self._caps.pop(stream_id, None)
            if not self._streams:
                self.idle_since = time.monotonic()
                if self.retired:
                    self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _reset(self, stream_id: int) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        self._flush()

    def _lost(self, error: Exception) -> None:
        self.closed = True
        for stream in self._streams.values():
            if not stream.future.done():
                stream.future.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        tls = transport.get_extra_info("ssl_object")
        self.speaks_h2 = tls is not None and tls.selected_alpn_protocol() == "h2"
        if self.speaks_h2:
            self.h2.initiate_connection()
            self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as err:
            self._lost(httpx.RemoteProtocolError(f"HTTP/2: {err}"))
            return
        for event in events:
            self._event(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        why = f" ({exc})" if exc else ""
        self._lost(httpx.ReadError(f"the registry closed the connection mid-answer{why}"))

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ConnectionTerminated):  # GOAWAY: no new streams here
            self._lost(httpx.ReadError("the registry ended the HTTP/2 connection (GOAWAY)"))
            return
        stream_id = getattr(event, "stream_id", None)
        stream = self._streams.get(stream_id) if stream_id is not None else None
        if isinstance(event, h2.events.DataReceived):
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        if stream is None or stream.future.done():
            return
        if isinstance(event, h2.events.ResponseReceived):
            for name, value in event.headers:
                if name == b":status":
                    stream.status = int(value)
                elif not name.startswith(b":"):
                    stream.headers.append((name, value))
        elif isinstance(event, h2.events.DataReceived):
            stream.size += len(event.data)
            stream.body.append(event.data)
            cap = self._caps[event.stream_id]
            if stream.size > cap:  # enough to say it is too large; the rest is refused
                self._answer(stream, cap)
                self._reset(event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self._answer(stream, self._caps[event.stream_id])
        elif isinstance(event, h2.events.StreamReset):
            stream.future.set_exception(httpx.ReadError("the registry reset the HTTP/2 stream"))

    @staticmethod
    def _answer(stream: _Stream, cap: int) -> None:
        body = b"".join(stream.body)[: cap + 1]
        stream.future.set_result(LeanReply(stream.status, stream.headers, body))


class LeanHTTP:
    """Keep-alive connections per origin, and one GET at a time on each."""

    def __init__(
        self, keepalive_seconds: float, user_agent: str, tls: ssl.SSLContext | None = None
    ) -> None:
        self._keepalive = keepalive_seconds
        self._user_agent = user_agent
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._tls = tls
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
        self._h2: dict[tuple[str, int], _H2Connection] = {}
        self._retired: set[_H2Connection] = set()  # replaced while busy, still serving GETs
        self._h2_connecting: dict[tuple[str, int], asyncio.Future[_H2Connection]] = {}
        self.without_h2: set[tuple[str, int]] = set()  # HTTPS origins that chose HTTP/1.1
        self._closed = False

    def speaks_h2(self, host: str, port: int) -> bool:
        """Whether HTTPS GETs to this origin may come here (not known to refuse HTTP/2)."""
        return self._tls is not None and (host, port) not in self.without_h2

    async def get_h2(
        self, host: str, port: int, target: str, headers: list[tuple[str, str]], cap: int
    ) -> LeanReply:
        """GET over HTTP/2 on the origin's shared connection; `httpx.UnsupportedProtocol`
        when the registry does not speak HTTP/2 (the caller then uses httpx for it)."""
        if self._closed:
            raise httpx.ConnectError("the registry client is closed")
        _vet(target, headers)
        connection = await self._h2_connection(host, port)
        return await connection.exchange(target, headers, cap)

    async def _h2_connection(self, host: str, port: int) -> _H2Connection:
        """The origin's connection with room for one more stream (the caller opens it before
        anything else runs), made when there is none."""
        key = (host, port)
        while True:
            known = self._h2.get(key)
            expired = time.monotonic() - self._keepalive
            if known is not None and not known.busy:
                if known._streams or known.idle_since >= expired:
                    return known
                known.close()
            pending = self._h2_connecting.get(key)
            if pending is None:
                break
            await asyncio.shield(pending)  # parallel GETs wait for the one being made, then
            # look again: the GET that made it may have taken its last free stream
        future: asyncio.Future[_H2Connection] = asyncio.get_running_loop().create_future()
        self._h2_connecting[key] = future
        try:
            connection = await self._connect_h2(host, port)
        except BaseException as err:
            failed = err if isinstance(err, Exception) else httpx.ConnectError("cancelled")
            future.set_exception(failed)
            future.exception()  # retrieved: waiters get it, nobody else needs to
            raise
        finally:
            del self._h2_connecting[key]
        future.set_result(connection)
        old = self._h2.get(key)
        if old is not None:  # busy, expired or lost: it serves what it has, then closes
            old.retired = True
            if old._streams:
                self._retired = {c for c in self._retired if not c.closed} | {old}
            else:
                old.close()
        self._h2[key] = connection
        return connection

    async def _connect_h2(self, host: str, port: int) -> _H2Connection:
        assert self._tls is not None
        authority = (f"[{host}]" if ":" in host else host) + ("" if port == 443 else f":{port}")
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _H2Connection(authority.encode("latin-1"), self._user_agent.encode()),
                host,
                port,
                ssl=self._tls,
                server_hostname=host,
            )
        except (OSError, ssl.SSLError) as err:
            raise httpx.ConnectError(str(err) or type(err).__name__) from err
        if not connection.speaks_h2:
            connection.close()
            self.without_h2.add((host, port))
            raise httpx.UnsupportedProtocol(f"{authority} does not speak HTTP/2")
        return connection

    async def get(
        self, host: str, port: int, target: str, headers: Iterable[tuple[str, str]], cap: int
    ) -> LeanReply:
        """GET `target` (path and query) from `host:port`; a body over `cap` bytes comes back
        cut after `cap + 1` (the caller refuses it), and its connection is closed."""
        if self._closed:
            raise httpx.ConnectError("the registry client is closed")
        request = _request_bytes(host, port, target, headers, self._user_agent)
        key = (host, port)
        connection = self._idle_connection(key)
        if connection is not None:
            try:
                return await self._exchange(key, connection, request, cap)
            except httpx.ReadError:
                pass  # closed by the server while idle, as we wrote: once more, afresh
        return await self._exchange(key, await self._connect(host, port), request, cap)

    async def aclose(self) -> None:
        self._closed = True
        for h2_connection in (*self._h2.values(), *self._retired):
            h2_connection.close()
        self._h2.clear()
        self._retired.clear()
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    async def _exchange(
        self, key: tuple[str, int], connection: _Connection, request: bytes, cap: int
    ) -> LeanReply:
        try:
            reply = await connection.exchange(request, cap)
        except BaseException:  # a deadline, a cancellation, a broken answer
            connection.close()
            raise
        if connection.reusable and not connection.closed and not self._closed:
            connection.idle_since = time.monotonic()
            idle = self._idle.setdefault(key, [])
            if len(idle) < MAX_IDLE_PER_ORIGIN:
                idle.append(connection)
            else:
                connection.close()
        else:
            connection.close()
        return reply

    def _idle_connection(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        expired = time.monotonic() - self._keepalive
        while idle:
            connection = idle.pop()  # the most recently used: least likely to be dropped
            if connection.closed or connection.idle_since < expired:
                connection.close()
                continue
            if not idle:
                del self._idle[key]
            return connection
        del self._idle[key]
        return None

    async def _connect(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(_Connection, host, port)
        except OSError as err:
            raise httpx.ConnectError(str(err) or type(err).__name__) from err
        return connection


def _vet(target: str, headers: Iterable[tuple[str, str]]) -> None:
    """Refuse what would let a value end a header or the request line (CR, LF, NUL)."""
    if not target.startswith("/") or any(c in target for c in (" ", *_FORBIDDEN_IN_HEADERS)):
        raise httpx.LocalProtocolError(f"refusing to request the path {target!r}")
    for name, value in headers:
        if any(c in name or c in value for c in _FORBIDDEN_IN_HEADERS):
            raise httpx.LocalProtocolError(f"refusing to send a {name} header with CR, LF or NUL")


def _request_bytes(
    host: str, port: int, target: str, headers: Iterable[tuple[str, str]], user_agent: str
) -> bytes:
    authority = f"[{host}]" if ":" in host else host
    if port != 80:
        authority += f":{port}"
    fields = [("Host", authority), ("User-Agent", user_agent), *headers]
    _vet(target, fields)
    lines = [f"GET {target} HTTP/1.1", *(f"{name}: {value}" for name, value in fields), "", ""]
    try:
        return "\r\n".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise httpx.LocalProtocolError("refusing to send a header that is not Latin-1") from None
