"""A stalled registry must not delay anyone else's images (issue 13.2), measured in one run.

Two real HTTP servers on loopback: one that accepts every request and never answers, one that
serves a small valid image for any name at once. The webhook app runs in process (ASGI, with
its lifespan). 50 admissions of images on the stalled registry are started; while they are in
flight, 80 admissions of distinct (uncached) images on the healthy registry are sent, 10 at a
time, and their latencies measured. The bound from the issue is p99 < 1 s; the script exits 1
when it is not met.

    .venv/bin/python bench/bench_isolation.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.support.small_image import CONFIG, MANIFEST, review  # noqa: E402
from webhook.admission.app import create_app  # noqa: E402
from webhook.context import ProcessContext  # noqa: E402
from webhook.k8s.cluster import NoCluster  # noqa: E402
from webhook.policy.model import ImagePolicy  # noqa: E402
from webhook.policy.store import StaticPolicies  # noqa: E402
from webhook.registry import mediatypes as mt  # noqa: E402
from webhook.registry.auth import Keyring  # noqa: E402
from webhook.registry.client import RegistryClient  # noqa: E402
from webhook.settings import Settings  # noqa: E402

STALLED, HEALTHY, BATCH = 50, 80, 10
P99_LIMIT = 1.0


def serve(stall: threading.Event | None) -> ThreadingHTTPServer:
    """A registry on 127.0.0.1: stalling until `stall` is set, or answering at once."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if stall is not None:
                stall.wait(120)
                return
            body, kind = (CONFIG, "application/json")
            if "/manifests/" in self.path:
                body, kind = MANIFEST, mt.OCI_MANIFEST
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # the default 5 makes concurrent connects wait 1 s (SYN retry)

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


async def main() -> int:
    release = threading.Event()
    stalled, healthy = serve(release), serve(None)
    stalled_host = f"127.0.0.1:{stalled.server_address[1]}"
    healthy_host = f"127.0.0.1:{healthy.server_address[1]}"
    settings = Settings()
    registry = RegistryClient(settings.registry, Keyring.empty())
    context = ProcessContext.from_settings(settings, registry=registry)
    policy = ImagePolicy.model_validate({"spec": {"rules": {"allowedBases": {"enabled": False}}}})
    app = create_app(
        settings, context=context, cluster=NoCluster(), policies=StaticPolicies([policy])
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://webhook", timeout=60) as http,
    ):

        async def admit(image: str) -> tuple[float, int, bool]:
            started = time.perf_counter()
            answer = await http.post("/validate", json=review({"image": image}))
            allowed = answer.status_code == 200 and answer.json()["response"]["allowed"]
            return time.perf_counter() - started, answer.status_code, allowed

        stuck = [
            asyncio.create_task(admit(f"{stalled_host}/team/stuck{i}:1")) for i in range(STALLED)
        ]
        await asyncio.sleep(0.5)  # the stalled admissions hold their fetches now
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        admitted = 0
        for start in range(0, HEALTHY, BATCH):
            batch = [admit(f"{healthy_host}/team/app{i}:1") for i in range(start, start + BATCH)]
            for seconds, status, allowed in await asyncio.gather(*batch):
                latencies.append(seconds)
                statuses[status] = statuses.get(status, 0) + 1
                admitted += allowed
        in_flight = sum(not task.done() for task in stuck)
        release.set()
        stalled_results = await asyncio.gather(*stuck)
    stalled.shutdown()
    healthy.shutdown()
    slowest_per_batch = [max(latencies[i : i + BATCH]) for i in range(0, HEALTHY, BATCH)]
    print("slowest per batch (ms):", ", ".join(f"{s * 1000:.0f}" for s in slowest_per_batch))
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[max(int(len(latencies) * 0.99) - 1, 0)]
    ok = p99 < P99_LIMIT and admitted == HEALTHY
    print(
        f"healthy uncached admissions while {in_flight} of {STALLED} stalled ones were in "
        f"flight: {HEALTHY} sent, {admitted} admitted, statuses {statuses}, "
        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms (limit {P99_LIMIT * 1000:.0f} ms) "
        f"{'ok' if ok else 'OVER'}"
    )
    denied = sum(not allowed for _, _, allowed in stalled_results)
    slowest = max(seconds for seconds, _, _ in stalled_results)
    print(f"stalled admissions: {denied} of {STALLED} denied by onError, slowest {slowest:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
