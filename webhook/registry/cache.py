"""Caches for registry answers, and single-flight for concurrent identical fetches (DESIGN §4).

Content addressed by digest is immutable, so it is kept until evicted by size; tag→digest
answers are only trusted for a short TTL; failures are remembered briefly so a broken or
down registry is not hammered by every admission request.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from webhook.caches import BoundedCache, hashed_key
from webhook.errors import ImagegateError
from webhook.singleflight import SingleFlight

__all__ = ["DigestCache", "NegativeCache", "SingleFlight", "TagCache"]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

# Byte budgets (`webhook.caches.BoundedCache`); the digest cache's is `cache_bytes` in settings.
TAG_CACHE_BYTES = 2 * 1024 * 1024  # ~3,300 tags (a digest string and the entry overhead each)
NEGATIVE_CACHE_BYTES = 2 * 1024 * 1024  # failures carry a message naming the image


class DigestCache:
    """Bytes-bounded LRU of immutable blobs (manifests, configs) keyed by digest.

    Each entry counts `len(bytes)` plus the per-entry overhead; a single item larger than the
    whole budget is simply not kept. Keys are digests this process computed, so short.
    """

    def __init__(self, max_bytes: int) -> None:
        self._lru: BoundedCache[str, bytes] = BoundedCache(max_bytes, sizeof=len)

    def get(self, digest: str) -> bytes | None:
        return self._lru.get(digest)

    def put(self, digest: str, data: bytes) -> None:
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


class TagCache:
    """(registry, repository, tag) → digest, trusted for `ttl` seconds (tags move)."""

    def __init__(
        self,
        ttl: float,
        max_bytes: int = TAG_CACHE_BYTES,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl: BoundedCache[str, str] = BoundedCache(max_bytes, ttl=ttl, timer=timer)

    def get(self, registry: str, repository: str, tag: str) -> str | None:
        return self._ttl.get(hashed_key(registry, repository, tag))

    def put(self, registry: str, repository: str, tag: str, digest: str) -> None:
        self._ttl[hashed_key(registry, repository, tag)] = digest


class NegativeCache(Generic[K]):
    """Failures per key, re-raised on hit for `ttl` seconds.

    Only `ImagegateError`s are cached: they describe the registry or the image, whereas other
    exceptions (bugs, cancellation) say nothing about what the next attempt would meet. Keys
    are kept hashed (`repr`, then `hashed_key`): they hold references and digests that a
    manifest may make arbitrarily long.
    """

    def __init__(
        self,
        ttl: float,
        max_bytes: int = NEGATIVE_CACHE_BYTES,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl: BoundedCache[str, ImagegateError] = BoundedCache(max_bytes, ttl=ttl, timer=timer)

    def check(self, key: K) -> None:
        """Raise the remembered failure for `key`, if any."""
        exc = self._ttl.get(hashed_key(repr(key)))
        if exc is not None:
            # Fresh traceback each time, or the stored one would grow with every raise.
            raise exc.with_traceback(None)

    def remember(self, key: K, exc: BaseException) -> None:
        if isinstance(exc, ImagegateError):
            self._ttl[hashed_key(repr(key))] = _detached(exc)

    def forget(self, key: K) -> None:
        self._ttl.pop(hashed_key(repr(key)), None)

    def __contains__(self, key: object) -> bool:
        return hashed_key(repr(key)) in self._ttl


def _detached(exc: ImagegateError) -> ImagegateError:
    """`exc` without its traceback, cause and context, which would keep the frames it went
    through (and their locals: response bodies) alive for as long as it is cached."""
    try:
        bare = copy.copy(exc)
    except Exception:  # an error class that cannot be rebuilt from its args: keep it as is
        return exc
    bare.__cause__ = bare.__context__ = None
    return bare.with_traceback(None)
