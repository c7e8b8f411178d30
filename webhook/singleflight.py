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
