"""Concurrent identical requests share one in-flight task (DESIGN §4: one fetch per image)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar, cast

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class SingleFlight(Generic[K]):
    """Concurrent `do(key, factory)` calls for one key share a single in-flight task.

    Hand-written because there is no maintained asyncio single-flight library (the Go
    `singleflight` idea); it is a dict of tasks plus `asyncio.shield`:

    * the first caller starts `factory()` as a task; later callers await the same task;
    * a cancelled caller only stops waiting: the shared task is shielded and keeps running for
      the others; when the last waiter leaves, the task is cancelled, so an admission that
      ran out of time stops its fetches and their retry sleeps instead of leaving them to
      hold connections and slots for a stalled registry;
    * an exception reaches every waiter;
    * the key is released as soon as the task ends, so the next call starts afresh.
    """

    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Task[object]] = {}
        self._waiters: dict[asyncio.Task[object], int] = {}

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
        self._waiters[task] = self._waiters.get(task, 0) + 1
        try:
            return cast(T, await asyncio.shield(task))
        finally:
            left = self._waiters[task] - 1
            if left:
                self._waiters[task] = left
            else:
                del self._waiters[task]
                if not task.done():  # nobody waits any more
                    task.cancel()

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
