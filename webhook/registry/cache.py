"""Caches for registry answers, and single-flight for concurrent identical fetches (DESIGN §4).

Content addressed by digest is immutable, so it is kept until evicted by size; tag→digest
answers are only trusted for a short TTL; failures are remembered briefly so a broken or
down registry is not hammered by every admission request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from cachetools import LRUCache, TTLCache

from webhook.errors import ImagegateError
from webhook.singleflight import SingleFlight

__all__ = ["DigestCache", "NegativeCache", "SingleFlight", "TagCache"]

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
