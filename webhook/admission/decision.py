"""From check results to an AdmissionResponse: one pure function, no I/O.

Several policies can apply to one image; per violation the strictest mode of the policies that
reported it wins (enforce > warn > audit). An image that could not be inspected is decided by
the `onError` of its policies (deny wins). Messages list every problem per container and say
how to fix it; warnings are kept short because the API server truncates long ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from webhook.admission.models import AdmissionResponse, Status
from webhook.policy.checker import CheckResult
from webhook.policy.model import ImagePolicy, Mode, OnError
from webhook.policy.outcome import Violation
from webhook.policy.workloads import Container

MAX_WARNING_CHARS = 256  # the API server may truncate longer warnings
MAX_WARNINGS = 12
MODE_RANK = {Mode.audit: 0, Mode.warn: 1, Mode.enforce: 2}


class Finding(NamedTuple):
    """One container's check result."""

    container: Container
    result: CheckResult


class Problem(NamedTuple):
    """A violation or an inspection error, with the mode that decides what it does.

    (Immutable tuples rather than frozen dataclasses: a warm denial builds one per problem,
    and a frozen dataclass sets each field through `object.__setattr__`.)"""

    container: Container
    image: str
    rule: str
    message: str
    mode: Mode
    policy: str


class Decision(NamedTuple):
    response: AdmissionResponse
    problems: Sequence[Problem] = ()


def problems_of(finding: Finding, policies: Mapping[str, ImagePolicy]) -> list[Problem]:
    """Every problem of one container, each with its effective mode."""
    result = finding.result
    if result.verdict == "error":
        applied = [policies[name] for name in result.policies if name in policies]
        deny = any(p.spec.on_error is OnError.deny for p in applied)
        mode = Mode.enforce if deny else Mode.warn
        on_error = "onError: deny" if deny else "onError: allow"
        message = f"cannot be inspected ({on_error}): {result.error}"
        names = ",".join(p.name for p in applied)
        return [Problem(finding.container, result.image, "inspection", message, mode, names)]
    strictest: dict[str, tuple[Violation, Mode]] = {}
    for violation in result.violations:
        mode = (
            policies[violation.policy].spec.mode if violation.policy in policies else Mode.enforce
        )
        if violation.at_most is not None and MODE_RANK[violation.at_most] < MODE_RANK[mode]:
            mode = violation.at_most
        known = strictest.get(violation.rule)
        if known is None or MODE_RANK[mode] > MODE_RANK[known[1]]:
            strictest[violation.rule] = (violation, mode)
    return [
        Problem(finding.container, result.image, v.rule, v.message, mode, v.policy)
        for v, mode in strictest.values()
    ]


def decide(
    uid: str, subject: str, findings: list[Finding], policies: Mapping[str, ImagePolicy]
) -> Decision:
    """The validating answer for `subject` (for example `Deployment team-a/web`)."""
    if all(f.result.verdict == "pass" for f in findings):  # the common case, kept cheap
        return Decision(AdmissionResponse(uid=uid, allowed=True))
    problems = [p for f in findings for p in problems_of(f, policies)]
    denying = [p for p in problems if p.mode is Mode.enforce]
    admitted = [p for p in problems if p.mode is not Mode.enforce]
    warnings = [_warning(p) for p in admitted][:MAX_WARNINGS] or None
    if denying:
        lines = [f"imagegate denied {subject}: {len(denying)} problem(s)"]
        lines += [f"- {p.container.label} ({p.image}): {p.rule}: {p.message}" for p in denying]
        status = Status(code=403, reason="Forbidden", message="\n".join(lines))
        response = AdmissionResponse(uid=uid, allowed=False, status=status, warnings=warnings)
    else:
        response = AdmissionResponse(uid=uid, allowed=True, warnings=warnings)
    return Decision(response, problems)


def _warning(problem: Problem) -> str:
    text = (
        f"imagegate ({problem.mode}): {problem.container.label}: {problem.rule}: {problem.message}"
    )
    if len(text) > MAX_WARNING_CHARS:
        text = text[: MAX_WARNING_CHARS - 1] + "…"
    return text
