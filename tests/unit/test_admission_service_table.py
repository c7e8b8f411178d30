"""The admission service in-process: AdmissionReview dicts in, AdmissionResponses out.

`AdmissionService` is built as `create_app` builds it, except at the edges: the Checker reads
images through a `FakeRegistry` (the one `inspect` call it makes), the cluster is a
`FakeCluster`, the recorder keeps what it is given. Each row asserts the verdict, the text the
user sees and which images were inspected at all (what the webhook must not look at is as much
a part of the contract as what it must). tests/integration/test_webhook.py runs the same
service over HTTP against a real registry.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    digest,
    dockerconfigjson,
    image,
    policy,
)
from webhook.admission.models import (
    AdmissionRequest,
    AdmissionResponse,
    ReviewError,
    review_from,
)
from webhook.admission.service import MUTATIONS_ANNOTATION, AdmissionService
from webhook.errors import ImagegateError, RegistryUnauthorized
from webhook.policy.model import ImagePolicy
from webhook.policy.store import StaticPolicies
from webhook.rebuild.replacements import Replacements
from webhook.registry.auth import Keyring
from webhook.registry.facts import ImageFacts
from webhook.report.policyreport import ReportEntry
from webhook.settings import WebhookSettings

R = TEAM
GOOD2 = f"{R}/good:2.0"
SLOW = f"{R}/slow:1.0"
PRIVATE = f"{R}/private:1.0"
FIXED = f"{R}/root@{digest('f')}"
PINNED_GOOD = f"{R}/good@{digest('a')}"

ANSWERS: dict[str, ImageFacts | ImagegateError] = {
    **common_answers(),
    PINNED_GOOD: image("a"),
    GOOD2: image("2"),
    SLOW: image("5"),
    PRIVATE: RegistryUnauthorized(f"{REGISTRY}: 401 Unauthorized (no credentials)", PRIVATE),
    FIXED: image("f"),
}
NO_USER = "non-root-user: the image has no USER, so it runs as root"

# ---- AdmissionReviews as the API server sends them (admission.k8s.io/v1)

RESOURCES = {
    "Pod": ("", "v1", "pods"),
    "Deployment": ("apps", "v1", "deployments"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "DaemonSet": ("apps", "v1", "daemonsets"),
    "ReplicaSet": ("apps", "v1", "replicasets"),
    "Job": ("batch", "v1", "jobs"),
    "CronJob": ("batch", "v1", "cronjobs"),
    "ReplicationController": ("", "v1", "replicationcontrollers"),
    "ConfigMap": ("", "v1", "configmaps"),
}


def ctr(name: str, img: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": img, "imagePullPolicy": "IfNotPresent", **extra}


def spec(*containers: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"containers": list(containers), "restartPolicy": "Always", **more}


def workload(kind: str, pod_spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    """An object of `kind` whose pod template is `pod_spec`."""
    group, version, _ = RESOURCES[kind]
    template = {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec}
    body: dict[str, Any]
    if kind == "Pod":
        body = pod_spec
    elif kind == "CronJob":
        body = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}}
    elif kind == "Job":
        body = {"template": template}
    else:
        body = {"selector": {"matchLabels": {"app": "web"}}, "template": template}
    meta = {"name": "web", "namespace": "team-a", "uid": "uid-web", **metadata}
    meta = {k: v for k, v in meta.items() if v is not None}
    return {
        "apiVersion": f"{group}/{version}" if group else version,
        "kind": kind,
        "metadata": meta,
        "spec": body,
    }


def review(
    obj: dict[str, Any] | None,
    *,
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    namespace: str | None = "team-a",
    name: str | None = "web",
    kind: str | None = None,
    dry_run: bool = False,
    sub_resource: str | None = None,
) -> dict[str, Any]:
    kind = kind or (obj or old or {}).get("kind", "Pod")
    group, version, resource = RESOURCES[kind]
    request: dict[str, Any] = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "name": name,
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": obj,
        "oldObject": old,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.title()}Options"},
    }
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def parsed(body: dict[str, Any]) -> AdmissionRequest:
    return review_from(body).request


# ---- the service, with fakes at its edges


class Recorder:
    """Keeps what the service records (the real one batches into PolicyReports)."""

    def __init__(self) -> None:
        self.entries: list[ReportEntry] = []

    def add(self, entries: list[ReportEntry]) -> None:
        self.entries.extend(entries)

    @property
    def summary(self) -> list[tuple[str, str, str, str, str]]:
        return [
            (e.workload.kind, e.workload.namespace, e.workload.name, e.container, e.result.verdict)
            for e in self.entries
        ]


@dataclass
class Harness:
    service: AdmissionService
    registry: FakeRegistry
    recorder: Recorder


def harness(
    policies: tuple[ImagePolicy, ...] = (policy(),),
    answers: Mapping[str, ImageFacts | ImagegateError] | None = None,
    cluster: FakeCluster | None = None,
    replacements: Replacements | None = None,
    budget: float = 8.0,
    private: Mapping[str, str] | None = None,
) -> Harness:
    registry = FakeRegistry({**ANSWERS, **(answers or {})}, delays={SLOW: 5.0}, private=private)
    settings = WebhookSettings(
        request_budget_seconds=budget,
        exempt_namespaces=["kube-system"],
        namespace="imagegate-system",
        opt_out_label="imagegate.dev/ignore",
    )
    recorder = Recorder()
    service = AdmissionService(
        checker_for(registry),
        StaticPolicies(list(policies)),
        cluster or FakeCluster(namespaces={"team-a": {}, "team-b": {}}),
        replacements or Replacements(),
        settings,
        Keyring.empty(),
        recorder,  # type: ignore[arg-type]
    )
    return Harness(service, registry, recorder)


# ---- /validate


@dataclass(frozen=True)
class Validate:
    review: dict[str, Any]
    policies: tuple[ImagePolicy, ...] = (policy(),)
    cluster: FakeCluster | None = None
    budget: float = 8.0
    allowed: bool = True
    subject: str = "Pod team-a/web"
    denied: tuple[str, ...] = ()  # status lines after the header, as prefixes
    warnings: tuple[str, ...] = ()  # as prefixes
    inspected: tuple[str, ...] = ()  # references the registry was asked about, in order
    recorded: tuple[tuple[str, str, str, str, str], ...] | None = None  # None: nothing


def pod(*containers: dict[str, Any], **more: Any) -> dict[str, Any]:
    return workload("Pod", spec(*containers, **more))


VALIDATE_ROWS = [
    pytest.param(
        Validate(
            review(pod(ctr("app", GOOD))),
            inspected=(GOOD,),
            recorded=(("Pod", "team-a", "web", "app", "pass"),),
        ),
        id="pod-create-compliant-is-admitted-and-recorded",
    ),
    pytest.param(
        Validate(
            review(pod(ctr("app", ROOT))),
            allowed=False,
            denied=(f"container app ({ROOT}): {NO_USER}",),
            inspected=(ROOT,),
        ),
        id="pod-create-violation-is-denied-and-not-recorded",
    ),
    pytest.param(
        Validate(
            review(pod(ctr("app", GOOD))),
            policies=(
                policy(registries={"allowed": ["registry.corp.example", "*.mirror.example"]}),
            ),
            allowed=False,
            denied=(
                f"container app ({GOOD}): allowed-registry: registry {REGISTRY} is not one this "
                "policy allows (registry.corp.example, *.mirror.example)",
            ),
            inspected=(),  # the registry a Pod names is not asked anything (SSRF)
        ),
        id="a-registry-outside-registries-allowed-is-denied-before-any-request",
    ),
    pytest.param(
        Validate(
            review(pod(ctr("app", GOOD))),
            policies=(policy(mode="audit", registries={"allowed": ["registry.corp.example"]}),),
            warnings=(f"imagegate (audit): container app: allowed-registry: registry {REGISTRY}",),
            inspected=(GOOD,),  # an audit report is complete: the other rules are checked
            recorded=(("Pod", "team-a", "web", "app", "fail"),),
        ),
        id="a-registry-outside-registries-allowed-is-reported-in-audit",
    ),
    pytest.param(
        Validate(
            review(pod(ctr("app", GOOD))),
            policies=(policy(registries={"allowed": ["registry.corp.example", "LOCALHOST:*"]}),),
            inspected=(GOOD,),
            recorded=(("Pod", "team-a", "web", "app", "pass"),),
        ),
        id="a-registry-matching-registries-allowed-is-checked-as-usual",
    ),
    pytest.param(
        Validate(
            review(pod(ctr("app", ROOT))),
            policies=(policy(mode="audit"),),
            warnings=(f"imagegate (audit): container app: {NO_USER}",),
            inspected=(ROOT,),
            recorded=(("Pod", "team-a", "web", "app", "fail"),),
        ),
        id="pod-create-violation-in-audit-is-admitted-warned-and-recorded",
    ),
    pytest.param(
        Validate(
            review(pod(ctr("app", ROOT)), dry_run=True),
            policies=(policy(mode="audit"),),
            warnings=(f"imagegate (audit): container app: {NO_USER}",),
            inspected=(ROOT,),
        ),
        id="dry-run-gets-the-same-answer-but-is-not-recorded",
    ),
    pytest.param(
        Validate(
            review(
                workload(
                    "Pod",
                    spec(ctr("app", GOOD)),
                    name="web-7d9f-abcde",
                    ownerReferences=[
                        {"kind": "ReplicaSet", "name": "web-7d9f", "controller": True}
                    ],
                ),
                name="web-7d9f-abcde",
            ),
            subject="Pod team-a/web-7d9f-abcde",
            inspected=(GOOD,),
        ),
        id="pod-with-a-controller-is-recorded-at-its-owner-not-here",
    ),
    pytest.param(
        Validate(
            review(
                workload("Pod", spec(ctr("app", ROOT)), name=None, generateName="web-"),
                name=None,
            ),
            subject="Pod team-a/web-*",
            allowed=False,
            denied=(f"container app ({ROOT}): {NO_USER}",),
            inspected=(ROOT,),
        ),
        id="generated-name-is-named-with-a-star",
    ),
    *(
        pytest.param(
            Validate(
                review(workload(kind, spec(ctr("app", ROOT)))),
                subject=f"{kind} team-a/web",
                allowed=False,
                denied=(f"container app ({ROOT}): {NO_USER}",),
                inspected=(ROOT,),
            ),
            id=f"{kind.lower()}-template-is-checked-at-apply",
        )
        for kind in (
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "ReplicaSet",
            "Job",
            "CronJob",
            "ReplicationController",
        )
    ),
    pytest.param(
        Validate(
            review(workload("Deployment", spec(ctr("app", GOOD)))),
            subject="Deployment team-a/web",
            inspected=(GOOD,),
            recorded=(("Deployment", "team-a", "web", "app", "pass"),),
        ),
        id="deployment-is-recorded-as-itself",
    ),
    pytest.param(
        Validate(
            review(
                workload("Deployment", spec(ctr("app", ROOT)) | {"replicas": 3}),
                operation="UPDATE",
                old=workload("Deployment", spec(ctr("app", ROOT))),
            ),
        ),
        id="update-that-changes-no-container-checks-nothing",
    ),
    pytest.param(
        Validate(
            review(
                workload("Deployment", spec(ctr("app", ROOT), ctr("sidecar", GOOD2))),
                operation="UPDATE",
                old=workload("Deployment", spec(ctr("app", ROOT), ctr("sidecar", GOOD))),
            ),
            subject="Deployment team-a/web",
            inspected=(GOOD2,),
            recorded=(("Deployment", "team-a", "web", "sidecar", "pass"),),
        ),
        id="update-checks-only-the-changed-container",
    ),
    pytest.param(
        Validate(
            review(
                workload("Deployment", spec(ctr("app", ROOT))),
                operation="UPDATE",
                old=workload("Deployment", spec(ctr("app", GOOD))),
            ),
            subject="Deployment team-a/web",
            allowed=False,
            denied=(f"container app ({ROOT}): {NO_USER}",),
            inspected=(ROOT,),
        ),
        id="update-to-a-violating-image-is-denied",
    ),
    pytest.param(
        Validate(
            review(
                workload("Deployment", spec(ctr("app", ROOT, securityContext={"runAsUser": 0}))),
                operation="UPDATE",
                old=workload(
                    "Deployment", spec(ctr("app", ROOT, securityContext={"runAsUser": 1000}))
                ),
            ),
            subject="Deployment team-a/web",
            allowed=False,
            denied=(f"container app ({ROOT}): non-root-user: container securityContext",),
            inspected=(ROOT,),
        ),
        id="update-that-changes-only-the-user-is-checked-again",
    ),
    pytest.param(
        Validate(
            review(
                pod(ctr("app", GOOD), ephemeralContainers=[ctr("debug", ROOT)]),
                operation="UPDATE",
                old=pod(ctr("app", GOOD)),
                sub_resource="ephemeralcontainers",
            ),
            allowed=False,
            denied=(f"ephemeral container debug ({ROOT}): {NO_USER}",),
            inspected=(ROOT,),
        ),
        id="kubectl-debug-ephemeral-container-is-checked",
    ),
    pytest.param(
        Validate(
            review(pod(ctr("app", GOOD2), initContainers=[ctr("setup", BIG)])),
            allowed=False,
            denied=(f"init container setup ({BIG}): size-budget: the image is 250.0 MB",),
            inspected=(BIG, GOOD2),
        ),
        id="init-container-is-checked-too",
    ),
    pytest.param(
        Validate(review(None, operation="DELETE", old=pod(ctr("app", ROOT)), kind="Pod")),
        id="delete-is-not-checked",
    ),
    pytest.param(
        Validate(review(pod(ctr("app", ROOT)), operation="CONNECT")),
        id="connect-is-not-checked",
    ),
    pytest.param(
        Validate(
            review(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"}},
                kind="ConfigMap",
            )
        ),
        id="kinds-without-containers-are-not-checked",
    ),
    pytest.param(
        Validate(review(pod(ctr("app", ROOT)), namespace="kube-system")),
        id="exempt-namespace-is-not-checked",
    ),
    pytest.param(
        Validate(review(pod(ctr("app", ROOT)), namespace="imagegate-system")),
        id="the-webhooks-own-namespace-is-not-checked",
    ),
    pytest.param(
        Validate(
            review(pod(ctr("app", ROOT)), namespace="legacy"),
            cluster=FakeCluster(namespaces={"legacy": {"imagegate.dev/ignore": "true"}}),
        ),
        id="opted-out-namespace-is-not-checked",
    ),
    pytest.param(
        Validate(
            review(pod(ctr("app", ROOT)), namespace="legacy"),
            cluster=FakeCluster(namespaces={"legacy": {"imagegate.dev/ignore": "false"}}),
            subject="Pod legacy/web",
            allowed=False,
            denied=(f"container app ({ROOT}): {NO_USER}",),
            inspected=(ROOT,),
        ),
        id="opt-out-label-must-say-true",
    ),
    pytest.param(
        Validate(
            review(pod(ctr("app", ROOT))),
            cluster=FakeCluster(failing=frozenset({"namespace_labels"})),
            allowed=False,
            denied=(f"container app ({ROOT}): {NO_USER}",),
            inspected=(ROOT,),
        ),
        id="unreadable-namespace-labels-still-check-the-pod",
    ),
    pytest.param(
        Validate(
            review(pod(ctr("app", ROOT)), namespace="team-b"),
            policies=(policy(match={"namespaceSelector": {"matchLabels": {"tier": "prod"}}}),),
            cluster=FakeCluster(namespaces={"team-b": {"tier": "prod"}}),
            subject="Pod team-b/web",
            allowed=False,
            denied=(f"container app ({ROOT}): {NO_USER}",),
            inspected=(ROOT,),
        ),
        id="namespace-labels-feed-policy-selectors",
    ),
    pytest.param(
        Validate(
            review(pod(ctr("app", ROOT)), namespace="team-b"),
            policies=(policy(match={"namespaceSelector": {"matchLabels": {"tier": "prod"}}}),),
            cluster=FakeCluster(namespaces={"team-b": {"tier": "dev"}}),
            subject="Pod team-b/web",
            recorded=(("Pod", "team-b", "web", "app", "pass"),),
        ),
        id="no-applicable-policy-admits-without-inspecting",
    ),
    pytest.param(
        Validate(
            review(pod(ctr("app", DOWN))),
            allowed=False,
            denied=(
                f"container app ({DOWN}): inspection: cannot be inspected (onError: deny): "
                f"{REGISTRY}: connection refused",
            ),
            inspected=(DOWN,),
        ),
        id="registry-down-onError-deny-denies",
    ),
    pytest.param(
        Validate(
            review(pod(ctr("app", PRIVATE))),
            policies=(policy(onError="allow"),),
            warnings=(
                "imagegate (warn): container app: inspection: cannot be inspected "
                f"(onError: allow): {REGISTRY}: 401 Unauthorized",
            ),
            inspected=(PRIVATE,),
            recorded=(("Pod", "team-a", "web", "app", "error"),),
        ),
        id="unauthorized-onError-allow-admits-warns-and-records-the-error",
    ),
    pytest.param(
        Validate(
            review(pod(ctr("app", "Team/UPPER:1"))),
            allowed=False,
            denied=(
                "container app (Team/UPPER:1): inspection: cannot be inspected (onError: deny): "
                "invalid reference 'Team/UPPER:1'",
            ),
        ),
        id="unparsable-reference-is-an-inspection-error",
    ),
    pytest.param(
        Validate(
            review(pod(ctr("app", SLOW), ctr("sidecar", GOOD))),
            budget=0.05,
            allowed=False,
            denied=(
                f"container app ({SLOW}): inspection: cannot be inspected (onError: deny): "
                "not inspected within the 0.05 s admission budget (the registry is slow or "
                "unreachable)",
            ),
            inspected=(SLOW, GOOD),
        ),
        id="image-not-inspected-within-the-budget-is-an-error",
    ),
    pytest.param(
        Validate(
            review(pod(ctr("app", SLOW))),
            policies=(policy(onError="allow"),),
            budget=0.05,
            warnings=("imagegate (warn): container app: inspection: cannot be inspected",),
            inspected=(SLOW,),
            recorded=(("Pod", "team-a", "web", "app", "error"),),
        ),
        id="budget-overrun-with-onError-allow-admits",
    ),
]


@pytest.mark.parametrize("row", VALIDATE_ROWS)
async def test_validate(row: Validate) -> None:
    h = harness(row.policies, cluster=row.cluster, budget=row.budget)
    request = parsed(row.review)
    decision = await h.service.validate(request)
    response = decision.response
    assert response.uid == request.uid
    assert response.allowed is row.allowed
    assert response.patch is None  # /validate never patches
    if row.allowed:
        assert response.status is None
    else:
        assert response.status is not None
        assert response.status.code == 403
        header, *lines = response.status.message.splitlines()
        assert header == f"imagegate denied {row.subject}: {len(row.denied)} problem(s)"
        assert len(lines) == len(row.denied), lines
        for line, wanted in zip(lines, row.denied, strict=True):
            assert line.startswith(f"- {wanted}"), line
    warnings = response.warnings or []
    assert len(warnings) == len(row.warnings), warnings
    for warning, wanted in zip(warnings, row.warnings, strict=True):
        assert warning.startswith(wanted), warning
    assert sorted(h.registry.inspected) == sorted(row.inspected)
    assert h.recorder.summary == list(row.recorded or ())


# ---- /mutate


@dataclass(frozen=True)
class Mutate:
    review: dict[str, Any]
    policies: tuple[ImagePolicy, ...] = (policy(),)
    replacements: Mapping[str, str] = field(default_factory=dict)
    rebuilds: tuple[dict[str, Any], ...] = ()  # ImageRebuild objects in the cluster
    patch: tuple[dict[str, Any], ...] = ()  # image operations, in order
    changes: tuple[dict[str, str], ...] = ()  # the mutations annotation
    annotations_exist: bool = False


def image_op(path: str, value: str) -> dict[str, Any]:
    return {"op": "replace", "path": path, "value": value}


def rebuild_object(namespace: str, source: str, replacement: str, phase: str) -> dict[str, Any]:
    return {
        "apiVersion": "imagegate.dev/v1alpha1",
        "kind": "ImageRebuild",
        "metadata": {"name": "fix-root", "namespace": namespace},
        "status": {"phase": phase, "sourceDigest": source, "replacement": replacement},
    }


PIN_GOOD = f"{GOOD}@{digest('a')}"
PIN_ROOT = f"{ROOT}@{digest('r')}"
CONTAINER_0 = "/spec/containers/0/image"

MUTATE_ROWS = [
    pytest.param(
        Mutate(
            review(pod(ctr("app", GOOD))),
            patch=(image_op(CONTAINER_0, PIN_GOOD),),
            changes=({"container": "app", "from": GOOD, "to": PIN_GOOD, "why": "pinned"},),
        ),
        id="tag-is-pinned-to-the-checked-digest-keeping-the-tag",
    ),
    pytest.param(Mutate(review(pod(ctr("app", PINNED_GOOD)))), id="digest-reference-is-left-alone"),
    pytest.param(
        Mutate(
            review(pod(ctr("app", GOOD))),
            policies=(policy(rules={"immutableReference": {"mode": "requireDigest"}}),),
        ),
        id="requireDigest-does-not-pin-it-denies",
    ),
    pytest.param(
        Mutate(
            review(pod(ctr("app", GOOD))),
            policies=(policy(rules={"immutableReference": {"enabled": False}}),),
        ),
        id="immutable-reference-disabled-does-not-pin",
    ),
    pytest.param(
        Mutate(
            review(pod(ctr("app", GOOD))),
            policies=(policy(exclude={"images": [f"{R}/*"]}),),
        ),
        id="image-no-policy-applies-to-is-not-pinned",
    ),
    pytest.param(
        Mutate(
            review(pod(ctr("app", GOOD))),
            policies=(
                policy("pins", match={"images": [f"{R}/other*"]}),
                policy("gate", rules={"immutableReference": {"mode": "requireDigest"}}),
            ),
        ),
        id="only-a-pinning-policy-that-applies-pins",
    ),
    pytest.param(
        Mutate(review(pod(ctr("app", DOWN)))),
        id="image-that-cannot-be-inspected-is-left-alone",
    ),
    pytest.param(
        Mutate(
            review(pod(ctr("app", ROOT))),
            replacements={digest("r"): FIXED},
            patch=(image_op(CONTAINER_0, FIXED),),
            changes=({"container": "app", "from": ROOT, "to": FIXED, "why": "replacement"},),
        ),
        id="failing-image-is-swapped-for-its-replacement",
    ),
    pytest.param(
        Mutate(
            review(pod(ctr("app", ROOT))),
            patch=(image_op(CONTAINER_0, PIN_ROOT),),
            changes=({"container": "app", "from": ROOT, "to": PIN_ROOT, "why": "pinned"},),
        ),
        id="failing-image-without-replacement-is-only-pinned",
    ),
    pytest.param(
        Mutate(
            review(pod(ctr("app", GOOD))),
            replacements={digest("a"): FIXED},
            patch=(image_op(CONTAINER_0, PIN_GOOD),),
            changes=({"container": "app", "from": GOOD, "to": PIN_GOOD, "why": "pinned"},),
        ),
        id="passing-image-is-never-replaced",
    ),
    pytest.param(
        Mutate(
            review(pod(ctr("app", ROOT))),
            rebuilds=(rebuild_object("team-a", digest("r"), FIXED, "Succeeded"),),
            patch=(image_op(CONTAINER_0, FIXED),),
            changes=({"container": "app", "from": ROOT, "to": FIXED, "why": "replacement"},),
        ),
        id="succeeded-imagerebuild-in-the-namespace-swaps",
    ),
    pytest.param(
        Mutate(
            review(pod(ctr("app", ROOT)), namespace="team-b"),
            rebuilds=(rebuild_object("team-a", digest("r"), FIXED, "Succeeded"),),
            patch=(image_op(CONTAINER_0, PIN_ROOT),),
            changes=({"container": "app", "from": ROOT, "to": PIN_ROOT, "why": "pinned"},),
        ),
        id="another-teams-imagerebuild-does-not-swap",
    ),
    pytest.param(
        Mutate(
            review(pod(ctr("app", ROOT))),
            rebuilds=(rebuild_object("team-a", digest("r"), FIXED, "Running"),),
            patch=(image_op(CONTAINER_0, PIN_ROOT),),
            changes=({"container": "app", "from": ROOT, "to": PIN_ROOT, "why": "pinned"},),
        ),
        id="unfinished-imagerebuild-does-not-swap",
    ),
    pytest.param(
        Mutate(
            review(
                workload("CronJob", spec(ctr("app", GOOD), initContainers=[ctr("setup", ROOT)]))
            ),
            replacements={digest("r"): FIXED},
            patch=(
                image_op("/spec/jobTemplate/spec/template/spec/initContainers/0/image", FIXED),
                image_op("/spec/jobTemplate/spec/template/spec/containers/0/image", PIN_GOOD),
            ),
            changes=(
                {"container": "setup", "from": ROOT, "to": FIXED, "why": "replacement"},
                {"container": "app", "from": GOOD, "to": PIN_GOOD, "why": "pinned"},
            ),
        ),
        id="cronjob-pointers-reach-into-the-job-template",
    ),
    pytest.param(
        Mutate(
            review(workload("Deployment", spec(ctr("app", GOOD)), annotations={"team": "a"})),
            patch=(image_op("/spec/template/spec/containers/0/image", PIN_GOOD),),
            changes=({"container": "app", "from": GOOD, "to": PIN_GOOD, "why": "pinned"},),
            annotations_exist=True,
        ),
        id="existing-annotations-get-one-escaped-key",
    ),
    pytest.param(
        Mutate(
            review(
                workload("Deployment", spec(ctr("app", GOOD), ctr("sidecar", GOOD2))),
                operation="UPDATE",
                old=workload("Deployment", spec(ctr("app", GOOD), ctr("sidecar", GOOD))),
            ),
            patch=(image_op("/spec/template/spec/containers/1/image", f"{GOOD2}@{digest('2')}"),),
            changes=(
                {
                    "container": "sidecar",
                    "from": GOOD2,
                    "to": f"{GOOD2}@{digest('2')}",
                    "why": "pinned",
                },
            ),
        ),
        id="update-pins-only-the-changed-container",
    ),
    pytest.param(
        Mutate(review(pod(ctr("app", GOOD)), namespace="kube-system")),
        id="exempt-namespace-is-not-mutated",
    ),
    pytest.param(
        Mutate(review(None, operation="DELETE", old=pod(ctr("app", GOOD)), kind="Pod")),
        id="delete-is-not-mutated",
    ),
]


@pytest.mark.parametrize("row", MUTATE_ROWS)
async def test_mutate(row: Mutate) -> None:
    cluster = FakeCluster(
        namespaces={"team-a": {}, "team-b": {}}, objects={"imagerebuilds": list(row.rebuilds)}
    )
    replacements = Replacements(dict(row.replacements), cluster=cluster)
    await replacements.refresh()  # what its poller does every few seconds
    h = harness(row.policies, cluster=cluster, replacements=replacements)
    request = parsed(row.review)
    response = await h.service.mutate(request)
    assert response.uid == request.uid
    assert response.allowed is True  # /mutate never denies: /validate does
    assert response.status is None
    if not row.patch:
        assert (response.patch, response.patch_type) == (None, None)
        return
    assert response.patch_type == "JSONPatch"
    assert response.patch is not None
    *images, annotation = json.loads(base64.b64decode(response.patch))
    assert images == list(row.patch)
    value = json.dumps(list(row.changes), separators=(",", ":"))
    if row.annotations_exist:
        assert annotation == {
            "op": "add",
            "path": "/metadata/annotations/imagegate.dev~1mutations",
            "value": value,
        }
    else:
        assert annotation == {
            "op": "add",
            "path": "/metadata/annotations",
            "value": {MUTATIONS_ANNOTATION: value},
        }


# ---- credentials, caching and malformed input


@pytest.mark.parametrize(
    ("pod_secrets", "account_secrets", "failing", "user"),
    [
        pytest.param(["pod-creds"], [], frozenset(), "alice", id="pod-imagePullSecrets"),
        pytest.param([], ["sa-creds"], frozenset(), "bob", id="service-account-imagePullSecrets"),
        pytest.param(["pod-creds"], ["sa-creds"], frozenset(), "alice", id="pod-secrets-first"),
        pytest.param(
            ["pod-creds"],
            ["sa-creds"],
            frozenset({"service_account_pull_secret_names"}),
            "alice",
            id="unreadable-service-account-keeps-the-pods-secrets",
        ),
        pytest.param(["missing"], [], frozenset(), None, id="missing-secret-goes-anonymous"),
    ],
)
async def test_images_are_inspected_with_the_credentials_the_kubelet_would_use(
    pod_secrets: list[str], account_secrets: list[str], failing: frozenset[str], user: str | None
) -> None:
    cluster = FakeCluster(
        namespaces={"team-a": {}},
        service_accounts={("team-a", "builder"): account_secrets},
        secrets={
            ("team-a", "pod-creds"): dockerconfigjson(REGISTRY, "alice"),
            ("team-a", "sa-creds"): dockerconfigjson(REGISTRY, "bob"),
        },
        failing=failing,
    )
    h = harness(cluster=cluster)
    body = pod(
        ctr("app", GOOD),
        serviceAccountName="builder",
        imagePullSecrets=[{"name": n} for n in pod_secrets],
    )
    decision = await h.service.validate(parsed(review(body)))
    assert decision.response.allowed
    [call] = h.registry.calls
    assert call.keyring is not None
    credential = await call.keyring.get(REGISTRY)
    assert (credential.username if credential else None) == user


async def test_a_verdict_read_with_one_teams_credentials_is_not_handed_to_another() -> None:
    cluster = FakeCluster(
        namespaces={"team-a": {}, "team-b": {}},
        secrets={("team-a", "creds"): dockerconfigjson(REGISTRY, "alice")},
    )
    h = harness(cluster=cluster, answers={PRIVATE: image("p")}, private={PRIVATE: "alice"})
    with_secret = pod(ctr("app", PRIVATE), imagePullSecrets=[{"name": "creds"}])
    team_a = await h.service.validate(parsed(review(with_secret)))
    assert team_a.response.allowed
    team_b = await h.service.validate(parsed(review(pod(ctr("app", PRIVATE)), namespace="team-b")))
    assert not team_b.response.allowed  # onError: deny, as for any unreadable image
    assert team_b.response.status is not None
    assert "401 Unauthorized" in team_b.response.status.message


async def test_a_second_review_of_the_same_images_inspects_nothing() -> None:
    cluster = FakeCluster(namespaces={"team-a": {}})
    h = harness(cluster=cluster)
    body = review(pod(ctr("app", GOOD), ctr("sidecar", ROOT)))
    first = await h.service.validate(parsed(body))
    cluster.asked.clear()
    second = await h.service.validate(parsed(body))
    assert cluster.asked == ["namespace_labels"]  # the warm path reads no pull secrets
    assert h.registry.inspected.count(GOOD) == 1
    assert h.registry.inspected.count(ROOT) == 1
    assert first.response == second.response
    assert not second.response.allowed


async def test_errors_are_not_cached_so_a_recovered_registry_is_asked_again() -> None:
    h = harness()
    body = review(pod(ctr("app", DOWN)))
    await h.service.validate(parsed(body))
    await h.service.validate(parsed(body))
    assert h.registry.inspected == [DOWN, DOWN]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            review(pod(ctr("app", GOOD))) | {"apiVersion": "admission.k8s.io/v1beta1"},
            id="v1beta1",
        ),
        pytest.param(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, id="no-request"
        ),
        pytest.param(
            review(pod(ctr("app", GOOD))) | {"kind": "AdmissionResponse"}, id="wrong-kind"
        ),
        pytest.param(
            {**review(pod(ctr("app", GOOD))), "request": {"uid": ""}}, id="request-without-fields"
        ),
        pytest.param(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {**review(pod(ctr("app", GOOD)))["request"], "operation": "PATCH"},
            },
            id="unknown-operation",
        ),
        pytest.param(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {**review(pod(ctr("app", GOOD)))["request"], "uid": ""},
            },
            id="empty-uid",
        ),
    ],
)
def test_malformed_reviews_never_reach_the_service(body: dict[str, Any]) -> None:
    """The routes answer 400 for these (tests/integration/test_webhook.py)."""
    with pytest.raises(ReviewError):
        review_from(body)


@pytest.mark.parametrize(
    ("obj", "inspected"),
    [
        pytest.param(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}}, (), id="no-spec"
        ),
        pytest.param(workload("Pod", {"containers": "nginx"}), (), id="containers-not-a-list"),
        pytest.param(
            workload("Pod", {"containers": ["nginx", {"name": "app"}, {"name": "x", "image": ""}]}),
            (),
            id="containers-without-images",
        ),
        pytest.param(
            workload("Pod", {"containers": [{"name": "app"}, ctr("sidecar", ROOT)]}),
            (ROOT,),
            id="the-well-formed-container-is-still-checked",
        ),
        pytest.param(
            workload("Deployment", {}) | {"spec": {"template": None}}, (), id="no-template"
        ),
    ],
)
async def test_objects_without_checkable_containers(
    obj: dict[str, Any], inspected: tuple[str, ...]
) -> None:
    """The API server refuses these before webhooks run; the service must not crash on them,
    and must still check whatever container is well-formed."""
    h = harness()
    decision = await h.service.validate(parsed(review(obj, kind=obj["kind"])))
    assert decision.response.allowed is (not inspected)
    assert h.registry.inspected == list(inspected)
    mutated: AdmissionResponse = await h.service.mutate(parsed(review(obj, kind=obj["kind"])))
    assert mutated.allowed
