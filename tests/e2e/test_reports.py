"""PolicyReports and Events stored in, and read back from, a real API server.

The PolicyReport CRDs come from the chart (`policyReports.installCRDs=true`), rendered with helm
and applied with kubectl, as a cluster without Kyverno would get them (`report_crds`, in
`tests/e2e/conftest.py`). One report per workload, with `scope` and an ownerReference: the
garbage collector test runs a real kube-controller-manager (its garbage collector only) next to
the API server, since the e2e control plane has none.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster, find_binary
from tests.support.policy_reporter import collisions
from tests.support.processes import LoggedProcess, spawn
from webhook.k8s.cluster import KubernetesCluster
from webhook.k8s.reports import ReportWriter
from webhook.policy.checker import CheckResult
from webhook.policy.model import Mode, Severity
from webhook.policy.outcome import Violation
from webhook.report.policyreport import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    RESULT_ID,
    ReportEntry,
    WorkloadRef,
    build_policy_reports,
    entries_from_policy_reports,
    merge_report,
    report_name,
)

pytestmark = pytest.mark.integration

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def entry(
    namespace: str,
    name: str,
    verdict: str = "pass",
    kind: str = "Deployment",
    uid: str | None = None,
    container: str = "app",
) -> ReportEntry:
    violations = (
        [Violation("non-root-user", "runs as root: add USER 65532", Severity.high, "default")]
        if verdict == "fail"
        else []
    )
    result = CheckResult(
        image=f"127.0.0.1:5000/app/{name}:1",
        verdict="fail" if violations else "pass",
        digest="sha256:" + "a" * 64,
        platform="linux/amd64",
        violations=violations,
        facts={"compressedSize": 1234, "effectiveUser": "0" if violations else "65532"},
        policies=["default"],
    )
    api_version = "v1" if kind == "Pod" else "apps/v1"
    ref = WorkloadRef(api_version, kind, namespace, name, uid=uid or str(uuid.uuid4()))
    return ReportEntry(ref, container, result, {"default": Mode.audit}, NOW)


def stored_reports(cluster: Cluster, *namespaces: str) -> dict[tuple[str, str], dict[str, Any]]:
    """{(namespace, name): report} of the PolicyReports of `namespaces`, as kubectl reads them."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for namespace in namespaces:
        got = cluster.kubectl(
            "get", "policyreports.wgpolicyk8s.io", "-n", namespace, "-o", "json", check=False
        )
        assert got.returncode == 0, got.stderr
        for item in json.loads(got.stdout)["items"]:
            found[(namespace, item["metadata"]["name"])] = item
    return found


def stored(cluster: Cluster, workload: WorkloadRef) -> dict[str, Any] | None:
    return stored_reports(cluster, workload.namespace).get(
        (workload.namespace, report_name(workload))
    )


def cluster_reports(cluster: Cluster) -> list[dict[str, Any]]:
    got = cluster.kubectl("get", "clusterpolicyreports.wgpolicyk8s.io", "-o", "json")
    items: list[dict[str, Any]] = json.loads(got.stdout)["items"]
    return [i for i in items if (i["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL)]


async def test_reports_written_to_the_api_server_read_back_as_the_same_entries(
    writer: ReportWriter, cluster: Cluster, namespace: str, other_namespace: str
) -> None:
    entries = [
        entry(namespace, "web", "fail"),
        entry(namespace, "api"),
        entry(other_namespace, "worker", "fail", kind="Pod"),
    ]
    reports = build_policy_reports(entries, NOW)

    await writer.write_all(reports)

    mine = stored_reports(cluster, namespace, other_namespace)
    assert set(mine) == {
        (namespace, "imagegate-deployment-api"),
        (namespace, "imagegate-deployment-web"),
        (other_namespace, "imagegate-pod-worker"),
    }
    assert cluster_reports(cluster) == [], "no cluster summary any more"

    def key(e: ReportEntry) -> tuple[Any, ...]:
        r = e.result
        return (e.workload, e.container, r.image, r.digest, r.verdict, r.violations, e.checked_at)

    read = entries_from_policy_reports(list(mine.values()))
    assert sorted(map(key, read), key=str) == sorted(map(key, entries), key=str)
    web = mine[(namespace, "imagegate-deployment-web")]
    ref = entries[0].workload
    assert web["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY
    assert web["scope"] == ref.to_json()
    assert web["metadata"]["ownerReferences"] == [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": ref.uid}
    ]
    assert web["summary"] == {"pass": 4, "fail": 1, "warn": 0, "error": 0, "skip": 0}
    assert all(r["properties"][RESULT_ID] for r in web["results"])
    assert collisions(list(mine.values())) == {}

    # kubectl's columns show who each report is about (the CRD prints .scope.kind/.scope.name)
    wide = cluster.kubectl("get", "polr", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:4] == ["NAME", "KIND", "NAME", "PASS"]
    rows = sorted(line.split()[:5] for line in wide[1:])
    assert rows == [
        ["imagegate-deployment-api", "Deployment", "api", "5", "0"],
        ["imagegate-deployment-web", "Deployment", "web", "4", "1"],
    ]


async def test_a_second_write_deletes_the_reports_of_gone_workloads(
    writer: ReportWriter, cluster: Cluster, namespace: str, other_namespace: str
) -> None:
    await writer.write_all(
        build_policy_reports(
            [entry(namespace, "web"), entry(namespace, "gone"), entry(other_namespace, "x")], NOW
        )
    )
    assert len(stored_reports(cluster, namespace, other_namespace)) == 3

    await writer.write_all(build_policy_reports([entry(namespace, "web", "fail")], NOW))

    left = stored_reports(cluster, namespace, other_namespace)
    assert list(left) == [(namespace, "imagegate-deployment-web")]
    assert left[(namespace, "imagegate-deployment-web")]["summary"]["fail"] == 1


async def test_a_scan_keeps_reports_the_recorder_created_after_it_started(
    writer: ReportWriter, cluster: Cluster, namespace: str
) -> None:
    """A workload admitted while a scan runs is not in the scan's inventory: its report (just
    written by the admission recorder) must survive the scan's cleanup."""
    old = entry(namespace, "old")
    await writer.write_all(build_policy_reports([old], NOW))
    started = datetime.now(UTC)
    await asyncio.sleep(1.1)  # creationTimestamp has whole seconds
    admitted = entry(namespace, "admitted")
    await writer.merge(build_policy_reports([admitted], NOW), merge_report)

    await writer.write_all([], keep_created_since=started)

    assert list(stored_reports(cluster, namespace)) == [
        (namespace, "imagegate-deployment-admitted")
    ]
    await writer.write_all([], keep_created_since=started + timedelta(seconds=5))
    assert stored_reports(cluster, namespace) == {}


async def test_merge_replaces_the_workloads_reports_and_keeps_the_others(
    writer: ReportWriter, cluster: Cluster, namespace: str, other_namespace: str
) -> None:
    keep, change = entry(namespace, "keep"), entry(namespace, "change")
    await writer.write_all(build_policy_reports([keep, change, entry(other_namespace, "o")], NOW))
    cluster.kubectl(
        "label", "policyreports.wgpolicyk8s.io", "-n", namespace, report_name(change.workload),
        "team=shop",
    )  # fmt: skip

    changed = entry(namespace, "change", "fail", uid=change.workload.uid, container="app")
    await writer.merge(build_policy_reports([changed, entry(namespace, "new")], NOW), merge_report)

    reports = stored_reports(cluster, namespace, other_namespace)
    assert {name for _, name in reports} == {
        "imagegate-deployment-keep",
        "imagegate-deployment-change",
        "imagegate-deployment-new",
        "imagegate-deployment-o",
    }, "merge never deletes reports"
    got = reports[(namespace, "imagegate-deployment-change")]
    assert [r["result"] for r in got["results"]].count("fail") == 1
    assert len(got["results"]) == 5, "the old results of `change` were replaced, not added"
    assert got["summary"] == {"pass": 4, "fail": 1, "warn": 0, "error": 0, "skip": 0}
    assert got["metadata"]["labels"]["team"] == "shop", "labels others set are kept"
    assert reports[(namespace, "imagegate-deployment-keep")]["summary"]["fail"] == 0


async def test_a_writer_without_rights_on_cluster_reports_still_cleans_up_its_own(
    cluster: Cluster, namespace: str, report_crds: None
) -> None:
    """ClusterPolicyReports are listed only to delete an earlier version's summary: a
    ServiceAccount allowed PolicyReports alone (RBAC of the real API server) writes and
    deletes them, and is refused nothing else."""
    account = f"reports-{uuid.uuid4().hex[:8]}"
    rbac = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": account, "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": account},
         "rules": [{"apiGroups": ["wgpolicyk8s.io"], "resources": ["policyreports"],
                    "verbs": ["get", "list", "create", "update", "delete"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": account},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": account},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]},
    ]  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                           "items": rbac}))  # fmt: skip
    denied = cluster.kubectl(
        "get", "clusterpolicyreports", check=False,
        kubeconfig=cluster.serviceaccount_kubeconfig(namespace, account),
    )  # fmt: skip
    assert denied.returncode != 0, denied.stdout
    assert "forbidden" in denied.stderr.lower(), denied.stderr
    kube = KubernetesCluster.connect(str(cluster.serviceaccount_kubeconfig(namespace, account)))
    try:
        writer = ReportWriter(kube.api_client, f"{MANAGED_BY_LABEL}={MANAGED_BY}")
        await writer.write_all(
            build_policy_reports([entry(namespace, "a"), entry(namespace, "b")], NOW)
        )
        await writer.write_all(build_policy_reports([entry(namespace, "a")], NOW))
    finally:
        kube.close()
        cluster.kubectl("delete", "clusterrolebinding,clusterrole", account, check=False)
    assert list(stored_reports(cluster, namespace)) == [(namespace, "imagegate-deployment-a")]


# ---- garbage collection: a real kube-controller-manager runs its garbage collector -------


@pytest.fixture(scope="module")
def garbage_collector(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """kube-controller-manager with only the garbage collector, on the e2e API server."""
    binary = find_binary("kube-controller-manager")
    logs = tmp_path_factory.mktemp("kcm")
    proc: LoggedProcess = spawn(
        "kube-controller-manager",
        [
            str(binary),
            f"--kubeconfig={cluster.kubeconfig}",
            "--controllers=garbagecollector",
            "--leader-elect=false",
            "--secure-port=0",
            "--use-service-account-credentials=false",
            "--concurrent-gc-syncs=5",
        ],
        Path(logs) / "kube-controller-manager.log",
    )
    time.sleep(2)
    assert proc.alive(), proc.log_tail()
    try:
        yield
    finally:
        proc.stop()


async def test_the_garbage_collector_deletes_the_report_with_its_workload(
    writer: ReportWriter, cluster: Cluster, namespace: str, garbage_collector: None
) -> None:
    """The ownerReference is real: deleting the Deployment deletes its report, while the report
    of a workload that stays is left alone."""
    uids = {}
    for name in ("web", "stays"):
        manifest = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": "app:1"}]},
                },
            },
        }
        done = cluster.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(manifest))
        uids[name] = json.loads(done.stdout)["metadata"]["uid"]
    entries = [entry(namespace, name, uid=uid) for name, uid in uids.items()]
    await writer.write_all(build_policy_reports(entries, NOW))
    web, stays = (e.workload for e in entries)
    assert stored(cluster, web) is not None

    cluster.kubectl("delete", "deployment", "web", "-n", namespace, "--wait=false")

    for _ in range(120):  # the collector's informers notice the deletion within seconds
        if stored(cluster, web) is None:
            break
        await asyncio.sleep(0.5)
    assert stored(cluster, web) is None, "the garbage collector removed the report"
    assert stored(cluster, stays) is not None


async def test_event_emitted_once_per_workload_and_message(
    writer: ReportWriter, cluster: Cluster, namespace: str
) -> None:
    ref = WorkloadRef("apps/v1", "Deployment", namespace, "web", str(uuid.uuid4()))
    message = "imagegate: 1 violation: non-root-user"

    first = await writer.emit_event(ref, "ImagePolicyViolation", message)
    again = await writer.emit_event(ref, "ImagePolicyViolation", message)
    changed = await writer.emit_event(ref, "ImagePolicyViolation", message + ", size-budget")

    assert (first, again, changed) == (True, False, True)
    got = cluster.kubectl("get", "events", "-n", namespace, "-o", "json")
    events = [e for e in json.loads(got.stdout)["items"] if e["involvedObject"]["name"] == "web"]
    assert sorted(e["message"] for e in events) == [message, message + ", size-budget"]
    assert {e["type"] for e in events} == {"Warning"}
    assert {e["involvedObject"]["kind"] for e in events} == {"Deployment"}
    assert {e["reason"] for e in events} == {"ImagePolicyViolation"}
