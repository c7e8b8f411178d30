"""decide(): pod spec + policies + registry answer → the verdict and the text a user sees.

One table, as policy-controller's validator tests: every row runs the real Checker (rules,
applicability, onError) over a `FakeRegistry` answer and asserts the allowed flag, the denial
lines, the warnings and the rule ids with their effective mode. In-process, milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from tests.unit.fakes import FakeRegistry, checker_for, digest, image, policy
from webhook.admission.decision import (
    MAX_WARNING_CHARS,
    MAX_WARNINGS,
    Decision,
    Finding,
    decide,
)
from webhook.errors import (
    DigestMismatch,
    ImagegateError,
    ImageNotFound,
    InvalidImageData,
    PlatformNotFound,
    RegistryForbidden,
    RegistryRateLimited,
    RegistryUnauthorized,
    RegistryUnavailable,
    UnsupportedMediaType,
)
from webhook.policy.checker import CheckResult
from webhook.policy.model import ImagePolicy, Severity
from webhook.policy.outcome import Violation
from webhook.policy.workloads import pod_template
from webhook.registry.facts import ImageFacts

SUBJECT = "Pod team-a/web"
R = "localhost:5001/team"
GOOD = f"{R}/good:1.0"
ROOT = f"{R}/root:1.0"
FOREIGN = f"{R}/foreign:1.0"
NO_BASE = f"{R}/nobase:1.0"
BIG = f"{R}/big:1.0"
SHELL = f"{R}/shell:1.0"
LATEST = f"{R}/good:latest"
UNTAGGED = f"{R}/good"
PINNED = f"{R}/good@{digest('d')}"
BROKEN = f"{R}/broken:1.0"
AT_BUDGET = f"{R}/at-budget:1.0"
TINI = f"{R}/tini:1.0"
LAYERED = f"{R}/layered:1.0"
BASE = f"{R}/base:1"
BASE_LAYER = f"sha256:{'b' * 64}"

ANSWERS: dict[str, ImageFacts | ImagegateError] = {
    GOOD: image(),
    LATEST: image(),
    UNTAGGED: image(),
    PINNED: image(),
    ROOT: image(user=""),
    FOREIGN: image(base="docker.io/library/ubuntu:22.04"),
    NO_BASE: image(base=None),
    BIG: image(sizes=[250_000_000]),
    AT_BUDGET: image(sizes=[200_000_000]),
    SHELL: image(entrypoint=["/bin/sh", "-c", "nginx & php-fpm"]),
    TINI: image(entrypoint=["/sbin/tini", "--", "/app/server"]),
    LAYERED: image(base=None, diff_ids=[BASE_LAYER, f"sha256:{'c' * 64}"]),
    BASE: image("b", base=None, diff_ids=[BASE_LAYER]),
}

# What a user reads first, per rule: the start of the message after "rule: ".
NO_USER = "non-root-user: the image has no USER, so it runs as root"
NOT_APPROVED = "allowed-base: built on docker.io/library/ubuntu:22.04 (from the"
UNKNOWN_BASE = "allowed-base: cannot tell which base image this was built on"
OVER_BUDGET = "size-budget: the image is 250.0 MB compressed, over the 200.0 MB budget by 50.0 MB"
CHAINED = "single-entrypoint: the shell command 'nginx & php-fpm' chains or backgrounds"
MUTABLE = f"immutable-reference: {LATEST} uses the mutable tag `latest`"


def c(name: str, img: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": img, **extra}


def pod(*containers: dict[str, Any], **lists: list[dict[str, Any]]) -> dict[str, Any]:
    return {"spec": {"containers": list(containers), **lists}}


def only(rule: str, **options: Any) -> dict[str, Any]:
    """Rules with just `rule` enabled (camelCase key as in YAML)."""
    names = ("nonRootUser", "allowedBases", "sizeBudget", "singleEntrypoint", "immutableReference")
    return {n: {"enabled": n == rule, **(options if n == rule else {})} for n in names}


@dataclass(frozen=True)
class Row:
    spec: dict[str, Any]
    policies: tuple[ImagePolicy, ...] = (policy(),)
    answers: Mapping[str, ImageFacts | ImagegateError] = field(default_factory=dict)
    namespace: str = "team-a"
    labels: Mapping[str, str] = field(default_factory=dict)
    allowed: bool = True
    denied: tuple[str, ...] = ()  # status lines after the header, each as a prefix
    warnings: tuple[str, ...] = ()  # each as a prefix
    problems: tuple[tuple[str, str], ...] = ()  # (rule, effective mode), in order


async def run(row: Row) -> Decision:
    registry = FakeRegistry({**ANSWERS, **row.answers})
    checker = checker_for(registry)
    template = pod_template("Pod", row.spec)
    assert template is not None
    findings = [
        Finding(
            container,
            await checker.check(
                container.image,
                row.policies,
                container=container.context,
                namespace=row.namespace,
                namespace_labels=dict(row.labels),
            ),
        )
        for container in template.containers
    ]
    return decide("uid-1", SUBJECT, findings, {p.name: p for p in row.policies})


def enforce_row(img: str, line: str, rule: str, **kw: Any) -> Row:
    return Row(
        pod(c("app", img)),
        allowed=False,
        denied=(f"container app ({img}): {line}",),
        problems=((rule, "enforce"),),
        **kw,
    )


def admitted_row(img: str, line: str, rule: str, mode: str, **kw: Any) -> Row:
    return Row(
        pod(c("app", img)),
        policies=(policy(mode=mode),),
        warnings=(f"imagegate ({mode}): container app: {line}",),
        problems=((rule, mode),),
        **kw,
    )


FAILING = [
    ("non-root-user", ROOT, NO_USER),
    ("allowed-base-not-approved", FOREIGN, NOT_APPROVED),
    ("allowed-base-unknown", NO_BASE, UNKNOWN_BASE),
    ("size-budget", BIG, OVER_BUDGET),
    ("single-entrypoint", SHELL, CHAINED),
    ("immutable-reference-latest", LATEST, MUTABLE),
]

RULE_ROWS = [
    pytest.param(enforce_row(img, line, line.split(":")[0]), id=f"enforce-denies-{name}")
    for name, img, line in FAILING
] + [
    pytest.param(admitted_row(img, line, line.split(":")[0], mode), id=f"{mode}-admits-{name}")
    for mode in ("audit", "warn")
    for name, img, line in FAILING
]

PASSING_ROWS = [
    pytest.param(Row(pod(c("app", GOOD))), id="compliant-image-admitted-silently"),
    pytest.param(
        Row(pod(c("app", ROOT, securityContext={"runAsUser": 1000}))),
        id="non-root-user-passes-with-container-runAsUser",
    ),
    pytest.param(
        Row({"spec": {"securityContext": {"runAsUser": 1000}, "containers": [c("app", ROOT)]}}),
        id="non-root-user-passes-with-pod-runAsUser",
    ),
    pytest.param(
        replace(
            enforce_row(
                GOOD, "non-root-user: container securityContext.runAsUser is 0", "non-root-user"
            ),
            spec=pod(c("app", GOOD, securityContext={"runAsUser": 0})),
        ),
        id="non-root-user-fails-when-the-pod-forces-uid-0",
    ),
    pytest.param(
        Row(
            pod(c("app", LAYERED)),
            policies=(policy(rules={"allowedBases": {"references": [BASE]}}),),
        ),
        id="allowed-base-passes-on-verified-layers",
    ),
    pytest.param(
        Row(pod(c("app", FOREIGN)), policies=(policy(rules=only("sizeBudget")),)),
        id="allowed-base-disabled-is-not-evaluated",
    ),
    pytest.param(
        Row(
            pod(c("app", NO_BASE)),
            policies=(policy(rules={"allowedBases": {"unknownBase": "allow"}}),),
        ),
        id="allowed-base-unknown-base-allowed",
    ),
    pytest.param(Row(pod(c("app", AT_BUDGET))), id="size-budget-passes-exactly-at-budget"),
    pytest.param(Row(pod(c("app", TINI))), id="single-entrypoint-passes-behind-tini"),
    pytest.param(
        Row(pod(c("app", SHELL, command=["/app/server"]))),
        id="single-entrypoint-passes-when-the-pod-overrides-command",
    ),
    pytest.param(Row(pod(c("app", PINNED))), id="immutable-reference-passes-pinned"),
    pytest.param(
        enforce_row(UNTAGGED, f"immutable-reference: {LATEST} uses", "immutable-reference"),
        id="immutable-reference-no-tag-means-latest",
    ),
    pytest.param(
        enforce_row(
            GOOD,
            f"immutable-reference: {GOOD} is a tag, which can be moved",
            "immutable-reference",
            policies=(policy(rules={"immutableReference": {"mode": "requireDigest"}}),),
        ),
        id="immutable-reference-requireDigest-refuses-tags",
    ),
    pytest.param(
        Row(
            pod(c("app", PINNED)),
            policies=(policy(rules={"immutableReference": {"mode": "requireDigest"}}),),
        ),
        id="immutable-reference-requireDigest-accepts-digests",
    ),
]

ERRORS: list[tuple[str, ImagegateError]] = [
    ("not-found", ImageNotFound(f"{BROKEN}: manifest unknown", BROKEN)),
    ("unauthorized", RegistryUnauthorized("localhost:5001: 401 after trying alice", BROKEN)),
    ("forbidden", RegistryForbidden("localhost:5001: 403 for team/broken", BROKEN)),
    ("unavailable", RegistryUnavailable("localhost:5001: connection refused", BROKEN)),
    ("rate-limited", RegistryRateLimited("localhost:5001: 429 after 3 retries", BROKEN)),
    ("invalid-image-data", InvalidImageData("config is not JSON", BROKEN)),
    ("unsupported-media-type", UnsupportedMediaType("application/x-foo", BROKEN)),
    ("digest-mismatch", DigestMismatch(f"got {digest('e')}", BROKEN)),
    ("platform-not-found", PlatformNotFound("no linux/s390x manifest", BROKEN)),
]

ERROR_ROWS = [
    pytest.param(
        Row(
            pod(c("app", BROKEN)),
            policies=(policy(mode=mode, onError="deny"),),
            answers={BROKEN: error},
            allowed=False,
            denied=(f"container app ({BROKEN}): inspection: cannot be inspected "
                    f"(onError: deny): {error}",),
            problems=(("inspection", "enforce"),),
        ),
        id=f"{name}-onError-deny-denies-in-{mode}-mode",
    )
    for name, error in ERRORS
    for mode in (("enforce", "audit") if name == "unavailable" else ("enforce",))
] + [
    pytest.param(
        Row(
            pod(c("app", BROKEN)),
            policies=(policy(onError="allow"),),
            answers={BROKEN: error},
            warnings=(f"imagegate (warn): container app: inspection: cannot be inspected "
                      f"(onError: allow): {error}",),
            problems=(("inspection", "warn"),),
        ),
        id=f"{name}-onError-allow-admits-with-warning",
    )
    for name, error in ERRORS
] + [
    pytest.param(
        Row(
            pod(c("app", BROKEN)),
            policies=(policy("lenient", onError="allow"), policy("strict", onError="deny")),
            answers={BROKEN: ERRORS[3][1]},
            allowed=False,
            denied=(f"container app ({BROKEN}): inspection: cannot be inspected (onError: deny)",),
            problems=(("inspection", "enforce"),),
        ),
        id="onError-deny-of-any-applied-policy-wins",
    ),
    pytest.param(
        Row(
            pod(c("app", NO_BASE)),
            policies=(policy(rules={"allowedBases": {"references": [BASE]}}),),
            answers={BASE: RegistryUnavailable("localhost:5001: connection refused", BASE)},
            allowed=False,
            denied=(f"container app ({NO_BASE}): inspection: cannot be inspected (onError: "
                    f"deny): cannot read the approved base images ({BASE}: localhost:5001: "
                    "connection refused)",),
            problems=(("inspection", "enforce"),),
        ),
        id="unreadable-approved-base-is-an-error-not-an-allowed-base-verdict",
    ),
    pytest.param(
        Row(
            pod(c("app", GOOD)),
            policies=(
                policy(rules={"allowedBases": {"references": [BASE, "gcr.io/distroless/*"]}}),
            ),
            answers={BASE: RegistryUnavailable("localhost:5001: connection refused", BASE)},
        ),
        id="unreadable-approved-base-does-not-matter-when-the-image-names-its-base",
    ),
]  # fmt: skip

SCOPE_ROWS = [
    pytest.param(
        Row(pod(c("app", ROOT)), policies=(policy(exclude={"images": [f"{R}/root*"]}),)),
        id="excluded-image-is-not-checked",
    ),
    pytest.param(
        Row(pod(c("app", ROOT)), policies=(policy(match={"namespaces": ["team-b"]}),)),
        id="policy-for-another-namespace-does-not-apply",
    ),
    pytest.param(
        Row(pod(c("app", ROOT)), policies=(policy(exclude={"namespaces": ["team-*"]}),)),
        id="excluded-namespace-is-not-checked",
    ),
    pytest.param(
        enforce_row(
            ROOT,
            NO_USER,
            "non-root-user",
            policies=(policy(match={"namespaceSelector": {"matchLabels": {"tier": "prod"}}}),),
            labels={"tier": "prod"},
        ),
        id="namespace-selector-match-applies",
    ),
    pytest.param(
        Row(
            pod(c("app", ROOT)),
            policies=(policy(match={"namespaceSelector": {"matchLabels": {"tier": "prod"}}}),),
            labels={"tier": "dev"},
        ),
        id="namespace-selector-mismatch-does-not-apply",
    ),
    pytest.param(
        Row(
            pod(c("app", ROOT)),
            policies=(policy(exclude={"images": [f"{R}/root*"]}),),
            answers={ROOT: RegistryUnavailable("down", ROOT)},
        ),
        id="excluded-image-is-not-even-inspected-so-errors-do-not-count",
    ),
]

MULTI_ROWS = [
    pytest.param(
        Row(
            pod(c("app", GOOD), initContainers=[c("setup", ROOT)]),
            allowed=False,
            denied=(f"init container setup ({ROOT}): {NO_USER}",),
            problems=(("non-root-user", "enforce"),),
        ),
        id="failing-init-container-denies-the-pod",
    ),
    pytest.param(
        Row(
            pod(c("app", GOOD), ephemeralContainers=[c("debug", SHELL)]),
            allowed=False,
            denied=(f"ephemeral container debug ({SHELL}): {CHAINED}",),
            problems=(("single-entrypoint", "enforce"),),
        ),
        id="failing-ephemeral-container-denies-the-pod",
    ),
    pytest.param(
        Row(
            pod(c("app", BIG), c("sidecar", GOOD), initContainers=[c("setup", ROOT)]),
            allowed=False,
            denied=(
                f"init container setup ({ROOT}): {NO_USER}",
                f"container app ({BIG}): {OVER_BUDGET}",
            ),
            problems=(("non-root-user", "enforce"), ("size-budget", "enforce")),
        ),
        id="every-failing-container-is-listed-in-pod-order",
    ),
    pytest.param(
        Row(
            pod(c("app", ROOT), c("sidecar", BROKEN)),
            policies=(policy(mode="audit", onError="deny"),),
            answers={BROKEN: RegistryUnavailable("connection refused", BROKEN)},
            allowed=False,
            denied=(f"container sidecar ({BROKEN}): inspection: cannot be inspected",),
            warnings=(f"imagegate (audit): container app: {NO_USER}",),
            problems=(("non-root-user", "audit"), ("inspection", "enforce")),
        ),
        id="denial-still-carries-the-warnings-of-admitted-problems",
    ),
]

MODE_ROWS = [
    pytest.param(
        Row(
            pod(c("app", ROOT)),
            policies=(policy("report", mode="audit"), policy("gate", mode="enforce")),
            allowed=False,
            denied=(f"container app ({ROOT}): {NO_USER}",),
            problems=(("non-root-user", "enforce"),),
        ),
        id="same-rule-audit-then-enforce-enforce-wins",
    ),
    pytest.param(
        Row(
            pod(c("app", ROOT)),
            policies=(policy("gate", mode="enforce"), policy("report", mode="audit")),
            allowed=False,
            denied=(f"container app ({ROOT}): {NO_USER}",),
            problems=(("non-root-user", "enforce"),),
        ),
        id="same-rule-enforce-then-audit-enforce-wins",
    ),
    pytest.param(
        Row(
            pod(c("app", ROOT)),
            policies=(policy("report", mode="audit"), policy("nag", mode="warn")),
            warnings=(f"imagegate (warn): container app: {NO_USER}",),
            problems=(("non-root-user", "warn"),),
        ),
        id="same-rule-audit-and-warn-warn-wins-once",
    ),
    pytest.param(
        Row(
            pod(c("app", f"{R}/root-and-big:1.0")),
            policies=(
                policy("users", mode="enforce", rules=only("nonRootUser")),
                policy("sizes", mode="audit", rules=only("sizeBudget")),
            ),
            answers={f"{R}/root-and-big:1.0": image(user="", sizes=[250_000_000])},
            allowed=False,
            denied=(f"container app ({R}/root-and-big:1.0): {NO_USER}",),
            warnings=(f"imagegate (audit): container app: {OVER_BUDGET}",),
            problems=(("non-root-user", "enforce"), ("size-budget", "audit")),
        ),
        id="per-rule-mode-enforced-rule-denies-audited-rule-warns",
    ),
]


@pytest.mark.parametrize(
    "row", [*RULE_ROWS, *PASSING_ROWS, *ERROR_ROWS, *SCOPE_ROWS, *MULTI_ROWS, *MODE_ROWS]
)
async def test_decision(row: Row) -> None:
    decision = await run(row)
    response = decision.response
    assert response.uid == "uid-1"
    assert response.allowed is row.allowed
    assert [(p.rule, str(p.mode)) for p in decision.problems] == list(row.problems)
    if row.allowed:
        assert response.status is None
    else:
        assert response.status is not None
        assert (response.status.code, response.status.reason) == (403, "Forbidden")
        header, *lines = response.status.message.splitlines()
        assert header == f"imagegate denied {SUBJECT}: {len(row.denied)} problem(s)"
        assert len(lines) == len(row.denied), lines
        for line, wanted in zip(lines, row.denied, strict=True):
            assert line.startswith(f"- {wanted}"), line
    warnings = response.warnings or []
    assert response.warnings is None or warnings, "no warnings is None, not []"
    assert len(warnings) == len(row.warnings), warnings
    for warning, wanted in zip(warnings, row.warnings, strict=True):
        assert warning.startswith(wanted[: MAX_WARNING_CHARS - 1]), warning


# ---- decide() on results no Checker would produce, and the limits of warnings


def _finding(result: CheckResult) -> Finding:
    template = pod_template("Pod", pod(c("app", result.image)))
    assert template is not None
    return Finding(template.containers[0], result)


@pytest.mark.parametrize(
    ("result", "allowed", "mode"),
    [
        pytest.param(
            CheckResult(
                GOOD,
                "fail",
                violations=[Violation("size-budget", "too big", Severity.medium, "gone")],
                policies=["gone"],
            ),
            False,
            "enforce",
            id="violation-of-an-unknown-policy-is-enforced",
        ),
        pytest.param(
            CheckResult(
                GOOD,
                "fail",
                violations=[Violation("size-budget", "too big", Severity.medium, "default")],
                policies=["default"],
            ),
            True,
            "audit",
            id="violation-of-a-known-policy-takes-its-mode",
        ),
    ],
)
def test_mode_of_a_violation(result: CheckResult, allowed: bool, mode: str) -> None:
    decision = decide("u", SUBJECT, [_finding(result)], {"default": policy(mode="audit")})
    assert decision.response.allowed is allowed
    assert [str(p.mode) for p in decision.problems] == [mode]


async def test_warnings_are_capped_so_the_api_server_keeps_them() -> None:
    count = MAX_WARNINGS + 3
    row = Row(pod(*(c(f"app{i}", ROOT) for i in range(count))), policies=(policy(mode="audit"),))
    decision = await run(row)
    assert decision.response.allowed
    assert len(decision.problems) == count  # every problem is still logged and reported
    warnings = decision.response.warnings or []
    assert [w.split(":")[0] for w in warnings] == ["imagegate (audit)"] * MAX_WARNINGS
    assert warnings[0].startswith("imagegate (audit): container app0: non-root-user")


async def test_long_warnings_are_cut_with_an_ellipsis() -> None:
    row = Row(pod(c("app", NO_BASE)), policies=(policy(mode="audit"),))
    [warning] = (await run(row)).response.warnings or []
    assert len(warning) == MAX_WARNING_CHARS
    assert warning.endswith("…")
    assert warning.startswith(f"imagegate (audit): container app: {UNKNOWN_BASE}")


async def test_short_warnings_are_kept_whole() -> None:
    error = RegistryUnavailable("connection refused", BROKEN)
    row = Row(pod(c("app", BROKEN)), policies=(policy(onError="allow"),), answers={BROKEN: error})
    assert (await run(row)).response.warnings == [
        "imagegate (warn): container app: inspection: cannot be inspected "
        "(onError: allow): connection refused"
    ]
