"""Evaluate one policy against one image's facts: every enabled rule, pure, no I/O."""

from __future__ import annotations

from typing import Any

from webhook.layers.inspect import LayerFindings
from webhook.policy.model import ImagePolicy
from webhook.policy.outcome import ContainerContext, RuleOutcome, Violation
from webhook.policy.rules import (
    allowed_base,
    immutable_reference,
    layer_efficiency,
    non_root_user,
    single_entrypoint,
    size_budget,
)
from webhook.policy.rules.allowed_base import ClaimCheck, KnownBase
from webhook.registry.facts import ImageFacts
from webhook.registry.reference import Reference


def evaluate(
    policy: ImagePolicy,
    facts: ImageFacts,
    reference: Reference | None,
    known_bases: list[KnownBase],
    container: ContainerContext | None = None,
    claim: ClaimCheck | None = None,
    layers: LayerFindings | None = None,
) -> RuleOutcome:
    """Violations of `policy` (tagged with its name) and the facts the rules derived.

    `reference` is None for `docker-daemon:` images: a local image has no registry reference
    to pin, so `immutable-reference` does not apply to it. `claim` is the verification of the
    base the image claims (`webhook.policy.bases.check_claim`); None: nothing was verified.
    `layers`: what the image's layers say (None: not read, so `layer-efficiency` is not
    evaluated and a named USER is judged by its name). A rule that cannot be decided makes the
    outcome's `error`.
    """
    rules = policy.spec.rules
    outcomes: list[RuleOutcome] = []
    if rules.non_root_user.enabled:
        resolved = layers.user if layers is not None else None
        outcomes.append(non_root_user.check(rules.non_root_user, facts, container, resolved))
    if rules.allowed_bases.enabled:
        outcomes.append(allowed_base.check(rules.allowed_bases, facts, known_bases, claim))
    if rules.size_budget.enabled:
        outcomes.append(size_budget.check(rules.size_budget, facts))
    if rules.single_entrypoint.enabled:
        outcomes.append(single_entrypoint.check(rules.single_entrypoint, facts, container))
    if rules.immutable_reference.enabled and reference is not None:
        outcomes.append(
            immutable_reference.check(rules.immutable_reference, reference, facts.digest)
        )
    if rules.layer_efficiency.enabled and layers is not None:
        outcomes.append(layer_efficiency.check(rules.layer_efficiency, layers.analysis))
    violations: list[Violation] = []
    derived: dict[str, Any] = layers.facts() if layers is not None else {}
    errors = [o.error for o in outcomes if o.error]
    for outcome in outcomes:
        violations.extend(
            Violation(v.rule, _clip(v.message), v.severity, policy.name, v.at_most)
            for v in outcome.violations
        )
        derived |= outcome.facts
    return RuleOutcome(violations, derived, errors[0] if errors else None)


MAX_MESSAGE_CHARS = 2000


def _clip(message: str) -> str:
    """Messages quote what the Pod runs, which a tenant may make megabytes long; a verdict
    is cached and shown, so it keeps the first 2,000 characters."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 1] + "…"
