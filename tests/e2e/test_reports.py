"""PolicyReports and Events stored in, and read back from, a real API server.

The PolicyReport CRDs come from the chart (`policyReports.installCRDs=true`), rendered with helm
and applied with kubectl, as a cluster without Kyverno would get them (`report_crds`, in
`tests/e2e/conftest.py`).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.cluster import Cluster
from webhook.k8s.reports import ReportWriter
from webhook.policy.checker import CheckResult
from webhook.policy.model import Mode, Severity
from webhook.policy.outcome import Violation
from webhook.report.policyreport import (
    CLUSTER_SUMMARY_NAME,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    ReportEntry,
    WorkloadRef,
    build_cluster_summary,
    build_policy_reports,
    entries_from_policy_reports,
    merge_report,
    report_name,
)

pytestmark = pytest.mark.integration

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def entry(
    namespace: str, name: str, verdict: str = "pass", kind: str = "Deployment"
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
    ref = WorkloadRef(api_version, kind, namespace, name, uid=str(uuid.uuid4()))
    return ReportEntry(ref, "app", result, {"default": Mode.audit}, NOW)


def stored(cluster: Cluster, namespace: str) -> dict[str, Any] | None:
    got = cluster.kubectl(
        "get", "policyreports.wgpolicyk8s.io", "-n", namespace, "-o", "json", check=False
    )
    assert got.returncode == 0, got.stderr
    items = json.loads(got.stdout)["items"]
    mine = [i for i in items if i["metadata"]["name"] == report_name(namespace)]
    return mine[0] if mine else None


def names_in(report: dict[str, Any]) -> set[str]:
    return {r["resources"][0]["name"] for r in report["results"]}


def cluster_summary(cluster: Cluster) -> dict[str, Any]:
    got = cluster.kubectl(
        "get", "clusterpolicyreports.wgpolicyk8s.io", CLUSTER_SUMMARY_NAME, "-o", "json"
    )
    return dict(json.loads(got.stdout))


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

    back = await writer.read_all()
    mine = [
        r
        for r in back
        if r["metadata"].get("namespace") in (namespace, other_namespace)
        or r["metadata"]["name"] == CLUSTER_SUMMARY_NAME
    ]
    assert {(r["kind"], r["metadata"]["name"]) for r in mine} == {
        ("PolicyReport", report_name(namespace)),
        ("PolicyReport", report_name(other_namespace)),
        ("ClusterPolicyReport", CLUSTER_SUMMARY_NAME),
    }

    def key(e: ReportEntry) -> tuple[Any, ...]:
        r = e.result
        return (e.workload, e.container, r.image, r.digest, r.verdict, r.violations, e.checked_at)

    assert sorted(map(key, entries_from_policy_reports(mine)), key=str) == sorted(
        map(key, entries), key=str
    )
    report = stored(cluster, namespace)
    assert report is not None
    assert report["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY
    assert report["summary"] == {"pass": 9, "fail": 1, "warn": 0, "error": 0, "skip": 0}
    assert cluster_summary(cluster)["summary"]["fail"] == 2


async def test_second_write_removes_results_of_gone_workloads_and_reports_of_gone_namespaces(
    writer: ReportWriter, cluster: Cluster, namespace: str, other_namespace: str
) -> None:
    await writer.write_all(
        build_policy_reports(
            [entry(namespace, "web"), entry(namespace, "gone"), entry(other_namespace, "x")], NOW
        )
    )
    assert stored(cluster, other_namespace) is not None

    await writer.write_all(build_policy_reports([entry(namespace, "web", "fail")], NOW))

    report = stored(cluster, namespace)
    assert report is not None
    assert names_in(report) == {"web"}
    assert report["summary"]["fail"] == 1
    assert stored(cluster, other_namespace) is None
    summary = cluster_summary(cluster)
    assert summary["summary"] == report["summary"]
    assert json.loads(summary["metadata"]["annotations"]["imagegate.dev/namespaces"]) == {
        namespace: report["summary"]
    }


async def test_merge_replaces_only_the_named_workloads_and_keeps_the_others(
    writer: ReportWriter, cluster: Cluster, namespace: str, other_namespace: str
) -> None:
    await writer.write_all(
        build_policy_reports(
            [entry(namespace, "keep"), entry(namespace, "change"), entry(other_namespace, "o")],
            NOW,
        )
    )

    await writer.merge(
        build_policy_reports([entry(namespace, "change", "fail"), entry(namespace, "new")], NOW),
        merge_report,
        build_cluster_summary,
    )

    report = stored(cluster, namespace)
    assert report is not None
    assert names_in(report) == {"keep", "change", "new"}
    by_name: dict[str, list[str]] = {}
    for r in report["results"]:
        by_name.setdefault(r["resources"][0]["name"], []).append(r["result"])
    assert by_name["keep"].count("fail") == 0
    assert by_name["change"].count("fail") == 1
    assert len(by_name["change"]) == 5, "the old results of `change` were replaced, not added"
    assert report["summary"] == {"pass": 14, "fail": 1, "warn": 0, "error": 0, "skip": 0}
    assert stored(cluster, other_namespace) is not None, "merge never deletes reports"
    summary = cluster_summary(cluster)["summary"]
    assert summary == {"pass": 19, "fail": 1, "warn": 0, "error": 0, "skip": 0}


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
