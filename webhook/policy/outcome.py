"""What a rule returns, and the Kubernetes context a rule may take into account."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from webhook.policy.model import Mode, Severity


@dataclass(frozen=True)
class Violation:
    """One failed rule. `message` says what is wrong *and* how to fix the image."""

    rule: str
    message: str
    severity: Severity
    policy: str = ""
    # The strictest mode this violation may take, whatever its policy's mode: a rule setting
    # such as `allowedBases.unverifiedClaims: warn` reports without denying.
    at_most: Mode | None = None

    def to_json(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message, "severity": str(self.severity)}
        if self.policy:
            out["policy"] = self.policy
        return out


@dataclass(frozen=True)
class RuleOutcome:
    """Facts a rule derived (reported in `facts`) and the violations it found."""

    violations: list[Violation] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    # The rule could not be decided from what the image says (a USER its /etc/passwd does not
    # list): the check is an error, which the policy's onError decides.
    error: str | None = None


class ContainerContext(NamedTuple):
    """The parts of a Pod that change what runs: command/args and securityContext users.

    None fields mean "not set in the pod spec", so the image's value applies. Hashable (tuples),
    because check results are cached per container context. A NamedTuple: every admission
    builds one per container, at a third of a frozen dataclass's cost.
    """

    command: tuple[str, ...] | None = None
    args: tuple[str, ...] | None = None
    run_as_user: int | None = None
    pod_run_as_user: int | None = None
    run_as_non_root: bool | None = None
