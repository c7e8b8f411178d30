"""The admission decision in process, table by table, as policy-controller's validator tests.

Issue 18 planted bugs in the decision path that the suite did not notice: `onError: deny` of one
policy no longer winning, exempt and opted-out namespaces checked anyway, the pinning patch
aimed at `containers/0` whatever the container. Each table here runs the real
`AdmissionService` (the Checker, the policies, `decide`) with the registry and the cluster as
the in-process stand-ins of tests/unit/fakes.py, and asserts what the API server would do with
the answer:

* validate: several policies with their modes and `onError`, exempt namespaces, the opt-out
  label (read through `FakeCluster`), and which images and cluster lookups were made at all;
* mutate: the JSONPatch applied with `jsonpatch` to the object that was sent, then the patched
  object compared path by path (and whole) with what should have changed: pins and
  replacement swaps in initContainers, ephemeralContainers and several containers;
* warnings: the cap on their number and the cut of long ones;
* the HTTP routes, TLS files and the server around the service (webhook/admission/app.py,
  tls.py, server.py), in process.

tests/unit/test_admission_service_table.py has the per-kind and per-operation rows;
tests/unit/test_decide_table.py the per-rule ones.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import json
import logging
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import pytest
from cryptography import x509
from fastapi import FastAPI
from starlette.types import Message

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
    digest,
    image,
    policy,
)
from tests.unit.test_admission_service_table import (
    ANSWERS,
    FIXED,
    GOOD2,
    NO_USER,
    PINNED_GOOD,
    ctr,
    harness,
    parsed,
    pod,
    review,
    spec,
    workload,
)
from tests.unit.test_decide_table import OVER_BUDGET, only
from webhook.admission import server
from webhook.admission.app import create_app
from webhook.admission.decision import MAX_WARNING_CHARS, MAX_WARNINGS, Finding, decide
from webhook.admission.service import MUTATIONS_ANNOTATION
from webhook.admission.tls import CertFiles, CertReloader, self_signed
from webhook.context import ProcessContext
from webhook.errors import ImagegateError, RegistryUnavailable
from webhook.k8s.cluster import NoCluster
from webhook.policy.checker import CheckResult
from webhook.policy.model import ImagePolicy, Severity
from webhook.policy.outcome import Violation
from webhook.policy.store import ClusterPolicies, PolicyStore, StaticPolicies
from webhook.policy.workloads import pod_template
from webhook.rebuild.replacements import Replacements
from webhook.registry.auth import Keyring
from webhook.registry.client import RegistryClient
from webhook.registry.facts import ImageFacts
from webhook.settings import LayerSettings, RegistrySettings, Settings, WebhookSettings

DOWN2 = f"{TEAM}/down2:1.0"
MIXED = f"{TEAM}/root-big-shell:1.0"
MORE: dict[str, ImageFacts | ImagegateError] = {
    DOWN2: RegistryUnavailable(f"{REGISTRY}: connection refused", DOWN2),
    MIXED: image("m", user="", sizes=[250_000_000], entrypoint=["/bin/sh", "-c", "a & b"]),
}
EVERYWHERE = {"namespaces": ["*"]}  # a catch-all match, so an exemption is really one
UNREACHABLE = f"{REGISTRY}: connection refused"
CANNOT = "inspection: cannot be inspected"
OPT_OUT = "imagegate.dev/ignore"  # the harness's opt-out label


# ---- validate: policies, modes, onError, exempt and opted-out namespaces ---------------------


@dataclass(frozen=True)
class Case:
    review: dict[str, Any]
    policies: tuple[ImagePolicy, ...]
    namespaces: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: {"team-a": {}, "team-b": {}}
    )
    failing: frozenset[str] = frozenset()  # FakeCluster methods that fail
    allowed: bool = True
    denied: tuple[str, ...] = ()  # the status lines after the header, each as a prefix
    warnings: tuple[str, ...] = ()  # each as a prefix
    problems: tuple[tuple[str, str, str, str], ...] = ()  # (container, rule, mode, policies)
    inspected: tuple[str, ...] = ()
    asked: tuple[str, ...] | None = None  # the cluster lookups made, in order (None: any)


def down_line(container: str, img: str, on_error: str) -> str:
    return f"container {container} ({img}): {CANNOT} (onError: {on_error}): {UNREACHABLE}"


def down_warning(container: str) -> str:
    return f"imagegate (warn): container {container}: {CANNOT} (onError: allow): {UNREACHABLE}"


def root_denied(body: dict[str, Any], **more: Any) -> Case:
    """A catch-all policy denying ROOT's container `app` for running as root."""
    return Case(
        body,
        (policy(match=EVERYWHERE),),
        allowed=False,
        denied=(f"container app ({ROOT}): {NO_USER}",),
        problems=(("app", "non-root-user", "enforce", "default"),),
        inspected=(ROOT,),
        **more,
    )


ON_ERROR_CASES = [
    pytest.param(
        Case(
            review(pod(ctr("app", DOWN))),
            (policy("a", onError="allow"), policy("b", onError="allow"), policy("c")),
            allowed=False,
            denied=(down_line("app", DOWN, "deny"),),
            problems=(("app", "inspection", "enforce", "a,b,c"),),
            inspected=(DOWN,),
        ),
        id="onError-deny-of-the-last-of-three-policies-wins",
    ),
    pytest.param(
        Case(
            review(pod(ctr("app", DOWN))),
            (policy("a"), policy("b", onError="allow")),
            allowed=False,
            denied=(down_line("app", DOWN, "deny"),),
            problems=(("app", "inspection", "enforce", "a,b"),),
            inspected=(DOWN,),
        ),
        id="onError-deny-of-the-first-of-two-policies-wins",
    ),
    pytest.param(
        Case(
            review(pod(ctr("app", DOWN))),
            (policy("a", onError="allow"), policy("b", onError="allow")),
            warnings=(down_warning("app"),),
            problems=(("app", "inspection", "warn", "a,b"),),
            inspected=(DOWN,),
        ),
        id="onError-allow-of-every-policy-admits-with-a-warning",
    ),
    pytest.param(
        Case(
            review(pod(ctr("app", DOWN))),
            (policy("lenient", onError="allow"), policy("strict", match={"images": ["*/other*"]})),
            warnings=(down_warning("app"),),
            problems=(("app", "inspection", "warn", "lenient"),),
            inspected=(DOWN,),
        ),
        id="onError-deny-of-a-policy-for-other-images-does-not-count",
    ),
    pytest.param(
        Case(
            review(pod(ctr("app", DOWN))),
            (
                policy("lenient", onError="allow"),
                policy("strict", exclude={"namespaces": ["team-a"]}),
            ),
            warnings=(down_warning("app"),),
            problems=(("app", "inspection", "warn", "lenient"),),
            inspected=(DOWN,),
        ),
        id="onError-deny-of-a-policy-excluding-the-namespace-does-not-count",
    ),
    pytest.param(
        Case(
            review(pod(ctr("app", DOWN), ctr("sidecar", DOWN2))),
            (policy("lenient", onError="allow"), policy("strict", match={"images": [f"{DOWN}*"]})),
            allowed=False,
            denied=(down_line("app", DOWN, "deny"),),
            warnings=(down_warning("sidecar"),),
            problems=(
                ("app", "inspection", "enforce", "lenient,strict"),
                ("sidecar", "inspection", "warn", "lenient"),
            ),
            inspected=(DOWN, DOWN2),
        ),
        id="onError-is-decided-per-container-by-the-policies-that-apply-to-it",
    ),
    pytest.param(
        Case(
            review(pod(ctr("app", DOWN))),
            (policy("report", mode="audit"), policy("nag", mode="warn", onError="allow")),
            allowed=False,
            denied=(down_line("app", DOWN, "deny"),),
            problems=(("app", "inspection", "enforce", "report,nag"),),
            inspected=(DOWN,),
        ),
        id="onError-deny-denies-whatever-the-mode",
    ),
]

MODE_CASES = [
    pytest.param(
        Case(
            review(pod(ctr("app", MIXED))),
            (
                policy("users", mode="enforce", rules=only("nonRootUser")),
                policy("sizes", mode="warn", rules=only("sizeBudget")),
                policy("entry", mode="audit", rules=only("singleEntrypoint")),
            ),
            allowed=False,
            denied=(f"container app ({MIXED}): {NO_USER}",),
            warnings=(
                f"imagegate (warn): container app: {OVER_BUDGET}",
                "imagegate (audit): container app: single-entrypoint: the shell command "
                "'a & b' chains or backgrounds processes (&)",
            ),
            problems=(
                ("app", "non-root-user", "enforce", "users"),
                ("app", "size-budget", "warn", "sizes"),
                ("app", "single-entrypoint", "audit", "entry"),
            ),
            inspected=(MIXED,),
        ),
        id="three-policies-three-modes-each-rule-its-policys-mode",
    ),
    pytest.param(
        Case(
            review(pod(ctr("app", ROOT), ctr("sidecar", BIG))),
            (policy("report", mode="audit"), policy("gate", match={"images": [f"{TEAM}/big*"]})),
            allowed=False,
            denied=(f"container sidecar ({BIG}): {OVER_BUDGET}",),
            warnings=(f"imagegate (audit): container app: {NO_USER}",),
            problems=(
                ("app", "non-root-user", "audit", "report"),
                ("sidecar", "size-budget", "enforce", "gate"),
            ),
            inspected=(ROOT, BIG),
        ),
        id="an-enforcing-policy-for-some-images-an-auditing-one-for-all",
    ),
    pytest.param(
        Case(
            review(pod(ctr("app", ROOT))),
            (policy("report", mode="audit"), policy("gate", exclude={"images": [f"{TEAM}/root*"]})),
            warnings=(f"imagegate (audit): container app: {NO_USER}",),
            problems=(("app", "non-root-user", "audit", "report"),),
            inspected=(ROOT,),
        ),
        id="an-enforcing-policy-that-excludes-the-image-does-not-deny",
    ),
]

EXEMPT_CASES = [
    pytest.param(
        Case(
            review(pod(ctr("app", ROOT)), namespace="kube-system"),
            (policy(match=EVERYWHERE),),
            asked=(),
        ),
        id="exempt-namespace-is-not-checked-by-a-catch-all-policy",
    ),
    pytest.param(
        Case(
            review(pod(ctr("app", ROOT)), namespace="imagegate-system"),
            (policy(match=EVERYWHERE),),
            asked=(),
        ),
        id="the-webhooks-own-namespace-is-not-checked-by-a-catch-all-policy",
    ),
    pytest.param(
        Case(
            review(pod(ctr("app", DOWN)), namespace="kube-system"),
            (policy(match=EVERYWHERE),),
            failing=frozenset({"namespace_labels", "service_account_pull_secret_names"}),
            asked=(),
        ),
        id="exempt-namespace-needs-neither-the-cluster-nor-the-registry",
    ),
    pytest.param(
        root_denied(
            review(pod(ctr("app", ROOT)), namespace="kube-public"), namespaces={"kube-public": {}}
        ),
        id="a-namespace-not-listed-as-exempt-is-checked",
    ),
    pytest.param(
        Case(
            review(pod(ctr("app", ROOT)), namespace="legacy"),
            (policy(match=EVERYWHERE),),
            namespaces={"legacy": {OPT_OUT: "true"}},
            asked=("namespace_labels",),
        ),
        id="opted-out-namespace-is-not-checked-by-a-catch-all-policy",
    ),
    pytest.param(
        Case(
            review(pod(ctr("app", DOWN)), namespace="legacy"),
            (policy(match=EVERYWHERE),),
            namespaces={"legacy": {OPT_OUT: "true"}},
            asked=("namespace_labels",),
        ),
        id="opted-out-namespace-is-admitted-without-asking-the-registry",
    ),
    pytest.param(
        Case(
            review(pod(ctr("app", ROOT)), namespace="legacy"),
            (policy(match={"namespaceSelector": {"matchLabels": {"tier": "prod"}}}),),
            namespaces={"legacy": {"tier": "prod", OPT_OUT: "true"}},
            asked=("namespace_labels",),
        ),
        id="opt-out-wins-over-a-policy-selecting-the-namespace",
    ),
    pytest.param(
        root_denied(
            review(pod(ctr("app", ROOT))), namespaces={"team-a": {}, "legacy": {OPT_OUT: "true"}}
        ),
        id="another-namespaces-opt-out-does-not-count",
    ),
    pytest.param(
        root_denied(
            review(pod(ctr("app", ROOT)), namespace="legacy"),
            namespaces={"legacy": {"imagegate.dev/ignored": "true", "ignore": "true"}},
        ),
        id="other-label-keys-are-not-the-opt-out",
    ),
    pytest.param(
        # No namespace: no labels to read, no pull secrets, the webhook's own keyring.
        root_denied(review(pod(ctr("app", ROOT)), namespace=None), asked=()),
        id="a-review-without-namespace-is-checked-without-cluster-lookups",
    ),
]


@pytest.mark.parametrize("case", [*ON_ERROR_CASES, *MODE_CASES, *EXEMPT_CASES])
async def test_validate(case: Case) -> None:
    namespaces = {name: dict(labels) for name, labels in case.namespaces.items()}
    cluster = FakeCluster(namespaces=namespaces, failing=case.failing)
    h = harness(case.policies, answers=MORE, cluster=cluster)
    decision = await h.service.validate(parsed(case.review))
    response = decision.response
    assert response.allowed is case.allowed
    got = [(p.container.name, p.rule, str(p.mode), p.policy) for p in decision.problems]
    assert got == list(case.problems)
    lines = response.status.message.splitlines()[1:] if response.status else []
    assert len(lines) == len(case.denied), lines
    for line, wanted in zip(lines, case.denied, strict=True):
        assert line.startswith(f"- {wanted}"), line
    warnings = response.warnings or []
    assert len(warnings) == len(case.warnings), warnings
    for warning, wanted in zip(warnings, case.warnings, strict=True):
        assert warning.startswith(wanted[: MAX_WARNING_CHARS - 1]), warning
    assert sorted(h.registry.inspected) == sorted(case.inspected)
    if case.asked is not None:
        assert cluster.asked == list(case.asked)


@pytest.mark.parametrize(
    ("namespace", "labels", "patched"),
    [
        pytest.param("team-a", {}, True, id="checked-namespace-is-pinned"),
        pytest.param("kube-system", {}, False, id="exempt-namespace-is-not-mutated"),
        pytest.param("legacy", {OPT_OUT: "true"}, False, id="opted-out-namespace-is-not-mutated"),
    ],
)
async def test_mutate_leaves_exempt_and_opted_out_namespaces_alone(
    namespace: str, labels: dict[str, str], patched: bool
) -> None:
    cluster = FakeCluster(namespaces={namespace: labels})
    h = harness((policy(match=EVERYWHERE),), cluster=cluster)
    response = await h.service.mutate(parsed(review(pod(ctr("app", GOOD)), namespace=namespace)))
    assert (response.patch is not None) is patched
    assert h.registry.inspected == ([GOOD] if patched else [])


# ---- mutate: the JSONPatch applied, the patched object checked path by path ------------------


def pinned(img: str, char: str) -> str:
    return f"{img}@{digest(char)}"


@dataclass(frozen=True)
class Patch:
    review: dict[str, Any]
    images: Mapping[str, str] = field(default_factory=dict)  # pointer → the image after patching
    why: tuple[tuple[str, str], ...] = ()  # (container, "pinned" | "replacement"), in order
    replacements: Mapping[str, str] = field(default_factory=lambda: {digest("r"): FIXED})


def debug_update(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> dict[str, Any]:
    """`kubectl debug`: an UPDATE of pods/ephemeralcontainers adding to the Pod's list."""
    return review(
        pod(ctr("app", GOOD), ephemeralContainers=new),
        operation="UPDATE",
        old=pod(ctr("app", GOOD), ephemeralContainers=old),
        sub_resource="ephemeralcontainers",
    )


PATCH_CASES = [
    pytest.param(
        Patch(
            review(
                pod(
                    ctr("app", GOOD2),
                    ctr("sidecar", ROOT),
                    ctr("pinned", PINNED_GOOD),
                    initContainers=[ctr("setup", GOOD), ctr("migrate", ROOT)],
                )
            ),
            images={
                "/spec/initContainers/0/image": pinned(GOOD, "a"),
                "/spec/initContainers/1/image": FIXED,
                "/spec/containers/0/image": pinned(GOOD2, "2"),
                "/spec/containers/1/image": FIXED,
            },
            why=(
                ("setup", "pinned"),
                ("migrate", "replacement"),
                ("app", "pinned"),
                ("sidecar", "replacement"),
            ),
        ),
        id="init-containers-and-several-containers-each-at-its-own-index",
    ),
    pytest.param(
        Patch(
            debug_update(
                [ctr("debug-0", GOOD2)],
                [ctr("debug-0", GOOD2), ctr("debug-1", GOOD), ctr("debug-2", ROOT)],
            ),
            images={
                "/spec/ephemeralContainers/1/image": pinned(GOOD, "a"),
                "/spec/ephemeralContainers/2/image": FIXED,
            },
            why=(("debug-1", "pinned"), ("debug-2", "replacement")),
        ),
        id="ephemeral-containers-added-by-kubectl-debug-are-pinned-and-swapped",
    ),
    pytest.param(
        Patch(
            review(workload("Deployment", spec({"name": "no-image"}, ctr("app", GOOD)))),
            images={"/spec/template/spec/containers/1/image": pinned(GOOD, "a")},
            why=(("app", "pinned"),),
        ),
        id="a-container-without-an-image-keeps-the-indexes-of-the-others",
    ),
    pytest.param(
        Patch(
            review(
                workload(
                    "StatefulSet", spec(ctr("app", ROOT), initContainers=[ctr("setup", GOOD2)])
                )
            ),
            images={
                "/spec/template/spec/initContainers/0/image": pinned(GOOD2, "2"),
                "/spec/template/spec/containers/0/image": FIXED,
            },
            why=(("setup", "pinned"), ("app", "replacement")),
        ),
        id="statefulset-template-init-container-and-container",
    ),
    pytest.param(
        Patch(
            review(workload("Job", spec(ctr("a", GOOD), ctr("b", GOOD), ctr("c", ROOT)))),
            images={
                "/spec/template/spec/containers/0/image": pinned(GOOD, "a"),
                "/spec/template/spec/containers/1/image": pinned(GOOD, "a"),
                "/spec/template/spec/containers/2/image": pinned(ROOT, "r"),
            },
            why=(("a", "pinned"), ("b", "pinned"), ("c", "pinned")),
            replacements={},
        ),
        id="one-image-in-two-containers-is-pinned-in-both",
    ),
    pytest.param(
        Patch(
            review(
                workload(
                    "DaemonSet",
                    spec(ctr("app", ROOT)),
                    annotations={"team": "a", MUTATIONS_ANNOTATION: '[{"old":"entry"}]'},
                )
            ),
            images={"/spec/template/spec/containers/0/image": FIXED},
            why=(("app", "replacement"),),
        ),
        id="an-earlier-mutations-annotation-is-replaced-and-others-kept",
    ),
    pytest.param(
        Patch(review(pod(ctr("app", PINNED_GOOD), initContainers=[ctr("setup", PINNED_GOOD)]))),
        id="digest-references-are-left-alone",
    ),
]


def at(obj: Any, pointer: str) -> Any:
    """The value at a JSON pointer (RFC 6901)."""
    for token in pointer.split("/")[1:]:
        key = token.replace("~1", "/").replace("~0", "~")
        obj = obj[int(key)] if isinstance(obj, list) else obj[key]
    return obj


def put(obj: Any, pointer: str, value: Any) -> None:
    parent, _, last = pointer.rpartition("/")
    container = at(obj, parent)
    container[int(last) if isinstance(container, list) else last] = value


@pytest.mark.parametrize("case", PATCH_CASES)
async def test_mutate_patch_applied(case: Patch) -> None:
    h = harness(replacements=Replacements(dict(case.replacements)))
    request = parsed(case.review)
    assert request.object is not None
    response = await h.service.mutate(request)
    assert response.allowed
    if not case.images:
        assert (response.patch, response.patch_type) == (None, None)
        return
    assert response.patch is not None
    assert response.patch_type == "JSONPatch"
    operations = json.loads(base64.b64decode(response.patch))
    sent = copy.deepcopy(request.object)
    patched = jsonpatch.apply_patch(request.object, operations)
    assert request.object == sent  # applied to a copy, as the API server does
    for pointer, value in case.images.items():
        assert at(patched, pointer) == value, pointer
    changes = json.loads(patched["metadata"]["annotations"][MUTATIONS_ANNOTATION])
    assert [(c["container"], c["why"]) for c in changes] == list(case.why)
    assert [c["to"] for c in changes] == list(case.images.values())
    assert [c["from"] for c in changes] == [at(sent, p) for p in case.images]
    expected = copy.deepcopy(sent)  # and nothing else changed
    for pointer, value in case.images.items():
        put(expected, pointer, value)
    annotations = expected["metadata"].setdefault("annotations", {})
    annotations[MUTATIONS_ANNOTATION] = json.dumps(changes, separators=(",", ":"))
    assert patched == expected


# ---- warnings: how many, how long ------------------------------------------------------------

AUDIT = {"p": policy("p", mode="audit")}


def finding(name: str, message: str, img: str = GOOD, by: str = "p") -> Finding:
    """A container whose image fails size-budget under the policy `by`."""
    template = pod_template("Pod", pod(ctr(name, img)))
    assert template is not None
    violation = Violation("size-budget", message, Severity.medium, by)
    return Finding(
        template.containers[0], CheckResult(img, "fail", violations=[violation], policies=[by])
    )


@pytest.mark.parametrize(
    "count",
    [1, MAX_WARNINGS - 1, MAX_WARNINGS, MAX_WARNINGS + 1, 3 * MAX_WARNINGS],
)
def test_warnings_are_capped_keeping_the_first_in_pod_order(count: int) -> None:
    findings = [finding(f"c{i}", "too big") for i in range(count)]
    decision = decide("u", "Pod team-a/web", findings, AUDIT)
    assert decision.response.allowed
    assert len(decision.problems) == count  # every problem is still logged and reported
    assert decision.response.warnings == [
        f"imagegate (audit): container c{i}: size-budget: too big"
        for i in range(min(count, MAX_WARNINGS))
    ]


PREFIX = "imagegate (audit): container app: size-budget: "


@pytest.mark.parametrize(
    ("length", "cut"),
    [
        pytest.param(MAX_WARNING_CHARS - 1, False, id="one-under"),
        pytest.param(MAX_WARNING_CHARS, False, id="exactly-at-the-limit"),
        pytest.param(MAX_WARNING_CHARS + 1, True, id="one-over"),
        pytest.param(10 * MAX_WARNING_CHARS, True, id="far-over"),
    ],
)
@pytest.mark.parametrize("char", ["x", "é", "界"])
def test_long_warnings_are_cut_to_the_limit_with_an_ellipsis(
    length: int, cut: bool, char: str
) -> None:
    message = char * (length - len(PREFIX))
    [warning] = (
        decide("u", "Pod team-a/web", [finding("app", message)], AUDIT).response.warnings or []
    )
    if cut:
        assert warning == (PREFIX + message)[: MAX_WARNING_CHARS - 1] + "…"
    else:
        assert warning == PREFIX + message
    assert len(warning) == min(length, MAX_WARNING_CHARS)


def test_a_denial_lists_every_denying_problem_and_warns_only_of_admitted_ones() -> None:
    denying = [finding(f"d{i}", "too big", ROOT, by="gate") for i in range(MAX_WARNINGS + 2)]
    policies = {"p": policy("p", mode="audit"), "gate": policy("gate")}
    admitted = [finding("w", "x" * 1000)]
    decision = decide("u", "Pod team-a/web", [*denying, *admitted], policies)
    response = decision.response
    assert not response.allowed
    assert response.status is not None
    header, *lines = response.status.message.splitlines()
    assert header == f"imagegate denied Pod team-a/web: {MAX_WARNINGS + 2} problem(s)"
    assert lines == [
        f"- container d{i} ({ROOT}): size-budget: too big" for i in range(MAX_WARNINGS + 2)
    ]
    [warning] = response.warnings or []
    assert warning.startswith("imagegate (audit): container w: size-budget: xxx")
    assert len(warning) == MAX_WARNING_CHARS


def test_no_admitted_problem_means_no_warnings_at_all() -> None:
    """`warnings: []` is not what the API server expects for none: the field is left out."""
    decision = decide("u", "Pod team-a/web", [finding("app", "too big")], {"p": policy("p")})
    assert not decision.response.allowed
    assert decision.response.warnings is None


class Exploding(FakeCluster):
    async def namespace_labels(self, namespace: str) -> dict[str, str]:
        raise RuntimeError("x" * 5000)


async def test_the_warning_of_an_evaluation_that_failed_is_cut_too() -> None:
    h = harness((policy(onError="allow"),), cluster=Exploding())
    decision = await h.service.validate(parsed(review(pod(ctr("app", GOOD)))))
    assert decision.response.allowed
    [warning] = decision.response.warnings or []
    assert warning.startswith("imagegate could not evaluate this object (RuntimeError: xxx")
    assert len(warning) == MAX_WARNING_CHARS


# ---- what the service does when its cluster lookups fail or stall ----------------------------


async def test_an_unreachable_owner_records_the_pod_itself() -> None:
    cluster = FakeCluster(namespaces={"team-a": {}}, failing=frozenset({"controller_of"}))
    h = harness((policy(mode="audit"),), cluster=cluster)
    body = pod(ctr("app", ROOT))
    body["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": "web",
            "uid": "u",
            "controller": True,
        }
    ]
    decision = await h.service.validate(parsed(review(body)))
    assert decision.response.allowed
    assert "controller_of" in cluster.asked
    assert h.recorder.summary == [("Pod", "team-a", "web", "app", "fail")]


class SlowSecrets(FakeCluster):
    async def pull_secrets(self, namespace: str, names: list[str]) -> list[Any]:
        await asyncio.sleep(30)
        return []


@pytest.mark.parametrize(
    ("policies", "allowed"),
    [
        pytest.param((policy(),), False, id="onError-deny-denies"),
        pytest.param((policy(onError="allow"),), True, id="onError-allow-admits"),
        pytest.param(
            (policy("lenient", onError="allow"), policy("strict", match={"images": ["*/other*"]})),
            True,
            id="onError-deny-of-a-policy-for-other-images-does-not-count",
        ),
    ],
)
async def test_pull_secrets_not_read_within_the_budget_are_the_on_error_decision(
    policies: tuple[ImagePolicy, ...], allowed: bool
) -> None:
    h = harness(policies, cluster=SlowSecrets(namespaces={"team-a": {}}), budget=0.2)
    started = time.monotonic()
    decision = await h.service.validate(parsed(review(pod(ctr("app", GOOD)))))
    assert time.monotonic() - started < 1.0
    assert decision.response.allowed is allowed
    said = decision.response.status.message if decision.response.status else ""
    said += " ".join(decision.response.warnings or [])
    assert "the pod's pull secrets were not read within the 0.2 s budget" in said
    assert h.registry.inspected == []


# ---- the HTTP routes around the service (app.py) ----------------------------------------------


def settings_for(tmp_path: Path, **webhook: Any) -> Settings:
    return Settings(
        registry=RegistrySettings(retries=0, backoff_seconds=0.0),
        webhook=WebhookSettings(**{"kubernetes": "off", **webhook}),
        layers=LayerSettings(cache_dir=tmp_path / "layers"),
    )


def no_registry(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"the fake registry answers, not HTTP: {request.url}")


@asynccontextmanager
async def served(
    settings: Settings, policies: PolicyStore | None = None, *, context: bool = True
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The app with its lifespan running, reading images through the fake registry (or, with
    `context=False`, building every part itself as `imagegate serve` does)."""
    ctx = None
    if context:
        client = RegistryClient(
            settings.registry, Keyring.empty(), httpx.MockTransport(no_registry)
        )
        built = ProcessContext.from_settings(settings, registry=client)
        ctx = dataclasses.replace(built, checker=checker_for(FakeRegistry(ANSWERS)))
    cluster = FakeCluster(namespaces={"team-a": {}}) if context else None
    app = create_app(settings, context=ctx, cluster=cluster, policies=policies)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://webhook") as http:
                yield http, app
    finally:
        if ctx is not None:
            await ctx.aclose()


async def test_validate_and_mutate_over_http_are_counted(tmp_path: Path) -> None:
    async with served(settings_for(tmp_path)) as (http, _):
        denied = await http.post("/validate", json=review(pod(ctr("app", ROOT))))
        patched = await http.post("/mutate", json=review(pod(ctr("app", GOOD))))
        unchanged = await http.post("/mutate", json=review(pod(ctr("app", PINNED_GOOD))))
        metrics = (await http.get("/metrics")).text
    assert denied.status_code == 200
    assert denied.json()["response"]["allowed"] is False
    assert NO_USER in denied.json()["response"]["status"]["message"]
    assert patched.json()["response"]["patchType"] == "JSONPatch"
    assert "patch" not in unchanged.json()["response"]
    for line in (
        'imagegate_admission_requests_total{endpoint="validate",verdict="denied"} 1.0',
        'imagegate_admission_requests_total{endpoint="mutate",verdict="patched"} 1.0',
        'imagegate_admission_requests_total{endpoint="mutate",verdict="unchanged"} 1.0',
        'imagegate_violations_total{mode="enforce",rule="non-root-user"} 1.0',
    ):
        assert line in metrics


async def test_health_and_readiness_with_policies(tmp_path: Path) -> None:
    async with served(settings_for(tmp_path), StaticPolicies([policy("a"), policy("b")])) as (
        http,
        _,
    ):
        health = await http.get("/healthz")
        ready = await http.get("/readyz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "policies": ["a", "b"]})


@pytest.mark.parametrize(
    ("objects", "reason"),
    [
        pytest.param(None, "no ImagePolicy loaded yet", id="not-listed-yet"),
        pytest.param(
            [{"metadata": {"name": "bad"}, "spec": {"mode": "sometimes"}}],
            "ImagePolicy bad",
            id="only-invalid-policies",
        ),
    ],
)
async def test_not_ready_without_a_usable_policy(
    tmp_path: Path, objects: list[dict[str, Any]] | None, reason: str
) -> None:
    unlisted = frozenset({"list_objects"}) if objects is None else frozenset()
    cluster = FakeCluster(objects={"imagepolicies": objects or []}, failing=unlisted)
    store = ClusterPolicies(cluster, interval=3600)
    async with served(settings_for(tmp_path), store) as (http, _):
        if objects is None:  # what its poller does, started by the lifespan
            with pytest.raises(ImagegateError):
                await store.refresh()  # the API server does not answer the listing
        else:
            await store.refresh()
        ready = await http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "not ready"
    assert reason in ready.json()["reason"]


async def chunks(*parts: bytes, pause: float = 0.0) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
        await asyncio.sleep(pause)


@pytest.mark.parametrize(
    ("send", "status", "says"),
    [
        pytest.param(
            {"content": b"x" * 2048},
            413,
            "request body of 2048 bytes is over the 1024",
            id="declared-too-large",
        ),
        pytest.param(
            {"content": lambda: chunks(b"x" * 600, b"x" * 600)},
            413,
            "request body is over the 1024",
            id="streamed-too-large",
        ),
        pytest.param({"content": b""}, 400, "empty request body", id="empty"),
        pytest.param({"content": lambda: chunks()}, 400, "empty request body", id="empty-stream"),
        pytest.param(
            {"content": b'{"apiVersion": "admission.k8s.io/v1"}'},
            400,
            "not an admission.k8s.io/v1 AdmissionReview: Object missing required field `kind`",
            id="not-a-review",
        ),
        pytest.param(
            {"content": lambda: chunks(b'{"apiVersion"', b': "admission.k8s.io/v1"}')},
            400,
            "Object missing required field `kind`",
            id="streamed-not-a-review",
        ),
        pytest.param(
            {"content": b"\xff{"},
            400,
            "the body is not JSON (JSON is malformed: invalid character (byte 0))",
            id="garbage",
        ),
        pytest.param(
            {"content": lambda: chunks(b"{", pause=2.0)},
            408,
            "request body not received within 0.2 s",
            id="slow-body",
        ),
    ],
)
async def test_bodies_that_are_not_a_review_are_refused_with_the_reason(
    tmp_path: Path, send: dict[str, Any], status: int, says: str
) -> None:
    settings = settings_for(tmp_path, max_body_bytes=1024, body_timeout_seconds=0.2)
    content = send["content"]
    # streams are made per run: a generator can be read once (mutmut reruns the test)
    send = {**send, "content": content() if callable(content) else content}
    async with served(settings) as (http, _):
        answer = await http.post("/validate", **send)
        errors = (await http.get("/metrics")).text
    assert answer.status_code == status
    assert says in answer.text
    reason = {413: "too-large", 400: "bad-review", 408: "slow-body"}[status]
    assert f'imagegate_errors_total{{reason="{reason}"}} 1.0' in errors


async def test_a_client_that_goes_away_gets_nothing_and_is_counted(tmp_path: Path) -> None:
    async with served(settings_for(tmp_path)) as (http, app):
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/validate", "raw_path": b"/validate", "query_string": b"",
            "root_path": "", "headers": [], "client": ("127.0.0.1", 1), "server": ("w", 80),
            "app": app, "state": {},
        }  # fmt: skip
        await app(scope, receive, send)
        errors = (await http.get("/metrics")).text
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 400
    assert 'imagegate_errors_total{reason="disconnect"} 1.0' in errors


async def test_debug_logging_says_the_verdict(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="imagegate.admission")
    async with served(settings_for(tmp_path)) as (http, _):
        await http.post("/validate", json=review(pod(ctr("app", ROOT))))
    [record] = [r for r in caplog.records if r.getMessage() == "admission"]
    assert (record.__dict__["verdict"], record.__dict__["problems"]) == ("denied", 1)


async def test_serve_builds_its_own_parts_from_settings(tmp_path: Path) -> None:
    """Without parts handed in: no Kubernetes (`kubernetes: off`), policies from a file."""
    (tmp_path / "policy.yaml").write_text(
        "apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\nmetadata:\n  name: from-file\n"
        "spec:\n  mode: audit\n"
    )
    settings = settings_for(tmp_path, policy=tmp_path / "policy.yaml")
    async with served(settings, context=False) as (http, app):
        ready = await http.get("/readyz")
        parts = app.state.parts
    assert ready.json() == {"status": "ready", "policies": ["from-file"]}
    assert isinstance(parts.service._cluster, NoCluster)


async def test_serve_without_policies_uses_the_built_in_default(tmp_path: Path) -> None:
    async with served(settings_for(tmp_path), context=False) as (http, _):
        ready = await http.get("/readyz")
    assert ready.json() == {"status": "ready", "policies": ["default"]}


@pytest.mark.parametrize(
    ("mode", "from_cluster", "starts"),
    [
        pytest.param("auto", False, True, id="auto-runs-without-kubernetes"),
        pytest.param("required", False, False, id="required-does-not-start"),
        pytest.param("auto", True, False, id="policies-from-the-cluster-need-it"),
    ],
)
async def test_a_kubernetes_api_that_cannot_be_configured(
    tmp_path: Path, mode: str, from_cluster: bool, starts: bool
) -> None:
    settings = settings_for(
        tmp_path,
        kubernetes=mode,
        kubeconfig=str(tmp_path / "no-such-kubeconfig"),
        policies_from_cluster=from_cluster,
    )
    if starts:
        async with served(settings, context=False) as (http, _):
            assert (await http.get("/readyz")).status_code == 200
        return
    with pytest.raises(ImagegateError, match="cannot configure the Kubernetes client"):
        async with served(settings, context=False):
            pass


# ---- TLS: self-signed files and rotation in place (tls.py) ---------------------------------


def san(path: Path) -> tuple[list[str], list[str]]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return names.get_values_for_type(x509.DNSName), [
        str(ip) for ip in names.get_values_for_type(x509.IPAddress)
    ]


def test_a_self_signed_pair_serves_its_hosts_and_the_ca_verifies_it(tmp_path: Path) -> None:
    files = self_signed(["imagegate.imagegate-system.svc", "127.0.0.1", "::1"], tmp_path / "tls")
    assert san(files.cert) == (["imagegate.imagegate-system.svc"], ["127.0.0.1", "::1"])
    assert files.key.stat().st_mode & 0o077 == 0  # the key is the owner's alone
    assert files.ca is not None
    assert base64.b64decode(files.ca_bundle()) == files.ca.read_bytes()
    assert (
        CertFiles(files.cert, files.key).ca_bundle()
        == base64.b64encode(files.cert.read_bytes()).decode()
    )
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(files.cert, files.key)
    client_side = ssl.create_default_context(cafile=str(files.ca))
    client_side.check_hostname = True
    with handshake(server_side, client_side, "imagegate.imagegate-system.svc") as peer:
        assert peer is not None


@contextmanager
def handshake(
    server_side: ssl.SSLContext, client_side: ssl.SSLContext, hostname: str
) -> Iterator[dict[str, Any] | None]:
    """A TLS handshake over an in-memory socket pair; the client's view of the peer cert."""
    left, right = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_side.wrap_socket(right, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError) as err:
            errors.append(err)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with client_side.wrap_socket(left, server_hostname=hostname) as tls:
            yield tls.getpeercert()
            tls.sendall(b"x")
    finally:
        thread.join(5)
    assert not errors, errors


def test_a_rotated_certificate_is_loaded_into_the_live_context(tmp_path: Path) -> None:
    first = self_signed(["webhook.old"], tmp_path / "tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(first.cert, first.key)
    reloader = CertReloader(context, first, interval=60)
    assert reloader.reload_if_changed() is False  # nothing changed yet
    second = self_signed(["webhook.new"], tmp_path / "next")
    first.cert.write_bytes(second.cert.read_bytes())
    first.key.write_bytes(second.key.read_bytes())
    bump(first)
    assert reloader.reload_if_changed() is True
    assert reloader.reload_if_changed() is False  # loaded once
    client = ssl.create_default_context(cafile=str(second.ca))
    with handshake(context, client, "webhook.new") as peer:
        assert peer is not None


def bump(files: CertFiles) -> None:
    """Move the files' mtimes forward, as a rotation a second later would."""
    for path in (files.cert, files.key):
        stamp = path.stat().st_mtime + 5
        os.utime(path, (stamp, stamp))


def test_half_written_files_keep_the_old_pair_until_they_are_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = self_signed(["webhook"], tmp_path / "tls")
    whole = files.key.read_bytes()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    reloader = CertReloader(context, files, interval=60)
    files.key.write_bytes(whole[:40])
    bump(files)
    assert reloader.reload_if_changed() is False
    assert "cannot reload the serving certificate yet" in caplog.text
    files.key.unlink()
    assert reloader.reload_if_changed() is False  # missing for a moment: still the old pair
    files.key.write_bytes(whole)
    bump(files)
    assert reloader.reload_if_changed() is True


async def test_the_reloader_polls_until_cancelled(tmp_path: Path) -> None:
    files = self_signed(["webhook"], tmp_path / "tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    reloader = CertReloader(context, files, interval=0.01)
    bump(files)
    task = asyncio.create_task(reloader.run())
    for _ in range(200):
        await asyncio.sleep(0.01)
        if reloader._seen == reloader._stamp():
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert reloader._seen == reloader._stamp()  # the loop picked the change up


# ---- the server: HTTPS, the head deadline, draining on SIGTERM (server.py) -----------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Running:
    port: int
    ca: Path
    instance: list[server._DrainingServer]


@contextmanager
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    """`server.run` in a thread (uvicorn skips signal handlers off the main thread): the real
    uvicorn, TLS files, the guarded protocol. The server object is kept so the test can
    signal it as the process's signal handler would."""
    instance: list[server._DrainingServer] = []

    class Kept(server._DrainingServer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            instance.append(self)

    monkeypatch.setattr(server, "_DrainingServer", Kept)
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    certs = self_signed(["127.0.0.1"], tmp_path / "tls")
    assert certs.ca is not None
    port = free_port()
    thread = threading.Thread(
        target=server.run,
        kwargs={
            "app": app, "host": "127.0.0.1", "port": port, "certs": certs, "reload_seconds": 0.05,
            "shutdown_delay": 0.3, "head_timeout": 0.3, "keep_alive": 1.0,
        },
        daemon=True,
    )  # fmt: skip
    thread.start()
    deadline = time.monotonic() + 10
    while not (instance and instance[0].started):
        assert time.monotonic() < deadline, "the server did not start"
        assert thread.is_alive(), "the server stopped"
        time.sleep(0.02)
    try:
        yield Running(port, certs.ca, instance)
    finally:
        if thread.is_alive():
            instance[0].handle_exit(signal.SIGINT, None)
        thread.join(10)
    assert not thread.is_alive()


def test_the_server_speaks_https_closes_slow_heads_and_drains_on_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(tmp_path, monkeypatch) as run:
        url = f"https://127.0.0.1:{run.port}/healthz"
        with httpx.Client(verify=ssl.create_default_context(cafile=str(run.ca))) as http:
            assert http.get(url).json() == {"status": "ok"}

            context = ssl.create_default_context(cafile=str(run.ca))
            with (
                socket.create_connection(("127.0.0.1", run.port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127")  # and nothing more
                started = time.monotonic()
                assert tls.recv(1024) == b""  # closed by the server
                assert time.monotonic() - started < 3

            # On a kept-alive connection: idling past head_timeout (within keep_alive) is no
            # slow head, and the deadline of a later head runs from its own first byte.
            with (
                socket.create_connection(("127.0.0.1", run.port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                for _ in range(2):
                    tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    answer = b""
                    while not answer.endswith(b'{"status":"ok"}'):
                        chunk = tls.recv(1024)
                        assert chunk, f"closed while idle, after {answer!r}"
                        answer += chunk
                    time.sleep(0.5)
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127")
                started = time.monotonic()
                assert tls.recv(1024) == b""
                assert 0.25 <= time.monotonic() - started < 3

            [kept] = run.instance
            kept.handle_exit(signal.SIGTERM, None)  # as the signal handler would
            signalled = time.monotonic()
            assert http.get(url).status_code == 200  # still serving while it drains
            while not kept.should_exit:
                assert time.monotonic() - signalled < 5
                time.sleep(0.02)
            assert time.monotonic() - signalled >= 0.3
