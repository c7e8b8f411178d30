"""A stalled registry fills only its own inspection slots (issue 13.2).

The in-process registry fake answers one registry's images after 30 s; while the Checker's
slots for that registry are all taken, an image on another registry is checked at once.
(bench/bench_isolation.py measures the same through the whole app with real servers.)
"""

from __future__ import annotations

import asyncio
import time

from tests.unit.fakes import FakeRegistry, image, policy
from webhook.policy.checker import Checker
from webhook.registry.facts import Platform

STALLED = "stalled.example/team/app{}:1"
HEALTHY = "healthy.example/team/app:1"


async def test_a_stalled_registry_does_not_delay_another_registrys_images() -> None:
    stuck = [STALLED.format(i) for i in range(4)]
    registry = FakeRegistry(
        {**{ref: image("s") for ref in stuck}, HEALTHY: image("h")},
        delays=dict.fromkeys(stuck, 30.0),
    )
    checker = Checker(registry, concurrency=2)  # type: ignore[arg-type]
    gate = [policy(rules={"allowedBases": {"enabled": False}})]
    amd64 = Platform("linux", "amd64")
    waiting = [asyncio.create_task(checker.check(ref, gate, amd64)) for ref in stuck]
    await asyncio.sleep(0.05)  # every slot of stalled.example is taken, two wait for one
    started = time.monotonic()
    result = await asyncio.wait_for(checker.check(HEALTHY, gate, amd64), 2)
    assert time.monotonic() - started < 0.5
    assert result.verdict == "pass"
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
