"""Base claims are verified at admission, against a real API server (issue 12, item 3).

The chart is installed with helm and its webhook (`imagegate serve`, url mode) approves the
fixture base (`tests/e2e/conftest.py`, ``installed``). ``lying-base`` is built FROM scratch, not
on that base, but labelled as built on it — with the base's real digest, or by tag only. A Pod
running it is denied with the reason; a policy with ``unverifiedClaims: allow``, applied as an
ImagePolicy object (so the CRD's schema must know the field), admits what cannot be verified
and still denies what the base's layers contradict.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import AUDIT_LABEL, Install
from tests.fixtures.images import MANIFEST_ACCEPT, build_lying_base
from tests.support.kube import fresh_namespace
from tests.support.manifests import image_policy, pod
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.integration

DENIED = 'admission webhook "validate.imagegate.dev" denied the request'


@pytest.fixture(scope="module")
def liars(
    docker_client: Any, registry: RegistryProcess, fixture_images: dict[str, str]
) -> dict[str, str]:
    """``real-digest``: claims the approved base and its real digest; ``no-digest``: claims
    the approved base by its tag only."""
    with httpx.Client(base_url=registry.url) as http:
        head = http.head("/v2/fixtures/base/manifests/1", headers={"Accept": MANIFEST_ACCEPT})
        head.raise_for_status()
    base, base_digest = fixture_images["base"], head.headers["Docker-Content-Digest"]
    repo = f"{registry.host}/fixtures/lying-base"
    build_lying_base(docker_client, repo, "e2e-real-digest", base, base_digest)
    build_lying_base(docker_client, repo, "e2e-no-digest", base)
    return {"real-digest": f"{repo}:e2e-real-digest", "no-digest": f"{repo}:e2e-no-digest"}


def test_a_pod_whose_image_lies_about_its_base_is_denied(
    installed: Install, namespace: str, liars: dict[str, str], fixture_images: dict[str, str]
) -> None:
    answer = installed.apply(pod("liar", liars["real-digest"]), "-n", namespace)
    assert answer.returncode != 0, "a Pod lying about its base was admitted"
    assert DENIED in answer.stderr
    assert "allowed-base: the image claims to be built on" in answer.stderr
    base_repository = fixture_images["base"].rsplit(":", 1)[0]
    assert f"its layers do not start with the layers of {base_repository}@sha256:" in answer.stderr
    assert "the claim is false" in answer.stderr
    assert installed.kubectl("get", "pod", "liar", "-n", namespace, check=False).returncode != 0


def test_a_pod_whose_base_claim_cannot_be_verified_is_denied_with_the_reason(
    installed: Install, namespace: str, liars: dict[str, str], fixture_images: dict[str, str]
) -> None:
    answer = installed.apply(pod("unverified", liars["no-digest"]), "-n", namespace)
    assert answer.returncode != 0, "a Pod whose base claim cannot be verified was admitted"
    assert DENIED in answer.stderr
    assert "allowed-base: cannot verify that the image is built on" in answer.stderr
    assert f"{fixture_images['base']} now names sha256:" in answer.stderr
    assert "unverifiedClaims is deny" in answer.stderr


def test_unverified_claims_allow_admits_the_unverifiable_but_never_a_contradicted_claim(
    installed: Install, liars: dict[str, str], fixture_images: dict[str, str]
) -> None:
    # The namespace is outside the chart's default policy (it excludes AUDIT_LABEL=audit)
    # and inside one that says unverifiedClaims: allow.
    with fresh_namespace(installed.cluster, "bases", {AUDIT_LABEL: "audit"}) as namespace:
        lenient = image_policy(
            f"bases-{namespace}", {"namespaces": [namespace]}, fixture_images["base"], "enforce"
        )
        lenient["spec"]["rules"]["allowedBases"]["unverifiedClaims"] = "allow"
        applied = installed.apply(lenient)
        assert applied.returncode == 0, applied.stderr
        try:
            installed.webhook.wait_ready(policy=lenient["metadata"]["name"], timeout=15)
            admitted = installed.apply(pod("unverified", liars["no-digest"]), "-n", namespace)
            assert admitted.returncode == 0, admitted.stderr
            denied = installed.apply(pod("liar", liars["real-digest"]), "-n", namespace)
            assert denied.returncode != 0
            assert "the claim is false" in denied.stderr
        finally:
            installed.kubectl("delete", "imagepolicy", lenient["metadata"]["name"], check=False)
