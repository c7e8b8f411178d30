"""non-root-user: DESIGN §4 semantics, shaped like real images."""

from __future__ import annotations

import pytest

from tests.unit.factories import facts
from webhook.layers.analysis import ResolvedUser, UnresolvedUser
from webhook.policy.model import NonRootUserRule
from webhook.policy.outcome import ContainerContext
from webhook.policy.rules import non_root_user

STRICT = NonRootUserRule()
LENIENT = NonRootUserRule(require_numeric_user=False)


@pytest.mark.parametrize(
    ("user", "rule", "passes"),
    [
        pytest.param("", STRICT, False, id="no-USER-means-root"),
        pytest.param("0", STRICT, False, id="uid-0"),
        pytest.param("0:0", STRICT, False, id="uid-0-gid-0"),
        pytest.param("root", LENIENT, False, id="named-root"),
        pytest.param("root:root", LENIENT, False, id="root-root"),
        pytest.param("65532", STRICT, True, id="distroless-nonroot"),
        pytest.param("65532:65532", STRICT, True, id="uid-gid"),
        pytest.param("1000:0", STRICT, True, id="uid-with-root-group"),
        pytest.param("1000:app", STRICT, True, id="uid-with-named-group"),
        pytest.param("nobody", STRICT, False, id="named-user-breaks-runAsNonRoot"),
        pytest.param("nobody", LENIENT, True, id="named-user-allowed-when-lenient"),
        pytest.param("app:1000", STRICT, False, id="named-user-numeric-group"),
        pytest.param("0000", STRICT, False, id="zero-padded-root"),
        pytest.param("\u00b2", STRICT, False, id="superscript-two-is-not-a-uid"),
        pytest.param("\u0663", LENIENT, True, id="arabic-indic-digit-is-a-name"),
        pytest.param("4294967295", STRICT, False, id="uid-minus-one-is-not-a-uid"),
        pytest.param("9" * 5000, STRICT, False, id="huge-number-is-not-a-uid"),
        pytest.param("4294967294", STRICT, True, id="largest-uid"),
    ],
)
def test_image_user(user: str, rule: NonRootUserRule, passes: bool) -> None:
    outcome = non_root_user.check(rule, facts(user=user), None)
    assert (not outcome.violations) is passes
    for v in outcome.violations:
        assert v.rule == "non-root-user"
        assert "USER 65532:65532" in v.message or "runAsUser" in v.message


def test_named_user_message_quotes_the_kubelet() -> None:
    [violation] = non_root_user.check(STRICT, facts(user="nobody"), None).violations
    assert "non-numeric user (nobody)" in violation.message


@pytest.mark.parametrize(
    ("user", "ctx", "passes", "source"),
    [
        pytest.param(
            "",
            ContainerContext(run_as_user=1000),
            True,
            "container",
            id="container-overrides-root-image",
        ),
        pytest.param(
            "", ContainerContext(pod_run_as_user=1000), True, "pod", id="pod-overrides-root-image"
        ),
        pytest.param(
            "65532", ContainerContext(run_as_user=0), False, "container", id="container-forces-root"
        ),
        pytest.param(
            "65532",
            ContainerContext(run_as_user=0, pod_run_as_user=1000),
            False,
            "container",
            id="container-wins-over-pod",
        ),
        pytest.param(
            "65532",
            ContainerContext(run_as_user=5, pod_run_as_user=0),
            True,
            "container",
            id="container-nonroot-wins",
        ),
        pytest.param(
            "nobody",
            ContainerContext(pod_run_as_user=1000),
            True,
            "pod",
            id="named-image-user-with-numeric-pod-user",
        ),
        pytest.param(
            "",
            ContainerContext(command=("x",)),
            False,
            "image",
            id="no-user-in-context-falls-back-to-image",
        ),
    ],
)
def test_effective_user(user: str, ctx: ContainerContext, passes: bool, source: str) -> None:
    outcome = non_root_user.check(STRICT, facts(user=user), ctx)
    assert (not outcome.violations) is passes
    assert str(outcome.facts["userSource"]).startswith(source)


def test_severity_comes_from_the_rule() -> None:
    rule = NonRootUserRule(severity="critical")  # type: ignore[arg-type]
    [violation] = non_root_user.check(rule, facts(user=""), None).violations
    assert violation.severity == "critical"


# ---- named users resolved through the image's own /etc/passwd (the layers were read) ------

NOBODY = ResolvedUser("nobody", 65534, 65534)


@pytest.mark.parametrize(
    ("user", "resolved", "rule", "expected"),
    [
        pytest.param("nobody", NOBODY, LENIENT, None, id="nobody-is-65534"),
        pytest.param("nobody", NOBODY, STRICT, "USER 65534:65534", id="strict-names-the-uid"),
        pytest.param("toor", ResolvedUser("toor", 0, 0), LENIENT, "uid 0", id="alias-of-root"),
        pytest.param("root", ResolvedUser("root", 0, 0), LENIENT, "uid 0", id="root-resolved"),
        pytest.param("app:web", ResolvedUser("app", 1000, 33), LENIENT, None, id="user-group"),
    ],
)
def test_a_named_user_is_judged_by_its_uid_when_resolved(
    user: str, resolved: ResolvedUser, rule: NonRootUserRule, expected: str | None
) -> None:
    outcome = non_root_user.check(rule, facts(user=user), None, resolved)
    assert outcome.error is None
    messages = [v.message for v in outcome.violations]
    if expected is None:
        assert messages == []
        assert outcome.facts["resolvedUid"] == resolved.uid
    else:
        assert len(messages) == 1, messages
        assert expected in messages[0], messages


def test_an_unknown_name_is_an_error_with_the_reason() -> None:
    unknown = UnresolvedUser("ghost", "no user 'ghost' in /etc/passwd")
    outcome = non_root_user.check(LENIENT, facts(user="ghost"), None, unknown)
    assert outcome.violations == []
    assert outcome.error == "USER ghost cannot be resolved: no user 'ghost' in /etc/passwd"


def test_a_run_as_user_override_needs_no_resolution() -> None:
    unknown = UnresolvedUser("ghost", "no user 'ghost' in /etc/passwd")
    outcome = non_root_user.check(
        STRICT, facts(user="ghost"), ContainerContext(run_as_user=1000), unknown
    )
    assert outcome.violations == []
    assert outcome.error is None
