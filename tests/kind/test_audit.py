"""Audit mode on kind: a violating workload is admitted and runs, and its violations become
PolicyReports (from the webhook and the operator's background audit: one per workload, owned by
it), Warning Events, and the rows `imagegate report --from-cluster` prints."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.kind.harness import Kind
from tests.support.manifests import deployment
from tests.support.policy_reporter import collisions


def test_a_running_workload_in_audit_mode_is_reported_and_imagegate_report_reads_it(
    kind: Kind, audit_namespace: str, kind_images: dict[str, str]
) -> None:
    answer = kind.apply(deployment("legacy", kind_images["root-script"]), audit_namespace)
    assert answer.returncode == 0, answer.stderr
    assert "Warning: imagegate (audit): container app: non-root-user:" in answer.stderr
    kind.wait_selector_ready(audit_namespace, "app=legacy", 1)  # it really runs

    def reported() -> list[dict[str, Any]] | None:
        results = [
            r
            for report in kind.items("policyreports", audit_namespace)
            for r in report.get("results", [])
            if any(res.get("name") == "legacy" for res in r.get("resources", []))
        ]
        return results if any(r["rule"] == "non-root-user" for r in results) else None

    results = kind.wait_for(
        f"a PolicyReport in {audit_namespace} about Deployment legacy", reported, 90,
        lambda: kind.kubectl("get", "policyreports", "-A", "-o", "yaml", check=False).stdout,
    )  # fmt: skip
    verdicts = {r["rule"]: r["result"] for r in results}
    assert verdicts["non-root-user"] == "fail", results
    assert verdicts.get("single-entrypoint") == "pass", results
    assert {r["resources"][0]["kind"] for r in results} == {"Deployment"}, results

    # one report for the Deployment: scope and owner are the Deployment itself
    uid = kind.get("deployment", "legacy", audit_namespace)["metadata"]["uid"]
    report = kind.get("policyreports", "imagegate-deployment-legacy", audit_namespace)
    assert report["scope"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "legacy",
        "namespace": audit_namespace, "uid": uid,
    }  # fmt: skip
    assert report["metadata"]["ownerReferences"] == [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "legacy", "uid": uid}
    ]
    assert all(r["properties"].get("resultID") for r in report["results"]), report
    assert collisions([report]) == {}, "Policy Reporter would drop results"
    assert not kind.items("clusterpolicyreports", selector="app.kubernetes.io/managed-by=imagegate")

    def warned() -> str | None:  # by the operator's scan (every 30 s in this suite)
        messages = [
            e["message"]
            for e in kind.events(audit_namespace, "legacy")
            if e["type"] == "Warning" and e["involvedObject"]["kind"] == "Deployment"
        ]
        return next((m for m in messages if "non-root-user" in m), None)

    kind.wait_for(
        "the operator's Warning Event on Deployment legacy", warned, 90,
        lambda: kind.diagnose("imagegate-system", "app.kubernetes.io/component=operator"),
    )  # fmt: skip

    done = subprocess.run(
        [sys.executable, "-m", "webhook", "report", "--from-cluster",
         "--kubeconfig", str(kind.kubeconfig), "--output", "json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.dumps(json.loads(done.stdout))
    assert audit_namespace in rows
    assert "legacy" in rows
    assert "non-root-user" in rows

    # the garbage collector removes the report with the Deployment
    kind.kubectl("delete", "deployment", "legacy", "-n", audit_namespace, "--wait=false")

    def report_gone() -> bool | None:
        names = [r["metadata"]["name"] for r in kind.items("policyreports", audit_namespace)]
        return True if "imagegate-deployment-legacy" not in names else None

    kind.wait_for(
        "the report of Deployment legacy to be garbage-collected", report_gone, 60,
        lambda: kind.kubectl("get", "policyreports", "-n", audit_namespace, "-o", "yaml").stdout,
    )  # fmt: skip
