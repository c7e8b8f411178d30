"""How many inspections run at once, per registry.

One global semaphore let a stalled registry take every slot: 50 admissions of images on a
registry that never answers blocked the healthy images of everyone else until their budget
ran out. Each registry now has its own slots, so a stalled one fills only its own.
"""

from __future__ import annotations

import asyncio

from cachetools import LRUCache

from webhook.errors import ImagegateError
from webhook.registry.inspect import DAEMON_PREFIX
from webhook.registry.reference import Reference


class RegistryLimits:
    """`limits(registry)` → that registry's semaphore (`per_registry` slots).

    Semaphores are kept for the `max_registries` most recently used registries; one evicted
    while in use only lets a few extra inspections through, never blocks.
    """

    def __init__(self, per_registry: int, max_registries: int = 1024) -> None:
        self._per_registry = per_registry
        self._semaphores: LRUCache[str, asyncio.Semaphore] = LRUCache(maxsize=max_registries)

    def __call__(self, registry: str) -> asyncio.Semaphore:
        semaphore = self._semaphores.get(registry)
        if semaphore is None:
            semaphore = self._semaphores[registry] = asyncio.Semaphore(self._per_registry)
        return semaphore

    def of_image(self, image: str) -> asyncio.Semaphore:
        """The semaphore of the registry `image` lives on (the local engine for daemon ones)."""
        if image.startswith(DAEMON_PREFIX):
            return self(DAEMON_PREFIX)
        try:
            return self(Reference.parse(image).registry)
        except ImagegateError:
            return self("")  # the inspection fails on the same error, at once
