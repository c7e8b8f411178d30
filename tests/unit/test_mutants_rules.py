"""non-root-user, size-budget, immutable-reference, layer-efficiency: whole outcomes.

The rule tests assert pass/fail and the start of a message; `make mutate` showed that a rule
could report the wrong facts (`facts.user`, `effectiveUser`, `pinned`…, which the report and
PolicyReports show), the wrong severity, or a different message and still pass them. These
compare the whole RuleOutcome: violations with severity and message, facts, error.
"""

from __future__ import annotations

import pytest

from tests.unit.factories import facts
from webhook.layers.analysis import (
    CacheFile,
    LayerAnalysis,
    ResolvedUser,
    UnresolvedUser,
    WastedPath,
)
from webhook.policy.model import (
    ImmutableReferenceRule,
    LayerEfficiencyRule,
    NonRootUserRule,
    Severity,
    SizeBudgetRule,
)
from webhook.policy.outcome import ContainerContext, RuleOutcome, Violation
from webhook.policy.rules import immutable_reference, layer_efficiency, non_root_user, size_budget
from webhook.registry.reference import Reference

# A severity no rule defaults to, so a violation that drops its rule's severity shows.
LOW = Severity.low

# ---- non-root-user ---------------------------------------------------------------------------

STRICT = NonRootUserRule(severity=LOW)
LENIENT = NonRootUserRule(severity=LOW, require_numeric_user=False)
FIX = non_root_user.FIX


def fails(message: str, **found: object) -> RuleOutcome:
    return RuleOutcome([Violation("non-root-user", message, LOW)], dict(found))


@pytest.mark.parametrize(
    ("user", "parts"),
    [("65532:65532", ("65532", "65532")), ("app", ("app", None)), ("app:", ("app", ""))],
)
def test_split_user_tells_no_group_from_an_empty_one(
    user: str, parts: tuple[str, str | None]
) -> None:
    assert non_root_user.split_user(user) == parts


@pytest.mark.parametrize(
    ("ctx", "wanted"),
    [
        pytest.param(
            ContainerContext(run_as_user=1000, pod_run_as_user=0),
            RuleOutcome(facts={
                "user": "", "effectiveUser": "1000",
                "userSource": "container securityContext.runAsUser",
            }),
            id="container-over-pod",
        ),
        pytest.param(
            ContainerContext(pod_run_as_user=1000),
            RuleOutcome(facts={
                "user": "", "effectiveUser": "1000", "userSource": "pod securityContext.runAsUser",
            }),
            id="pod",
        ),
        pytest.param(
            ContainerContext(pod_run_as_user=0),
            fails(
                "pod securityContext.runAsUser is 0 (root): set it to a non-zero uid such as 65532",
                user="", effectiveUser="0", userSource="pod securityContext.runAsUser",
            ),
            id="pod-root",
        ),
    ],
)  # fmt: skip
def test_a_security_context_user_decides(ctx: ContainerContext, wanted: RuleOutcome) -> None:
    assert non_root_user.check(STRICT, facts(user=""), ctx) == wanted


@pytest.mark.parametrize(
    ("user", "rule", "wanted"),
    [
        pytest.param(
            "", STRICT,
            fails(f"the image has no USER, so it runs as root: {FIX}",
                  user="", effectiveUser="root", userSource="image"),
            id="no-user",
        ),
        pytest.param(
            "0", STRICT,
            fails(f"the image runs as uid 0 (USER 0): {FIX}",
                  user="0", effectiveUser="0", userSource="image"),
            id="uid-0",
        ),
        pytest.param(
            "4294967295", STRICT,
            fails(f"USER 4294967295 is not a valid uid: {FIX}",
                  user="4294967295", effectiveUser="4294967295", userSource="image"),
            id="not-a-uid",
        ),
        pytest.param(
            "root", LENIENT,
            fails(f"the image runs as root (USER root): {FIX}",
                  user="root", effectiveUser="root", userSource="image"),
            id="named-root",
        ),
        pytest.param(
            "app", STRICT,
            fails(
                "the image runs as the named user 'app': with runAsNonRoot the kubelet refuses "
                'it ("image has non-numeric user (app), cannot verify user is non-root"); use '
                "its numeric uid instead, for example `USER 65532:65532`",
                user="app", effectiveUser="app", userSource="image",
            ),
            id="named-user",
        ),
        pytest.param(
            "X5", LENIENT,
            RuleOutcome(facts={"user": "X5", "effectiveUser": "X5", "userSource": "image"}),
            id="a-name-that-ends-in-digits",
        ),
        pytest.param(
            "65532", STRICT,
            RuleOutcome(facts={"user": "65532", "effectiveUser": "65532", "userSource": "image"}),
            id="uid",
        ),
    ],
)  # fmt: skip
def test_the_image_user_decides(user: str, rule: NonRootUserRule, wanted: RuleOutcome) -> None:
    assert non_root_user.check(rule, facts(user=user), None) == wanted


def test_a_user_passwd_resolves_to_root_fails_with_the_resolved_ids() -> None:
    outcome = non_root_user.check(STRICT, facts(user="admin"), None, ResolvedUser("admin", 0, 10))
    assert outcome == fails(
        f"USER admin is uid 0 (root) in the image's /etc/passwd: {FIX}",
        user="admin", effectiveUser="admin", userSource="image", resolvedUid=0, resolvedGid=10,
    )  # fmt: skip


def test_a_resolved_named_user_reports_its_ids() -> None:
    outcome = non_root_user.check(LENIENT, facts(user="app"), None, ResolvedUser("app", 1000, 1001))
    assert outcome == RuleOutcome(facts={
        "user": "app", "effectiveUser": "app", "userSource": "image",
        "resolvedUid": 1000, "resolvedGid": 1001,
    })  # fmt: skip


def test_an_unresolvable_user_is_an_error_with_the_facts() -> None:
    outcome = non_root_user.check(
        STRICT, facts(user="ghost"), None, UnresolvedUser("ghost", "no such user")
    )
    assert outcome == RuleOutcome(
        facts={"user": "ghost", "effectiveUser": "ghost", "userSource": "image"},
        error="USER ghost cannot be resolved: no such user",
    )


# ---- size-budget -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (999, "999 B"),
        (1000, "1.0 kB"),
        (999_949, "999.9 kB"),
        (1_000_000, "1.0 MB"),
        (2_500_000_000, "2.5 GB"),
        (7_000_000_000_000, "7.0 TB"),
        (5_000_000_000_000_000, "5000.0 TB"),
    ],
)
def test_human_sizes_stop_at_terabytes(size: int, text: str) -> None:
    assert size_budget.human(size) == text


@pytest.mark.parametrize(
    ("source", "kind"),
    [("registry", "compressed"), ("docker-daemon", "uncompressed (local image)")],
)
def test_an_image_over_budget_says_by_how_much_and_how_to_shrink_it(source: str, kind: str) -> None:
    rule = SizeBudgetRule(severity=LOW, max_compressed_size=1_000_000)
    outcome = size_budget.check(rule, facts(sizes=[1_500_000], source=source))
    message = (
        f"the image is 1.5 MB {kind}, over the 1.0 MB budget by 500.0 kB: build on a smaller "
        "base (distroless, slim), copy only the build output into a multi-stage final stage, "
        "and remove package caches (apt lists, pip/npm caches) in the layer that creates them"
    )
    assert outcome == RuleOutcome(
        [Violation("size-budget", message, LOW)], {"sizeBudget": 1_000_000}
    )


# ---- immutable-reference ---------------------------------------------------------------------

DIGEST = "sha256:" + "d" * 64


def immutable(text: str, **rule: object) -> RuleOutcome:
    return immutable_reference.check(
        ImmutableReferenceRule(severity=LOW, **rule), Reference.parse(text), DIGEST
    )


def test_a_pinned_reference_reports_only_that() -> None:
    assert immutable(f"nginx@{DIGEST}") == RuleOutcome(facts={"pinned": True})


def test_latest_is_refused_with_the_digest_to_pin() -> None:
    pinned = f"docker.io/library/nginx@{DIGEST}"
    assert immutable("nginx") == RuleOutcome(
        [Violation(
            "immutable-reference",
            f"nginx:latest uses the mutable tag `latest` (also implied by no tag): pin the "
            f"digest that was checked, {pinned}, or at least a versioned tag",
            LOW,
        )],
        {"pinned": False, "pinnedReference": pinned},
    )  # fmt: skip


def test_require_digest_refuses_a_tag_with_the_digest_to_pin() -> None:
    pinned = f"docker.io/library/nginx@{DIGEST}"
    assert immutable("nginx:1.27", mode="requireDigest") == RuleOutcome(
        [Violation(
            "immutable-reference",
            f"nginx:1.27 is a tag, which can be moved to other content after it was checked: "
            f"pin the digest, {pinned}",
            LOW,
        )],
        {"pinned": False, "pinnedReference": pinned},
    )  # fmt: skip


def test_a_tag_is_pinned_on_admission() -> None:
    assert immutable("nginx:1.27") == RuleOutcome(facts={
        "pinned": False,
        "pinnedReference": f"docker.io/library/nginx@{DIGEST}",
        "pinOnAdmission": True,
    })  # fmt: skip


# ---- layer-efficiency ------------------------------------------------------------------------


def analysis(
    *, caches: int = 0, wasted: tuple[WastedPath, ...] = (), efficiency: float = 1.0
) -> LayerAnalysis:
    return LayerAnalysis(
        efficiency=efficiency,
        wasted_bytes=0,
        user_wasted_percent=None,
        layers=(),
        top_wasted=wasted,
        cache_files=tuple(
            CacheFile("apt-lists", f"/var/lib/apt/lists{i}", 1000 * (i + 1), 1)
            for i in range(caches)
        ),
        setuid=(),
        world_writable=(),
        unreadable_by_others=(),
    )


CACHES = "cache files left in the image: "
APT = "/var/lib/apt/lists{} (apt-lists, {}.0 kB)"


@pytest.mark.parametrize(
    ("caches", "listed"),
    [
        (1, APT.format(0, 1)),
        (3, ", ".join(APT.format(i, i + 1) for i in range(3))),
        (4, ", ".join(APT.format(i, i + 1) for i in range(3)) + " and 1 more"),
        (6, ", ".join(APT.format(i, i + 1) for i in range(3)) + " and 3 more"),
    ],
)
def test_cache_files_are_listed_three_then_counted(caches: int, listed: str) -> None:
    rule = LayerEfficiencyRule(severity=LOW)
    outcome = layer_efficiency.check(rule, analysis(caches=caches))
    assert outcome == RuleOutcome(
        [Violation("layer-efficiency", f"{CACHES}{listed}: {layer_efficiency.FIX}", LOW)]
    )


def test_every_problem_and_the_most_wasted_paths_are_joined_in_one_violation() -> None:
    rule = LayerEfficiencyRule(severity=LOW, lowest_efficiency=0.9)
    wasted = (WastedPath("/a", 2000, 0, (1,)), WastedPath("/b", 1000, 0, (2,)))
    outcome = layer_efficiency.check(rule, analysis(caches=1, wasted=wasted, efficiency=0.5))
    message = (
        "efficiency 50.0% is below 90.0%; most wasted: /a (2.0 kB), /b (1.0 kB); "
        f"{CACHES}{APT.format(0, 1)}: {layer_efficiency.FIX}"
    )
    assert outcome == RuleOutcome([Violation("layer-efficiency", message, LOW)])
