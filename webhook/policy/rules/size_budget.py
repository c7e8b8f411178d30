"""`size-budget`: the compressed size a node pulls must fit the budget.

Manifest `layers[].size` are compressed sizes; no uncompressed size is recorded anywhere in a
registry image. `docker-daemon:` images only know uncompressed sizes, an upper bound.
"""

from __future__ import annotations

from webhook.policy.model import SizeBudgetRule
from webhook.policy.outcome import RuleOutcome, Violation
from webhook.registry.facts import ImageFacts

RULE = "size-budget"


def human(size: int) -> str:
    """Decimal units, as registries and `docker images` print them."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def check(rule: SizeBudgetRule, facts: ImageFacts) -> RuleOutcome:
    size, budget = facts.compressed_size, int(rule.max_compressed_size)
    kind = "uncompressed (local image)" if facts.source == "docker-daemon" else "compressed"
    found: dict[str, object] = {"sizeBudget": budget}
    if size <= budget:
        return RuleOutcome(facts=found)
    message = (
        f"the image is {human(size)} {kind}, over the {human(budget)} budget by "
        f"{human(size - budget)}: build on a smaller base (distroless, slim), copy only the "
        "build output into a multi-stage final stage, and remove package caches "
        "(apt lists, pip/npm caches) in the layer that creates them"
    )
    return RuleOutcome([Violation(RULE, message, rule.severity)], found)
