"""Every platform of a multi-arch image that can run is checked, against a real registry.

``bad_multiarch_ref`` (tests/conftest.py) is an OCI index whose amd64 image is the compliant
``good`` fixture and whose arm64/v8 image runs as root with ``sh -c 'httpd … & sleep
infinity'``, followed by an attestation entry (``unknown/unknown``). Checking only one platform
(the host's) admitted it and pinned the whole index (issue 12, item 2).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.images import IndexEntry, make_index
from tests.support.registry import RegistryProcess, await_requests
from webhook.policy.checker import Checker, CheckResult
from webhook.policy.model import ImagePolicy
from webhook.policy.platforms import ANYWHERE, Placement, pod_placement
from webhook.registry.client import RegistryClient
from webhook.settings import RegistrySettings

pytestmark = pytest.mark.integration

IMAGEGATE = [sys.executable, "-m", "webhook"]
ARM64 = "linux/arm64/v8"
ON_ARM64 = pod_placement({"nodeSelector": {"kubernetes.io/arch": "arm64"}})
ON_AMD64 = pod_placement({"nodeSelector": {"kubernetes.io/arch": "amd64"}})


def check_json(*args: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [*IMAGEGATE, "check", *args, "--output", "json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    try:
        [result] = json.loads(proc.stdout)["results"]
    except (json.JSONDecodeError, KeyError, ValueError):
        pytest.fail(f"not one JSON result (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.returncode, result


def policy_text(base: str, extra: str = "") -> str:
    return (
        "apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: local}\n"
        f"spec:\n{extra}  rules:\n"
        f"    allowedBases: {{references: ['{base}']}}\n"
        "    sizeBudget: {maxCompressedSize: 2MB}\n"
    )


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory, fixture_images: dict[str, str]) -> Path:
    path = tmp_path_factory.mktemp("policy") / "local.yaml"
    path.write_text(policy_text(fixture_images["base"]))
    return path


def test_an_index_with_a_bad_second_platform_fails_naming_it(
    bad_multiarch_ref: str, policy_file: Path
) -> None:
    code, result = check_json(bad_multiarch_ref, "--policy", str(policy_file))
    assert code == 1, result
    assert result["verdict"] == "fail"
    assert {v["rule"] for v in result["violations"]} == {"non-root-user", "single-entrypoint"}
    assert all(v["message"].startswith(f"{ARM64}: ") for v in result["violations"])
    assert result["platform"] == ARM64
    assert result["facts"]["user"] == ""
    assert [(p["platform"], p["verdict"]) for p in result["platforms"]] == [
        ("linux/amd64", "pass"),
        (ARM64, "fail"),
    ]  # and the attestation (unknown/unknown) is no platform
    manifests = {p["facts"]["manifestDigest"] for p in result["platforms"]}
    assert len(manifests) == 2
    assert result["digest"] not in manifests  # the index digest, what a Pod pins


def test_check_platform_keeps_checking_just_that_platform(
    bad_multiarch_ref: str, policy_file: Path
) -> None:
    code, amd = check_json(
        bad_multiarch_ref, "--policy", str(policy_file), "--platform", "linux/amd64"
    )
    assert (code, amd["verdict"], amd["platform"]) == (0, "pass", "linux/amd64")
    assert "platforms" not in amd
    code, arm = check_json(
        bad_multiarch_ref, "--policy", str(policy_file), "--platform", "linux/arm64"
    )
    assert (code, arm["verdict"], arm["platform"]) == (1, "fail", ARM64)


def test_a_good_index_passes_on_every_platform(multiarch_ref: str, policy_file: Path) -> None:
    code, result = check_json(multiarch_ref, "--policy", str(policy_file))
    assert (code, result["verdict"]) == (0, "pass"), result
    assert [p["platform"] for p in result["platforms"]] == ["linux/amd64", ARM64]


def test_the_policy_platform_list_narrows_the_check(
    bad_multiarch_ref: str, fixture_images: dict[str, str], tmp_path: Path
) -> None:
    amd_cluster = tmp_path / "amd.yaml"
    amd_cluster.write_text(policy_text(fixture_images["base"], "  platforms: [linux/amd64]\n"))
    code, result = check_json(bad_multiarch_ref, "--policy", str(amd_cluster))
    assert (code, result["verdict"]) == (0, "pass"), result
    s390x_cluster = tmp_path / "s390x.yaml"
    s390x_cluster.write_text(policy_text(fixture_images["base"], "  platforms: [linux/s390x]\n"))
    code, result = check_json(bad_multiarch_ref, "--policy", str(s390x_cluster))
    assert (code, result["verdict"]) == (2, "error")
    assert "no platform of the image can run where the Pod may be scheduled" in result["error"]


def checks(ref: str, policy: ImagePolicy, placements: list[Placement]) -> list[CheckResult]:
    async def run() -> list[CheckResult]:
        async with RegistryClient(RegistrySettings()) as client:
            checker = Checker(client)
            return [await checker.check(ref, [policy], placement=p) for p in placements]

    return asyncio.run(run())


def test_the_pods_node_selection_narrows_the_check(
    bad_multiarch_ref: str, fixture_images: dict[str, str]
) -> None:
    policy = ImagePolicy().with_overrides([fixture_images["base"]], 2_000_000)
    anywhere, on_amd64, on_arm64 = checks(bad_multiarch_ref, policy, [ANYWHERE, ON_AMD64, ON_ARM64])
    assert anywhere.verdict == "fail"
    assert (on_amd64.verdict, on_amd64.platform) == ("pass", "linux/amd64")
    assert (on_arm64.verdict, on_arm64.platform) == ("fail", ARM64)
    assert on_amd64.digest == on_arm64.digest == anywhere.digest


def test_an_n_platform_index_is_fetched_once(
    registry: RegistryProcess, fixture_images: dict[str, str]
) -> None:
    """1 index + N manifests + N configs for a cold check; a warm one fetches nothing."""
    repo = f"fixtures/multi-once-{uuid.uuid4().hex[:8]}"
    platforms = [
        {"os": "linux", "architecture": "amd64"},
        {"os": "linux", "architecture": "arm64", "variant": "v8"},
        {"os": "linux", "architecture": "arm", "variant": "v7"},
        {"os": "linux", "architecture": "ppc64le"},
    ]
    entries = [IndexEntry(fixture_images["good"], p) for p in platforms]
    entries.append(IndexEntry(fixture_images["good"], {"os": "unknown", "architecture": "unknown"}))
    ref = make_index(registry.url, repo, entries, tag="four")
    policy = ImagePolicy().with_overrides([fixture_images["base"]], 2_000_000)
    since = registry.log_offset()

    async def run() -> tuple[list[CheckResult], list[CheckResult]]:
        async with RegistryClient(RegistrySettings(tag_ttl_seconds=3600)) as client:
            checker = Checker(client, result_ttl=0)  # every check evaluates again
            cold = await asyncio.gather(*(checker.check(ref, [policy]) for _ in range(10)))
            warm = [await checker.check(ref, [policy]) for _ in range(10)]
            return list(cold), warm

    cold, warm = asyncio.run(run())
    assert {r.verdict for r in cold + warm} == {"pass"}, cold[0].error
    assert len(cold[0].platforms) == 4
    n = len(platforms)
    manifests = await_requests(
        registry.log_path, "GET", f"/v2/{repo}/manifests/", 1 + n, status=200, since=since
    )
    configs = await_requests(
        registry.log_path, "GET", f"/v2/{repo}/blobs/", n, status=200, since=since
    )
    assert (manifests, configs) == (1 + n, n)
