"""`make bench`: the operator's background scan at scale, against a real API server and registry.

A local control plane (etcd + kube-apiserver, `hack/cluster.py`) holds 2,000 Pods over 10
namespaces using 200 distinct images (each a `push_unique` variant of a fixture, so nothing is
cached yet: half compliant, half running as root). One `Scanner.scan` with a fresh registry
client must cost at most one manifest and one config-blob fetch per distinct image digest, as
the registry's own access log counts them; resolving the policy's approved base adds one of
each, counted apart. Then `Scanner.record` writes the PolicyReports and Events, timed too.

Prints the times and counts; exits 1 if the fetch bound is broken or the scan lost workloads.
`BENCH_SCAN_IMAGES` / `BENCH_SCAN_PODS` shrink it for a quick try.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import yaml  # noqa: E402

from tests.fixtures.images import build_fixtures, push_unique  # noqa: E402
from tests.support.cluster import Cluster, find_binary, start_cluster  # noqa: E402
from tests.support.registry import count_requests, start_registry  # noqa: E402
from webhook.k8s.cluster import KubernetesCluster  # noqa: E402
from webhook.k8s.reports import ReportWriter  # noqa: E402
from webhook.operator.scan import Scanner, ScanOutcome  # noqa: E402
from webhook.policy.checker import Checker  # noqa: E402
from webhook.policy.model import ImagePolicy  # noqa: E402
from webhook.registry.auth import Keyring  # noqa: E402
from webhook.registry.client import RegistryClient  # noqa: E402
from webhook.report.policyreport import MANAGED_BY, MANAGED_BY_LABEL  # noqa: E402
from webhook.settings import RegistrySettings  # noqa: E402

IMAGES = int(os.environ.get("BENCH_SCAN_IMAGES", "200"))
PODS = int(os.environ.get("BENCH_SCAN_PODS", "2000"))
NAMESPACES = 10
REPO = "bench/scan"
FIXTURES = ("good", "root-script")  # alternate: half the images pass, half fail


def push_images(host: str) -> list[str]:
    """IMAGES distinct images (`host/bench/scan:N`), pushed by a few engine clients at once."""

    def push(i: int) -> str:
        client = docker.from_env(timeout=300)
        try:
            return push_unique(client, FIXTURES[i % len(FIXTURES)], f"{host}/{REPO}", str(i))
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        digests = list(pool.map(push, range(IMAGES)))
    if len(set(digests)) != IMAGES:
        raise SystemExit(f"expected {IMAGES} distinct digests, pushed {len(set(digests))}")
    return [f"{host}/{REPO}:{i}" for i in range(IMAGES)]


def create_pods(cluster: Cluster, images: list[str]) -> None:
    """NAMESPACES namespaces and PODS Pods (Pod i uses image i % IMAGES), in bulk."""
    namespaces = [f"bench-{n}" for n in range(NAMESPACES)]
    items: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in namespaces
    ]
    cluster.kubectl(
        "create",
        "-f",
        "-",
        input=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}),
    )
    pods = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"pod-{i:04d}", "namespace": namespaces[i % NAMESPACES]},
            "spec": {"containers": [{"name": "app", "image": images[i % IMAGES]}]},
        }
        for i in range(PODS)
    ]
    chunks = [pods[i : i + 250] for i in range(0, PODS, 250)]

    def create(chunk: list[dict[str, Any]]) -> None:
        manifest = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": chunk})
        cluster.kubectl("create", "-o", "name", "-f", "-", input=manifest)

    with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
        list(pool.map(create, chunks))


def install_report_crds(cluster: Cluster) -> None:
    helm = find_binary("helm", path_fallback=True)
    rendered = subprocess.run(
        [str(helm), "template", "imagegate", str(ROOT / "charts" / "imagegate"),
         "--set", "policyReports.installCRDs=true",
         "--show-only", "templates/policyreport-crds.yaml"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=rendered)
    cluster.kubectl(
        "wait", "--for", "condition=Established", "--timeout", "60s",
        "crd/policyreports.wgpolicyk8s.io", "crd/clusterpolicyreports.wgpolicyk8s.io",
    )  # fmt: skip


async def scan_and_record(cluster: Cluster, policy: ImagePolicy) -> tuple[ScanOutcome, float]:
    kube = KubernetesCluster.connect(str(cluster.kubeconfig))
    try:
        async with RegistryClient(RegistrySettings(), Keyring.empty()) as client:
            writer = ReportWriter(kube.api_client, f"{MANAGED_BY_LABEL}={MANAGED_BY}")
            scanner = Scanner(Checker(client), kube, writer, Keyring.empty())
            outcome = await scanner.scan([policy])
            start = time.perf_counter()
            await scanner.record(outcome)
            return outcome, time.perf_counter() - start
    finally:
        kube.close()


def main() -> int:
    engine = docker.from_env(timeout=300)
    with tempfile.TemporaryDirectory(prefix="imagegate-bench-scan-") as state:
        t0 = time.perf_counter()
        cluster = start_cluster(Path(state) / "cluster")
        registry = start_registry(Path(state) / "registry")
        try:
            refs = build_fixtures(engine, registry.host)
            images = push_images(registry.host)
            create_pods(cluster, images)
            install_report_crds(cluster)
            print(
                f"setup: control plane, registry, {IMAGES} images, {PODS} Pods in "
                f"{NAMESPACES} namespaces: {time.perf_counter() - t0:.0f} s"
            )
            base_repo = refs["base"].split("/", 1)[1].rsplit(":", 1)[0]
            policy = ImagePolicy().with_overrides([refs["base"]], 2_000_000)

            since = registry.log_offset()
            outcome, record_seconds = asyncio.run(scan_and_record(cluster, policy))
            time.sleep(0.5)  # the registry writes its access log after answering

            def count(kind: str, repo: str) -> int:
                return count_requests(
                    registry.log_path, "GET", f"/v2/{repo}/{kind}/", status=200, since=since
                )

            manifests, blobs = count("manifests", REPO), count("blobs", REPO)
            base_manifests, base_blobs = count("manifests", base_repo), count("blobs", base_repo)
            all_manifests = count_requests(
                registry.log_path, "GET", "/manifests/", status=200, since=since
            )
            all_blobs = count_requests(registry.log_path, "GET", "/blobs/", status=200, since=since)
        finally:
            registry.stop()
            cluster.stop()
    verdicts = {v: sum(e.result.verdict == v for e in outcome.entries) for v in ("pass", "fail")}
    rules = Counter(v.rule for e in outcome.entries for v in e.result.violations)
    print(
        f"scan of {outcome.workloads} Pods ({outcome.images} distinct images, "
        f"{outcome.checks} distinct checks): {outcome.duration:.2f} s "
        f"({verdicts['pass']} pass, {verdicts['fail']} fail, {len(outcome.errors)} errors)"
    )
    print(f"violations by rule: {dict(sorted(rules.items()))}")
    print(f"record (PolicyReports of {NAMESPACES} namespaces + Events): {record_seconds:.2f} s")
    print(
        f"registry GETs: {manifests} manifests and {blobs} config blobs for {IMAGES} images; "
        f"approved base: {base_manifests} manifest and {base_blobs} config blob; "
        f"in all {all_manifests} manifests, {all_blobs} blobs"
    )
    failures: list[str] = []
    if outcome.workloads != PODS or len(outcome.entries) != PODS:
        failures.append(f"expected {PODS} workloads, scanned {outcome.workloads}")
    if outcome.errors:
        failures.append(f"{len(outcome.errors)} errors, first: {outcome.errors[0]}")
    if manifests > IMAGES or blobs > IMAGES:
        failures.append(f"more than one manifest/config fetch per image ({IMAGES})")
    if base_manifests > 1 or base_blobs > 1:
        failures.append("the approved base was fetched more than once")
    if all_manifests > IMAGES + 1 or all_blobs > IMAGES + 1:
        failures.append(f"more than {IMAGES} + 1 (base) fetches of each kind in all")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
