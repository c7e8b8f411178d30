"""Every platform of a multi-arch image that can run is checked (issue 12, item 2).

A Pod pinned to an image index runs whichever entry its node's runtime picks, so each entry
some node may pick has to pass. The tables specify, in process:

* how an entry is chosen (containerd's matching: normalised platforms, compatible ones ranked,
  index order among equals) and which entries are platforms at all;
* where a Pod may be scheduled (nodeSelector and required node affinity on os/arch);
* which entries that leaves, with and without the policy's `platforms`;
* the Checker, the admission service and the scanner over a fake registry whose index has a
  compliant amd64 image and a root, shell-chain arm64 one;
* the registry client's listing and fetch counts over an in-process HTTP transport.

tests/integration/test_multiplatform.py and tests/e2e/test_multiplatform.py run the same
against a real registry and a real API server.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import httpx
import msgspec
import pytest
from pydantic import ValidationError

from tests.unit.fakes import (
    GOOD,
    TEAM,
    FakeCluster,
    FakeRegistry,
    Index,
    checker_for,
    common_answers,
    image,
    policy,
)
from webhook.admission.models import review_from
from webhook.admission.service import AdmissionService
from webhook.errors import RegistryUnavailable
from webhook.operator.scan import Scanner
from webhook.policy.checker import Checker
from webhook.policy.model import ImagePolicy
from webhook.policy.platforms import ANYWHERE, placement_of, pod_placement, wanted_platforms
from webhook.policy.store import StaticPolicies
from webhook.rebuild.replacements import Replacements
from webhook.registry import mediatypes as mt
from webhook.registry.auth import Keyring
from webhook.registry.client import RegistryClient
from webhook.registry.facts import Platform, best_match, runnable_platforms
from webhook.registry.reference import Reference
from webhook.settings import RegistrySettings, WebhookSettings


def plat(text: str) -> Platform:
    return Platform.parse(text)


def plats(*texts: str) -> list[Platform]:
    return [plat(t) for t in texts]


# ---- choosing an entry as containerd does ---------------------------------------------------


@pytest.mark.parametrize(
    ("node", "entries", "chosen"),
    [
        pytest.param("linux/arm64", ["linux/arm64/v8"], 0, id="arm64-is-arm64-v8"),
        pytest.param("linux/arm64/v8", ["linux/arm64"], 0, id="arm64-v8-is-arm64"),
        pytest.param(
            "linux/arm64/v8", ["linux/arm64", "linux/arm64/v8"], 0, id="index-order-among-equals"
        ),
        pytest.param(
            "linux/arm64", ["linux/arm64/v8", "linux/arm64"], 0, id="index-order-among-equals-2"
        ),
        pytest.param("linux/arm", ["linux/arm/v6", "linux/arm/v7"], 1, id="arm-defaults-to-v7"),
        pytest.param("linux/arm/v7", ["linux/arm"], 0, id="arm-entry-without-variant-is-v7"),
        pytest.param("linux/arm/v7", ["linux/arm/v6"], 0, id="arm-v7-runs-v6"),
        pytest.param("linux/arm/v6", ["linux/arm/v7"], None, id="arm-v6-cannot-run-v7"),
        pytest.param("linux/arm/v6", ["linux/arm"], None, id="arm-v6-cannot-run-implied-v7"),
        pytest.param(
            "linux/arm64", ["linux/amd64", "linux/arm/v7"], 1, id="arm64-falls-back-to-arm"
        ),
        pytest.param(
            "linux/arm64", ["linux/arm/v7", "linux/arm64"], 1, id="own-architecture-beats-order"
        ),
        pytest.param("linux/amd64", ["linux/386"], 0, id="amd64-falls-back-to-386"),
        pytest.param("linux/amd64", ["linux/amd64/v3"], None, id="amd64-cannot-run-v3"),
        pytest.param("linux/amd64/v3", ["linux/amd64", "linux/amd64/v2"], 1, id="best-amd64-level"),
        pytest.param("linux/amd64", ["linux/amd64/v1"], 0, id="amd64-v1-is-amd64"),
        pytest.param("linux/amd64", ["windows/amd64", "linux/amd64"], 1, id="os-must-match"),
        pytest.param("linux/amd64", ["linux/x86_64"], 0, id="x86_64-alias"),
        pytest.param("linux/arm64", ["linux/aarch64"], 0, id="aarch64-alias"),
        pytest.param("linux/s390x", ["linux/amd64", "linux/arm64"], None, id="no-match"),
    ],
)
def test_an_entry_is_chosen_as_containerd_chooses_it(
    node: str, entries: list[str], chosen: int | None
) -> None:
    assert best_match(plat(node), plats(*entries)) == chosen


@pytest.mark.parametrize(
    ("entries", "runnable"),
    [
        pytest.param(
            ["linux/amd64", "unknown/unknown", "linux/arm64/v8", "unknown/unknown"],
            ["linux/amd64", "linux/arm64/v8"],
            id="attestations-are-not-platforms",
        ),
        pytest.param(
            ["windows/amd64", "linux/amd64", "darwin/arm64"],
            ["linux/amd64"],
            id="only-linux-runs-on-linux-nodes",
        ),
        pytest.param(
            ["linux/arm64/v8", "linux/arm64", "linux/arm/v7", "linux/arm"],
            ["linux/arm64/v8", "linux/arm/v7"],
            id="first-of-equal-entries-is-the-one-pulled",
        ),
        pytest.param(
            ["linux/amd64", "linux/amd64/v3", "linux/amd64/v1"],
            ["linux/amd64", "linux/amd64/v3"],
            id="amd64-levels-are-distinct",
        ),
        pytest.param(["linux/unknown"], [], id="unknown-architecture"),
    ],
)
def test_runnable_platforms_of_an_index(entries: list[str], runnable: list[str]) -> None:
    assert [str(p) for p in runnable_platforms(plats(*entries))] == runnable


# ---- where a Pod may be scheduled -----------------------------------------------------------

ARCH = "kubernetes.io/arch"
OS = "kubernetes.io/os"


def required(*terms: list[dict[str, Any]]) -> dict[str, Any]:
    """`affinity` with required node affinity: one nodeSelectorTerm per argument."""
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": list(t)} for t in terms]
            }
        }
    }


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    out: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        out["values"] = list(values)
    return out


NODES = ("linux/amd64", "linux/arm64", "linux/arm", "linux/s390x", "windows/amd64")


@pytest.mark.parametrize(
    ("spec", "allowed"),
    [
        pytest.param({}, set(NODES), id="nothing-said-any-node"),
        pytest.param({"nodeSelector": {ARCH: "arm64"}}, {"linux/arm64"}, id="selector-arch"),
        pytest.param(
            {"nodeSelector": {OS: "linux"}}, set(NODES) - {"windows/amd64"}, id="selector-os"
        ),
        pytest.param(
            {"nodeSelector": {ARCH: "amd64", OS: "linux"}}, {"linux/amd64"}, id="selector-both"
        ),
        pytest.param(
            {"nodeSelector": {"disktype": "ssd"}}, set(NODES), id="other-labels-do-not-narrow"
        ),
        pytest.param(
            {"nodeSelector": {"beta.kubernetes.io/arch": "arm64"}},
            {"linux/arm64"},
            id="deprecated-beta-label",
        ),
        pytest.param(
            {"affinity": required([expr(ARCH, "In", "amd64", "arm64")])},
            {"linux/amd64", "linux/arm64", "windows/amd64"},
            id="affinity-in",
        ),
        pytest.param(
            {"affinity": required([expr(ARCH, "NotIn", "amd64")])},
            {"linux/arm64", "linux/arm", "linux/s390x"},
            id="affinity-not-in",
        ),
        pytest.param(
            {"affinity": required([expr(ARCH, "In", "amd64")], [expr(ARCH, "In", "arm64")])},
            {"linux/amd64", "linux/arm64", "windows/amd64"},
            id="terms-are-ored",
        ),
        pytest.param(
            {
                "affinity": required(
                    [expr(ARCH, "In", "amd64", "arm64"), expr(ARCH, "NotIn", "arm64")]
                )
            },
            {"linux/amd64", "windows/amd64"},
            id="expressions-are-anded",
        ),
        pytest.param(
            {"affinity": required([expr(OS, "In", "linux"), expr(ARCH, "In", "arm64")])},
            {"linux/arm64"},
            id="os-and-arch-in-one-term",
        ),
        pytest.param(
            {"nodeSelector": {ARCH: "amd64"}, "affinity": required([expr(ARCH, "In", "arm64")])},
            set(),
            id="selector-and-affinity-both-hold",
        ),
        pytest.param(
            {
                "nodeSelector": {ARCH: "amd64"},
                "affinity": required([expr(ARCH, "In", "arm64")], [expr("zone", "In", "a")]),
            },
            {"linux/amd64", "windows/amd64"},
            id="selector-narrows-each-term",
        ),
        pytest.param(
            {"affinity": required([expr(ARCH, "In", "arm64")], [expr("zone", "In", "a")])},
            set(NODES),
            id="a-term-on-other-labels-allows-any",
        ),
        pytest.param({"affinity": required([expr(ARCH, "Exists")])}, set(NODES), id="exists-any"),
        pytest.param(
            {"affinity": required([expr(ARCH, "DoesNotExist")])}, set(), id="does-not-exist-none"
        ),
        pytest.param(
            {"affinity": required([expr(ARCH, "Gt", "1")])}, set(NODES), id="gt-does-not-narrow"
        ),
        pytest.param(
            {
                "affinity": {
                    "nodeAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 1,
                                "preference": {"matchExpressions": [expr(ARCH, "In", "arm64")]},
                            }
                        ]
                    }
                }
            },
            set(NODES),
            id="preferred-affinity-does-not-narrow",
        ),
        pytest.param(
            {"nodeSelector": "arm64", "affinity": {"nodeAffinity": []}},
            set(NODES),
            id="malformed-does-not-narrow",
        ),
    ],
)
def test_where_a_pod_may_be_scheduled(spec: dict[str, Any], allowed: set[str]) -> None:
    placement = pod_placement(spec)
    assert {n for n in NODES if placement.allows(*n.split("/"))} == allowed


def test_equal_node_selections_are_one_placement() -> None:
    """Check results are cached per placement: equal constraints must share the entry."""
    by_selector = pod_placement({"nodeSelector": {ARCH: "arm64"}})
    by_affinity = pod_placement({"affinity": required([expr(ARCH, "In", "arm64")])})
    assert by_selector == by_affinity
    assert hash(by_selector) == hash(by_affinity)
    assert pod_placement({"nodeSelector": {"zone": "a"}}) == ANYWHERE


@pytest.mark.parametrize(
    ("kind", "obj"),
    [
        pytest.param("Pod", {"spec": {"nodeSelector": {ARCH: "arm64"}}}, id="pod"),
        pytest.param(
            "Deployment",
            {"spec": {"template": {"spec": {"nodeSelector": {ARCH: "arm64"}}}}},
            id="deployment",
        ),
        pytest.param(
            "CronJob",
            {
                "spec": {
                    "jobTemplate": {
                        "spec": {"template": {"spec": {"nodeSelector": {ARCH: "arm64"}}}}
                    }
                }
            },
            id="cronjob",
        ),
    ],
)
def test_placement_of_every_workload_kind(kind: str, obj: dict[str, Any]) -> None:
    assert placement_of(kind, obj) == pod_placement({"nodeSelector": {ARCH: "arm64"}})


# ---- which entries are checked ----------------------------------------------------------------

AMD_ARM = ("linux/amd64", "linux/arm64/v8")


@pytest.mark.parametrize(
    ("listed", "spec", "nodes", "wanted"),
    [
        pytest.param(AMD_ARM, {}, (), AMD_ARM, id="every-platform"),
        pytest.param(AMD_ARM, {"nodeSelector": {ARCH: "arm64"}}, (), ("linux/arm64/v8",), id="a"),
        pytest.param(AMD_ARM, {"nodeSelector": {ARCH: "amd64"}}, (), ("linux/amd64",), id="b"),
        pytest.param(AMD_ARM, {"nodeSelector": {ARCH: "s390x"}}, (), (), id="no-node-can-run-it"),
        pytest.param(AMD_ARM, {"nodeSelector": {OS: "windows"}}, (), (), id="windows-pod"),
        pytest.param(
            AMD_ARM,
            {"affinity": required([expr(ARCH, "NotIn", "amd64")])},
            (),
            ("linux/arm64/v8",),
            id="not-in",
        ),
        pytest.param(
            ("linux/amd64", "linux/arm/v7"),
            {"nodeSelector": {ARCH: "arm64"}},
            (),
            ("linux/arm/v7",),
            id="arm64-node-runs-the-arm-image",
        ),
        pytest.param(
            ("linux/386", "linux/arm64"),
            {"nodeSelector": {ARCH: "amd64"}},
            (),
            ("linux/386",),
            id="amd64-node-runs-the-386-image",
        ),
        pytest.param(
            ("linux/386", "linux/amd64"),
            {"nodeSelector": {ARCH: "amd64"}},
            (),
            ("linux/amd64",),
            id="no-fallback-when-the-own-architecture-is-there",
        ),
        pytest.param(AMD_ARM, {}, ("linux/arm64",), ("linux/arm64/v8",), id="policy-nodes"),
        pytest.param(AMD_ARM, {}, ("linux/amd64", "linux/arm64"), AMD_ARM, id="policy-both"),
        pytest.param(
            AMD_ARM, {"nodeSelector": {ARCH: "arm64"}}, ("linux/amd64",), (), id="policy-and-pod"
        ),
        pytest.param(
            ("linux/arm/v6", "linux/arm/v7"),
            {},
            ("linux/arm",),
            ("linux/arm/v7",),
            id="policy-arm-is-v7",
        ),
        pytest.param(
            ("linux/arm/v6", "linux/arm/v7"),
            {},
            ("linux/arm/v6",),
            ("linux/arm/v6",),
            id="policy-arm-v6",
        ),
    ],
)
def test_which_entries_are_checked(
    listed: Sequence[str], spec: dict[str, Any], nodes: Sequence[str], wanted: Sequence[str]
) -> None:
    chosen = wanted_platforms(plats(*listed), pod_placement(spec), plats(*nodes))
    assert [str(p) for p in chosen] == list(wanted)


# ---- the policy's platform list ---------------------------------------------------------------


def test_a_policy_lists_the_node_platforms() -> None:
    listed = policy(platforms=["linux/amd64", "linux/arm64/v8"])
    assert listed.spec.node_platforms == (plat("linux/amd64"), plat("linux/arm64/v8"))
    assert policy(platform="linux/arm64").spec.node_platforms == (plat("linux/arm64"),)
    assert policy().spec.node_platforms == ()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param({"platforms": ["linux"]}, "should match pattern", id="not-os-arch"),
        pytest.param({"platforms": ["windows/amd64"]}, "Linux nodes", id="not-linux"),
        pytest.param(
            {"platform": "linux/amd64", "platforms": ["linux/arm64"]},
            "deprecated one-value form",
            id="both-forms",
        ),
    ],
)
def test_a_policy_platform_list_is_validated(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        policy(**spec)


# ---- the Checker: every platform that can run is checked --------------------------------------

MULTI = f"{TEAM}/multi:1.0"
MULTI_ATTESTED = f"{TEAM}/attested:1.0"
MULTI_HALF_DOWN = f"{TEAM}/half-down:1.0"
SHELL_CHAIN = ["/bin/sh", "-c", "httpd -f & sleep infinity"]
BAD_ARM = image("e", user="", entrypoint=SHELL_CHAIN)  # root, and two processes
INDEX = Index({"linux/amd64": image("a"), "linux/arm64/v8": BAD_ARM})
ANSWERS = {
    **common_answers(),
    MULTI: INDEX,
    MULTI_ATTESTED: Index(
        {"linux/amd64": image("a"), "unknown/unknown": RegistryUnavailable("never read")}
    ),
    MULTI_HALF_DOWN: Index(
        {"linux/amd64": image("a"), "linux/arm64": RegistryUnavailable("arm64 manifest: 503")}
    ),
}
ON_ARM64 = pod_placement({"nodeSelector": {ARCH: "arm64"}})
ON_AMD64 = pod_placement({"nodeSelector": {ARCH: "amd64"}})
ON_S390X = pod_placement({"nodeSelector": {ARCH: "s390x"}})


def rules_policy(name: str = "default", **spec: Any) -> ImagePolicy:
    """A policy whose rules look at the image alone: allowed-base (which reads approved bases
    from the registry) is off, so each verdict is the platform image's own."""
    return policy(name, rules={"allowedBases": {"enabled": False}}, **spec)


def checker() -> tuple[Checker, FakeRegistry]:
    registry = FakeRegistry(ANSWERS)
    return checker_for(registry), registry


async def test_an_index_with_a_bad_second_platform_fails_naming_it() -> None:
    check, registry = checker()
    result = await check.check(MULTI, [rules_policy()])
    assert result.verdict == "fail"
    assert {v.rule for v in result.violations} == {"non-root-user", "single-entrypoint"}
    assert all(v.message.startswith("linux/arm64/v8: ") for v in result.violations)
    assert result.platform == "linux/arm64/v8"  # the failing platform, whose facts are shown
    assert result.digest == INDEX.digest  # what a Pod pins
    assert result.facts["user"] == ""
    assert sorted(c.platform for c in registry.calls) == ["linux/amd64", "linux/arm64/v8"]
    out = result.to_json()
    assert [(p["platform"], p["verdict"]) for p in out["platforms"]] == [
        ("linux/amd64", "pass"),
        ("linux/arm64/v8", "fail"),
    ]
    assert out["platforms"][1]["facts"]["user"] == ""
    assert {v["rule"] for v in out["platforms"][1]["violations"]} == {
        "non-root-user",
        "single-entrypoint",
    }


async def test_a_pod_pinned_to_amd64_checks_only_the_amd64_image() -> None:
    check, registry = checker()
    result = await check.check(MULTI, [rules_policy()], placement=ON_AMD64)
    assert (result.verdict, result.platform) == ("pass", "linux/amd64")
    assert [c.platform for c in registry.calls] == ["linux/amd64"]
    assert [p.platform for p in result.platforms] == ["linux/amd64"]


async def test_a_pod_pinned_to_arm64_is_checked_on_arm64() -> None:
    check, _ = checker()
    result = await check.check(MULTI, [rules_policy()], placement=ON_ARM64)
    assert result.verdict == "fail"
    assert all(v.message.startswith("linux/arm64/v8: ") for v in result.violations)


async def test_verdicts_are_cached_per_placement() -> None:
    check, _ = checker()
    assert (await check.check(MULTI, [rules_policy()], placement=ON_AMD64)).verdict == "pass"
    assert (await check.check(MULTI, [rules_policy()], placement=ON_ARM64)).verdict == "fail"
    pol = [rules_policy()]
    await check.check(MULTI, pol, placement=ON_AMD64)
    assert check.cached(MULTI, pol, placement=ON_AMD64) is not None
    assert check.cached(MULTI, pol, placement=ON_ARM64) is None
    assert check.cached(MULTI, pol) is None


async def test_the_policy_platform_list_narrows_the_check() -> None:
    check, registry = checker()
    result = await check.check(MULTI, [rules_policy(platforms=["linux/amd64"])])
    assert result.verdict == "pass"
    assert [c.platform for c in registry.calls] == ["linux/amd64"]


async def test_each_policy_checks_its_own_platforms() -> None:
    check, _ = checker()
    amd_only = rules_policy("amd-only", platforms=["linux/amd64"])
    everywhere = rules_policy("everywhere")
    result = await check.check(MULTI, [amd_only, everywhere])
    assert result.verdict == "fail"
    assert {v.policy for v in result.violations} == {"everywhere"}
    assert result.policies == ["amd-only", "everywhere"]


async def test_the_legacy_single_platform_field_still_narrows() -> None:
    check, registry = checker()
    result = await check.check(MULTI, [rules_policy(platform="linux/arm64")])
    assert result.verdict == "fail"
    assert [c.platform for c in registry.calls] == ["linux/arm64/v8"]


async def test_an_explicit_platform_checks_just_that_platform() -> None:
    """`imagegate check --platform X` (and the scanner's and rebuild's platform)."""
    check, registry = checker()
    result = await check.check(MULTI, [rules_policy()], plat("linux/amd64"), placement=ON_ARM64)
    assert (result.verdict, result.platform) == ("pass", "linux/amd64")
    assert [c.platform for c in registry.calls] == ["linux/amd64"]
    assert registry.listings == []


async def test_no_platform_where_the_pod_may_run_is_an_error() -> None:
    check, _ = checker()
    result = await check.check(MULTI, [rules_policy()], placement=ON_S390X)
    assert result.verdict == "error"
    assert result.error is not None
    assert "no platform of the image can run where the Pod may be scheduled" in result.error
    assert "linux/amd64, linux/arm64/v8" in result.error
    assert "kubernetes.io/arch in (s390x)" in result.error


async def test_no_platform_the_policy_lists_is_an_error() -> None:
    check, _ = checker()
    result = await check.check(MULTI, [rules_policy("s390x-cluster", platforms=["linux/s390x"])])
    assert result.verdict == "error"
    assert result.error is not None
    assert "policy s390x-cluster" in result.error
    assert "linux/s390x" in result.error


async def test_attestation_manifests_are_not_checked() -> None:
    check, registry = checker()
    result = await check.check(MULTI_ATTESTED, [rules_policy()])
    assert result.verdict == "pass"
    assert [c.platform for c in registry.calls] == ["linux/amd64"]


async def test_a_platform_that_cannot_be_read_is_an_error_naming_it() -> None:
    check, _ = checker()
    result = await check.check(MULTI_HALF_DOWN, [rules_policy()])
    assert result.verdict == "error"
    assert result.error == "linux/arm64: arm64 manifest: 503"


async def test_a_single_platform_image_is_checked_once_as_before() -> None:
    check, registry = checker()
    result = await check.check(GOOD, [rules_policy()], placement=ON_ARM64)
    assert result.verdict == "pass"
    assert len(registry.calls) == 1
    assert result.platforms == []
    assert "platforms" not in result.to_json()
    root = await check.check(f"{TEAM}/root:1.0", [rules_policy()])
    assert not any(v.message.startswith("linux/") for v in root.violations)


# ---- the admission service passes the Pod's node selection ------------------------------------


def service(registry: FakeRegistry) -> AdmissionService:
    settings = WebhookSettings(
        request_budget_seconds=8.0,
        exempt_namespaces=["kube-system"],
        namespace="imagegate-system",
        opt_out_label="imagegate.dev/ignore",
    )
    return AdmissionService(
        checker_for(registry),
        StaticPolicies([rules_policy()]),
        FakeCluster(namespaces={"team-a": {}}),
        Replacements(),
        settings,
        Keyring.empty(),
    )


def pod_review(image_ref: str, kind: str = "Pod", **pod_spec: Any) -> Any:
    spec = {"containers": [{"name": "app", "image": image_ref}], **pod_spec}
    group, plural = ("", "pods") if kind == "Pod" else ("apps", "deployments")
    template = {"selector": {}, "template": {"metadata": {}, "spec": spec}}
    body = spec if kind == "Pod" else template
    obj = {
        "apiVersion": "v1" if kind == "Pod" else "apps/v1",
        "kind": kind,
        "metadata": {"name": "web", "namespace": "team-a"},
        "spec": body,
    }
    gvk = {"group": group, "version": "v1", "kind": kind}
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "uid-1",
            "kind": gvk,
            "resource": {"group": group, "version": "v1", "resource": plural},
            "requestKind": gvk,
            "name": "web",
            "namespace": "team-a",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": obj,
            "dryRun": False,
        },
    }
    return review_from(review).request


@pytest.mark.parametrize("kind", ["Pod", "Deployment"])
async def test_admission_denies_the_index_naming_the_bad_platform(kind: str) -> None:
    decision = await service(FakeRegistry(ANSWERS)).validate(pod_review(MULTI, kind))
    assert decision.response.allowed is False
    assert decision.response.status is not None
    message = decision.response.status.message
    assert "non-root-user: linux/arm64/v8: " in message
    assert "single-entrypoint: linux/arm64/v8: " in message


async def test_admission_admits_and_pins_the_index_for_a_pod_pinned_to_amd64() -> None:
    svc = service(FakeRegistry(ANSWERS))
    request = pod_review(MULTI, nodeSelector={ARCH: "amd64"})
    assert (await svc.validate(request)).response.allowed is True
    mutated = await svc.mutate(request)
    assert mutated.patch is not None
    patch = json.loads(base64.b64decode(mutated.patch))
    assert patch[0]["value"] == f"{MULTI}@{INDEX.digest}"


async def test_admission_denies_a_pod_pinned_to_arm64_even_after_an_amd64_one() -> None:
    """The warm path (verdicts cached without I/O) must not hand an amd64 verdict to arm64."""
    svc = service(FakeRegistry(ANSWERS))
    amd = pod_review(MULTI, nodeSelector={ARCH: "amd64"})
    assert (await svc.validate(amd)).response.allowed is True
    arm = pod_review(MULTI, affinity=required([expr(ARCH, "In", "arm64")]))
    decision = await svc.validate(arm)
    assert decision.response.allowed is False
    assert decision.response.status is not None
    assert "linux/arm64/v8: " in decision.response.status.message


async def test_moving_a_deployment_to_arm64_nodes_checks_its_images_again() -> None:
    """An UPDATE that changes only the node selection still changes what may run."""
    svc = service(FakeRegistry(ANSWERS))
    before = pod_review(MULTI, "Deployment", nodeSelector={ARCH: "amd64"})
    after = pod_review(MULTI, "Deployment", nodeSelector={ARCH: "arm64"})
    update = msgspec.structs.replace(after, operation="UPDATE", old_object=before.object)
    assert (await svc.validate(before)).response.allowed is True
    decision = await svc.validate(update)
    assert decision.response.allowed is False
    unchanged = msgspec.structs.replace(after, operation="UPDATE", old_object=after.object)
    assert (await svc.validate(unchanged)).response.allowed is True  # nothing re-checked


# ---- the scanner checks each workload where it may run ----------------------------------------


async def test_the_scanner_checks_each_workload_where_it_may_run() -> None:
    def listed_pod(name: str, **spec: Any) -> dict[str, Any]:
        meta = {"name": name, "namespace": "team-a", "uid": f"uid-{name}"}
        pod_spec = {"containers": [{"name": "app", "image": MULTI}], **spec}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}

    cluster = FakeCluster(
        namespaces={"team-a": {}},
        workloads={
            "pods": [
                listed_pod("on-amd64", nodeSelector={ARCH: "amd64"}),
                listed_pod("on-arm64", nodeSelector={ARCH: "arm64"}),
            ]
        },
    )
    registry = FakeRegistry(ANSWERS)
    scanner = Scanner(checker_for(registry), cluster, None, Keyring.empty())
    outcome = await scanner.scan([rules_policy(mode="audit")])
    verdicts = {e.workload.name: e.result.verdict for e in outcome.entries}
    assert verdicts == {"on-amd64": "pass", "on-arm64": "fail"}


# ---- the registry client: listing and fetch counts --------------------------------------------


LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class IndexServer:
    """An httpx transport serving one index (`app:multi`) of `platforms`, each entry its own
    single-layer image whose user names its platform; counts GETs per kind."""

    def __init__(self, platforms: Sequence[dict[str, str]]) -> None:
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.gets: dict[str, int] = {"index": 0, "manifest": 0, "config": 0}
        entries = []
        for i, p in enumerate(platforms):
            config = json.dumps(
                {
                    "architecture": p["architecture"],
                    "os": p["os"],
                    "config": {"User": f"{1000 + i}", "Entrypoint": ["/app"]},
                    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "d" * 64]},
                }
            ).encode()
            manifest = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": mt.OCI_MANIFEST,
                    "config": {"mediaType": mt.OCI_CONFIG, "digest": _sha(config), "size": 1},
                    "layers": [{"mediaType": LAYER, "digest": "sha256:" + "e" * 64, "size": 10}],
                }
            ).encode()
            self.routes[f"/v2/app/blobs/{_sha(config)}"] = (config, "config")
            self.routes[f"/v2/app/manifests/{_sha(manifest)}"] = (manifest, "manifest")
            entries.append(
                {"mediaType": mt.OCI_MANIFEST, "digest": _sha(manifest), "size": 1, "platform": p}
            )
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
        ).encode()
        self.index_digest = _sha(index)
        self.routes["/v2/app/manifests/multi"] = (index, "index")

    def handle(self, request: httpx.Request) -> httpx.Response:
        body, kind = self.routes.get(request.url.path, (b"", ""))
        if not kind:
            return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
        self.gets[kind] += 1
        content_type = {"index": mt.OCI_INDEX, "manifest": mt.OCI_MANIFEST}.get(kind, "")
        return httpx.Response(200, content=body, headers={"Content-Type": content_type})


def index_client(server: IndexServer) -> RegistryClient:
    return RegistryClient(
        RegistrySettings(retries=0), Keyring.empty(), httpx.MockTransport(server.handle)
    )


EIGHT = [
    {"os": "linux", "architecture": "amd64"},
    {"os": "unknown", "architecture": "unknown"},
    {"os": "linux", "architecture": "arm64", "variant": "v8"},
    {"os": "linux", "architecture": "arm64"},
    {"os": "windows", "architecture": "amd64"},
    {"os": "linux", "architecture": "arm", "variant": "v7"},
    {"os": "linux", "architecture": "ppc64le"},
    {"os": "linux", "architecture": "s390x"},
]
REF = Reference.parse("localhost:5001/app:multi")


async def test_the_client_lists_the_runnable_platforms_of_an_index() -> None:
    server = IndexServer(EIGHT)
    async with index_client(server) as client:
        listed = await client.platforms(REF)
        assert listed is not None
        assert [str(p) for p in listed] == [
            "linux/amd64",
            "linux/arm64/v8",
            "linux/arm/v7",
            "linux/ppc64le",
            "linux/s390x",
        ]
        # each listed platform resolves to its own entry; of equal entries the first one
        users = [(await client.inspect(REF, p)).user for p in listed]
        assert users == ["1000", "1002", "1005", "1006", "1007"]
        second = await client.resolve(REF, plat("linux/arm64"))
        assert second.platform == "linux/arm64/v8"


async def test_an_n_platform_index_costs_one_index_n_manifests_n_configs_once() -> None:
    server = IndexServer(EIGHT)
    async with index_client(server) as client:
        check = Checker(client, result_ttl=0)  # no verdict cache: every check evaluates again
        permissive = ImagePolicy.model_validate(
            {
                "metadata": {"name": "p"},
                "spec": {"rules": {"allowedBases": {"enabled": False}}},
            }
        )
        first = await check.check(str(REF), [permissive])
        assert [p.platform for p in first.platforms] == [
            "linux/amd64",
            "linux/arm64/v8",
            "linux/arm/v7",
            "linux/ppc64le",
            "linux/s390x",
        ]
        assert server.gets == {"index": 1, "manifest": 5, "config": 5}
        for _ in range(3):
            again = await check.check(str(REF), [permissive])
            assert again.verdict == first.verdict
        assert server.gets == {"index": 1, "manifest": 5, "config": 5}


async def test_facts_carry_the_platform_manifest_digest() -> None:
    server = IndexServer(EIGHT[:1])
    async with index_client(server) as client:
        facts = await client.inspect(REF, plat("linux/amd64"))
    assert facts.digest == server.index_digest
    assert facts.manifest_digest != facts.digest
    assert dataclasses.replace(facts).manifest_digest.startswith("sha256:")
