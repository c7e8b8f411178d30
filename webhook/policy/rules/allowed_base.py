"""`allowed-base`: the image is built on an approved base image.

Evidence, strongest first (DESIGN §4): the manifest annotations
`org.opencontainers.image.base.name` / `.base.digest`; the same keys as config labels; an
approved base whose `rootfs.diff_ids` are a prefix of the image's. The evidence used is reported.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal

from webhook.errors import ImagegateError
from webhook.policy.model import SCRATCH, AllowedBasesRule, is_glob
from webhook.policy.outcome import RuleOutcome, Violation
from webhook.registry.facts import ImageFacts
from webhook.registry.reference import Reference

RULE = "allowed-base"
BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"

Evidence = Literal["annotation", "label", "diff_ids"]


@dataclass(frozen=True)
class KnownBase:
    """An approved base resolved through the registry for the image's platform."""

    reference: str
    digest: str | None = None
    diff_ids: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class BaseFact:
    name: str
    digest: str | None
    evidence: Evidence

    def to_json(self) -> dict[str, str | None]:
        return {"name": self.name, "digest": self.digest, "evidence": self.evidence}


def concrete_references(rule: AllowedBasesRule) -> list[str]:
    """The approved bases that can be resolved to layers (not globs, not scratch)."""
    return [r for r in rule.references if r != SCRATCH and not is_glob(r)]


def identify_base(facts: ImageFacts, known: list[KnownBase]) -> BaseFact | None:
    for evidence, source in (("annotation", facts.annotations), ("label", facts.labels)):
        name = source.get(BASE_NAME, "").strip()
        if name:
            digest = source.get(BASE_DIGEST, "").strip() or None
            return BaseFact(name, digest, evidence)  # type: ignore[arg-type]
    best: KnownBase | None = None
    for base in known:
        n = len(base.diff_ids)
        if (
            n
            and tuple(facts.diff_ids[:n]) == base.diff_ids
            and (best is None or n > len(best.diff_ids))
        ):
            best = base
    if best is not None:
        return BaseFact(best.reference, best.digest, "diff_ids")
    return None


def check(rule: AllowedBasesRule, facts: ImageFacts, known: list[KnownBase]) -> RuleOutcome:
    base = identify_base(facts, known)
    found: dict[str, object] = {"base": base.to_json() if base else None}
    approved = ", ".join(rule.references) or "(none configured)"
    if base is None:
        if rule.unknown_base == "allow":
            return RuleOutcome(facts=found)
        unresolved = [f"{k.reference}: {k.error}" for k in known if k.error]
        note = (
            f" (approved bases that could not be read: {'; '.join(unresolved)})"
            if unresolved
            else ""
        )
        message = (
            "cannot tell which base image this was built on: it has no "
            f"{BASE_NAME} annotation or label, and its layers do not start with those of an "
            f"approved base{note}. Build FROM one of [{approved}] and record it with "
            f"`LABEL {BASE_NAME}=<base reference>`"
        )
        return RuleOutcome([Violation(RULE, message, rule.severity)], found)
    if base.evidence == "diff_ids" or _approved(rule, base):
        return RuleOutcome(facts=found)
    message = (
        f"built on {base.name} (from the {BASE_NAME} {base.evidence}), which is not an approved "
        f"base: rebuild FROM one of [{approved}]"
    )
    return RuleOutcome([Violation(RULE, message, rule.severity)], found)


def _approved(rule: AllowedBasesRule, base: BaseFact) -> bool:
    if base.name == SCRATCH:
        return rule.allow_scratch or SCRATCH in rule.references
    try:
        used = Reference.parse(base.name)
    except ImagegateError:
        return False
    digests = {d for d in (used.digest, base.digest) if d}
    for entry in rule.references:
        if entry == SCRATCH:
            continue
        if is_glob(entry):
            names = (used.name, f"{used.name}:{used.tag}") if used.tag else (used.name,)
            if any(fnmatch.fnmatchcase(c, entry) for c in names):
                return True
            continue
        allowed = Reference.parse(entry)
        if allowed.name != used.name:
            continue
        if _explicit_tag(entry) and allowed.tag != used.tag:
            continue
        if allowed.digest and allowed.digest not in digests:
            continue
        return True
    return False


def _explicit_tag(entry: str) -> bool:
    return ":" in entry.split("@", 1)[0].rsplit("/", 1)[-1]
