"""The operator's background scan against a real API server, registry and fixture images.

No controller-manager runs here, so the ReplicaSet and Pod a Deployment would make are created
by hand with the owner references the controllers would set. The test namespaces carry the
webhook's opt-out label, so that an imagegate webhook another module left registered cannot
refuse these deliberately bad workloads; the scanner here is told not to honour that label.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import yaml

from hack.cluster import Cluster
from tests.e2e.test_reports import SELECTOR, install_report_crds
from webhook.k8s.cluster import KubernetesCluster
from webhook.k8s.reports import ReportWriter
from webhook.operator.scan import Scanner, ScanOutcome
from webhook.policy.checker import Checker
from webhook.policy.model import ImagePolicy
from webhook.registry.auth import Keyring
from webhook.registry.client import RegistryClient
from webhook.report.policyreport import report_name
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
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, f"{OPT_OUT}=true")
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def policy(fixture_images: dict[str, str]) -> ImagePolicy:
    return ImagePolicy.model_validate(
        {
            "metadata": {"name": "scan-e2e"},
            "spec": {
                "mode": "audit",
                "rules": {
                    "allowedBases": {"references": [fixture_images["base"]]},
                    "sizeBudget": {"maxCompressedSize": "2MB"},
                },
            },
        }
    )


@pytest.fixture
def kube(cluster: Cluster) -> Iterator[KubernetesCluster]:
    install_report_crds(cluster)
    connected = KubernetesCluster.connect(str(cluster.kubeconfig))
    try:
        yield connected
    finally:
        connected.close()


@pytest.fixture
def writer(kube: KubernetesCluster) -> ReportWriter:
    return ReportWriter(kube.api_client, SELECTOR)


@pytest.fixture
async def scanner(kube: KubernetesCluster, writer: ReportWriter) -> AsyncIterator[Scanner]:
    async with RegistryClient(RegistrySettings(), Keyring.empty()) as client:
        yield Scanner(Checker(client), kube, writer, Keyring.empty(), opt_out_label=None)


def results_by_resource(outcome_reports: list[dict[str, Any]], namespace: str) -> dict[str, Any]:
    """{"Kind/name": {rule: result}} of the namespace's imagegate report."""
    found: dict[str, dict[str, str]] = {}
    for report in outcome_reports:
        meta = report["metadata"]
        if report["kind"] != "PolicyReport" or meta.get("namespace") != namespace:
            continue
        assert meta["name"] == report_name(namespace)
        for r in report["results"]:
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
    scanner: Scanner,
    writer: ReportWriter,
    policy: ImagePolicy,
    cluster: Cluster,
    fixture_images: dict[str, str],
    first_namespace: str,
    second_namespace: str,
) -> None:
    images, namespace = fixture_images, first_namespace
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

    outcome = await scanner.scan([policy])
    await scanner.record(outcome)

    assert mine(outcome, namespace) == {"Pod/good", "Pod/root", "Deployment/web"}
    assert mine(outcome, second_namespace) == {"Deployment/api", "Pod/big"}
    assert outcome.images >= 5
    reports = await writer.read_all()
    first = results_by_resource(reports, namespace)
    assert set(first) == {"Pod/good", "Pod/root", "Deployment/web"}
    assert set(first["Pod/good"].values()) == {"pass"}
    assert len(first["Pod/good"]) == 5, "one result per enabled rule"
    assert first["Pod/root"]["non-root-user"] == "fail"
    assert first["Deployment/web"]["single-entrypoint"] == "fail"
    assert first["Deployment/web"]["non-root-user"] == "pass"
    second = results_by_resource(reports, second_namespace)
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


async def test_rescan_after_a_workload_is_deleted_removes_its_results(
    scanner: Scanner,
    writer: ReportWriter,
    policy: ImagePolicy,
    cluster: Cluster,
    fixture_images: dict[str, str],
    first_namespace: str,
) -> None:
    namespace = first_namespace
    apply(cluster, namespace, pod("stays", fixture_images["good"]))
    apply(cluster, namespace, pod("goes", fixture_images["zero"]))
    await scanner.record(await scanner.scan([policy]))
    before = results_by_resource(await writer.read_all(), namespace)
    assert set(before) == {"Pod/stays", "Pod/goes"}

    cluster.kubectl("delete", "pod", "goes", "-n", namespace)  # never scheduled: gone at once
    await scanner.record(await scanner.scan([policy]))

    after = results_by_resource(await writer.read_all(), namespace)
    assert set(after) == {"Pod/stays"}
