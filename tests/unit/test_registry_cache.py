"""Caches and single-flight: immutable by digest, TTL by tag, brief negative memory."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest

from webhook.caches import ENTRY_OVERHEAD, BoundedCache
from webhook.errors import ImageNotFound, RegistryUnavailable
from webhook.registry import cache as registry_cache
from webhook.registry.cache import DigestCache, NegativeCache, SingleFlight, TagCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_digest_cache_evicts_least_recently_used_by_bytes() -> None:
    entry = 400 + ENTRY_OVERHEAD  # each entry also counts its key and bookkeeping
    cache = DigestCache(max_bytes=2 * entry + 399)
    cache.put("sha256:a", b"a" * 400)
    cache.put("sha256:b", b"b" * 400)
    assert cache.get("sha256:a") == b"a" * 400  # a is now the most recently used
    cache.put("sha256:c", b"c" * 400)
    assert "sha256:b" not in cache
    assert cache.get("sha256:a") is not None
    assert cache.get("sha256:c") is not None
    assert cache.current_bytes == 2 * entry


def test_digest_cache_skips_an_item_larger_than_the_budget() -> None:
    cache = DigestCache(max_bytes=ENTRY_OVERHEAD + 10)
    cache.put("sha256:small", b"12345")
    cache.put("sha256:huge", b"x" * 11)
    assert "sha256:huge" not in cache
    assert cache.get("sha256:small") == b"12345"


def test_digest_cache_never_expires_by_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Content addressed by digest never goes stale: only the byte budget evicts it. DigestCache
    takes no timer, so the clock goes in where it builds its BoundedCache (any `ttl` a change
    gave it would then count on this clock), and moves by ten years."""
    clock = FakeClock()

    def clocked(*args: Any, **kwargs: Any) -> BoundedCache[Any, Any]:
        return BoundedCache(*args, **{"timer": clock, **kwargs})

    monkeypatch.setattr(registry_cache, "BoundedCache", clocked)
    cache = DigestCache(max_bytes=1000)
    cache.put("sha256:a", b"data")
    clock.now += 10 * 365 * 24 * 3600
    assert "sha256:a" in cache
    assert cache.get("sha256:a") == b"data"
    assert len(cache) == 1


def test_tag_cache_trusts_a_tag_only_for_its_ttl() -> None:
    clock = FakeClock()
    cache = TagCache(ttl=30, timer=clock)
    cache.put("localhost:5001", "app", "1", "sha256:one")
    clock.now += 29
    assert cache.get("localhost:5001", "app", "1") == "sha256:one"
    clock.now += 2
    assert cache.get("localhost:5001", "app", "1") is None


def test_tag_cache_with_zero_ttl_keeps_nothing() -> None:
    clock = FakeClock()  # stands still: not even the instant it was put in
    cache = TagCache(ttl=0, timer=clock)
    cache.put("r", "app", "1", "sha256:one")
    assert cache.get("r", "app", "1") is None


def test_negative_cache_reraises_the_failure_until_it_expires() -> None:
    clock = FakeClock()
    cache: NegativeCache[str] = NegativeCache(ttl=5, timer=clock)
    cache.remember("k", ImageNotFound("manifest unknown: x", reference="x"))
    for _ in range(3):
        with pytest.raises(ImageNotFound, match="manifest unknown: x") as info:
            cache.check("k")
        # The traceback must not grow with every re-raise.
        depth = 0
        tb = info.value.__traceback__
        while tb is not None:
            depth += 1
            tb = tb.tb_next
        assert depth <= 2
    clock.now += 6
    cache.check("k")  # expired: no raise


def test_negative_cache_ignores_errors_that_say_nothing_about_the_registry() -> None:
    cache: NegativeCache[str] = NegativeCache(ttl=5)
    cache.remember("bug", KeyError("oops"))
    cache.remember("cancel", asyncio.CancelledError())
    cache.check("bug")
    cache.check("cancel")


def test_negative_cache_with_zero_ttl_is_disabled() -> None:
    clock = FakeClock()  # stands still: not even the instant it was remembered
    cache: NegativeCache[str] = NegativeCache(ttl=0, timer=clock)
    cache.remember("k", RegistryUnavailable("down"))
    cache.check("k")
    assert "k" not in cache


async def test_single_flight_shares_one_call_among_50_waiters() -> None:
    sf: SingleFlight[str] = SingleFlight()
    calls = 0
    gate = asyncio.Event()

    async def work() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "result"

    waiters = [asyncio.create_task(sf.do("k", work)) for _ in range(50)]
    await asyncio.sleep(0)
    assert "k" in sf
    gate.set()
    results = await asyncio.gather(*waiters)
    assert results == ["result"] * 50
    assert calls == 1
    assert "k" not in sf


async def test_single_flight_keys_are_independent() -> None:
    sf: SingleFlight[str] = SingleFlight()
    seen: list[str] = []

    async def work(key: str) -> str:
        seen.append(key)
        await asyncio.sleep(0.01)
        return key.upper()

    results = await asyncio.gather(*(sf.do(k, functools.partial(work, k)) for k in "aba"))
    assert results == ["A", "B", "A"]
    assert sorted(seen) == ["a", "b"]


async def test_single_flight_propagates_an_exception_to_every_waiter() -> None:
    sf: SingleFlight[str] = SingleFlight()
    calls = 0

    async def boom() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise ImageNotFound("manifest unknown: r/app:nope")

    results = await asyncio.gather(*(sf.do("k", boom) for _ in range(10)), return_exceptions=True)
    assert calls == 1
    assert all(isinstance(r, ImageNotFound) for r in results)
    assert "k" not in sf


async def test_cancelling_one_waiter_does_not_cancel_the_shared_work() -> None:
    sf: SingleFlight[str] = SingleFlight()
    gate = asyncio.Event()
    calls = 0

    async def work() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "done"

    first = asyncio.create_task(sf.do("k", work))
    second = asyncio.create_task(sf.do("k", work))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    assert await second == "done"
    assert calls == 1


async def test_work_is_cancelled_when_every_waiter_left() -> None:
    """An admission out of time must not leave its fetch (and retry sleeps) running on."""
    sf: SingleFlight[str] = SingleFlight()
    cancelled = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    waiters = [asyncio.create_task(sf.do("k", work)) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[0].cancel()
    waiters[1].cancel()
    await asyncio.sleep(0.01)
    assert not cancelled.is_set()  # one waiter is still there
    waiters[2].cancel()
    await asyncio.wait_for(cancelled.wait(), 1)
    await asyncio.sleep(0)
    assert "k" not in sf


async def test_key_is_free_after_completion_so_the_next_call_runs_again() -> None:
    sf: SingleFlight[str] = SingleFlight()
    calls = 0

    async def work() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert await sf.do("k", work) == 1
    assert await sf.do("k", work) == 2
