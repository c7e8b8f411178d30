"""`allowed-base`: the image is built on an approved base image.

Evidence (DESIGN §4). The manifest annotations `org.opencontainers.image.base.name` /
`.base.digest`, and the same keys as config labels, are *claims* written by whoever built the
image. The strongest one present (annotation, then label) is held against the allow-list and,
when the allow-list accepts what it says, verified: `webhook.policy.bases` (the I/O) reads the
claimed base for the image's platform and hands this rule a `ClaimCheck`. The proof is the
base's `rootfs.diff_ids` being a prefix of the image's:

* ``verified`` — the claimed base was read and its layers start the image: the claim holds;
* ``contradicted`` — the base was read by the digest the claim gives and its layers do not
  start the image: proof of a false claim, a violation whatever ``unverifiedClaims`` says;
* ``unverifiable`` — the base could not be read (registry unreachable, not found, no
  credentials), or the claim has no digest (or one that cannot be read) and its tag now names
  other layers: ``unverifiedClaims`` decides (deny: a violation saying exactly why; warn and
  allow: admitted, reported as unverified with the reason).

A claim without digest whose tag now names other layers is *unverifiable*, not contradicted:
nothing tells a tag that moved since the build from a false claim, and a liar gains nothing
from it (a made-up digest makes any claim unverifiable too; only ``deny`` stops those).

Without any claim, an approved concrete base whose diff_ids are a prefix of the image's is the
evidence (verified by construction; the longest prefix wins). ``scratch`` claims have no base
layers to compare: they are accepted when scratch is allowed, reported with ``verified: null``.
The evidence used, and whether it was verified, is reported in ``facts.base``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from webhook.errors import ImagegateError
from webhook.policy.model import SCRATCH, AllowedBasesRule, Mode, is_glob
from webhook.policy.outcome import RuleOutcome, Violation
from webhook.registry.facts import ImageFacts
from webhook.registry.reference import Reference

RULE = "allowed-base"
BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"

ClaimEvidence = Literal["annotation", "label"]
Evidence = Literal["annotation", "label", "diff_ids"]
ClaimStatus = Literal["verified", "contradicted", "unverifiable"]


@dataclass(frozen=True)
class KnownBase:
    """An approved base resolved through the registry for the image's platform."""

    reference: str
    digest: str | None = None
    diff_ids: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Claim:
    """What an image says about its base: `base.name` (+ `base.digest`) from one source."""

    name: str
    digest: str | None
    evidence: ClaimEvidence

    def __str__(self) -> str:
        if self.digest and "@" not in self.name:
            return f"{self.name}@{self.digest}"
        return self.name


@dataclass(frozen=True)
class ClaimCheck:
    """A claim held against the layers of the base it names (made by `webhook.policy.bases`).

    `read` is the reference whose layers were compared (`name@digest` or `name:tag`; empty when
    nothing could be read) and `digest` the digest it resolved to. `reason` says why a claim is
    not verified, or how it was (when by its tag because its digest could not be read).
    """

    status: ClaimStatus
    read: str = ""
    digest: str | None = None
    reason: str = ""

    @classmethod
    def verified(cls, read: str, digest: str, note: str = "") -> ClaimCheck:
        return cls("verified", read, digest, note)

    @classmethod
    def contradicted(cls, read: str, digest: str, reason: str) -> ClaimCheck:
        return cls("contradicted", read, digest, reason)

    @classmethod
    def unverifiable(cls, reason: str) -> ClaimCheck:
        return cls("unverifiable", reason=reason)


NOT_VERIFIED = ClaimCheck.unverifiable("no verification of the claim was made")


@dataclass(frozen=True)
class BaseFact:
    """The base reported in `facts.base`. `verified`: True when layers prove it, False when a
    claim could not be (or was not) proven, None when there was nothing to verify (`scratch`, or
    a claim the allow-list refuses as it stands)."""

    name: str
    digest: str | None
    evidence: Evidence
    verified: bool | None = True
    reason: str | None = None

    def to_json(self) -> dict[str, str | bool | None]:
        out: dict[str, str | bool | None] = {
            "name": self.name,
            "digest": self.digest,
            "evidence": self.evidence,
            "verified": self.verified,
        }
        if self.reason:
            out["verification"] = self.reason
        return out


def concrete_references(rule: AllowedBasesRule) -> list[str]:
    """The approved bases that can be resolved to layers (not globs, not scratch)."""
    return [r for r in rule.references if r != SCRATCH and not is_glob(r)]


def find_claim(facts: ImageFacts) -> Claim | None:
    """The strongest claim the image makes about its base: the annotation, else the label."""
    for evidence, source in (("annotation", facts.annotations), ("label", facts.labels)):
        name = source.get(BASE_NAME, "").strip()
        if name:
            digest = source.get(BASE_DIGEST, "").strip() or None
            return Claim(name, digest, evidence)  # type: ignore[arg-type]
    return None


def is_prefix(base: Sequence[str], image: Sequence[str]) -> bool:
    """True when `base` (diff_ids) is where `image` (diff_ids) starts."""
    return len(base) <= len(image) and list(image[: len(base)]) == list(base)


def identify_base(facts: ImageFacts, known: list[KnownBase]) -> BaseFact | None:
    """The base the evidence names, *before* any claim is verified (the rebuild engine checks
    the claimed base's layers itself): the strongest claim, else the longest approved prefix."""
    claim = find_claim(facts)
    if claim is not None:
        return BaseFact(claim.name, claim.digest, claim.evidence, verified=False)
    return _by_layers(facts, known)


def claim_approved(rule: AllowedBasesRule, claim: Claim) -> bool:
    """Whether the allow-list accepts the claim as it stands (before verification): only such
    claims are worth reading the base for."""
    return _approved(rule, claim.name, _claimed_digests(claim))


def check(
    rule: AllowedBasesRule,
    facts: ImageFacts,
    known: list[KnownBase],
    claim_check: ClaimCheck | None = None,
) -> RuleOutcome:
    """`claim_check` is the verification of the image's claim (None: not verified, which an
    approved claim other than `scratch` needs to pass unless `unverifiedClaims: allow`)."""
    approved = ", ".join(rule.references) or "(none configured)"
    claim = find_claim(facts)
    if claim is None:
        return _without_claim(rule, facts, known, approved)
    source = f"the {BASE_NAME} {claim.evidence}"
    if claim.name == SCRATCH or not claim_approved(rule, claim):
        base = BaseFact(claim.name, claim.digest, claim.evidence, verified=None)
        found: dict[str, object] = {"base": base.to_json()}
        if claim.name == SCRATCH and claim_approved(rule, claim):
            return RuleOutcome(facts=found)
        message = (
            f"built on {claim.name} (from {source}), which is not an approved "
            f"base: rebuild FROM one of [{approved}]"
        )
        return RuleOutcome([Violation(RULE, message, rule.severity)], found)

    checked = claim_check or NOT_VERIFIED
    if checked.status == "verified":
        base = BaseFact(claim.name, checked.digest, claim.evidence, True, checked.reason or None)
        found = {"base": base.to_json()}
        if _approved(rule, claim.name, {checked.digest} if checked.digest else set()):
            return RuleOutcome(facts=found)
        message = (
            f"built on {claim.name}@{checked.digest} (from {source}, verified by the layers of "
            f"{checked.read}{_note(checked.reason)}), which is not an approved base: rebuild "
            f"FROM one of [{approved}]"
        )
        return RuleOutcome([Violation(RULE, message, rule.severity)], found)

    base = BaseFact(claim.name, claim.digest, claim.evidence, False, checked.reason)
    found = {"base": base.to_json()}
    if checked.status == "contradicted":
        message = (
            f"the image claims to be built on {claim} ({source}), but its layers do not start "
            f"with the layers of {checked.read}: the claim is false ({checked.reason}). Rebuild "
            f"FROM one of [{approved}] and record the base the build really used"
        )
        return RuleOutcome([Violation(RULE, message, rule.severity)], found)
    if rule.unverified_claims == "allow":
        # Admitted; the evidence is reported as unverified, with the reason.
        return RuleOutcome(facts=found)
    message = (
        f"cannot verify that the image is built on {claim} ({source} says so, and a claim is "
        f"checked against the base's layers): {checked.reason}. unverifiedClaims is "
        f"{rule.unverified_claims}: let imagegate read the base (registry reachable, pull "
        f"credentials), or rebuild FROM the current base recording {BASE_NAME} and {BASE_DIGEST}"
    )
    at_most = Mode.warn if rule.unverified_claims == "warn" else None
    return RuleOutcome([Violation(RULE, message, rule.severity, at_most=at_most)], found)


def _without_claim(
    rule: AllowedBasesRule, facts: ImageFacts, known: list[KnownBase], approved: str
) -> RuleOutcome:
    base = _by_layers(facts, known)
    found: dict[str, object] = {"base": base.to_json() if base else None}
    if base is not None or rule.unknown_base == "allow":
        # A base found by its layers is an approved concrete reference: verified evidence.
        return RuleOutcome(facts=found)
    unresolved = [f"{k.reference}: {k.error}" for k in known if k.error]
    note = (
        f" (approved bases that could not be read: {'; '.join(unresolved)})" if unresolved else ""
    )
    message = (
        "cannot tell which base image this was built on: it has no "
        f"{BASE_NAME} annotation or label, and its layers do not start with those of an "
        f"approved base{note}. Build FROM one of [{approved}] and record it with "
        f"`LABEL {BASE_NAME}=<base reference>`"
    )
    return RuleOutcome([Violation(RULE, message, rule.severity)], found)


def _by_layers(facts: ImageFacts, known: Iterable[KnownBase]) -> BaseFact | None:
    best: KnownBase | None = None
    for base in known:
        n = len(base.diff_ids)
        if (
            n
            and is_prefix(base.diff_ids, facts.diff_ids)
            and (best is None or n > len(best.diff_ids))
        ):
            best = base
    if best is None:
        return None
    return BaseFact(best.reference, best.digest, "diff_ids", verified=True)


def _note(text: str) -> str:
    return f"; {text}" if text else ""


def _claimed_digests(claim: Claim) -> set[str]:
    digests = {claim.digest} if claim.digest else set()
    try:
        named = Reference.parse(claim.name).digest
    except ImagegateError:
        return digests
    return digests | ({named} if named else set())


def _approved(rule: AllowedBasesRule, name: str, digests: set[str]) -> bool:
    if name == SCRATCH:
        return rule.allow_scratch or SCRATCH in rule.references
    try:
        used = Reference.parse(name)
    except ImagegateError:
        return False
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
