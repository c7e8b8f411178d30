"""`make bench`: imagegate's `/validate` against a bare FastAPI endpoint, side by side.

Both run as one uvicorn worker (uvloop + httptools, HTTPS with the same certificate) on this
2-core machine; wrk (one thread, so it leaves the other core to the server) sends the same
realistic review (a Pod as a ReplicaSet creates it, after defaulting: owner reference, token
volume, tolerations, probes; `realistic_pod_review`), over 16 connections. Runs alternate (bare,
imagegate, bare, imagegate …) so that noise from the shared machine hits both; the medians are
compared. Warm caches: the review is answered once before measuring. Requirement: imagegate ≥
0.7 × bare.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import httpx  # noqa: E402

from bench.wrk import median, wrk  # noqa: E402
from tests.fixtures.images import build_fixtures, push_unique  # noqa: E402
from tests.integration.reviews import (  # noqa: E402
    container,
    pod_spec,
    realistic_pod_review,
    review,
)
from tests.support.processes import free_port  # noqa: E402
from tests.support.registry import RegistryProcess, await_requests, start_registry  # noqa: E402
from tests.support.webhook import WebhookServer, start_webhook  # noqa: E402

SECONDS = 8
COLD = 100
ROUNDS = 5
CONNECTIONS = 16
REQUIRED_RATIO = 0.7


def main() -> int:
    if shutil.which("wrk") is None:
        print("wrk is not installed: run hack/install-deps.sh", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="imagegate-bench-") as tmp:
        state = Path(tmp)
        registry = start_registry(state / "registry")
        try:
            client = docker.from_env(timeout=300)
            refs = build_fixtures(client, registry.host)
            (state / "policy.yaml").write_text(
                "apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: bench}\n"
                f"spec:\n  rules:\n    allowedBases: {{references: ['{refs['base']}']}}\n"
            )
            body = state / "review.json"
            body.write_text(json.dumps(realistic_pod_review(refs["good"])))
            gate = start_webhook(state, ["--policy", str(state / "policy.yaml")])
            bare_port = free_port()
            bare = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "bench.bare_app:app",
                 "--port", str(bare_port), "--loop", "uvloop", "--http", "httptools",
                 "--no-access-log", "--log-level", "warning",
                 "--ssl-certfile", str(state / "tls/tls.crt"),
                 "--ssl-keyfile", str(state / "tls/tls.key")],
                cwd=ROOT,
            )  # fmt: skip
            try:
                with gate.client() as http:  # warm the caches, and prove the verdict is real
                    answer = http.post("/validate", content=body.read_bytes()).json()
                    assert answer["response"]["allowed"] is True, answer
                bare_url = f"https://127.0.0.1:{bare_port}/validate"
                _wait(bare_url, gate.ca)
                bare_runs, gate_runs = [], []
                for _ in range(ROUNDS):
                    bare_runs.append(wrk(bare_url, body, CONNECTIONS, SECONDS))
                    gate_runs.append(wrk(f"{gate.url}/validate", body, CONNECTIONS, SECONDS))
                fetches = cold_admissions(gate, registry, client)
            finally:
                bare.terminate()
                gate.stop()
        finally:
            registry.stop()
    ratio = median([r[0] for r in gate_runs]) / median([r[0] for r in bare_runs])
    for name, runs in (("bare FastAPI", bare_runs), ("imagegate /validate", gate_runs)):
        rps, p50, p99 = (median([r[i] for r in runs]) for i in range(3))
        print(
            f"{name:22} {rps:8,.0f} req/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms  (median of "
            f"{', '.join(f'{r[0]:,.0f}' for r in runs)})"
        )
    print(
        f"ratio imagegate/bare: {ratio:.2f} (required ≥ {REQUIRED_RATIO}; {ROUNDS} alternating "
        f"rounds of {SECONDS}s, {CONNECTIONS} connections, 1 worker each)"
    )
    print(
        f"{COLD} concurrent admissions of Pods using one uncached image: registry saw "
        f"{fetches[0]} manifest GET and {fetches[1]} config blob GET"
    )
    return 0 if ratio >= REQUIRED_RATIO and fetches == (1, 1) else 1


def cold_admissions(gate: WebhookServer, registry: RegistryProcess, client: Any) -> tuple[int, int]:
    """100 concurrent reviews of Pods with one image nobody has fetched: fetches per blob."""
    repo = f"fixtures/cold-{uuid.uuid4().hex[:8]}"
    push_unique(client, "good", f"{registry.host}/{repo}", "1")
    since = registry.log_offset()
    spec = pod_spec(container("app", f"{registry.host}/{repo}:1"))
    bodies = [review("Pod", spec) for _ in range(COLD)]

    async def send() -> None:
        async with gate.async_client() as http:
            answers = await asyncio.gather(*(http.post("/validate", json=b) for b in bodies))
        assert all(a.status_code == 200 for a in answers)

    asyncio.run(send())
    manifests = await_requests(registry.log_path, "GET", f"/v2/{repo}/manifests/", 1, since=since)
    blobs = await_requests(registry.log_path, "GET", f"/v2/{repo}/blobs/", 1, since=since)
    return manifests, blobs


def _wait(url: str, ca: Path) -> None:
    import ssl

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(
                url.replace("/validate", "/docs"), verify=ssl.create_default_context(cafile=str(ca))
            )
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


if __name__ == "__main__":
    sys.exit(main())
