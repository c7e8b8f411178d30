"""PolicyReports (wgpolicyk8s.io/v1alpha2) built from check results, and read back.

`sample_entries()` is the cluster every report test uses: three namespaces, enforce and audit
policies, an image that could not be inspected and user text that needs escaping. Its reports
(one per workload) are the golden file `tests/golden/report/policyreports.json`; the layer
analysis of real `imagegate check --layers` output is `policyreport-layers.json` (regenerate
both with `IMAGEGATE_UPDATE_GOLDEN=1 pytest tests/unit/test_report_policyreport.py`), which the
source and renderer tests read as `kubectl get policyreports -A -o json` Lists.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.policy_reporter import collisions, lost, rule_id
from webhook.policy.checker import CheckResult
from webhook.policy.model import ImagePolicy, Mode, OnError, Severity
from webhook.policy.outcome import Violation
from webhook.report.policyreport import (
    API_VERSION,
    DEFAULT_SEVERITIES,
    LABEL_LIMIT,
    MANAGED_BY_LABEL,
    MAX_REPORT_BYTES,
    NAME_LIMIT,
    OMITTED_ANNOTATION,
    RESULT_ID,
    WORKLOAD_KIND_LABEL,
    WORKLOAD_NAME_LABEL,
    WORKLOAD_UID_LABEL,
    PolicyInfo,
    ReportEntry,
    WorkloadRef,
    build_policy_reports,
    build_workload_report,
    entries_from_policy_reports,
    label_value,
    merge_report,
    plain_message,
    report_name,
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


def all_results(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for o in objs for r in o["results"]]


CHECK_LAYERS = GOLDEN / "check-layers.json"  # real `imagegate check --layers` output
LAYERS_NOW = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)


def layer_entries() -> list[ReportEntry]:
    """The images of check-layers.json run by two Deployments of `shop`."""
    results = {
        r["image"].split("/")[-1]: CheckResult(
            r["image"], r["verdict"], r["digest"], r["platform"],
            [Violation(v["rule"], v["message"], Severity(v["severity"]), v.get("policy", ""))
             for v in r["violations"]],
            r["facts"], r["policies"],
        )
        for r in json.loads(CHECK_LAYERS.read_text(encoding="utf-8"))["results"]
    }  # fmt: skip
    rules = {**DEFAULT_SEVERITIES, "layer-efficiency": Severity.medium}
    enforce = {"default": PolicyInfo(Mode.enforce, OnError.deny, rules)}
    return [
        ReportEntry(deploy("shop", "api"), "api", results["api:2.3"], enforce),
        ReportEntry(deploy("shop", "api"), "metrics", results["nobody:1"], enforce),
        ReportEntry(deploy("shop", "worker"), "worker", results["plain:1"], enforce),
    ]


CHECK_OUTPUT = GOLDEN / "check-output.json"  # real `imagegate check` output (normalised)


def checked(path: Path = CHECK_OUTPUT) -> list[CheckResult]:
    """The check results of real `imagegate check --output json` output."""
    return [
        CheckResult(
            r["image"], r["verdict"], r["digest"], r["platform"],
            [Violation(v["rule"], v["message"], Severity(v["severity"]), v.get("policy", ""))
             for v in r["violations"]],
            r["facts"], r["policies"], r.get("error"),
        )
        for r in json.loads(path.read_text(encoding="utf-8"))["results"]
    ]  # fmt: skip


def check_output_entries() -> list[ReportEntry]:
    """The images of the real check output, each run by a Deployment of `fixtures` in two
    identical containers (the case where Policy Reporter used to drop results)."""
    entries = []
    for result in checked():
        name = result.image.rsplit("/", 1)[-1].split(":")[0]
        ref = deploy("fixtures", name)
        entries += [ReportEntry(ref, c, result, {"default": Mode.enforce}) for c in ("app", "copy")]
    return entries


@pytest.mark.parametrize(
    ("name", "build"),
    [
        pytest.param("policyreports.json", reports, id="sample-cluster"),
        pytest.param(
            "check.policyreports.json",
            lambda: build_policy_reports(check_output_entries(), NOW),
            id="real-check-output",
        ),
        pytest.param(
            "policyreport-layers.json",
            lambda: build_policy_reports(layer_entries(), LAYERS_NOW),
            id="layer-analysis",
        ),
    ],
)
def test_golden_policy_reports(name: str, build: Any) -> None:
    """The reports, as `kubectl get policyreports -A -o json` lists them."""
    doc = {"apiVersion": "v1", "kind": "List", "items": build()}
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text, "regenerate with IMAGEGATE_UPDATE_GOLDEN=1"


def test_one_report_per_workload_with_its_scope_and_owner() -> None:
    objs = reports()
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objs] == [
        ("legacy", "imagegate-cronjob-nightly"),
        ("legacy", "imagegate-job-importer"),
        ("legacy", "imagegate-statefulset-monolith"),
        ("monitoring", "imagegate-daemonset-node-agent"),
        ("monitoring", "imagegate-deployment-grafana"),
        ("shop", "imagegate-deployment-cart"),
        ("shop", "imagegate-deployment-web"),
    ]  # debug-shell: no policy applies to it, so no report
    for obj in objs:
        assert (obj["apiVersion"], obj["kind"]) == (API_VERSION, "PolicyReport")
        scope = obj["scope"]
        meta = obj["metadata"]
        assert meta["ownerReferences"] == [
            {k: scope[k] for k in ("apiVersion", "kind", "name", "uid")}
        ]
        assert meta["labels"] == {
            MANAGED_BY_LABEL: "imagegate",
            WORKLOAD_KIND_LABEL: scope["kind"],
            WORKLOAD_NAME_LABEL: scope["name"],
            WORKLOAD_UID_LABEL: scope["uid"],
        }
        assert scope["namespace"] == meta["namespace"]
        assert scope["uid"] == f"uid-{scope['namespace']}-{scope['name']}"
        assert {json.dumps(r["resources"], sort_keys=True) for r in obj["results"]} == {
            json.dumps([scope], sort_keys=True)
        }
    cron = by_name(objs)["imagegate-cronjob-nightly"]["scope"]
    assert cron == {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "name": "nightly",
        "namespace": "legacy",
        "uid": "uid-legacy-nightly",
    }


def test_a_workload_without_a_known_uid_gets_no_owner_reference() -> None:
    """An ownerReference needs the uid (the API server refuses one without): the report is
    still written, and the scan removes it once the workload is gone."""
    pod = WorkloadRef("v1", "Pod", "shop", "debug")
    result = CheckResult("app:1", "pass", digest("1"), policies=["default"])
    report = build_workload_report(pod, [ReportEntry(pod, "c", result)], NOW)
    assert "ownerReferences" not in report["metadata"]
    assert WORKLOAD_UID_LABEL not in report["metadata"]["labels"]
    assert report["scope"] == {"apiVersion": "v1", "kind": "Pod", "name": "debug",
                               "namespace": "shop"}  # fmt: skip


def test_entries_of_one_workload_share_its_report_and_the_known_uid() -> None:
    result = CheckResult("app:1", "pass", digest("1"), policies=["default"])
    without = WorkloadRef("apps/v1", "Deployment", "shop", "web")
    with_uid = WorkloadRef("apps/v1", "Deployment", "shop", "web", "u-1")
    [report] = build_policy_reports(
        [ReportEntry(without, "a", result), ReportEntry(with_uid, "b", result)], NOW
    )
    assert report["scope"]["uid"] == "u-1"
    assert {r["properties"]["container"] for r in report["results"]} == {"a", "b"}


@pytest.mark.parametrize(
    ("kind", "name", "expected"),
    [
        pytest.param("Deployment", "web", "imagegate-deployment-web", id="plain"),
        pytest.param("Pod", "web-7d9f.x-1", "imagegate-pod-web-7d9f.x-1", id="dots-are-kept"),
        pytest.param("StatefulSet", "db", "imagegate-statefulset-db", id="kind-lowercased"),
    ],
)
def test_report_names_are_the_kind_and_name(kind: str, name: str, expected: str) -> None:
    assert report_name(WorkloadRef("v1", kind, "ns", name)) == expected


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("a" * 253, id="longest-pod-name"),
        pytest.param("a" * 231, id="one-over-with-the-prefix"),
        pytest.param("web-", id="generate-name-prefix"),
        pytest.param("Web_1", id="not-a-dns-name"),
    ],
)
def test_long_or_invalid_names_are_cut_and_hashed(name: str) -> None:
    ref = WorkloadRef("v1", "Pod", "ns", name)
    hashed = report_name(ref)
    assert len(hashed) <= NAME_LIMIT
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", hashed), hashed
    assert hashed.startswith("imagegate-pod-")
    assert hashed == report_name(WorkloadRef("v1", "Pod", "other", name, "uid")), "stable"
    assert hashed != report_name(WorkloadRef("v1", "Pod", "ns", name + "x"))
    assert hashed != report_name(WorkloadRef("v1", "Job", "ns", name))


def test_long_names_differing_only_at_the_end_get_different_reports() -> None:
    a = report_name(WorkloadRef("v1", "Pod", "ns", "x" * 250 + "a"))
    b = report_name(WorkloadRef("v1", "Pod", "ns", "x" * 250 + "b"))
    assert a != b
    assert len(a) == len(b) == NAME_LIMIT
    dashes = report_name(WorkloadRef("v1", "Pod", "ns", "y" * 227 + "-" * 30))
    assert len(dashes) == NAME_LIMIT, "a cut at a dash still has the full length"
    assert len(report_name(WorkloadRef("v1", "Pod", "ns", "x" * 230))) < NAME_LIMIT


def test_label_values_fit_63_characters() -> None:
    assert label_value("web") == "web"
    long = label_value("w" * 64)
    assert len(long) <= LABEL_LIMIT
    assert long != label_value("w" * 65)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", long)
    report = build_workload_report(
        WorkloadRef("v1", "Pod", "ns", "p" * 200, "u"),
        [ReportEntry(WorkloadRef("v1", "Pod", "ns", "p" * 200, "u"), "c",
                     CheckResult("app:1", "pass", digest("1"), policies=["default"]))],
        NOW,
    )  # fmt: skip
    assert all(len(v) <= LABEL_LIMIT for v in report["metadata"]["labels"].values())


def test_every_result_has_a_result_id_and_they_are_unique() -> None:
    results = all_results(reports())
    ids = [r["properties"][RESULT_ID] for r in results]
    assert len(ids) == 46
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_result_ids_are_stable_across_scans_and_change_with_what_is_checked() -> None:
    later = build_policy_reports(sample_entries(), datetime(2031, 1, 1, tzinfo=UTC))
    assert [r["properties"][RESULT_ID] for r in all_results(later)] == [
        r["properties"][RESULT_ID] for r in all_results(reports())
    ]
    entry = sample_entries()[2]  # cart: fails two rules
    fixed = ReportEntry(entry.workload, entry.container, sample_entries()[0].result,
                        entry.policies)  # fmt: skip
    before = {r["rule"]: r["properties"][RESULT_ID] for r in results_of(entry, NOW)}
    after = {r["rule"]: r["properties"][RESULT_ID] for r in results_of(fixed, NOW)}
    assert before.keys() == after.keys()
    for rule in before:  # another image: every id changes
        assert before[rule] != after[rule], rule


def test_messages_name_the_container_and_image_and_read_back_without_them() -> None:
    for r in all_results(reports()):
        props = r["properties"]
        suffix = f" (container {props['container']}, image {props['image']})"
        assert r["message"].endswith(suffix), r["message"]
        assert plain_message(r) == r["message"].removesuffix(suffix)
    web = by_name(reports())["imagegate-deployment-web"]
    [passed] = [r for r in web["results"] if r["rule"] == "size-budget"
                and r["properties"]["container"] == "log-shipper"]  # fmt: skip
    assert passed["message"] == (
        "size-budget: the image fits the size budget "
        "(container log-shipper, image localhost:5001/infra/log-shipper:0.8)"
    )


def test_golden_results_have_no_policy_reporter_id_collisions() -> None:
    """Policy Reporter's own id rule (tests/support/policy_reporter.py) over every result of
    every golden PolicyReport: no two results share an id, so none is dropped."""
    goldens = ["policyreports.json", "policyreport-layers.json", "check.policyreports.json"]
    objs = [o for g in goldens for o in json.loads((GOLDEN / g).read_text("utf-8"))["items"]]
    assert len(all_results(objs)) == 46 + 17 + 2 * 16
    assert collisions(objs) == {}


def many_identical_pods(pods: int = 40, containers: int = 4) -> list[ReportEntry]:
    """A namespace of bare Pods, each running the same images of real `imagegate check`
    output (tests/golden/report/check-output.json) in several identical containers."""
    checks = checked()
    entries = []
    for p in range(pods):
        pod = WorkloadRef("v1", "Pod", "batch", f"worker-{p}", f"uid-worker-{p}")
        check = checks[p % len(checks)]
        for c in range(containers):
            entries.append(ReportEntry(pod, f"c{c}", check, {"default": Mode.audit}, NOW))
    return entries


def test_many_pods_with_identical_containers_have_no_policy_reporter_id_collisions() -> None:
    objs = build_policy_reports(many_identical_pods(), NOW)
    assert len(objs) == 40
    results = all_results(objs)
    assert len(results) == 10 * 4 * (5 + 5 + 5 + 1)  # 10 pods of each image, 4 containers
    assert collisions(objs) == {}
    assert len({r["properties"][RESULT_ID] for r in results}) == len(results)


def test_without_the_container_in_the_message_policy_reporter_would_drop_results() -> None:
    """What the test above guards against: the messages of the check alone repeat per
    container, and Policy Reporter then keeps one result per pod and rule."""
    objs = build_policy_reports(many_identical_pods(), NOW)
    bare = [{**o, "results": [{**r, "message": plain_message(r)} for r in o["results"]]}
            for o in objs]  # fmt: skip
    assert lost(bare) == 10 * 3 * (5 + 5 + 5 + 1)  # all but one container of each pod
    assert {rule_id(o, r) for o in objs for r in o["results"]}.isdisjoint(
        {rule_id(o, r) for o in bare for r in o["results"]}
    )


def test_a_report_over_the_size_limit_keeps_the_problems_and_counts_what_it_left_out() -> None:
    pod = WorkloadRef("v1", "Pod", "big", "sidecars", "uid-big")
    huge = "x" * 10_000  # 60 of them: 600 kB of problems
    failing = CheckResult(
        "app:1", "fail", digest("1"), "linux/amd64",
        [violation("non-root-user", f"runs as root {huge}", Severity.high)],
        facts=facts(1000), policies=["default"],
    )  # fmt: skip
    passing = CheckResult("ok:1", "pass", digest("2"), "linux/amd64", facts=facts(1000),
                          policies=["default"])  # fmt: skip
    entries = [ReportEntry(pod, f"bad-{i}", failing) for i in range(60)]
    entries += [ReportEntry(pod, f"ok-{i}", passing) for i in range(2000)]

    [report] = build_policy_reports(entries, NOW)

    size = len(json.dumps(report["results"], separators=(",", ":")))
    assert size <= MAX_REPORT_BYTES
    assert len(json.dumps(report)) < 1_500_000
    kept = report["summary"]
    assert kept["fail"] == 60, "every problem is kept"
    omitted = json.loads(report["metadata"]["annotations"][OMITTED_ANNOTATION])
    assert omitted["fail"] == 0
    assert kept["pass"] + omitted["pass"] == 60 * 4 + 2000 * 5
    assert omitted["pass"] > 0
    assert kept == {k: sum(r["result"] == k for r in report["results"]) for k in kept}


def test_a_report_under_the_limit_has_no_omitted_annotation() -> None:
    assert all("annotations" not in o["metadata"] for o in reports())


def test_summary_counts_every_result() -> None:
    objs = by_name(reports())
    # web: 2 containers x 5 rules pass; cart: cart fails 2 of 5, log-shipper passes 5.
    assert objs["imagegate-deployment-web"]["summary"] == {
        "pass": 10, "fail": 0, "warn": 0, "error": 0, "skip": 0
    }  # fmt: skip
    assert objs["imagegate-deployment-cart"]["summary"] == {
        "pass": 8, "fail": 2, "warn": 0, "error": 0, "skip": 0
    }  # fmt: skip
    for obj in reports():
        counted = {k: sum(r["result"] == k for r in obj["results"]) for k in obj["summary"]}
        assert counted == obj["summary"]


def test_no_entries_give_no_reports_and_no_cluster_summary() -> None:
    assert build_policy_reports([], NOW) == []
    assert {o["kind"] for o in reports()} == {"PolicyReport"}


def test_a_batch_merged_into_nothing_is_the_batch() -> None:
    [batch] = build_policy_reports(sample_entries()[2:4], NOW)

    assert merge_report(None, batch) == batch


def test_a_merged_batch_replaces_the_workloads_results_and_keeps_others_metadata() -> None:
    entries = sample_entries()
    [stored] = build_policy_reports(entries[2:4], NOW)  # cart fails 2
    stored["metadata"] |= {
        "resourceVersion": "41",
        "labels": {"team": "shop"},
        "annotations": {"note": "kept", OMITTED_ANNOTATION: "{}"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "cart",
                             "uid": "old-uid"}],
    }  # fmt: skip
    stored["results"].append({**stored["results"][0], "resources": [{"kind": "Pod",
                              "name": "planted"}]})  # fmt: skip
    fixed = ReportEntry(
        deploy("shop", "cart"), "cart", entries[0].result, {"default": Mode.enforce}
    )
    [batch] = build_policy_reports([fixed], NOW)

    merged = merge_report(stored, batch)

    assert merged["summary"] == {"pass": 5, "fail": 0, "warn": 0, "error": 0, "skip": 0}
    assert {r["resources"][0]["name"] for r in merged["results"]} == {"cart"}
    assert merged["results"] == batch["results"]
    meta = merged["metadata"]
    assert meta["resourceVersion"] == "41"
    assert meta["labels"] == {"team": "shop", **batch["metadata"]["labels"]}
    assert meta["annotations"] == {"note": "kept"}
    assert meta["ownerReferences"] == batch["metadata"]["ownerReferences"]
    assert merged["scope"] == batch["scope"]


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
    assert failed["message"] == "runs as root: fix it (container c, image app:1)"
    assert failed["properties"]["mode"] == str(mode)
    assert {r["result"] for r in out if r["rule"] != "non-root-user"} == {"pass"}


def test_result_fields() -> None:
    shop = by_name(reports())["imagegate-deployment-cart"]
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
        RESULT_ID: r["properties"][RESULT_ID],
    }


def test_every_property_value_is_a_string() -> None:
    for obj in reports():
        for r in obj["results"]:
            assert r["properties"], r
            assert all(isinstance(v, str) for v in r["properties"].values()), r["properties"]


def test_an_image_that_cannot_be_inspected_is_one_error_per_policy() -> None:
    [err] = by_name(reports())["imagegate-job-importer"]["results"]
    assert err["result"] == "error"
    assert err["rule"] == "inspection"
    assert err["policy"] == "audit-team"
    assert err["properties"]["onError"] == "allow"
    assert "503 Service Unavailable" in err["message"]


def test_each_policy_reports_its_own_rules() -> None:
    monolith = by_name(reports())["imagegate-statefulset-monolith"]["results"]
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
    named = {r["resources"][0]["name"] for r in all_results(reports())}
    assert "debug-shell" not in named
    assert "grafana" in named


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


def test_results_without_resources_are_about_the_scope() -> None:
    """Kyverno's per-resource reports leave `resources` out: the scope says who."""
    [report] = build_policy_reports(sample_entries()[2:4], NOW)
    bare = {**report, "results": [{k: v for k, v in r.items() if k != "resources"}
                                  for r in report["results"]]}  # fmt: skip
    assert entries_from_policy_reports([bare]) == entries_from_policy_reports([report])
