"""The background audit in-process: the cluster's workloads in, one entry per container out.

`Scanner` is built as the operator builds it, with a `FakeCluster` (workload lists, namespace
labels, pull secrets), the real Checker over a `FakeRegistry`, and a writer that keeps what it
is given. Each row asserts which workloads are reported (each once, at its top-level owner),
the verdict per container, the errors the scan names, and how many checks it ran.
tests/e2e/test_scan.py runs the same scan against a real API server and registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from tests.unit.fakes import (
    BIG,
    DOWN,
    GOOD,
    REGISTRY,
    ROOT,
    TEAM,
    FakeCluster,
    FakeRegistry,
    checker_for,
    common_answers,
    dockerconfigjson,
    policy,
)
from webhook.errors import ClusterError
from webhook.operator.scan import VIOLATION_REASON, Scanner, ScanOutcome, violation_message
from webhook.policy.model import ImagePolicy
from webhook.registry.auth import Keyring
from webhook.registry.facts import Platform
from webhook.report.policyreport import WorkloadRef

R = TEAM
ANSWERS = common_answers()
NAMESPACES: dict[str, dict[str, str]] = {"team-a": {}, "team-b": {}, "kube-system": {}}

# ---- workload objects as list calls return them


def containers(*images: str) -> list[dict[str, Any]]:
    return [{"name": f"c{i}", "image": img} for i, img in enumerate(images)]


def pod_spec(*images: str, **more: Any) -> dict[str, Any]:
    return {"containers": containers(*images), **more}


def obj(
    kind: str,
    name: str,
    pod: dict[str, Any],
    *,
    namespace: str = "team-a",
    owner: str | None = None,
    controller: bool = True,
) -> dict[str, Any]:
    """A workload of `kind` running `pod`; uid `uid-<name>`; owned by uid `owner`."""
    template = {"spec": pod}
    spec = {
        "Pod": pod,
        "CronJob": {"jobTemplate": {"spec": {"template": template}}},
    }.get(kind, {"template": template})
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{name}"}
    if owner is not None:
        meta["ownerReferences"] = [{"kind": "X", "uid": owner, "controller": controller}]
    return {"kind": kind, "metadata": meta, "spec": spec}


PLURALS = {
    "Pod": "pods",
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
    "ReplicaSet": "replicasets",
    "Job": "jobs",
    "CronJob": "cronjobs",
    "ReplicationController": "replicationcontrollers",
}


def listed(*objects: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for o in objects:
        out.setdefault(PLURALS[o["kind"]], []).append(o)
    return out


# ---- the table

Entry = tuple[str, str, str, str, str]  # kind, namespace/name, container, verdict, rules


@dataclass(frozen=True)
class Row:
    objects: tuple[dict[str, Any], ...]
    policies: tuple[ImagePolicy, ...] = (policy(mode="audit"),)
    namespaces: Mapping[str, dict[str, str]] = field(default_factory=lambda: NAMESPACES)
    opt_out_label: str | None = "imagegate.dev/ignore"
    secrets: Mapping[tuple[str, str], bytes] = field(default_factory=dict)
    # expected
    entries: tuple[Entry, ...] = ()  # in scan order
    errors: tuple[str, ...] = ()  # as prefixes
    workloads: int = 0
    checks: int = 0
    inspected: tuple[str, ...] | None = ()  # sorted; None: not asserted


def entry(kind: str, name: str, container: str, verdict: str, rules: str = "") -> Entry:
    return (kind, name, container, verdict, rules)


ROWS = [
    pytest.param(
        Row(
            (
                obj("Deployment", "web", pod_spec(ROOT)),
                obj("ReplicaSet", "web-7d9f", pod_spec(ROOT), owner="uid-web"),
                obj("Pod", "web-7d9f-abcde", pod_spec(ROOT), owner="uid-web-7d9f"),
            ),
            entries=(entry("Deployment", "team-a/web", "c0", "fail", "non-root-user"),),
            workloads=1,
            checks=1,
            inspected=(ROOT,),
        ),
        id="deployment-replicaset-pod-is-one-workload",
    ),
    pytest.param(
        Row(
            (
                obj("CronJob", "nightly", pod_spec(GOOD)),
                obj("Job", "nightly-2890", pod_spec(GOOD), owner="uid-nightly"),
                obj("Pod", "nightly-2890-x", pod_spec(GOOD), owner="uid-nightly-2890"),
            ),
            entries=(entry("CronJob", "team-a/nightly", "c0", "pass"),),
            workloads=1,
            checks=1,
            inspected=(GOOD,),
        ),
        id="cronjob-job-pod-is-one-workload",
    ),
    pytest.param(
        Row(
            (obj("Pod", "runner", pod_spec(GOOD), owner="uid-of-a-custom-resource"),),
            entries=(entry("Pod", "team-a/runner", "c0", "pass"),),
            workloads=1,
            checks=1,
            inspected=(GOOD,),
        ),
        id="pod-of-an-unlisted-controller-is-reported-as-itself",
    ),
    pytest.param(
        Row(
            (
                obj("Deployment", "web", pod_spec(GOOD)),
                obj("Pod", "adopted", pod_spec(BIG), owner="uid-web", controller=False),
            ),
            entries=(
                entry("Pod", "team-a/adopted", "c0", "fail", "size-budget"),
                entry("Deployment", "team-a/web", "c0", "pass"),
            ),
            workloads=2,
            checks=2,
            inspected=(BIG, GOOD),
        ),
        id="owner-that-is-not-the-controller-does-not-hide-a-pod",
    ),
    pytest.param(
        Row(
            (
                obj("Pod", "a", pod_spec(GOOD, ROOT, initContainers=containers(BIG))),
                obj("Pod", "sys", pod_spec(ROOT), namespace="kube-system"),
            ),
            entries=(
                entry("Pod", "team-a/a", "c0", "fail", "size-budget"),
                entry("Pod", "team-a/a", "c0", "pass"),
                entry("Pod", "team-a/a", "c1", "fail", "non-root-user"),
            ),
            workloads=1,
            checks=3,
            inspected=(BIG, GOOD, ROOT),
        ),
        id="every-container-list-and-the-exempt-namespace-is-skipped",
    ),
    pytest.param(
        Row(
            (obj("Pod", "old", pod_spec(ROOT), namespace="legacy"),),
            namespaces={"legacy": {"imagegate.dev/ignore": "true"}},
        ),
        id="opted-out-namespace-is-not-scanned",
    ),
    pytest.param(
        Row(
            (obj("Pod", "old", pod_spec(ROOT), namespace="legacy"),),
            namespaces={"legacy": {"imagegate.dev/ignore": "true"}},
            opt_out_label=None,
            entries=(entry("Pod", "legacy/old", "c0", "fail", "non-root-user"),),
            workloads=1,
            checks=1,
            inspected=(ROOT,),
        ),
        id="no-opt-out-label-configured-scans-everything",
    ),
    pytest.param(
        Row(
            (obj("Pod", "leaving", pod_spec(ROOT), namespace="terminating"),),
        ),
        id="workload-of-a-terminating-or-vanished-namespace-is-skipped",
    ),
    pytest.param(
        Row(
            (obj("Deployment", "web", pod_spec(DOWN, GOOD)),),
            entries=(
                entry("Deployment", "team-a/web", "c0", "error"),
                entry("Deployment", "team-a/web", "c1", "pass"),
            ),
            errors=(f"Deployment team-a/web container c0: {REGISTRY}: connection refused",),
            workloads=1,
            checks=2,
            inspected=(DOWN, GOOD),
        ),
        id="registry-error-is-an-error-entry-and-named",
    ),
    pytest.param(
        Row(
            (obj("Pod", "a", pod_spec(ROOT)),),
            policies=(policy(match={"namespaces": ["team-b"]}),),
            entries=(entry("Pod", "team-a/a", "c0", "pass"),),
            workloads=1,
            checks=1,
        ),
        id="image-no-policy-applies-to-passes-without-inspection",
    ),
    pytest.param(
        Row(
            (obj("Pod", "a", pod_spec(ROOT)), obj("Pod", "b", pod_spec(ROOT, GOOD))),
            entries=(
                entry("Pod", "team-a/a", "c0", "fail", "non-root-user"),
                entry("Pod", "team-a/b", "c0", "fail", "non-root-user"),
                entry("Pod", "team-a/b", "c1", "pass"),
            ),
            workloads=2,
            checks=2,
            inspected=(GOOD, ROOT),
        ),
        id="same-image-and-context-is-checked-once-per-scan",
    ),
    pytest.param(
        Row(
            (
                obj("Pod", "a", pod_spec(ROOT)),
                obj(
                    "Pod",
                    "b",
                    {"containers": [{"name": "c0", "image": ROOT, "command": ["/app/other"]}]},
                ),
                obj(
                    "Pod",
                    "c",
                    {
                        "containers": [
                            {"name": "c0", "image": ROOT, "securityContext": {"runAsUser": 10}}
                        ]
                    },
                ),
            ),
            entries=(
                entry("Pod", "team-a/a", "c0", "fail", "non-root-user"),
                entry("Pod", "team-a/b", "c0", "fail", "non-root-user"),
                entry("Pod", "team-a/c", "c0", "pass"),
            ),
            workloads=3,
            checks=3,
            inspected=(ROOT, ROOT, ROOT),
        ),
        id="another-command-or-user-is-another-check",
    ),
    pytest.param(
        Row(
            (
                obj("Pod", "a", pod_spec(ROOT)),
                obj("Pod", "b", pod_spec(ROOT, imagePullSecrets=[{"name": "creds"}])),
            ),
            secrets={("team-a", "creds"): dockerconfigjson(REGISTRY, "alice")},
            entries=(
                entry("Pod", "team-a/a", "c0", "fail", "non-root-user"),
                entry("Pod", "team-a/b", "c0", "fail", "non-root-user"),
            ),
            workloads=2,
            checks=2,
            # Not (ROOT, ROOT): the Checker's verdict cache ignores credentials, so the second
            # check reuses the first one's verdict (the xfail in test_admission_service_table).
            inspected=None,
        ),
        id="other-pull-credentials-are-another-check",
    ),
    pytest.param(
        Row(
            (obj("Deployment", "empty", {"containers": []}),),
            workloads=1,
        ),
        id="workload-without-containers-counts-but-has-no-entries",
    ),
    pytest.param(
        Row(
            (
                obj("Pod", "a", pod_spec(ROOT)),
                obj("Pod", "b", pod_spec(BIG), namespace="team-b"),
            ),
            policies=(
                policy("users", rules={"sizeBudget": {"enabled": False}}),
                policy("sizes", match={"namespaces": ["team-b"]}),
            ),
            entries=(
                entry("Pod", "team-a/a", "c0", "fail", "non-root-user"),
                entry("Pod", "team-b/b", "c0", "fail", "size-budget"),
            ),
            workloads=2,
            checks=2,
            inspected=(BIG, ROOT),
        ),
        id="policies-apply-per-namespace",
    ),
]


@dataclass
class Writer:
    """Keeps what the scan records; `fail_events` names workloads whose Event fails."""

    fail_events: frozenset[str] = frozenset()
    fail_write: bool = False
    reports: list[list[dict[str, Any]]] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)

    async def write_all(
        self, reports: list[dict[str, Any]], *, keep_created_since: datetime | None = None
    ) -> None:
        if self.fail_write:
            raise ClusterError("cannot write PolicyReports: 403 Forbidden", 403)
        self.reports.append(reports)

    async def emit_event(
        self, workload: WorkloadRef, reason: str, message: str, type: str = "Warning"
    ) -> bool:
        if workload.name in self.fail_events:
            raise ClusterError("cannot create events: 403 Forbidden", 403)
        self.events.append((workload.label, reason, message))
        return True


def scanner(
    row: Row, writer: Writer | None = None, platform: Platform | None = None
) -> tuple[Scanner, FakeRegistry, FakeCluster]:
    registry = FakeRegistry(ANSWERS)
    cluster = FakeCluster(
        namespaces=dict(row.namespaces),
        secrets=dict(row.secrets),
        workloads=listed(*row.objects),
    )
    scan = Scanner(
        checker_for(registry),
        cluster,
        writer,  # type: ignore[arg-type]
        Keyring.empty(),
        platform=platform,
        exempt_namespaces=("kube-system",),
        opt_out_label=row.opt_out_label,
    )
    return scan, registry, cluster


def summary(outcome: ScanOutcome) -> list[Entry]:
    return [
        (
            e.workload.kind,
            f"{e.workload.namespace}/{e.workload.name}",
            e.container,
            e.result.verdict,
            ",".join(v.rule for v in e.result.violations),
        )
        for e in outcome.entries
    ]


@pytest.mark.parametrize("row", ROWS)
async def test_scan(row: Row) -> None:
    scan, registry, cluster = scanner(row)
    outcome = await scan.scan(list(row.policies))
    assert summary(outcome) == list(row.entries)
    assert outcome.workloads == row.workloads
    assert outcome.checks == row.checks
    assert outcome.images == len({e.result.image for e in outcome.entries})
    if row.inspected is not None:
        assert sorted(registry.inspected) == list(row.inspected)
    assert len(outcome.errors) == len(row.errors), outcome.errors
    for error, wanted in zip(outcome.errors, row.errors, strict=True):
        assert error.startswith(wanted), error
    for e in outcome.entries:  # what each entry carries into the PolicyReport
        assert e.workload.uid == f"uid-{e.workload.name}"
        assert e.workload.api_version
        assert set(e.policies) == set(e.result.policies)
    assert sorted(cluster.listed) == sorted(PLURALS.values())  # every workload kind is listed


async def test_the_scan_fails_rather_than_report_a_partial_inventory() -> None:
    row = Row((obj("Pod", "a", pod_spec(ROOT)),))
    scan, _, cluster = scanner(row)
    cluster.failing = frozenset({"list_all"})
    with pytest.raises(ClusterError):
        await scan.scan([policy()])


async def test_images_are_checked_for_the_configured_platform() -> None:
    row = Row((obj("Pod", "a", pod_spec(GOOD)),))
    scan, registry, _ = scanner(row, platform=Platform("linux", "arm64", "v8"))
    await scan.scan([policy()])
    assert [c.platform for c in registry.calls] == ["linux/arm64/v8"]


async def test_pull_secrets_of_the_workload_are_used() -> None:
    row = Row(
        (obj("Pod", "a", pod_spec(GOOD, imagePullSecrets=[{"name": "creds"}])),),
        secrets={("team-a", "creds"): dockerconfigjson(REGISTRY, "alice")},
    )
    scan, registry, _ = scanner(row)
    await scan.scan([policy()])
    [call] = registry.calls
    assert call.keyring is not None
    credential = await call.keyring.get(REGISTRY)
    assert credential is not None
    assert credential.username == "alice"


# ---- recording: PolicyReports and Events


async def outcome_of(*objects: dict[str, Any]) -> ScanOutcome:
    scan, _, _ = scanner(Row(objects))
    return await scan.scan([policy(mode="audit")])


async def test_record_writes_one_report_per_workload_and_warns_violating_workloads() -> None:
    outcome = await outcome_of(
        obj("Pod", "a", pod_spec(ROOT, BIG)),
        obj("Pod", "b", pod_spec(GOOD)),
        obj("Pod", "c", pod_spec(DOWN), namespace="team-b"),
    )
    writer = Writer()
    scan, _, _ = scanner(Row(()), writer)
    await scan.record(outcome)
    [reports] = writer.reports
    assert [(r["metadata"]["namespace"], r["metadata"]["name"]) for r in reports] == [
        ("team-a", "imagegate-pod-a"),
        ("team-a", "imagegate-pod-b"),
        ("team-b", "imagegate-pod-c"),
    ]
    assert {r["kind"] for r in reports} == {"PolicyReport"}
    # an inspection error is reported, but it is not a violation to warn about
    assert writer.events == [
        ("Pod/a", VIOLATION_REASON, "imagegate: 2 violations: non-root-user, size-budget")
    ]


async def test_a_failed_event_does_not_stop_the_others() -> None:
    outcome = await outcome_of(obj("Pod", "a", pod_spec(ROOT)), obj("Pod", "b", pod_spec(BIG)))
    writer = Writer(fail_events=frozenset({"a"}))
    scan, _, _ = scanner(Row(()), writer)
    await scan.record(outcome)
    assert writer.events == [("Pod/b", VIOLATION_REASON, "imagegate: 1 violation: size-budget")]


async def test_a_failed_report_write_is_raised() -> None:
    outcome = await outcome_of(obj("Pod", "a", pod_spec(ROOT)))
    writer = Writer(fail_write=True)
    scan, _, _ = scanner(Row(()), writer)
    with pytest.raises(ClusterError):
        await scan.record(outcome)
    assert writer.events == []  # no Events for results that were not stored


async def test_without_a_writer_recording_is_a_no_op() -> None:
    outcome = await outcome_of(obj("Pod", "a", pod_spec(ROOT)))
    scan, _, _ = scanner(Row(()), None)
    await scan.record(outcome)  # nothing to write to, nothing raised


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        pytest.param(["non-root-user"], "imagegate: 1 violation: non-root-user", id="one"),
        pytest.param(
            ["non-root-user", "size-budget", "non-root-user"],
            "imagegate: 3 violations: non-root-user, size-budget",
            id="counted-with-repeats-named-once-in-order",
        ),
    ],
)
def test_violation_message(rules: list[str], message: str) -> None:
    assert violation_message(rules) == message
