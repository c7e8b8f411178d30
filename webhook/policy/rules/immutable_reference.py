"""`immutable-reference`: references are pinned to digests, so what was checked is what runs."""

from __future__ import annotations

from webhook.policy.model import ImmutableReferenceRule
from webhook.policy.outcome import RuleOutcome, Violation
from webhook.registry.reference import Reference

RULE = "immutable-reference"


def check(rule: ImmutableReferenceRule, reference: Reference, digest: str) -> RuleOutcome:
    """`digest` is the one imagegate resolved: the fix tells the user exactly what to pin."""
    pinned = f"{reference.name}@{digest}"
    if reference.pinned:
        return RuleOutcome(facts={"pinned": True})
    found: dict[str, object] = {"pinned": False, "pinnedReference": pinned}
    if rule.forbid_latest and reference.tag == "latest":
        message = (
            f"{reference.familiar()} uses the mutable tag `latest` (also implied by no tag): "
            f"pin the digest that was checked, {pinned}, or at least a versioned tag"
        )
        return RuleOutcome([Violation(RULE, message, rule.severity)], found)
    if rule.mode == "requireDigest":
        message = (
            f"{reference.familiar()} is a tag, which can be moved to other content after it "
            f"was checked: pin the digest, {pinned}"
        )
        return RuleOutcome([Violation(RULE, message, rule.severity)], found)
    return RuleOutcome(facts=found | {"pinOnAdmission": True})
