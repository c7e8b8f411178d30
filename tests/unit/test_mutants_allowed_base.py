"""allowed-base: the reported base, the exact messages and the allow-list walk.

test_rule_allowed_base.py decides pass/fail and the evidence; `make mutate` showed that the
`facts.base` report, the severity, the text of the fixes and the order in which allow-list
entries are tried could all change unnoticed. These compare whole outcomes.
"""

from __future__ import annotations

import pytest

from tests.unit.factories import facts
from webhook.policy.model import AllowedBasesRule, Mode, Severity
from webhook.policy.outcome import RuleOutcome, Violation
from webhook.policy.rules import allowed_base
from webhook.policy.rules.allowed_base import (
    BASE_DIGEST,
    BASE_NAME,
    BaseFact,
    Claim,
    ClaimCheck,
    KnownBase,
)
from webhook.registry.facts import ImageFacts

LOW = Severity.low
L = [f"sha256:{i:064x}" for i in range(1, 6)]
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
STATIC = "gcr.io/distroless/static"


def rule(*refs: str, **kw: object) -> AllowedBasesRule:
    return AllowedBasesRule(references=list(refs), severity=LOW, **kw)


def claiming(name: str, digest: str | None = None, *, label: bool = False) -> ImageFacts:
    claim = {BASE_NAME: name, **({BASE_DIGEST: digest} if digest else {})}
    return facts(labels=claim) if label else facts(annotations=claim)


def violation(message: str, at_most: Mode | None = None) -> Violation:
    return Violation("allowed-base", message, LOW, at_most=at_most)


# ---- the pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "text"),
    [
        (Claim(STATIC, None, "annotation"), STATIC),
        (Claim(STATIC, D1, "annotation"), f"{STATIC}@{D1}"),
        (Claim(f"{STATIC}@{D1}", D2, "label"), f"{STATIC}@{D1}"),
    ],
)
def test_a_claim_reads_as_its_name_with_its_digest_once(claim: Claim, text: str) -> None:
    assert str(claim) == text


def test_claim_checks_keep_what_was_read_and_its_digest() -> None:
    assert ClaimCheck.verified("x:1", D1, "by tag") == ClaimCheck("verified", "x:1", D1, "by tag")
    assert ClaimCheck.contradicted("x@a", D1, "no") == ClaimCheck("contradicted", "x@a", D1, "no")


def test_identify_base_reports_a_claim_unverified_else_the_layers() -> None:
    found = allowed_base.identify_base(claiming(STATIC, D1, label=True), [])
    assert found == BaseFact(STATIC, D1, "label", verified=False)
    known = [KnownBase("b:1", D2, (L[0],))]
    assert allowed_base.identify_base(facts(diff_ids=[L[0], L[1]]), known) == BaseFact(
        "b:1", D2, "diff_ids", verified=True
    )


def test_of_two_approved_bases_with_the_same_layers_the_first_is_reported() -> None:
    known = [KnownBase("first:1", D1, (L[0],)), KnownBase("second:1", D2, (L[0],))]
    outcome = allowed_base.check(rule("first:1", "second:1"), facts(diff_ids=[L[0], L[1]]), known)
    assert outcome.facts["base"]["name"] == "first:1"


@pytest.mark.parametrize(("text", "note"), [("", ""), ("by its tag", "; by its tag")])
def test_a_note_is_appended_only_when_there_is_one(text: str, note: str) -> None:
    assert allowed_base._note(text) == note


# ---- the allow-list --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("references", "claim", "approved"),
    [
        pytest.param(["scratch", f"{STATIC}:1"], f"{STATIC}:1", True, id="after-scratch"),
        pytest.param(["docker.io/*", f"{STATIC}:1"], f"{STATIC}:1", True, id="after-a-glob"),
        pytest.param(["nginx", f"{STATIC}:1"], f"{STATIC}:1", True, id="after-another-name"),
        pytest.param([f"{STATIC}:2", f"{STATIC}:1"], f"{STATIC}:1", True, id="after-another-tag"),
        pytest.param(["nginx:1.27"], "nginx:1.27", True, id="a-hub-name-without-slash"),
        pytest.param(["localhost:5001/base"], "localhost:5001/base:2", True, id="port-no-tag"),
        pytest.param([f"{STATIC}:*"], f"{STATIC}@{D1}", False, id="tag-glob-needs-a-tag"),
        pytest.param([f"{STATIC}@{D1}"], f"{STATIC}@{D1}", True, id="digest-in-the-name"),
        pytest.param([f"{STATIC}@{D2}"], f"{STATIC}@{D1}", False, id="other-digest-in-name"),
        pytest.param(
            [f"{STATIC}@{D2}", f"{STATIC}@{D1}"], f"{STATIC}@{D1}", True, id="after-another-digest"
        ),
    ],
)
def test_every_allow_list_entry_is_tried(references: list[str], claim: str, approved: bool) -> None:
    assert (
        allowed_base.claim_approved(rule(*references), Claim(claim, None, "annotation")) is approved
    )


# ---- whole outcomes --------------------------------------------------------------------------


def test_a_claim_the_list_refuses_says_which_bases_are_approved() -> None:
    outcome = allowed_base.check(rule("a.io/x", "b.io/y"), claiming("c.io/z", D1), [])
    assert outcome == RuleOutcome(
        [violation(
            f"built on c.io/z (from the {BASE_NAME} annotation), which is not an approved base: "
            "rebuild FROM one of [a.io/x, b.io/y]"
        )],
        {"base": BaseFact("c.io/z", D1, "annotation", verified=None).to_json()},
    )  # fmt: skip


def test_with_no_approved_base_the_message_says_none_is_configured() -> None:
    outcome = allowed_base.check(rule(), claiming("c.io/z"), [])
    assert outcome.violations[0].message.endswith("rebuild FROM one of [(none configured)]")


def test_a_verified_claim_whose_digest_is_not_approved_says_how_it_was_verified() -> None:
    # The claim (digest D1) is approved as it stands; its digest could not be read, its tag
    # could, and names D2: verified, but D2 is not the approved digest.
    note = "by its tag: the digest is gone"
    checked = ClaimCheck.verified(f"{STATIC}:1", D2, note)
    outcome = allowed_base.check(rule(f"{STATIC}@{D1}"), claiming(STATIC, D1), [], checked)
    assert outcome == RuleOutcome(
        [violation(
            f"built on {STATIC}@{D2} (from the {BASE_NAME} annotation, verified by the layers of "
            f"{STATIC}:1; by its tag: the digest is gone), which is not an approved base: "
            f"rebuild FROM one of [{STATIC}@{D1}]"
        )],
        {"base": BaseFact(STATIC, D2, "annotation", True, note).to_json()},
    )  # fmt: skip


def test_a_contradicted_claim_reports_the_claim_unverified() -> None:
    checked = ClaimCheck.contradicted(f"{STATIC}@{D1}", D1, "other layers")
    outcome = allowed_base.check(rule(STATIC), claiming(STATIC, D1), [], checked)
    assert outcome == RuleOutcome(
        [violation(
            f"the image claims to be built on {STATIC}@{D1} (the {BASE_NAME} annotation), but its "
            f"layers do not start with the layers of {STATIC}@{D1}: the claim is false (other "
            f"layers). Rebuild FROM one of [{STATIC}] and record the base the build really used"
        )],
        {"base": BaseFact(STATIC, D1, "annotation", False, "other layers").to_json()},
    )  # fmt: skip


@pytest.mark.parametrize(("setting", "at_most"), [("deny", None), ("warn", Mode.warn)])
def test_an_unverifiable_claim_keeps_the_severity_and_caps_the_mode(
    setting: str, at_most: Mode | None
) -> None:
    checked = ClaimCheck.unverifiable("registry down")
    outcome = allowed_base.check(
        rule(STATIC, unverified_claims=setting), claiming(STATIC, D1), [], checked
    )
    assert outcome.violations == [
        violation(
            f"cannot verify that the image is built on {STATIC}@{D1} (the {BASE_NAME} annotation "
            "says so, and a claim is checked against the base's layers): registry down. "
            f"unverifiedClaims is {setting}: let imagegate read the base (registry reachable, "
            f"pull credentials), or rebuild FROM the current base recording {BASE_NAME} and "
            f"{BASE_DIGEST}",
            at_most,
        )
    ]
    assert outcome.facts == {
        "base": BaseFact(STATIC, D1, "annotation", False, "registry down").to_json()
    }


UNKNOWN = (
    f"cannot tell which base image this was built on: it has no {BASE_NAME} annotation or label, "
    "and its layers do not start with those of an approved base{note}. Build FROM one of "
    f"[a.io/x:1, b.io/y:1] and record it with `LABEL {BASE_NAME}=<base reference>`"
)


@pytest.mark.parametrize(
    ("known", "note"),
    [
        pytest.param([KnownBase("a.io/x:1", D1, (L[3],))], "", id="all-read"),
        pytest.param(
            [KnownBase("a.io/x:1", error="401"), KnownBase("b.io/y:1", error="404")],
            " (approved bases that could not be read: a.io/x:1: 401; b.io/y:1: 404)",
            id="two-unread",
        ),
    ],
)
def test_an_unknown_base_names_the_approved_bases_that_could_not_be_read(
    known: list[KnownBase], note: str
) -> None:
    outcome = allowed_base.check(rule("a.io/x:1", "b.io/y:1"), facts(), known)
    assert outcome == RuleOutcome([violation(UNKNOWN.format(note=note))], {"base": None})
