"""`make bench`: speed of the inspection core, measured against a real registry.

1. Warm-cache checks per second: one image after a first check filled the caches (tag→digest
   trusted for its TTL, facts by digest forever): with every rule evaluated again, and with the
   verdict cache the webhook uses.
2. 50 concurrent checks of one uncached image: the registry's own access log must show exactly
   one manifest GET and one config-blob GET for it (singleflight).

Prints the numbers; exits 1 if the fetch counts are not exactly one each.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402

from tests.fixtures.images import build_fixtures, push_unique  # noqa: E402
from tests.support.registry import await_requests, start_registry  # noqa: E402
from webhook.policy.checker import Checker  # noqa: E402
from webhook.policy.model import ImagePolicy  # noqa: E402
from webhook.registry.client import RegistryClient  # noqa: E402
from webhook.registry.facts import Platform  # noqa: E402
from webhook.settings import RegistrySettings  # noqa: E402

PLATFORM = Platform.parse("linux/amd64")
WARM_SECONDS = 5.0
CONCURRENT = 50


async def warm_rate(ref: str, policy: ImagePolicy, verdict_cache: bool) -> tuple[int, float]:
    async with RegistryClient(RegistrySettings(tag_ttl_seconds=3600)) as client:
        checker = Checker(client, result_ttl=3600 if verdict_cache else 0)
        first = await checker.check(ref, [policy], PLATFORM)
        assert first.verdict != "error", first.error
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < WARM_SECONDS:
            results = await asyncio.gather(
                *(checker.check(ref, [policy], PLATFORM) for _ in range(100))
            )
            assert all(r.verdict == first.verdict for r in results)
            done += len(results)
        return done, time.perf_counter() - start


async def concurrent_cold(ref: str, policy: ImagePolicy) -> float:
    async with RegistryClient(RegistrySettings()) as client:
        checker = Checker(client, concurrency=CONCURRENT)
        start = time.perf_counter()
        results = await asyncio.gather(
            *(checker.check(ref, [policy], PLATFORM) for _ in range(CONCURRENT))
        )
        elapsed = time.perf_counter() - start
    errors = [r.error for r in results if r.verdict == "error"]
    assert not errors, errors
    return elapsed


def main() -> int:
    client = docker.from_env(timeout=300)
    with tempfile.TemporaryDirectory(prefix="imagegate-bench-") as state:
        registry = start_registry(Path(state) / "registry")
        try:
            refs = build_fixtures(client, registry.host)
            base = refs["base"]
            policy = ImagePolicy().with_overrides([base], 2_000_000)

            for verdict_cache in (False, True):
                done, seconds = asyncio.run(warm_rate(refs["good"], policy, verdict_cache))
                what = "verdicts cached" if verdict_cache else "full evaluation, registry cached"
                print(f"warm-cache checks ({what}): {done / seconds:,.0f} checks/s")

            repo_path = f"fixtures/bench-{uuid.uuid4().hex[:8]}"
            push_unique(client, "good", f"{registry.host}/{repo_path}", "1")
            since = registry.log_offset()
            elapsed = asyncio.run(concurrent_cold(f"{registry.host}/{repo_path}:1", policy))
            manifests = await_requests(
                registry.log_path, "GET", f"/v2/{repo_path}/manifests/", 1, status=200, since=since
            )
            blobs = await_requests(
                registry.log_path, "GET", f"/v2/{repo_path}/blobs/", 1, status=200, since=since
            )
            print(
                f"{CONCURRENT} concurrent checks of one uncached image: {elapsed * 1000:.0f} ms, "
                f"registry saw {manifests} manifest GET and {blobs} config blob GET"
            )
        finally:
            registry.stop()
    if (manifests, blobs) != (1, 1):
        print("FAIL: expected exactly one manifest and one config fetch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
