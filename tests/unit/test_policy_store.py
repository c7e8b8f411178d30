"""ClusterPolicies: what the webhook and operator read from ImagePolicy objects."""

from __future__ import annotations

from typing import Any

from webhook.k8s.cluster import NoCluster
from webhook.policy.store import ClusterPolicies


class Objects(NoCluster):
    """A cluster reader serving fixed ImagePolicy objects (the real API is in tests/e2e)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    async def list_objects(self, plural: str) -> list[dict[str, Any]]:
        assert plural == "imagepolicies"
        return self.items


def policy(name: str, mode: str = "enforce") -> dict[str, Any]:
    return {
        "apiVersion": "imagegate.dev/v1alpha1",
        "kind": "ImagePolicy",
        "metadata": {"name": name, "resourceVersion": "1", "uid": "u"},
        "spec": {"mode": mode},
    }


async def test_unchanged_policies_keep_their_objects_so_verdict_caches_stay_warm() -> None:
    cluster = Objects([policy("a")])
    store = ClusterPolicies(cluster, interval=1)
    await store.refresh()
    first = store.policies
    await store.refresh()
    assert store.policies is first
    cluster.items = [policy("a", "audit")]
    await store.refresh()
    assert store.policies is not first
    assert store.policies[0].spec.mode == "audit"


async def test_invalid_objects_are_skipped_and_named() -> None:
    broken = policy("b")
    broken["spec"] = {"mode": "block"}
    store = ClusterPolicies(Objects([policy("a"), broken]), interval=1)
    await store.refresh()
    assert [p.name for p in store.policies] == ["a"]
    assert store.ready
    assert "ImagePolicy b" in store.problems[0]
    assert "spec.mode" in store.problems[0]
