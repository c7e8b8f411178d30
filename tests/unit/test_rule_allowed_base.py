"""allowed-base: evidence annotation → label → diff_ids prefix, and the evidence is reported."""

from __future__ import annotations

import pytest

from tests.unit.factories import facts
from webhook.policy.model import AllowedBasesRule
from webhook.policy.rules import allowed_base
from webhook.policy.rules.allowed_base import BASE_DIGEST, BASE_NAME, KnownBase

L = [f"sha256:{i:064x}" for i in range(1, 6)]
BASE_DIGEST_VALUE = "sha256:" + "b" * 64
BUSYBOX = KnownBase("localhost:5001/base/busybox:1", BASE_DIGEST_VALUE, (L[0],))
DISTROLESS = "gcr.io/distroless/static-debian12:nonroot"


def rule(*refs: str, **kw: object) -> AllowedBasesRule:
    return AllowedBasesRule(references=list(refs), **kw)  # type: ignore[arg-type]


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
def test_name_evidence(
    r: AllowedBasesRule,
    annotations: dict[str, str],
    labels: dict[str, str],
    passes: bool,
    evidence: str,
) -> None:
    outcome = allowed_base.check(r, facts(annotations=annotations, labels=labels), [])
    assert (not outcome.violations) is passes, outcome.violations
    assert outcome.facts["base"]["evidence"] == evidence  # type: ignore[index]


def test_diff_ids_prefix_identifies_the_base() -> None:
    image = facts(diff_ids=[L[0], L[1]])
    outcome = allowed_base.check(rule(BUSYBOX.reference), image, [BUSYBOX])
    assert not outcome.violations
    assert outcome.facts["base"] == {
        "name": BUSYBOX.reference,
        "digest": BASE_DIGEST_VALUE,
        "evidence": "diff_ids",
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
