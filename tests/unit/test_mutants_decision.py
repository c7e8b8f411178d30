"""decide() and problems_of(): the details `make mutate` found no test asserting.

Which policy a problem is reported under (the audit log's `policy` field), a rule's `at_most`
capping its policy's mode, the first of equally strict reports winning, and a warning of exactly
MAX_WARNING_CHARS kept whole. Built from CheckResults directly: the Checker is not the subject.
"""

from __future__ import annotations

from tests.unit.fakes import policy
from webhook.admission.decision import (
    MAX_WARNING_CHARS,
    Finding,
    Problem,
    decide,
    problems_of,
)
from webhook.policy.checker import CheckResult
from webhook.policy.model import Mode, Severity
from webhook.policy.outcome import ContainerContext, Violation
from webhook.policy.workloads import Container

IMAGE = "localhost:5001/team/app:1"
APP = Container("containers", 0, "app", IMAGE, ContainerContext(), ("spec",))


def failing(*violations: Violation, policies: tuple[str, ...] = ("a", "b")) -> Finding:
    return Finding(
        APP, CheckResult(IMAGE, "fail", violations=list(violations), policies=list(policies))
    )


def broken(*policies: str) -> Finding:
    return Finding(APP, CheckResult(IMAGE, "error", policies=list(policies), error="timed out"))


def test_an_inspection_error_is_reported_under_every_policy_that_applied() -> None:
    policies = {"a": policy("a", onError="allow"), "b": policy("b", onError="deny")}
    [problem] = problems_of(broken("a", "b", "gone"), policies)
    assert problem == Problem(
        APP, IMAGE, "inspection", "cannot be inspected (onError: deny): timed out", Mode.enforce,
        "a,b",
    )  # fmt: skip


def test_a_violation_is_reported_under_its_policy() -> None:
    policies = {"a": policy("a", mode="warn")}
    violation = Violation("size-budget", "too big", Severity.high, policy="a")
    assert problems_of(failing(violation), policies) == [
        Problem(APP, IMAGE, "size-budget", "too big", Mode.warn, "a")
    ]


def test_at_most_caps_a_stricter_policy_mode() -> None:
    policies = {"a": policy("a", mode="enforce")}
    capped = Violation("allowed-base", "unverified", Severity.high, policy="a", at_most=Mode.warn)
    [problem] = problems_of(failing(capped), policies)
    assert problem.mode is Mode.warn
    decision = decide("u", "Pod team-a/web", [failing(capped)], policies)
    assert decision.response.allowed


def test_at_most_does_not_raise_a_laxer_policy_mode() -> None:
    policies = {"a": policy("a", mode="audit")}
    capped = Violation("allowed-base", "unverified", Severity.high, policy="a", at_most=Mode.warn)
    [problem] = problems_of(failing(capped), policies)
    assert problem.mode is Mode.audit


def test_of_equally_strict_reports_of_one_rule_the_first_is_kept() -> None:
    policies = {"a": policy("a"), "b": policy("b")}
    first = Violation("size-budget", "over by 1 MB (policy a)", Severity.high, policy="a")
    second = Violation("size-budget", "over by 9 MB (policy b)", Severity.high, policy="b")
    [problem] = problems_of(failing(first, second), policies)
    assert (problem.message, problem.policy) == ("over by 1 MB (policy a)", "a")


def test_a_stricter_later_report_of_one_rule_replaces_the_first() -> None:
    policies = {"a": policy("a", mode="warn"), "b": policy("b")}
    first = Violation("size-budget", "policy a", Severity.high, policy="a")
    second = Violation("size-budget", "policy b", Severity.high, policy="b")
    [problem] = problems_of(failing(first, second), policies)
    assert (problem.message, problem.mode, problem.policy) == ("policy b", Mode.enforce, "b")


def test_a_warning_of_exactly_the_limit_is_kept_whole() -> None:
    prefix = "imagegate (warn): container app: size-budget: "
    message = "x" * (MAX_WARNING_CHARS - len(prefix))
    policies = {"a": policy("a", mode="warn")}
    violation = Violation("size-budget", message, Severity.high, policy="a")
    decision = decide("u", "Pod team-a/web", [failing(violation)], policies)
    assert decision.response.warnings == [prefix + message]
    longer = Violation("size-budget", message + "y", Severity.high, policy="a")
    decision = decide("u", "Pod team-a/web", [failing(longer)], policies)
    assert decision.response.warnings == [prefix + message[:-1] + "…"]
