"""The operator's background scan against a real API server, registry and fixture images.

No controller-manager runs here, so the ReplicaSet and Pod a Deployment would make are created
by hand with the owner references the controllers would set. The test namespaces carry the
webhook's opt-out label, so that an imagegate webhook another module left registered cannot
refuse these deliberately bad workloads; the scanner here is told not to honour that label.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.support.cluster import Cluster
from tests.support.kube import fresh_namespace
from webhook.k8s.cluster import KubernetesCluster
from webhook.k8s.reports import ReportWriter
from webhook.operator.scan import Scanner, ScanOutcome
from webhook.policy.checker import Checker
from webhook.policy.model import ImagePolicy
from webhook.registry.auth import Keyring
from webhook.registry.client import RegistryClient
from webhook.report.policyreport import WorkloadRef, report_name
from webhook.settings import RegistrySettings

pytestmark = pytest.mark.integration


def pod(name: str, image: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app": name}}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "image": image}]},
    }


def controller(kind: str, api_version: str, name: str, image: str, **extra: Any) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, **extra},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def owner_ref(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def apply(cluster: Cluster, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    done = cluster.kubectl(
        "apply", "-n", namespace, "-o", "json", "-f", "-", input=yaml.safe_dump(obj)
    )
    return dict(json.loads(done.stdout))


OPT_OUT = "imagegate.dev/ignore"


@pytest.fixture
def first_namespace(cluster: Cluster, namespace: str) -> str:
    cluster.kubectl("label", "namespace", namespace, f"{OPT_OUT}=true")
    return namespace


@pytest.fixture
def second_namespace(cluster: Cluster) -> Iterator[str]:
    with fresh_namespace(cluster, "e2e", {OPT_OUT: "true"}) as name:
        yield name


def audit_policy(base: str) -> ImagePolicy:
    return ImagePolicy.model_validate(
        {
            "metadata": {"name": "scan-e2e"},
            "spec": {
                "mode": "audit",
                "rules": {
                    "allowedBases": {"references": [base]},
                    "sizeBudget": {"maxCompressedSize": "2MB"},
                },
            },
        }
    )


@dataclass
class Scan:
    """A Scanner with a fresh registry client, the audit policy it scans with, and the cluster,
    images and (first) namespace of the test."""

    scanner: Scanner
    writer: ReportWriter
    policy: ImagePolicy
    cluster: Cluster
    images: dict[str, str]
    namespace: str

    async def run(self) -> ScanOutcome:
        """One scan, recorded (PolicyReports and Events written)."""
        outcome = await self.scanner.scan([self.policy])
        await self.scanner.record(outcome)
        return outcome

    async def results(self, namespace: str) -> dict[str, Any]:
        return results_by_resource(await self.writer.read_all(), namespace)


@pytest.fixture
async def scan(
    kube: KubernetesCluster,
    writer: ReportWriter,
    cluster: Cluster,
    fixture_images: dict[str, str],
    first_namespace: str,
) -> AsyncIterator[Scan]:
    async with RegistryClient(RegistrySettings(), Keyring.empty()) as client:
        scanner = Scanner(Checker(client), kube, writer, Keyring.empty(), opt_out_label=None)
        policy = audit_policy(fixture_images["base"])
        yield Scan(scanner, writer, policy, cluster, fixture_images, first_namespace)


def results_by_resource(outcome_reports: list[dict[str, Any]], namespace: str) -> dict[str, Any]:
    """{"Kind/name": {rule: result}} of the namespace's imagegate reports (one per workload)."""
    found: dict[str, dict[str, str]] = {}
    for report in outcome_reports:
        meta = report["metadata"]
        if report["kind"] != "PolicyReport" or meta.get("namespace") != namespace:
            continue
        scope = report["scope"]
        workload = WorkloadRef(scope["apiVersion"], scope["kind"], namespace, scope["name"])
        assert meta["name"] == report_name(workload), "one report per workload"
        assert meta["ownerReferences"][0]["uid"] == scope["uid"]
        for r in report["results"]:
            assert r["resources"] == [scope]
            res = r["resources"][0]
            found.setdefault(f"{res['kind']}/{res['name']}", {})[r["rule"]] = r["result"]
    return found


def mine(outcome: ScanOutcome, *namespaces: str) -> set[str]:
    return {
        f"{e.workload.kind}/{e.workload.name}"
        for e in outcome.entries
        if e.workload.namespace in namespaces
    }


async def test_scan_reports_each_workload_once_with_results_per_rule(
    scan: Scan, second_namespace: str
) -> None:
    cluster, images, namespace = scan.cluster, scan.images, scan.namespace
    apply(cluster, namespace, pod("good", images["good"]))
    apply(cluster, namespace, pod("root", images["root-script"]))
    web = apply(
        cluster, namespace, controller("Deployment", "apps/v1", "web", images["shell-chain"])
    )
    rs = apply(
        cluster,
        namespace,
        controller(
            "ReplicaSet", "apps/v1", "web-5d4f", images["shell-chain"],
            ownerReferences=[owner_ref(web)],
        ),
    )  # fmt: skip
    apply(cluster, namespace, pod("web-5d4f-x1", images["shell-chain"], owner_ref(rs)))
    apply(
        cluster, second_namespace, controller("Deployment", "apps/v1", "api", images["named-user"])
    )
    apply(cluster, second_namespace, pod("big", images["big"]))

    outcome = await scan.run()

    assert mine(outcome, namespace) == {"Pod/good", "Pod/root", "Deployment/web"}
    assert mine(outcome, second_namespace) == {"Deployment/api", "Pod/big"}
    assert outcome.images >= 5
    first = await scan.results(namespace)
    assert set(first) == {"Pod/good", "Pod/root", "Deployment/web"}
    assert set(first["Pod/good"].values()) == {"pass"}
    assert len(first["Pod/good"]) == 5, "one result per enabled rule"
    assert first["Pod/root"]["non-root-user"] == "fail"
    assert first["Deployment/web"]["single-entrypoint"] == "fail"
    assert first["Deployment/web"]["non-root-user"] == "pass"
    second = await scan.results(second_namespace)
    assert set(second) == {"Deployment/api", "Pod/big"}
    assert second["Deployment/api"]["non-root-user"] == "fail"
    assert second["Pod/big"]["size-budget"] == "fail"
    assert second["Pod/big"]["non-root-user"] == "pass"

    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
    warned = {
        f"{e['involvedObject']['kind']}/{e['involvedObject']['name']}": e["message"]
        for e in events["items"]
        if e["reason"] == "ImagePolicyViolation"
    }
    assert set(warned) == {"Pod/root", "Deployment/web"}
    assert warned["Pod/root"].startswith("imagegate: ")
    assert "non-root-user" in warned["Pod/root"]


async def test_rescan_after_a_workload_is_deleted_removes_its_results(scan: Scan) -> None:
    cluster, namespace = scan.cluster, scan.namespace
    apply(cluster, namespace, pod("stays", scan.images["good"]))
    apply(cluster, namespace, pod("goes", scan.images["zero"]))
    await scan.run()
    assert set(await scan.results(namespace)) == {"Pod/stays", "Pod/goes"}

    cluster.kubectl("delete", "pod", "goes", "-n", namespace)  # never scheduled: gone at once
    await scan.run()

    assert set(await scan.results(namespace)) == {"Pod/stays"}
