"""Memory of the webhook under tenants who send huge values (issue 13.3), measured in one run.

Drives the whole app in process (`create_app` through Starlette's TestClient) with a registry
that answers every image with one small, valid image (`httpx.MockTransport`: the figure is the
webhook's own memory, not a registry's). Two scenarios, each from a fresh app:

* 500 reviews, each a Pod whose container `command` is a unique 1 MB string;
* 900 reviews, each naming a unique 60 kB image reference.

RSS (VmRSS of this process) is read before and after each scenario, after a full GC. The
bound from the issue is 256 MB after each; the script exits 1 when a scenario exceeds it.

    .venv/bin/python bench/bench_memory.py
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

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

LIMIT_MB = 256.0


def registry(request: httpx.Request) -> httpx.Response:
    if "/blobs/" in request.url.path:
        return httpx.Response(200, content=CONFIG)
    return httpx.Response(200, content=MANIFEST, headers={"Content-Type": mt.OCI_MANIFEST})


def rss_mb() -> float:
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@contextmanager
def webhook() -> Iterator[TestClient]:
    settings = Settings()
    client = RegistryClient(settings.registry, Keyring.empty(), httpx.MockTransport(registry))
    context = ProcessContext.from_settings(settings, registry=client)
    policy = ImagePolicy.model_validate({"spec": {"rules": {"allowedBases": {"enabled": False}}}})
    app = create_app(
        settings, context=context, cluster=NoCluster(), policies=StaticPolicies([policy])
    )
    with TestClient(app) as test_client:
        yield test_client


def scenario(name: str, count: int, container: Callable[[int], dict[str, Any]]) -> bool:
    with webhook() as client:
        before = rss_mb()
        statuses: dict[int, int] = {}
        for i in range(count):
            answer = client.post("/validate", json=review(container(i)))
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        after = rss_mb()
    ok = after < LIMIT_MB
    print(
        f"{name}: {count} reviews, statuses {statuses}, RSS {before:.0f} MB -> {after:.0f} MB "
        f"(limit {LIMIT_MB:.0f} MB) {'ok' if ok else 'OVER'}"
    )
    return ok


def main() -> int:
    big_commands = scenario(
        "unique 1 MB commands",
        500,
        lambda i: {
            "image": "registry.example/app:1",
            "command": ["/app", f"{i:08d}" + "x" * (1024 * 1024)],
        },
    )
    long_references = scenario(
        "unique 60 kB references",
        900,
        lambda i: {"image": f"registry.example/{i:04d}" + "/a" * (30 * 1024) + ":1"},
    )
    return 0 if big_commands and long_references else 1


if __name__ == "__main__":
    sys.exit(main())
