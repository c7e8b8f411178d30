"""Every platform of a multi-arch image that can run is checked, against a real API server.

The chart is installed with helm and the webhook (`imagegate serve`, url mode on the host) is
called by the kube-apiserver, as in test_imagegate.py. ``bad_multiarch_ref`` is an OCI index
whose amd64 image is compliant and whose arm64/v8 image runs as root with ``sh -c 'a & b'``:
before issue 12 (item 2) it was admitted and pinned, only the host's platform being checked.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.conftest import Install
from tests.support.manifests import deployment, pod

pytestmark = pytest.mark.integration

ARCH = "kubernetes.io/arch"
BAD_PLATFORM = "linux/arm64/v8"
DENIED = 'admission webhook "validate.imagegate.dev" denied the request'


def arm64_affinity() -> dict[str, Any]:
    term = {"matchExpressions": [{"key": ARCH, "operator": "In", "values": ["arm64"]}]}
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }


def test_an_index_with_a_bad_second_platform_is_denied_naming_it(
    installed: Install, namespace: str, bad_multiarch_ref: str
) -> None:
    answer = installed.apply(pod("multi", bad_multiarch_ref), "-n", namespace)
    assert answer.returncode != 0
    assert DENIED in answer.stderr
    assert f"non-root-user: {BAD_PLATFORM}: " in answer.stderr
    assert f"single-entrypoint: {BAD_PLATFORM}: " in answer.stderr
    assert installed.kubectl("get", "pod", "multi", "-n", namespace, check=False).returncode != 0


def test_a_pod_pinned_to_amd64_is_admitted_and_pinned_to_the_index(
    installed: Install, namespace: str, bad_multiarch_ref: str
) -> None:
    manifest = pod("on-amd64", bad_multiarch_ref, nodeSelector={ARCH: "amd64"})
    answer = installed.apply(manifest, "-n", namespace)
    assert answer.returncode == 0, answer.stderr
    stored = json.loads(
        installed.kubectl("get", "pod", "on-amd64", "-n", namespace, "-o", "json").stdout
    )
    image = stored["spec"]["containers"][0]["image"]
    assert image.startswith(f"{bad_multiarch_ref}@sha256:")  # the index digest
    record = json.loads(stored["metadata"]["annotations"]["imagegate.dev/mutations"])
    assert record[0]["why"] == "pinned"


def test_a_pod_pinned_to_arm64_by_node_selector_is_denied(
    installed: Install, namespace: str, bad_multiarch_ref: str
) -> None:
    manifest = pod("on-arm64", bad_multiarch_ref, nodeSelector={ARCH: "arm64"})
    answer = installed.apply(manifest, "-n", namespace)
    assert answer.returncode != 0
    assert DENIED in answer.stderr
    assert f"{BAD_PLATFORM}: " in answer.stderr
    assert "linux/amd64" not in answer.stderr


def test_a_deployment_pinned_to_arm64_by_node_affinity_is_denied(
    installed: Install, namespace: str, bad_multiarch_ref: str
) -> None:
    manifest = deployment("on-arm64", bad_multiarch_ref)
    manifest["spec"]["template"]["spec"]["affinity"] = arm64_affinity()
    answer = installed.apply(manifest, "-n", namespace)
    assert answer.returncode != 0
    assert f"{BAD_PLATFORM}: " in answer.stderr


def test_moving_a_deployment_to_arm64_nodes_is_denied(
    installed: Install, namespace: str, bad_multiarch_ref: str
) -> None:
    manifest = deployment("moving", bad_multiarch_ref)
    manifest["spec"]["template"]["spec"]["nodeSelector"] = {ARCH: "amd64"}
    created = installed.apply(manifest, "-n", namespace)
    assert created.returncode == 0, created.stderr
    patch = json.dumps({"spec": {"template": {"spec": {"nodeSelector": {ARCH: "arm64"}}}}})
    moved = installed.kubectl(
        "patch", "deployment", "moving", "-n", namespace, "--type=merge", "-p", patch, check=False
    )
    assert moved.returncode != 0
    assert f"{BAD_PLATFORM}: " in moved.stderr


def test_a_pod_no_platform_of_which_can_run_is_decided_by_on_error(
    installed: Install, namespace: str, bad_multiarch_ref: str
) -> None:
    manifest = pod("on-s390x", bad_multiarch_ref, nodeSelector={ARCH: "s390x"})
    answer = installed.apply(manifest, "-n", namespace)
    assert answer.returncode != 0
    assert "onError: deny" in answer.stderr
    assert "no platform of the image can run where the Pod may be scheduled" in answer.stderr
