"""BoundedCache (issue 13.3): bounded by bytes, expiring on reads, keys hashed."""

from __future__ import annotations

import gc
import random
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import cachetools
import pytest
from pydantic import BaseModel

from webhook.caches import ENTRY_OVERHEAD, BoundedCache, approx_size, hashed_key
from webhook.errors import ImageNotFound
from webhook.registry.auth import TokenCache
from webhook.registry.cache import NegativeCache, TagCache

MB = 1_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Blob:
    """A value that can be watched with a weakref, to see its memory given back."""

    data: bytes


def raw_size(cache: BoundedCache[str, Blob] | BoundedCache[str, str]) -> float:
    """`currsize` as stored, without the expiry that reading the property runs first."""
    size: float = cachetools.Cache.currsize.fget(cache)  # type: ignore[attr-defined]
    return size


# ---- the byte bound -------------------------------------------------------------------------


def test_the_byte_bound_holds_with_many_entries_of_different_sizes() -> None:
    rnd = random.Random(13)
    cache: BoundedCache[str, str] = BoundedCache(1024 * 1024)
    for i in range(2_000):
        cache[f"k{i}"] = "x" * rnd.choice([0, 10, 1_000, 30_000, 200_000])
        assert raw_size(cache) <= cache.maxsize
        if i % 7 == 0:
            cache.get(f"k{rnd.randrange(i + 1)}")  # reads reorder the LRU
    assert 0 < len(cache) < 2_000
    # What is counted is what is held: each entry's value plus the fixed overhead.
    assert cache.currsize == sum(approx_size(cache[k]) + ENTRY_OVERHEAD for k in list(cache))


def test_the_least_recently_used_entries_make_room() -> None:
    entry = approx_size("a" * 1_000) + ENTRY_OVERHEAD
    cache: BoundedCache[str, str] = BoundedCache(3 * entry)
    for key in "abc":
        cache[key] = key * 1_000
    assert cache["a"] == "a" * 1_000  # a is now the most recently used
    cache["d"] = "d" * 1_000
    assert sorted(cache) == ["a", "c", "d"]


def test_an_item_larger_than_the_whole_budget_is_not_kept() -> None:
    cache: BoundedCache[str, str] = BoundedCache(10_000)
    cache["small"] = "s"
    cache["huge"] = "x" * 20_000  # no exception
    assert "huge" not in cache
    assert cache.get("small") == "s"
    # Nor does it leave the previous value of its key behind.
    cache["small"] = "x" * 20_000
    assert "small" not in cache
    assert cache.currsize == 0


def test_sizeof_and_overhead_can_be_chosen() -> None:
    cache: BoundedCache[str, bytes] = BoundedCache(100, sizeof=len, entry_overhead=0)
    cache["a"] = b"a" * 60
    cache["b"] = b"b" * 40
    assert cache.currsize == 100
    cache["c"] = b"c"
    assert "a" not in cache


# ---- time ----------------------------------------------------------------------------------


def test_entries_live_for_the_ttl_with_an_injected_timer() -> None:
    clock = FakeClock()
    cache: BoundedCache[str, str] = BoundedCache(MB, ttl=30, timer=clock)
    cache["k"] = "v"
    clock.now += 29.9
    assert cache["k"] == "v"
    clock.now += 0.2
    assert cache.get("k") is None
    with pytest.raises(KeyError):
        cache["k"]


def test_zero_ttl_keeps_nothing() -> None:
    cache: BoundedCache[str, str] = BoundedCache(MB, ttl=0)
    cache["k"] = "v"
    assert "k" not in cache
    assert cache.currsize == 0


def test_without_ttl_entries_stay_until_evicted() -> None:
    clock = FakeClock()
    cache: BoundedCache[str, str] = BoundedCache(MB, timer=clock)
    cache["k"] = "v"
    clock.now += 10**9
    assert cache["k"] == "v"


def test_per_item_ttl() -> None:
    clock = FakeClock()
    cache: BoundedCache[str, tuple[str, float]] = BoundedCache(
        MB, ttl=lambda value: value[1], timer=clock
    )
    cache["short"] = ("a", 5)
    cache["long"] = ("b", 50)
    clock.now += 6
    assert "short" not in cache
    assert cache["long"] == ("b", 50)
    clock.now += 45
    assert cache.get("long") is None


def _getitem(cache: BoundedCache[str, Blob]) -> object:
    try:
        return cache["other"]
    except KeyError:
        return None


READS: dict[str, Callable[[BoundedCache[str, Blob]], object]] = {
    "in": lambda cache: "other" in cache,
    "get": lambda cache: cache.get("other"),
    "getitem": _getitem,
}


@pytest.mark.parametrize("read", list(READS))
def test_expired_entries_are_dropped_on_reads_and_their_memory_given_back(read: str) -> None:
    clock = FakeClock()
    cache: BoundedCache[str, Blob] = BoundedCache(10 * MB, ttl=10, timer=clock)
    watched = []
    for i in range(100):
        blob = Blob(bytes(10_000))
        watched.append(weakref.ref(blob))
        cache[f"k{i}"] = blob
    del blob
    assert raw_size(cache) >= 100 * 10_000
    clock.now += 11
    READS[read](cache)  # no write: only a read of another key
    assert raw_size(cache) == 0
    gc.collect()
    assert all(ref() is None for ref in watched)


def test_a_plain_ttl_cache_would_keep_them_until_the_next_write() -> None:
    """Why BoundedCache expires on reads: cachetools' own read path does not."""
    clock = FakeClock()
    plain: cachetools.TTLCache[str, bytes] = cachetools.TTLCache(10, ttl=10, timer=clock)
    plain["k"] = b"x"
    clock.now += 11
    assert "other" not in plain
    assert cachetools.Cache.__len__(plain) == 1  # still held


# ---- approx_size ---------------------------------------------------------------------------


def test_a_megabyte_string_counts_a_megabyte() -> None:
    assert approx_size("x" * MB) >= MB
    assert approx_size(b"x" * MB) >= MB
    assert approx_size(("x" * MB,)) >= MB


def test_nested_structures_are_counted() -> None:
    strings = [str(i) * 1_000 for i in range(10)]
    assert approx_size(strings) >= 10 * 1_000
    assert approx_size({"a": {"b": [("c", strings)]}}) >= 10 * 1_000
    assert approx_size({f"key{i}" * 100: 1 for i in range(100)}) >= 100 * 400
    assert approx_size({frozenset(strings)}) >= 10 * 1_000


@dataclass(frozen=True)
class Facts:
    name: str
    layers: list[str]


class Model(BaseModel):
    name: str
    facts: Facts
    notes: dict[str, str] = {}


def test_dataclasses_pydantic_models_and_errors_are_walked() -> None:
    facts = Facts("x" * 100_000, ["y" * 50_000])
    assert approx_size(facts) >= 150_000
    assert approx_size(Model(name="n", facts=facts, notes={"k": "z" * 50_000})) >= 200_000
    assert approx_size(ImageNotFound("m" * 100_000, reference="r" * 100_000)) >= 200_000


def test_an_object_shared_within_a_value_counts_once() -> None:
    big = "x" * MB
    assert approx_size([big] * 10) < 2 * MB


def test_cyclic_and_huge_structures_end_fast() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    loop: dict[str, object] = {"list": cyclic}
    loop["self"] = loop
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    huge = list(range(2_000_000))
    wide = {str(i): f"{i:0100d}" for i in range(200_000)}
    started = time.perf_counter()
    assert approx_size(cyclic) > 0
    assert approx_size(loop) > 0
    assert approx_size(deep) > 0
    # Past the walk's limits the rest is estimated, so huge values still count as huge.
    assert approx_size(huge) >= 8 * 2_000_000
    assert approx_size(wide) >= 200_000 * 100
    assert time.perf_counter() - started < 0.5


# ---- keys ----------------------------------------------------------------------------------


def test_hashed_keys_are_short_and_keep_parts_apart() -> None:
    assert len(hashed_key("x" * MB)) == 64
    assert hashed_key("ab", "c") != hashed_key("a", "bc")
    assert hashed_key("a", "") != hashed_key("a")
    assert hashed_key("r", "app", "1") == hashed_key("r", "app", "1")


def test_caches_of_user_supplied_keys_keep_only_hashes() -> None:
    long = "x" * MB
    tags = TagCache(ttl=30)
    tags.put("r", "app", long, "sha256:one")
    assert tags.get("r", "app", long) == "sha256:one"
    negative: NegativeCache[tuple[str, str]] = NegativeCache(ttl=5)
    negative.remember(("blob", long), ImageNotFound("gone"))
    assert ("blob", long) in negative
    tokens = TokenCache()
    tokens.put(("r", long, "anonymous"), "Bearer t", 60)
    assert tokens.get(("r", long, "anonymous")) == "Bearer t"
    for cache in (tags._ttl, negative._ttl, tokens._cache):
        assert [len(key) for key in cache] == [64]


def test_the_negative_cache_keeps_failures_without_their_traceback() -> None:
    """A traceback keeps the frames it went through alive, and their locals (bodies) with them."""
    negative: NegativeCache[str] = NegativeCache(ttl=5)

    def fail() -> None:
        body = bytes(MB)  # a local that the traceback would keep
        raise ImageNotFound(f"manifest unknown ({len(body)} bytes)", reference="r/app:1")

    try:
        fail()
    except ImageNotFound as exc:
        negative.remember("k", exc)
    [kept] = negative._ttl.values()
    assert kept.__traceback__ is None
    assert kept.__context__ is None
    assert approx_size(kept) < 10_000
    with pytest.raises(ImageNotFound, match="manifest unknown") as info:
        negative.check("k")
    assert info.value.reference == "r/app:1"
