"""A TCP proxy in front of a real registry that adds latency and counts what goes through.

    proxy = DelayProxy.start(("127.0.0.1", reg.port), delay=0.05)   # 50 ms one way
    proxy.host                 # "127.0.0.1:PORT": address the registry through this
    mark = proxy.mark()
    ...                        # talk to it
    proxy.since(mark)          # Traffic(connections=1, requests=[Seen("GET", "/v2/…"), …])
    proxy.stop()

Every byte from the client is held `delay` seconds before it goes upstream (in order, per
connection), so each request/response exchange, and each TLS handshake flight, costs one
`delay`: wall time over `delay` counts the round trips on the critical path. New TCP
connections are counted as they are accepted; with `connect_costs` a connection's first bytes
wait one `delay` more, the round trip its TCP handshake costs on a real network. Requests
are counted by parsing the client's byte stream as HTTP/1.1 (`parse_http=False` for TLS,
where only connections count).

It runs on an event loop in a thread of its own, so synchronous and asynchronous code can use
it alike (and the CPU it spends is not the caller's thread's).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field

__all__ = ["DelayProxy", "Mark", "Seen", "Traffic"]


@dataclass(frozen=True)
class Seen:
    """One request as the proxy saw it."""

    method: str
    path: str
    authorization: str
    connection: int


@dataclass(frozen=True)
class Mark:
    connections: int
    requests: int


@dataclass(frozen=True)
class Traffic:
    connections: int
    requests: list[Seen]

    def count(self, method: str = "", path_part: str = "") -> int:
        return sum(
            1 for r in self.requests if (not method or r.method == method) and path_part in r.path
        )


@dataclass
class _Parser:
    """Splits a client's HTTP/1.1 byte stream into requests (Content-Length bodies)."""

    connection: int
    buffer: bytes = b""
    body_left: int = 0
    broken: bool = False
    found: list[Seen] = field(default_factory=list)

    def feed(self, data: bytes) -> None:
        if self.broken:
            return
        self.buffer += data
        while True:
            if self.body_left:
                taken = min(self.body_left, len(self.buffer))
                self.buffer = self.buffer[taken:]
                self.body_left -= taken
                if self.body_left:
                    return
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            self.buffer = self.buffer[end + 4 :]
            parts = head[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                self.broken = True  # not HTTP/1.x (TLS, h2): count connections only
                return
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self.broken = True
            self.body_left = int(headers.get("content-length", "0") or 0)
            self.found.append(
                Seen(parts[0], parts[1], headers.get("authorization", ""), self.connection)
            )


class DelayProxy:
    """See the module docstring."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        delay: float = 0.0,
        listen: str = "127.0.0.1",
        parse_http: bool = True,
        connect_costs: bool = False,
    ) -> None:
        self.upstream = upstream
        self.delay = delay
        self.connect_costs = connect_costs
        self.listen = listen
        self.parse_http = parse_http
        self._lock = threading.Lock()
        self._connections = 0
        self._requests: list[Seen] = []
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @classmethod
    def start(
        cls,
        upstream: tuple[str, int],
        *,
        delay: float = 0.0,
        listen: str = "127.0.0.1",
        parse_http: bool = True,
        connect_costs: bool = False,
    ) -> DelayProxy:
        proxy = cls(
            upstream, delay=delay, listen=listen, parse_http=parse_http,
            connect_costs=connect_costs,
        )  # fmt: skip
        proxy._thread.start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(proxy._accept, listen, 0), proxy._loop
        ).result(10)
        proxy._server = server
        proxy.port = int(server.sockets[0].getsockname()[1])
        return proxy

    @property
    def host(self) -> str:
        return f"{self.listen}:{self.port}"

    def mark(self) -> Mark:
        with self._lock:
            return Mark(self._connections, len(self._requests))

    def since(self, mark: Mark) -> Traffic:
        with self._lock:
            return Traffic(self._connections - mark.connections, self._requests[mark.requests :])

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the proxy --------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._lock:
            self._connections += 1
            number = self._connections
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        parser = _Parser(number) if self.parse_http else None
        try:
            await asyncio.gather(
                self._upstream(reader, up_writer, parser), self._downstream(up_reader, writer)
            )
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a side hung up, or `stop`: the connection ends either way
        finally:
            for w in (writer, up_writer):
                w.close()
            self._tasks.discard(task)

    async def _upstream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, parser: _Parser | None
    ) -> None:
        """Client → registry, each chunk held `delay` seconds (order kept)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        # the TCP handshake happened at full speed on loopback: charge its round trip to the
        # connection's first bytes
        handshake = self.delay if self.connect_costs else 0.0

        async def feed() -> None:
            nonlocal handshake
            while data := await reader.read(65536):
                if parser is not None:
                    before = len(parser.found)
                    parser.feed(data)
                    if len(parser.found) > before:
                        with self._lock:
                            self._requests.extend(parser.found[before:])
                queue.put_nowait((loop.time() + self.delay + handshake, data))
                handshake = 0.0
            queue.put_nowait(None)

        async def drain() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()

        await asyncio.gather(feed(), drain())

    async def _downstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()
