"""PolicyReports (wgpolicyk8s.io/v1alpha2) built from check results, and read back.

`sample_entries()` is the cluster every report test uses: three namespaces, enforce and audit
policies, an image that could not be inspected and user text that needs escaping. Its reports
are the golden file `tests/golden/report/policyreports.json` (regenerate with
`IMAGEGATE_UPDATE_GOLDEN=1 pytest tests/unit/test_report_policyreport.py`), which the source
and renderer tests read as a `kubectl get policyreports -A -o json` List.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from webhook.policy.checker import CheckResult
from webhook.policy.model import ImagePolicy, Mode, OnError, Severity
from webhook.policy.outcome import Violation
from webhook.report.policyreport import (
    API_VERSION,
    CLUSTER_SUMMARY_NAME,
    MANAGED_BY_LABEL,
    PolicyInfo,
    ReportEntry,
    WorkloadRef,
    build_cluster_summary,
    build_namespace_report,
    build_policy_reports,
    entries_from_policy_reports,
    merge_report,
    results_of,
    timestamp,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "report"
NOW = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)
UPDATE = os.environ.get("IMAGEGATE_UPDATE_GOLDEN", "") not in ("", "0")
D = "sha256:" + "{}" * 64
ROOT_FIX = (
    "set a numeric non-root USER in the Dockerfile (for example `USER 65532:65532`), or "
    "runAsUser in the pod's securityContext"
)


def digest(c: str) -> str:
    return "sha256:" + c * 64


def facts(size: int, budget: int = 200_000_000, base: str | None = None, **more: Any) -> dict:
    return {
        "user": "65532:65532",
        "compressedSize": size,
        "sizeBudget": budget,
        "effectiveUser": "65532",
        "argv": ["/app/server"],
        "pinned": False,
        "base": {"name": base, "digest": digest("b"), "evidence": "annotation"} if base else None,
        **more,
    }


def violation(rule: str, message: str, severity: Severity, policy: str = "default") -> Violation:
    return Violation(rule, message, severity, policy)


def deploy(ns: str, name: str, kind: str = "Deployment", api: str = "apps/v1") -> WorkloadRef:
    return WorkloadRef(api, kind, ns, name, uid=f"uid-{ns}-{name}")


def sample_entries() -> list[ReportEntry]:
    enforce = {"default": Mode.enforce}
    audit = {"default": Mode.enforce, "audit-team": PolicyInfo(Mode.audit, OnError.allow)}
    good = CheckResult(
        "localhost:5001/shop/web:2.4.1",
        "pass",
        digest("a"),
        "linux/amd64",
        facts=facts(48_200_000, base="gcr.io/distroless/static:nonroot"),
        policies=["default"],
    )
    rooty = CheckResult(
        "localhost:5001/shop/cart:1.9",
        "fail",
        digest("c"),
        "linux/amd64",
        violations=[
            violation("non-root-user", f"the image has no USER, so it runs as root: {ROOT_FIX}",
                      Severity.high),
            violation("size-budget",
                      "the image is 312.4 MB compressed, over the 200.0 MB budget by 112.4 MB: "
                      "build on a smaller base (distroless, slim), copy only the build output "
                      "into a multi-stage final stage, and remove package caches (apt lists, "
                      "pip/npm caches) in the layer that creates them", Severity.medium),
        ],
        facts=facts(312_400_000, base="docker.io/library/python:3.12-slim",
                    effectiveUser="root"),
        policies=["default"],
    )  # fmt: skip
    supervisor = CheckResult(
        "registry.example.com/legacy/monolith:latest",
        "fail",
        digest("e"),
        "linux/arm64/v8",
        violations=[
            violation("single-entrypoint",
                      "'supervisord' is a process supervisor: it runs several processes in one "
                      "container. Run one process per container (one container per program in "
                      "the Pod)", Severity.medium),
            violation("allowed-base",
                      "built on docker.io/library/ubuntu:22.04 (from the "
                      "org.opencontainers.image.base.name label), which is not an approved base: "
                      "rebuild FROM one of [gcr.io/distroless/*, docker.io/library/python:*-slim*]",
                      Severity.medium),
            violation("immutable-reference",
                      "registry.example.com/legacy/monolith uses the mutable tag `latest` (also "
                      "implied by no tag): pin the digest that was checked, "
                      f"registry.example.com/legacy/monolith@{digest('e')}, or at least a "
                      "versioned tag", Severity.high),
            violation("size-budget",
                      "the image is 486.0 MB compressed, over the 200.0 MB budget by 286.0 MB: "
                      "build on a smaller base", Severity.medium, "audit-team"),
        ],
        facts=facts(486_000_000, base="docker.io/library/ubuntu:22.04"),
        policies=["default", "audit-team"],
    )  # fmt: skip
    broken = CheckResult(
        "registry.example.com/team/<script>alert(1)</script>:1",
        "error",
        platform="linux/amd64",
        policies=["audit-team"],
        error="registry.example.com: 503 Service Unavailable after 3 attempts",
    )
    sidecar = CheckResult(
        "localhost:5001/infra/log-shipper:0.8",
        "pass",
        digest("f"),
        "linux/amd64",
        facts=facts(152_000_000, budget=150_000_000 * 2, base="cgr.dev/chainguard/static"),
        policies=["default"],
    )
    return [
        ReportEntry(deploy("shop", "web"), "web", good, enforce),
        ReportEntry(deploy("shop", "web"), "log-shipper", sidecar, enforce),
        ReportEntry(deploy("shop", "cart"), "cart", rooty, enforce),
        ReportEntry(deploy("shop", "cart"), "log-shipper", sidecar, enforce),
        ReportEntry(deploy("legacy", "monolith", "StatefulSet"), "app", supervisor, audit),
        ReportEntry(deploy("legacy", "nightly", "CronJob", "batch/v1"), "job", rooty, audit),
        ReportEntry(deploy("legacy", "importer", "Job", "batch/v1"), "main", broken, audit),
        ReportEntry(deploy("monitoring", "node-agent", "DaemonSet"), "agent", sidecar, enforce),
        ReportEntry(deploy("monitoring", "grafana"), "grafana", good, enforce),
        ReportEntry(
            WorkloadRef("v1", "Pod", "monitoring", "debug-shell"),
            "shell",
            CheckResult("localhost:5001/tools/shell:1", "pass"),  # no policy applied
        ),
    ]


def reports() -> list[dict[str, Any]]:
    return build_policy_reports(sample_entries(), NOW)


def by_name(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs}


def test_golden_policy_reports() -> None:
    """The reports of the sample cluster, as `kubectl get policyreports -A -o json` lists them."""
    doc = {"apiVersion": "v1", "kind": "List", "items": reports()}
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    path = GOLDEN / "policyreports.json"
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text, "regenerate with IMAGEGATE_UPDATE_GOLDEN=1"


def test_one_report_per_namespace_then_the_cluster_summary() -> None:
    objs = reports()
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("PolicyReport", "imagegate-legacy"),
        ("PolicyReport", "imagegate-monitoring"),
        ("PolicyReport", "imagegate-shop"),
        ("ClusterPolicyReport", CLUSTER_SUMMARY_NAME),
    ]
    for obj in objs:
        assert obj["apiVersion"] == API_VERSION
        assert obj["metadata"]["labels"] == {MANAGED_BY_LABEL: "imagegate"}
    for obj in objs[:3]:
        ns = obj["metadata"]["namespace"]
        assert obj["metadata"]["name"] == f"imagegate-{ns}"
        assert {r["resources"][0]["namespace"] for r in obj["results"]} == {ns}
    assert "namespace" not in objs[-1]["metadata"]


def test_summary_counts_every_result() -> None:
    shop = by_name(reports())["imagegate-shop"]
    # web: 2 containers x 5 rules pass; cart: cart fails 2 of 5, log-shipper passes 5.
    assert shop["summary"] == {"pass": 18, "fail": 2, "warn": 0, "error": 0, "skip": 0}
    for obj in reports()[:3]:
        counted = {k: sum(r["result"] == k for r in obj["results"]) for k in obj["summary"]}
        assert counted == obj["summary"]


def test_cluster_summary_adds_up_the_namespaces() -> None:
    objs = reports()
    total = {k: sum(o["summary"][k] for o in objs[:3]) for k in objs[0]["summary"]}
    cluster = objs[-1]
    assert cluster["summary"] == total
    assert cluster["results"] == []
    per_ns = json.loads(cluster["metadata"]["annotations"]["imagegate.dev/namespaces"])
    assert per_ns["shop"] == objs[2]["summary"]


def test_no_entries_still_give_a_cluster_summary() -> None:
    [cluster] = build_policy_reports([], NOW)
    assert cluster["summary"] == {"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0}


def test_a_batch_merged_into_nothing_is_the_batch() -> None:
    batch = build_namespace_report("shop", sample_entries()[2:4], NOW)

    assert merge_report(None, batch) == batch


def test_a_merged_batch_replaces_the_results_of_its_workloads_and_keeps_the_others() -> None:
    entries = sample_entries()
    stored = build_namespace_report("shop", entries[:4], NOW)  # web passes, cart fails 2
    stored["metadata"] |= {"resourceVersion": "41", "labels": {"team": "shop"}}
    fixed_cart = ReportEntry(
        deploy("shop", "cart"), "cart", entries[0].result, {"default": Mode.enforce}
    )
    batch = build_namespace_report("shop", [fixed_cart], NOW)

    merged = merge_report(stored, batch)

    assert merged["summary"] == {"pass": 15, "fail": 0, "warn": 0, "error": 0, "skip": 0}
    rows = [(r["resources"][0]["name"], r["properties"]["container"]) for r in merged["results"]]
    assert rows == [("cart", "cart")] * 5 + [("web", "log-shipper")] * 5 + [("web", "web")] * 5
    web = [r for r in merged["results"] if r["resources"][0]["name"] == "web"]
    assert web == [r for r in stored["results"] if r["resources"][0]["name"] == "web"]
    assert merged["metadata"]["resourceVersion"] == "41"
    assert merged["metadata"]["labels"] == {"team": "shop", MANAGED_BY_LABEL: "imagegate"}


def test_the_cluster_summary_of_reports_read_back_adds_up_what_is_there() -> None:
    read_back = [
        {"kind": "PolicyReport", "metadata": {"namespace": "a"}, "summary": {"pass": 2}},
        {"kind": "PolicyReport", "metadata": {"namespace": "a"}, "summary": {"fail": 1}},
        {"kind": "PolicyReport", "metadata": {"namespace": "b"}, "summary": {"pass": None}},
        {"kind": "ClusterPolicyReport", "metadata": {}, "summary": {"pass": 99}},
    ]

    cluster = build_cluster_summary(read_back)

    assert cluster["summary"] == {"pass": 2, "fail": 1, "warn": 0, "error": 0, "skip": 0}
    per_ns = json.loads(cluster["metadata"]["annotations"]["imagegate.dev/namespaces"])
    assert per_ns == {
        "a": {"pass": 2, "fail": 1, "warn": 0, "error": 0, "skip": 0},
        "b": {"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0},
    }


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        pytest.param(Mode.enforce, "fail", id="enforce-is-fail"),
        pytest.param(Mode.warn, "fail", id="warn-is-fail"),
        pytest.param(Mode.audit, "fail", id="audit-is-still-fail-like-kyverno"),
    ],
)
def test_a_violation_fails_in_every_mode_and_the_mode_is_a_property(
    mode: Mode, expected: str
) -> None:
    result = CheckResult(
        "app:1",
        "fail",
        digest("1"),
        "linux/amd64",
        [violation("non-root-user", "runs as root: fix it", Severity.critical, "p")],
        policies=["p"],
    )
    out = results_of(ReportEntry(deploy("ns", "app"), "c", result, {"p": mode}), NOW)
    [failed] = [r for r in out if r["rule"] == "non-root-user"]
    assert failed["result"] == expected
    assert failed["severity"] == "critical"
    assert failed["message"] == "runs as root: fix it"
    assert failed["properties"]["mode"] == str(mode)
    assert {r["result"] for r in out if r["rule"] != "non-root-user"} == {"pass"}


def test_result_fields() -> None:
    shop = by_name(reports())["imagegate-shop"]
    [r] = [
        r
        for r in shop["results"]
        if r["rule"] == "non-root-user" and r["properties"]["container"] == "cart"
    ]
    assert r["policy"] == "default"
    assert r["source"] == "imagegate"
    assert r["category"] == "Security"
    assert r["scored"] is True
    assert r["timestamp"] == {"seconds": 1741944413, "nanos": 589793000}
    assert r["resources"] == [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "cart",
            "namespace": "shop",
            "uid": "uid-shop-cart",
        }
    ]
    assert r["properties"] == {
        "container": "cart",
        "image": "localhost:5001/shop/cart:1.9",
        "digest": digest("c"),
        "platform": "linux/amd64",
        "mode": "enforce",
        "compressedSize": "312400000",
        "sizeBudget": "200000000",
        "effectiveUser": "root",
        "baseName": "docker.io/library/python:3.12-slim",
        "baseDigest": digest("b"),
        "baseEvidence": "annotation",
    }


def test_every_property_value_is_a_string() -> None:
    for obj in reports():
        for r in obj["results"]:
            assert r["properties"], r
            assert all(isinstance(v, str) for v in r["properties"].values()), r["properties"]


def test_an_image_that_cannot_be_inspected_is_one_error_per_policy() -> None:
    legacy = by_name(reports())["imagegate-legacy"]
    [err] = [r for r in legacy["results"] if r["resources"][0]["name"] == "importer"]
    assert err["result"] == "error"
    assert err["rule"] == "inspection"
    assert err["policy"] == "audit-team"
    assert err["properties"]["onError"] == "allow"
    assert "503 Service Unavailable" in err["message"]


def test_each_policy_reports_its_own_rules() -> None:
    legacy = by_name(reports())["imagegate-legacy"]
    monolith = [r for r in legacy["results"] if r["resources"][0]["name"] == "monolith"]
    audit = [(r["rule"], r["result"]) for r in monolith if r["policy"] == "audit-team"]
    assert ("size-budget", "fail") in audit
    default = {r["rule"]: r["result"] for r in monolith if r["policy"] == "default"}
    assert default["size-budget"] == "pass"  # the audit policy's violation is not default's
    assert default["immutable-reference"] == "fail"


def test_disabled_rules_get_no_result() -> None:
    policy = ImagePolicy.model_validate(
        {
            "metadata": {"name": "lean"},
            "spec": {"mode": "audit", "rules": {"sizeBudget": {"enabled": False}}},
        }
    )
    result = CheckResult("app:1", "pass", digest("1"), policies=["lean"])
    entry = ReportEntry.create(deploy("ns", "app"), "c", result, {"lean": policy})
    out = results_of(entry, NOW)
    assert [r["rule"] for r in out] == [
        "non-root-user",
        "allowed-base",
        "single-entrypoint",
        "immutable-reference",
    ]
    assert {r["properties"]["mode"] for r in out} == {"audit"}


def test_containers_without_a_policy_get_no_result() -> None:
    monitoring = by_name(reports())["imagegate-monitoring"]
    assert "debug-shell" not in {r["resources"][0]["name"] for r in monitoring["results"]}


def test_timestamps_of_naive_datetimes_are_utc() -> None:
    assert timestamp(datetime(1970, 1, 1, 0, 0, 1)) == {"seconds": 1, "nanos": 0}


def test_round_trip_build_read_back_build() -> None:
    first = reports()
    entries = entries_from_policy_reports(first)
    assert build_policy_reports(entries, datetime(2030, 1, 1, tzinfo=UTC)) == first


def test_read_back_recovers_the_check_results() -> None:
    entries = entries_from_policy_reports(reports())
    cart = next(e for e in entries if e.workload.name == "cart" and e.container == "cart")
    assert cart.workload == deploy("shop", "cart")
    assert cart.result.verdict == "fail"
    assert cart.result.digest == digest("c")
    assert {v.rule for v in cart.result.violations} == {"non-root-user", "size-budget"}
    assert cart.result.facts["compressedSize"] == 312_400_000
    assert cart.checked_at == NOW
    importer = next(e for e in entries if e.workload.name == "importer")
    assert importer.result.verdict == "error"
    assert importer.result.error == "registry.example.com: 503 Service Unavailable after 3 attempts"


def test_results_of_other_sources_are_ignored() -> None:
    kyverno = {
        "apiVersion": API_VERSION,
        "kind": "PolicyReport",
        "metadata": {"name": "kyverno-x", "namespace": "shop"},
        "results": [
            {"policy": "require-labels", "rule": "x", "result": "fail", "source": "kyverno"}
        ],
    }
    assert entries_from_policy_reports([kyverno]) == []


@pytest.mark.parametrize(("verified", "prop"), [(True, "true"), (False, "false"), (None, None)])
def test_the_report_says_whether_the_base_evidence_was_verified(
    verified: bool | None, prop: str | None
) -> None:
    """A base label is a claim: the PolicyReport says whether its layers proved it, and
    reading the report back keeps it."""
    base = {"name": "gcr.io/distroless/static", "digest": digest("b"), "evidence": "label"}
    if verified is not None:
        base["verified"] = verified
    result = CheckResult(
        "localhost:5001/app:1", "pass", digest=digest("a"), platform="linux/amd64",
        facts=facts(1000, base=None) | {"base": base}, policies=["default"],
    )  # fmt: skip
    entry = ReportEntry.create(deploy("shop", "app"), "app", result, {"default": ImagePolicy()})
    reports = build_policy_reports([entry], NOW)
    [r] = [r for obj in reports for r in obj.get("results", []) if r["rule"] == "allowed-base"]
    assert r["properties"].get("baseVerified") == prop
    [back] = entries_from_policy_reports(reports)
    assert back.result.facts["base"].get("verified") == verified
