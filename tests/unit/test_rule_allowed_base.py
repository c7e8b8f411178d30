"""allowed-base: a base.name annotation or label is a claim, verified against the claimed base's
layers; without a claim, an approved base's layers being a prefix of the image's is the evidence.
The evidence and whether it was verified are reported.

The first half drives the pure rule with a given `ClaimCheck`; the second half runs the real
Checker (and `webhook.policy.bases`, the I/O) over a `FakeRegistry`, so it shows what a
registry answer does to the verdict: those rows fail on code that believes the claims.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.unit.factories import facts
from tests.unit.fakes import FakeRegistry, checker_for, policy
from webhook.admission.decision import Finding, decide
from webhook.errors import ImagegateError, ImageNotFound, RegistryUnauthorized, RegistryUnavailable
from webhook.policy.model import AllowedBasesRule
from webhook.policy.outcome import ContainerContext
from webhook.policy.rules import allowed_base
from webhook.policy.rules.allowed_base import BASE_DIGEST, BASE_NAME, ClaimCheck, KnownBase
from webhook.policy.workloads import Container
from webhook.registry.facts import ImageFacts, Platform

L = [f"sha256:{i:064x}" for i in range(1, 6)]
BASE_DIGEST_VALUE = "sha256:" + "b" * 64
BUSYBOX = KnownBase("localhost:5001/base/busybox:1", BASE_DIGEST_VALUE, (L[0],))
DISTROLESS = "gcr.io/distroless/static-debian12:nonroot"
VERIFIED = ClaimCheck.verified(DISTROLESS, BASE_DIGEST_VALUE)


def rule(*refs: str, **kw: object) -> AllowedBasesRule:
    return AllowedBasesRule(references=list(refs), **kw)  # type: ignore[arg-type]


# ---- the pure rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("r", "annotations", "labels", "passes", "evidence"),
    [
        pytest.param(
            rule(DISTROLESS), {BASE_NAME: DISTROLESS}, {}, True, "annotation", id="annotation-exact"
        ),
        pytest.param(
            rule("gcr.io/distroless/*"),
            {BASE_NAME: DISTROLESS},
            {},
            True,
            "annotation",
            id="annotation-glob",
        ),
        pytest.param(
            rule("gcr.io/distroless/static-debian12"),
            {BASE_NAME: DISTROLESS},
            {},
            True,
            "annotation",
            id="untagged-entry-allows-any-tag",
        ),
        pytest.param(
            rule("gcr.io/distroless/static-debian12:latest"),
            {BASE_NAME: DISTROLESS},
            {},
            False,
            "annotation",
            id="tag-mismatch",
        ),
        pytest.param(
            rule("docker.io/library/python:*-slim*"),
            {},
            {BASE_NAME: "python:3.12-slim"},
            True,
            "label",
            id="label-short-name-normalised",
        ),
        pytest.param(
            rule("docker.io/library/alpine:*"),
            {},
            {BASE_NAME: "ubuntu:24.04"},
            False,
            "label",
            id="label-not-approved",
        ),
        pytest.param(
            rule("gcr.io/distroless/*"),
            {BASE_NAME: DISTROLESS},
            {BASE_NAME: "ubuntu"},
            True,
            "annotation",
            id="annotation-beats-label",
        ),
        pytest.param(
            rule(f"gcr.io/distroless/static@{BASE_DIGEST_VALUE}"),
            {BASE_NAME: "gcr.io/distroless/static:x", BASE_DIGEST: BASE_DIGEST_VALUE},
            {},
            True,
            "annotation",
            id="digest-entry-matches-digest-annotation",
        ),
        pytest.param(
            rule(f"gcr.io/distroless/static@{BASE_DIGEST_VALUE}"),
            {BASE_NAME: "gcr.io/distroless/static:x", BASE_DIGEST: "sha256:" + "c" * 64},
            {},
            False,
            "annotation",
            id="digest-entry-other-digest",
        ),
        pytest.param(
            rule("scratch"), {BASE_NAME: "scratch"}, {}, True, "annotation", id="scratch-listed"
        ),
        pytest.param(
            rule("gcr.io/distroless/*"),
            {BASE_NAME: "scratch"},
            {},
            False,
            "annotation",
            id="scratch-not-listed",
        ),
        pytest.param(
            rule(allow_scratch=True),
            {BASE_NAME: "scratch"},
            {},
            True,
            "annotation",
            id="scratch-allowed-by-flag",
        ),
        pytest.param(
            rule("gcr.io/distroless/*"),
            {BASE_NAME: "Not A Ref!"},
            {},
            False,
            "annotation",
            id="garbage-annotation",
        ),
    ],
)
def test_name_evidence_once_the_claim_is_verified(
    r: AllowedBasesRule,
    annotations: dict[str, str],
    labels: dict[str, str],
    passes: bool,
    evidence: str,
) -> None:
    image = facts(annotations=annotations, labels=labels)
    outcome = allowed_base.check(r, image, [], VERIFIED)
    assert (not outcome.violations) is passes, outcome.violations
    assert outcome.facts["base"]["evidence"] == evidence  # type: ignore[index]


def test_diff_ids_prefix_identifies_the_base_as_verified_evidence() -> None:
    image = facts(diff_ids=[L[0], L[1]])
    outcome = allowed_base.check(rule(BUSYBOX.reference), image, [BUSYBOX])
    assert not outcome.violations
    assert outcome.facts["base"] == {
        "name": BUSYBOX.reference,
        "digest": BASE_DIGEST_VALUE,
        "evidence": "diff_ids",
        "verified": True,
    }


def test_longest_prefix_wins() -> None:
    longer = KnownBase("localhost:5001/base/python:1", None, (L[0], L[1]))
    image = facts(diff_ids=[L[0], L[1], L[2]])
    outcome = allowed_base.check(
        rule(BUSYBOX.reference, longer.reference), image, [BUSYBOX, longer]
    )
    assert outcome.facts["base"]["name"] == longer.reference  # type: ignore[index]


@pytest.mark.parametrize(
    "image_layers",
    [
        pytest.param([L[1], L[0]], id="same-layers-wrong-order"),
        pytest.param([L[2]], id="unrelated"),
        pytest.param([], id="no-layers"),
    ],
)
def test_no_prefix_means_unknown_base(image_layers: list[str]) -> None:
    outcome = allowed_base.check(rule(BUSYBOX.reference), facts(diff_ids=image_layers), [BUSYBOX])
    [v] = outcome.violations
    assert "cannot tell which base" in v.message
    assert f"LABEL {BASE_NAME}" in v.message
    assert outcome.facts["base"] is None


def test_unknown_base_allowed_when_configured() -> None:
    outcome = allowed_base.check(rule(unknown_base="allow"), facts(diff_ids=[L[3]]), [])
    assert not outcome.violations


def test_unreadable_approved_base_is_named_in_the_message() -> None:
    broken = KnownBase("localhost:5001/base/gone:1", error="manifest unknown")
    [v] = allowed_base.check(rule(broken.reference), facts(), [broken]).violations
    assert "localhost:5001/base/gone:1: manifest unknown" in v.message


def test_unapproved_base_message_lists_the_approved_ones() -> None:
    [v] = allowed_base.check(
        rule(DISTROLESS), facts(labels={BASE_NAME: "ubuntu:24.04"}), []
    ).violations
    assert "ubuntu:24.04" in v.message
    assert DISTROLESS in v.message


def test_an_approved_claim_nobody_verified_is_not_believed() -> None:
    [v] = allowed_base.check(rule(DISTROLESS), facts(labels={BASE_NAME: DISTROLESS}), []).violations
    assert "cannot verify" in v.message


@pytest.mark.parametrize("mode", ["deny", "warn", "allow"])
def test_a_contradicted_claim_is_a_violation_whatever_unverified_claims_says(mode: str) -> None:
    lie = ClaimCheck.contradicted(
        f"gcr.io/distroless/static-debian12@{BASE_DIGEST_VALUE}", BASE_DIGEST_VALUE, "layer 1"
    )
    image = facts(labels={BASE_NAME: DISTROLESS, BASE_DIGEST: BASE_DIGEST_VALUE})
    [v] = allowed_base.check(rule(DISTROLESS, unverified_claims=mode), image, [], lie).violations
    assert "the claim is false" in v.message


# ---- claims verified through the registry (the real Checker over a FakeRegistry) ------------

IMAGE = "localhost:5001/team/app:1.0"
DISTROLESS_REPO = "gcr.io/distroless/static-debian12"
REAL = "sha256:" + "a" * 64  # the approved base's real digest
NEWER = "sha256:" + "e" * 64  # what its tag names after a rebuild of the base
MADE_UP = "sha256:" + "f" * 64  # a digest no registry has
DISTROLESS_LAYER = f"sha256:{'d1' * 32}"
NEWER_LAYER = f"sha256:{'d2' * 32}"
UBUNTU_LAYER = f"sha256:{'0b' * 32}"
APP_LAYER = f"sha256:{'ab' * 32}"
ON_DISTROLESS = [DISTROLESS_LAYER, APP_LAYER]
ON_UBUNTU = [UBUNTU_LAYER, APP_LAYER]


def base_image(digest: str, layer: str) -> ImageFacts:
    return dataclasses.replace(facts(diff_ids=[layer]), digest=digest)


# What the fake registry knows: the approved base by its digest, and its tag (by default,
# still the same image).
DISTROLESS_AT_REAL = {f"{DISTROLESS_REPO}@{REAL}": base_image(REAL, DISTROLESS_LAYER)}
TAG_UNMOVED = {DISTROLESS: base_image(REAL, DISTROLESS_LAYER)}
TAG_MOVED = {DISTROLESS: base_image(NEWER, NEWER_LAYER)}


def claiming(
    diff_ids: list[str], where: str = "labels", name: str = DISTROLESS, digest: str | None = None
) -> ImageFacts:
    claim = {BASE_NAME: name} | ({BASE_DIGEST: digest} if digest else {})
    return facts(diff_ids=diff_ids, **{where: claim})  # type: ignore[arg-type]


async def check_with(
    image: ImageFacts,
    registry_answers: dict[str, ImageFacts | ImagegateError],
    references: tuple[str, ...] = ("gcr.io/distroless/*",),
    **allowed_bases: Any,
) -> tuple[list[str], dict[str, Any] | None, FakeRegistry]:
    """allowed-base messages and `facts.base` for `image`, checked as the webhook would."""
    registry = FakeRegistry({IMAGE: image, **registry_answers})
    rules = {"allowedBases": {"references": list(references), **allowed_bases}}
    result = await checker_for(registry).check(
        IMAGE, [policy(rules=rules)], Platform.parse("linux/amd64")
    )
    assert result.verdict != "error", result.error
    messages = [v.message for v in result.violations if v.rule == "allowed-base"]
    return messages, result.facts["base"], registry


@pytest.mark.parametrize("where", ["labels", "annotations"], ids=["label", "annotation"])
async def test_a_lying_claim_with_the_real_base_digest_is_denied(where: str) -> None:
    lie = claiming(ON_UBUNTU, where, digest=REAL)
    messages, base, _ = await check_with(lie, DISTROLESS_AT_REAL)
    [message] = messages
    assert f"claims to be built on {DISTROLESS}@{REAL}" in message
    assert f"its layers do not start with the layers of {DISTROLESS_REPO}@{REAL}" in message
    assert "the claim is false" in message
    assert base is not None
    assert base["verified"] is False
    assert base["evidence"] == where.rstrip("s")


async def test_a_digest_copied_from_a_pinned_allow_list_does_not_help_a_liar() -> None:
    """The issue's case: an Ubuntu-based image labelled with the approved base and its digest,
    against an allow-list that pins that digest."""
    pinned = f"{DISTROLESS_REPO}@{REAL}"
    lie = claiming(ON_UBUNTU, digest=REAL)
    messages, _, _ = await check_with(lie, DISTROLESS_AT_REAL, (pinned,), unverifiedClaims="allow")
    [message] = messages
    assert "the claim is false" in message
    assert "layer 1 of 1 differs" in message


@pytest.mark.parametrize("mode", ["deny", "warn", "allow"])
async def test_a_contradicted_claim_is_denied_in_every_unverified_claims_mode(mode: str) -> None:
    messages, _, _ = await check_with(
        claiming(ON_UBUNTU, digest=REAL), DISTROLESS_AT_REAL, unverifiedClaims=mode
    )
    assert len(messages) == 1
    assert "the claim is false" in messages[0]


async def test_a_made_up_base_digest_is_unverifiable_and_denied_by_default() -> None:
    messages, base, _ = await check_with(claiming(ON_UBUNTU, digest=MADE_UP), TAG_UNMOVED)
    [message] = messages
    assert f"cannot verify that the image is built on {DISTROLESS}@{MADE_UP}" in message
    assert f"cannot read the claimed digest {DISTROLESS_REPO}@{MADE_UP}" in message
    assert "manifest unknown" in message
    assert "the tag has moved since the image was built" in message
    assert "unverifiedClaims is deny" in message
    assert base is not None
    assert base["verified"] is False


async def test_a_lying_claim_without_digest_is_unverifiable_and_denied_by_default() -> None:
    messages, _, _ = await check_with(claiming(ON_UBUNTU), TAG_UNMOVED)
    [message] = messages
    assert f"{DISTROLESS} now names {REAL}, whose layers do not start this image's" in message
    assert "or the claim is false" in message


UNREADABLE: dict[str, ImagegateError] = {
    "unreachable": RegistryUnavailable("gcr.io: connection refused", DISTROLESS),
    "not-found": ImageNotFound("gcr.io/distroless/static-debian12: manifest unknown", DISTROLESS),
    "unauthorized": RegistryUnauthorized("gcr.io: 401 Unauthorized", DISTROLESS),
}


@pytest.mark.parametrize("why", list(UNREADABLE))
@pytest.mark.parametrize(("mode", "reported"), [("deny", True), ("warn", True), ("allow", False)])
async def test_an_unreadable_claimed_base_is_decided_by_unverified_claims(
    why: str, mode: str, reported: bool
) -> None:
    error = UNREADABLE[why]
    answers: dict[str, ImageFacts | ImagegateError] = {
        f"{DISTROLESS_REPO}@{REAL}": error,
        DISTROLESS: error,
    }
    messages, base, _ = await check_with(
        claiming(ON_DISTROLESS, digest=REAL), answers, unverifiedClaims=mode
    )
    assert base is not None
    assert base["verified"] is False
    assert str(error) in base["verification"]
    if reported:
        [message] = messages
        assert str(error) in message
        assert f"unverifiedClaims is {mode}" in message
    else:
        assert messages == []


@pytest.mark.parametrize(
    ("mode", "allowed", "warned"), [("deny", False, False), ("warn", True, True)]
)
async def test_unverified_claims_warn_admits_with_a_warning_even_in_enforce_mode(
    mode: str, allowed: bool, warned: bool
) -> None:
    """`warn` caps the violation's mode: reported, shown to the user, never a denial."""
    error = UNREADABLE["unreachable"]
    registry = FakeRegistry(
        {
            IMAGE: claiming(ON_DISTROLESS, digest=REAL),
            f"{DISTROLESS_REPO}@{REAL}": error,
            DISTROLESS: error,
        }
    )
    rules = {"allowedBases": {"references": ["gcr.io/distroless/*"], "unverifiedClaims": mode}}
    enforce = policy("gate", mode="enforce", rules=rules)
    result = await checker_for(registry).check(IMAGE, [enforce], Platform.parse("linux/amd64"))
    container = Container("containers", 0, "app", IMAGE, ContainerContext(), ("spec",))
    decision = decide("uid", "Pod team-a/web", [Finding(container, result)], {"gate": enforce})
    assert decision.response.allowed is allowed
    assert any("cannot verify" in w for w in decision.response.warnings or []) is warned


async def test_a_true_claim_is_verified_and_reported() -> None:
    messages, base, registry = await check_with(
        claiming(ON_DISTROLESS, digest=REAL), DISTROLESS_AT_REAL
    )
    assert messages == []
    assert base == {"name": DISTROLESS, "digest": REAL, "evidence": "label", "verified": True}
    assert registry.inspected == [IMAGE, f"{DISTROLESS_REPO}@{REAL}"]


async def test_a_true_claim_without_digest_is_verified_by_its_tag() -> None:
    messages, base, _ = await check_with(claiming(ON_DISTROLESS), TAG_UNMOVED)
    assert messages == []
    assert base == {"name": DISTROLESS, "digest": REAL, "evidence": "label", "verified": True}


async def test_a_claimed_digest_gone_from_the_registry_is_verified_by_an_unmoved_tag() -> None:
    messages, base, _ = await check_with(claiming(ON_DISTROLESS, digest=MADE_UP), TAG_UNMOVED)
    assert messages == []
    assert base is not None
    assert (base["digest"], base["verified"]) == (REAL, True)
    assert "verified by the tag instead" in base["verification"]


async def test_a_claimed_digest_gone_and_a_moved_tag_is_unverifiable() -> None:
    image = claiming(ON_DISTROLESS, digest=MADE_UP)
    messages, _, _ = await check_with(image, TAG_MOVED)
    [message] = messages
    assert "the tag has moved since the image was built" in message
    allowed, base, _ = await check_with(image, TAG_MOVED, unverifiedClaims="allow")
    assert allowed == []
    assert base is not None
    assert base["verified"] is False


async def test_a_claim_the_allow_list_refuses_is_denied_without_reading_the_base() -> None:
    messages, base, registry = await check_with(
        claiming(ON_UBUNTU, name="docker.io/library/ubuntu:24.04"), {}
    )
    [message] = messages
    assert "which is not an approved base" in message
    assert registry.inspected == [IMAGE]
    assert base is not None
    assert base["verified"] is None


async def test_a_scratch_claim_has_nothing_to_verify() -> None:
    messages, base, registry = await check_with(
        claiming(ON_UBUNTU, name="scratch"), {}, allowScratch=True
    )
    assert messages == []
    assert registry.inspected == [IMAGE]
    assert base is not None
    assert base["verified"] is None


async def test_a_verified_claim_is_checked_against_the_verified_digest() -> None:
    """Verified by the tag (the claimed digest is gone) names another digest than the one the
    allow-list pins: the layers prove the base, but not the approved one."""
    pinned = f"{DISTROLESS_REPO}@{MADE_UP}"
    messages, _, _ = await check_with(
        claiming(ON_DISTROLESS, digest=MADE_UP), TAG_UNMOVED, (pinned,)
    )
    [message] = messages
    assert f"built on {DISTROLESS}@{REAL}" in message
    assert "which is not an approved base" in message


async def test_a_warm_check_reads_nothing() -> None:
    registry = FakeRegistry({IMAGE: claiming(ON_DISTROLESS, digest=REAL), **DISTROLESS_AT_REAL})
    checker = checker_for(registry)
    policies = [policy()]
    first = await checker.check(IMAGE, policies, Platform.parse("linux/amd64"))
    calls = len(registry.calls)
    second = await checker.check(IMAGE, policies, Platform.parse("linux/amd64"))
    assert first.verdict == second.verdict == "pass"
    assert len(registry.calls) == calls


async def test_a_denial_that_rests_on_an_unreadable_base_is_not_reused() -> None:
    """An outage must not outlive itself in the 30 s verdict cache: the next check asks again."""
    error = UNREADABLE["unreachable"]
    registry = FakeRegistry(
        {
            IMAGE: claiming(ON_DISTROLESS, digest=REAL),
            f"{DISTROLESS_REPO}@{REAL}": error,
            DISTROLESS: error,
        }
    )
    checker = checker_for(registry)
    gate = [policy(rules={"allowedBases": {"references": ["gcr.io/distroless/*"]}})]
    first = await checker.check(IMAGE, gate, Platform.parse("linux/amd64"))
    second = await checker.check(IMAGE, gate, Platform.parse("linux/amd64"))
    assert first.verdict == second.verdict == "fail"
    assert registry.inspected.count(IMAGE) == 2
