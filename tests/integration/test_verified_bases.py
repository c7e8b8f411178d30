"""allowed-base verifies what an image says about its base, against a real registry (issue 12,
item 3).

``lying-base`` (tests/fixtures/lying-base) is built FROM scratch with a root filesystem of its
own, yet labelled as built on the approved fixture base. Code that believes labels passes it;
imagegate reads the claimed base and finds its layers do not start the image's. Claims that
cannot be verified (no digest and a tag naming other layers, a made-up digest, an unreachable
registry) follow the policy's ``unverifiedClaims``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.images import MANIFEST_ACCEPT, OCI_MANIFEST, build_lying_base
from tests.support.registry import RegistryProcess, await_requests, count_requests
from webhook.policy.checker import Checker
from webhook.policy.model import ImagePolicy
from webhook.registry.client import RegistryClient
from webhook.registry.facts import Platform
from webhook.settings import RegistrySettings

pytestmark = pytest.mark.integration

IMAGEGATE = [sys.executable, "-m", "webhook"]
LIARS = "fixtures/lying-base"
MADE_UP = "sha256:" + "0123456789abcdef" * 4
UNREACHABLE = "127.0.0.1:1/fixtures/base:1"  # nothing listens on port 1: connection refused
BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"
BASE_MANIFESTS = "/v2/fixtures/base/manifests/"
BASE_BLOBS = "/v2/fixtures/base/blobs/"


def manifest_digest(registry: RegistryProcess, repo: str, reference: str) -> str:
    with httpx.Client(base_url=registry.url) as http:
        resp = http.head(f"/v2/{repo}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT})
        resp.raise_for_status()
        return resp.headers["Docker-Content-Digest"]


def annotate(registry: RegistryProcess, repo: str, source_tag: str, tag: str, claim: str) -> None:
    """Put ``repo:tag``: the image ``repo:source_tag`` as an OCI manifest whose annotations
    (not labels) claim ``claim`` (``name@digest``) as its base."""
    name, _, digest = claim.partition("@")
    with httpx.Client(base_url=registry.url) as http:
        resp = http.get(f"/v2/{repo}/manifests/{source_tag}", headers={"Accept": MANIFEST_ACCEPT})
        resp.raise_for_status()
        manifest: dict[str, Any] = resp.json()
        oci = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                **manifest["config"],
                "mediaType": "application/vnd.oci.image.config.v1+json",
            },
            "layers": [
                {**layer, "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}
                for layer in manifest["layers"]
            ],
            "annotations": {BASE_NAME: name, BASE_DIGEST: digest},
        }
        put = http.put(
            f"/v2/{repo}/manifests/{tag}",
            content=json.dumps(oci).encode(),
            headers={"Content-Type": OCI_MANIFEST},
        )
        put.raise_for_status()


@pytest.fixture(scope="module")
def base_digest(registry: RegistryProcess, fixture_images: dict[str, str]) -> str:
    return manifest_digest(registry, "fixtures/base", "1")


@pytest.fixture(scope="module")
def liars(
    docker_client: Any, registry: RegistryProcess, fixture_images: dict[str, str], base_digest: str
) -> dict[str, str]:
    """Variants of lying-base, by what they claim: name → ``host/fixtures/lying-base:<name>``."""
    base = fixture_images["base"]
    repo = f"{registry.host}/{LIARS}"
    claims = {
        "real-digest": (base, base_digest),  # the approved base and its real digest
        "no-digest": (base, ""),  # the approved base, by its tag
        "made-up-digest": (base, MADE_UP),  # a digest no registry has
        "unreachable": (UNREACHABLE, ""),  # a base nobody can read
        "no-label": ("", ""),  # nothing in the config: the claim goes in the annotations
    }
    refs = {}
    for name, (claimed, digest) in claims.items():
        build_lying_base(docker_client, repo, name, claimed, digest)
        refs[name] = f"{repo}:{name}"
    annotate(registry, LIARS, "no-label", "annotation", f"{base}@{base_digest}")
    refs["annotation"] = f"{repo}:annotation"
    return refs


def policy(tmp_path: Path, references: list[str], unverified_claims: str | None = None) -> Path:
    path = tmp_path / "policy.yaml"
    rule: dict[str, Any] = {"references": references}
    if unverified_claims is not None:
        rule["unverifiedClaims"] = unverified_claims
    document = {
        "apiVersion": "imagegate.dev/v1alpha1",
        "kind": "ImagePolicy",
        "metadata": {"name": "bases"},
        "spec": {"rules": {"allowedBases": rule, "sizeBudget": {"maxCompressedSize": "2MB"}}},
    }
    path.write_text(json.dumps(document))
    return path


def check(image: str, policy_file: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [*IMAGEGATE, "check", image, "--policy", str(policy_file), "--output", "json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    try:
        [result] = json.loads(proc.stdout)["results"]
    except (ValueError, KeyError) as e:
        pytest.fail(
            f"not one JSON result ({e}, exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    assert result["verdict"] != "error", result.get("error")
    assert proc.returncode == (1 if result["verdict"] == "fail" else 0), proc.stderr
    return dict(result)


def base_messages(result: Mapping[str, Any]) -> list[str]:
    return [v["message"] for v in result["violations"] if v["rule"] == "allowed-base"]


@pytest.mark.parametrize("pinned", [False, True], ids=["allow-list-by-tag", "allow-list-by-digest"])
@pytest.mark.parametrize("liar", ["real-digest", "annotation"])
@pytest.mark.parametrize("mode", ["deny", "allow"])
def test_an_image_lying_about_its_base_is_refused(
    liars: dict[str, str],
    fixture_images: dict[str, str],
    base_digest: str,
    tmp_path: Path,
    liar: str,
    pinned: bool,
    mode: str,
) -> None:
    base = fixture_images["base"]
    approved = f"{base.rsplit(':', 1)[0]}@{base_digest}" if pinned else base
    result = check(liars[liar], policy(tmp_path, [approved], mode))
    assert result["verdict"] == "fail"
    [message] = base_messages(result)
    assert "the claim is false" in message
    assert f"its layers do not start with the layers of {base.rsplit(':', 1)[0]}" in message
    assert result["violations"] == [v for v in result["violations"] if v["rule"] == "allowed-base"]
    evidence = "annotation" if liar == "annotation" else "label"
    assert result["facts"]["base"]["evidence"] == evidence
    assert result["facts"]["base"]["verified"] is False


@pytest.mark.parametrize(
    ("liar", "why"),
    [
        pytest.param(
            "no-digest", "the tag has moved since the image was built, or", id="no-digest"
        ),
        pytest.param("made-up-digest", "cannot read the claimed digest", id="made-up-digest"),
        pytest.param("unreachable", "127.0.0.1:1", id="unreachable"),
    ],
)
@pytest.mark.parametrize("mode", ["deny", "warn", "allow"])
def test_a_claim_that_cannot_be_verified_follows_unverified_claims(
    liars: dict[str, str],
    fixture_images: dict[str, str],
    tmp_path: Path,
    liar: str,
    why: str,
    mode: str,
) -> None:
    references = [fixture_images["base"], "127.0.0.1:1/fixtures/*"]
    result = check(liars[liar], policy(tmp_path, references, mode))
    base = result["facts"]["base"]
    assert base["verified"] is False
    assert why in base["verification"]
    if mode in ("deny", "warn"):  # warn reports the same violation; admission only warns
        [message] = base_messages(result)
        assert "cannot verify that the image is built on" in message
        assert why in message
        assert f"unverifiedClaims is {mode}" in message
    else:
        assert result["verdict"] == "pass", result["violations"]


def test_the_default_is_deny(
    liars: dict[str, str], fixture_images: dict[str, str], tmp_path: Path
) -> None:
    result = check(liars["no-digest"], policy(tmp_path, [fixture_images["base"]]))
    assert "unverifiedClaims is deny" in base_messages(result)[0]


def test_a_true_claim_is_reported_as_verified(
    fixture_images: dict[str, str], base_digest: str, tmp_path: Path
) -> None:
    result = check(fixture_images["good"], policy(tmp_path, [fixture_images["base"]]))
    assert result["verdict"] == "pass", result["violations"]
    assert result["facts"]["base"] == {
        "name": fixture_images["base"],
        "digest": base_digest,
        "evidence": "label",
        "verified": True,
    }


def test_a_base_found_by_its_layers_is_verified_evidence(
    fixture_images: dict[str, str], base_digest: str, tmp_path: Path
) -> None:
    result = check(fixture_images["unlabelled-derived"], policy(tmp_path, [fixture_images["base"]]))
    assert result["verdict"] == "pass", result["violations"]
    assert result["facts"]["base"] == {
        "name": fixture_images["base"],
        "digest": base_digest,
        "evidence": "diff_ids",
        "verified": True,
    }


def test_claimed_bases_are_read_once_and_then_from_the_cache(
    registry: RegistryProcess, liars: dict[str, str], fixture_images: dict[str, str]
) -> None:
    """Twenty concurrent checks of images claiming the base read it once (single flight);
    a later check (another Checker, same client) reads nothing of it at all."""
    policies = [ImagePolicy().with_overrides([fixture_images["base"]])]
    images = [fixture_images["good"], liars["real-digest"]]
    platform = Platform.parse("linux/amd64")

    async def run() -> tuple[int, int, int, list[str]]:
        async with RegistryClient(RegistrySettings()) as client:
            since = registry.log_offset()
            checker = Checker(client, concurrency=64)
            first = await asyncio.gather(
                *(checker.check(images[i % 2], policies, platform) for i in range(20))
            )
            manifests = await_requests(registry.log_path, "GET", BASE_MANIFESTS, 1, since=since)
            blobs = count_requests(registry.log_path, "GET", BASE_BLOBS, since=since)
            since = registry.log_offset()
            again = await Checker(client).check(images[0], policies, platform)
            warm = count_requests(registry.log_path, "GET", "/v2/fixtures/base/", since=since)
            return manifests, blobs, warm, [r.verdict for r in [*first, again]]

    manifests, blobs, warm, verdicts = asyncio.run(run())
    assert verdicts == ["pass", "fail"] * 10 + ["pass"]
    assert manifests <= 2  # by tag (the approved base) and by digest (the claims), at most
    assert blobs == 1  # the base's config
    assert warm == 0
