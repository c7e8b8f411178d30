"""The commands the chart's hook Jobs run (webhook.k8s.cleanup): what they refuse before they
touch the API. Their work against a real API server is in tests/kind/test_ha.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest

from webhook.errors import UsageError
from webhook.k8s.cleanup import BOOTSTRAP_PLURALS, apply_cluster_objects


class _NoCalls:
    """An api_client that fails the test if the code under test ever uses it."""

    def __getattr__(self, name: str) -> Any:
        pytest.fail(f"the API was called ({name}) although the input was refused")


@pytest.mark.parametrize(
    "document",
    [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "cluster-admin-for-me"}},
        {"apiVersion": "imagegate.dev/v1alpha1", "kind": "ImagePolicy", "metadata": {}},
        {"apiVersion": "ImagePolicy", "kind": "ImagePolicy", "metadata": {"name": "default"}},
    ],
    ids=["secret", "role-binding", "no-name", "no-group"],
)  # fmt: skip
def test_install_objects_applies_only_the_chart_s_own_kinds(document: dict[str, Any]) -> None:
    """The bootstrap ConfigMap is editable by whoever may write ConfigMaps in the release
    namespace: the Job applies nothing but ImagePolicy and ClusterKopfPeering (and its RBAC
    names the two objects), and refuses a whole file with anything else in it before the
    first call."""
    good = {"apiVersion": "imagegate.dev/v1alpha1", "kind": "ImagePolicy",
            "metadata": {"name": "default"}}  # fmt: skip
    with pytest.raises(UsageError) as caught:
        asyncio.run(apply_cluster_objects(_NoCalls(), [good, document], 1.0))
    assert "cannot bootstrap" in str(caught.value)
    assert set(BOOTSTRAP_PLURALS.values()) == {"imagepolicies", "clusterkopfpeerings"}


def test_uninstall_cleanup_refuses_an_empty_list_of_webhooks() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "webhook", "uninstall-cleanup", "--webhooks", " , "],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "names no webhook configuration" in done.stderr
