"""immutable-reference: tags are mutable, digests are not."""

from __future__ import annotations

import pytest

from webhook.policy.model import ImmutableReferenceRule
from webhook.policy.rules import immutable_reference
from webhook.registry.reference import Reference

DIGEST = "sha256:" + "a" * 64
PIN = ImmutableReferenceRule()
REQUIRE = ImmutableReferenceRule(mode="requireDigest")
LATEST_OK = ImmutableReferenceRule(forbid_latest=False)


@pytest.mark.parametrize(
    ("ref", "rule", "passes"),
    [
        pytest.param("nginx", PIN, False, id="no-tag-means-latest"),
        pytest.param("nginx:latest", PIN, False, id="explicit-latest"),
        pytest.param("nginx:latest", LATEST_OK, True, id="latest-allowed-when-configured"),
        pytest.param("nginx:1.27", PIN, True, id="tag-pinned-on-admission"),
        pytest.param("nginx:1.27", REQUIRE, False, id="tag-when-digest-required"),
        pytest.param(f"nginx@{DIGEST}", REQUIRE, True, id="digest"),
        pytest.param(f"nginx:latest@{DIGEST}", REQUIRE, True, id="latest-with-digest-is-pinned"),
    ],
)
def test_references(ref: str, rule: ImmutableReferenceRule, passes: bool) -> None:
    outcome = immutable_reference.check(rule, Reference.parse(ref), DIGEST)
    assert (not outcome.violations) is passes


def test_fix_names_the_digest_to_pin() -> None:
    [v] = immutable_reference.check(
        REQUIRE, Reference.parse("localhost:5001/app:1"), DIGEST
    ).violations
    assert f"localhost:5001/app@{DIGEST}" in v.message
