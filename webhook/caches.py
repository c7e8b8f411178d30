"""The one cache type every in-memory cache uses: bounded by bytes, expiring on reads too.

Issue 13.3: whatever a tenant or a registry sends must not stay in memory beyond a budget. So a
`BoundedCache` is sized in (approximate) bytes rather than entries, an entry too large for the
whole budget is simply not kept, expired entries are dropped on reads as well as on writes
(a cache that is only read from would otherwise keep its dead entries forever), and keys that
hold user-supplied strings go through `hashed_key` so that a key is never a megabyte long.

Not a data cache, so left as it is: `webhook.policy.limits`' LRUCache of semaphores holds one
small object per registry host (a parsed, length-checked name) and is bounded by count.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar, overload

from cachetools import TLRUCache
from pydantic import BaseModel

__all__ = ["ENTRY_OVERHEAD", "SWEEP_SECONDS", "BoundedCache", "approx_size", "hashed_key"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")

# What one entry costs besides its value: cachetools' bookkeeping (the data and size dicts, the
# LRU OrderedDict node, the expiry heap item: ~250 bytes measured on CPython 3.11) and the key
# (~110 bytes for a 64-character `hashed_key`, ~250 for a tuple of three short strings). Keys
# must stay that small: hash anything a user or a registry chose (`hashed_key`).
ENTRY_OVERHEAD = 512

# How far `approx_size` walks: levels, and objects (past that the rest is extrapolated).
_MAX_DEPTH = 32
_MAX_OBJECTS = 4096
_ATOMIC = (str, bytes, bytearray, int, float, complex, type(None), bool, range)

# How often reads look for expired entries to drop (writes always do, as cachetools does).
SWEEP_SECONDS = 1.0


def hashed_key(*parts: str) -> str:
    """A fixed-size cache key for `parts` (sha256 hex of the length-prefixed parts).

    Length prefixes keep ("ab", "c") and ("a", "bc") apart. For a key of other values, hash
    their `repr` (only when that repr shows every field, as default dataclass reprs do).
    """
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def approx_size(obj: object) -> int:
    """Approximate bytes `obj` holds: `sys.getsizeof` of it and of what it contains.

    Walks str/bytes, tuples, lists, sets, dicts and other mappings, dataclasses, pydantic
    models and exceptions (their args and attributes); any other object counts its own size
    only. Objects met twice count once (so cycles end). At most `_MAX_OBJECTS` objects are
    visited: when that cuts a container's children short, the rest count as the average of
    those seen, so a huge value still estimates huge, in bounded time. Containers deeper than
    `_MAX_DEPTH` levels count their own size only.

    Not pympler's `asizeof`: it walks every object exactly (and through classes and modules),
    which takes milliseconds for a sizeable value, on every insert; a cache wants a quick
    estimate that scales with the value, not an exact figure.
    """
    seen: set[int] = set()
    budget = _MAX_OBJECTS

    def walk(value: object, depth: int) -> int:
        nonlocal budget
        if id(value) in seen:
            return 0
        seen.add(id(value))
        budget -= 1
        size = sys.getsizeof(value)
        if isinstance(value, _ATOMIC) or depth >= _MAX_DEPTH:
            return size
        children, count = _children(value)
        if not count:
            return size
        inner = walked = 0
        for child in children:
            if budget <= 0:
                break
            inner += walk(child, depth + 1)
            walked += 1
        if walked < count:
            inner += inner * (count - walked) // walked if walked else 8 * (count - walked)
        return size + inner

    return walk(obj, 0)


def _children(value: object) -> tuple[Any, int]:
    """What `value` holds, as an iterable, and how many things that is."""
    if isinstance(value, tuple | list | set | frozenset):
        return value, len(value)
    if isinstance(value, Mapping):
        return (x for item in value.items() for x in item), 2 * len(value)
    if isinstance(value, BaseModel):
        fields = dict(value.__dict__)
        fields.update(value.__pydantic_extra__ or {})
        return fields.values(), len(fields)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = [f.name for f in dataclasses.fields(value)]
        return (getattr(value, name, None) for name in names), len(names)
    if isinstance(value, BaseException):
        attrs = [*value.args, *getattr(value, "__dict__", {}).values()]
        return attrs, len(attrs)
    return (), 0


class BoundedCache(TLRUCache[K, V, float]):
    """An LRU mapping bounded by approximate bytes, with an optional time to live.

    `max_bytes` is the budget: each entry counts `sizeof(value)` (default `approx_size`) plus
    `entry_overhead` for its key and bookkeeping, and the least recently used entries go to
    make room. An entry larger than the whole budget is not kept (and replaces nothing: the
    old value under its key is dropped), where cachetools would raise.

    `ttl` is None (kept until evicted), seconds for every entry, or a function of the value
    giving that entry's seconds (per-item TTL, for tokens that say when they expire); zero or
    less keeps nothing. Expired entries are dropped on reads too (`in`, `[]`, `get`: at most
    once per `SWEEP_SECONDS`; `len`), not only on writes, so their memory is given back even
    when nothing new is cached; an expired entry is never returned.
    `timer` is injected by tests.
    """

    def __init__(
        self,
        max_bytes: int,
        *,
        ttl: float | Callable[[V], float] | None = None,
        timer: Callable[[], float] = time.monotonic,
        sizeof: Callable[[V], int] = approx_size,
        entry_overhead: int = ENTRY_OVERHEAD,
    ) -> None:
        def ttu(_key: K, value: V, now: float) -> float:
            if ttl is None:
                return math.inf
            return now + (ttl(value) if callable(ttl) else ttl)

        def getsizeof(value: V) -> float:
            return sizeof(value) + entry_overhead

        super().__init__(max_bytes, ttu, timer, getsizeof)
        self._next_sweep = -math.inf

    def __setitem__(self, key: K, value: V) -> None:
        try:
            super().__setitem__(key, value)
        except ValueError:  # cachetools' "value too large": over the whole budget
            self.pop(key, None)

    def _sweep(self) -> None:
        """Drop the expired entries, at most once per `SWEEP_SECONDS` of reads: a read of a
        warm cache is a dict lookup, and scanning for dead entries on every one of them cost
        the admission hot path more than the lookup. (An expired entry is never handed out
        meanwhile: cachetools checks each entry's own expiry when it is read.)"""
        now = self.timer()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_SECONDS
            self.expire(now)

    def __getitem__(self, key: K) -> V:
        self._sweep()
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._sweep()
        return super().__contains__(key)

    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: V | T) -> V | T: ...
    def get(self, key: K, default: object = None) -> object:
        self._sweep()
        try:  # TLRUCache's own lookup: a missing or expired entry is a KeyError
            return TLRUCache.__getitem__(self, key)
        except KeyError:
            return default
