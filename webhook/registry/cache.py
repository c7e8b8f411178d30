"""Caches for registry answers, and single-flight for concurrent identical fetches (DESIGN §4).

Content addressed by digest is immutable, so it is kept until evicted by size; tag→digest
answers are only trusted for a short TTL; failures are remembered briefly so a broken or
down registry is not hammered by every admission request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar, cast

from cachetools import LRUCache, TTLCache

from webhook.errors import ImagegateError

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class DigestCache:
    """Bytes-bounded LRU of immutable blobs (manifests, configs) keyed by digest.

    Sizes are `len(bytes)`; a single item larger than the whole budget is simply not kept.
    """

    def __init__(self, max_bytes: int) -> None:
        self._lru: LRUCache[str, bytes] = LRUCache(maxsize=max_bytes, getsizeof=len)

    def get(self, digest: str) -> bytes | None:
        return self._lru.get(digest)

    def put(self, digest: str, data: bytes) -> None:
        if len(data) > self._lru.maxsize:
            return
        self._lru[digest] = data

    def __contains__(self, digest: object) -> bool:
        return digest in self._lru

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def current_bytes(self) -> int:
        return int(self._lru.currsize)

    @property
    def max_bytes(self) -> int:
        return int(self._lru.maxsize)


TagKey = tuple[str, str, str]


class TagCache:
    """(registry, repository, tag) → digest, trusted for `ttl` seconds (tags move)."""

    def __init__(
        self, ttl: float, maxsize: int = 4096, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self._enabled = ttl > 0
        self._ttl: TTLCache[TagKey, str] = TTLCache(
            maxsize=maxsize, ttl=max(ttl, 1e-9), timer=timer
        )

    def get(self, registry: str, repository: str, tag: str) -> str | None:
        return self._ttl.get((registry, repository, tag))

    def put(self, registry: str, repository: str, tag: str, digest: str) -> None:
        if self._enabled:
            self._ttl[(registry, repository, tag)] = digest


class NegativeCache(Generic[K]):
    """Failures per key, re-raised on hit for `ttl` seconds.

    Only `ImagegateError`s are cached: they describe the registry or the image, whereas other
    exceptions (bugs, cancellation) say nothing about what the next attempt would meet.
    """

    def __init__(
        self, ttl: float, maxsize: int = 4096, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self._enabled = ttl > 0
        self._ttl: TTLCache[K, ImagegateError] = TTLCache(
            maxsize=maxsize, ttl=max(ttl, 1e-9), timer=timer
        )

    def check(self, key: K) -> None:
        """Raise the remembered failure for `key`, if any."""
        exc = self._ttl.get(key)
        if exc is not None:
            # Fresh traceback each time, or the stored one would grow with every raise.
            raise exc.with_traceback(None)

    def remember(self, key: K, exc: BaseException) -> None:
        if self._enabled and isinstance(exc, ImagegateError):
            self._ttl[key] = exc

    def forget(self, key: K) -> None:
        self._ttl.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._ttl


class SingleFlight(Generic[K]):
    """Concurrent `do(key, factory)` calls for one key share a single in-flight task.

    Hand-written because there is no maintained asyncio single-flight library (the Go
    `singleflight` idea); it is a dict of tasks plus `asyncio.shield`:

    * the first caller starts `factory()` as a task; later callers await the same task;
    * a cancelled caller only stops waiting: the shared task is shielded and keeps running for
      the others (and, if everyone left, still finishes and fills the caches);
    * an exception reaches every waiter;
    * the key is released as soon as the task ends, so the next call starts afresh.
    """

    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Task[object]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def __contains__(self, key: object) -> bool:
        return key in self._flights

    async def do(self, key: K, factory: Callable[[], Awaitable[T]]) -> T:
        task = self._flights.get(key)
        if task is None:
            task = asyncio.ensure_future(self._run(key, factory))
            self._flights[key] = task
            task.add_done_callback(_consume)
        return cast(T, await asyncio.shield(task))

    async def _run(self, key: K, factory: Callable[[], Awaitable[T]]) -> T:
        try:
            return await factory()
        finally:
            if self._flights.get(key) is asyncio.current_task():
                del self._flights[key]


def _consume(task: asyncio.Task[object]) -> None:
    """Mark the exception retrieved: if every waiter was cancelled nobody else will."""
    if not task.cancelled():
        task.exception()
