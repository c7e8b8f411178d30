"""Re-reading objects from the cluster every few seconds, in the background."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from webhook.errors import ImagegateError

log = logging.getLogger(__name__)


class Poller:
    """Runs `refresh` now and then every `interval` seconds until stopped.

    Polling rather than watching keeps the webhook simple and robust (no watch to resume after
    a dropped connection); a few seconds of delay is fine for policies and replacements.
    """

    def __init__(self, refresh: Callable[[], Awaitable[None]], interval: float, what: str) -> None:
        self._refresh = refresh
        self._interval = interval
        self._what = what
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"poll {self._what}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self._refresh()
            except ImagegateError as err:
                log.error("cannot read %s", self._what, extra={"error": str(err)})
            await asyncio.sleep(self._interval)
