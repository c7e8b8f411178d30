"""Every running workload of the cluster, each once, at its top-level owner.

The background scan reports what runs. A Pod made by a ReplicaSet made by a Deployment is one
workload, the Deployment: its template is what a person edits, and reporting the Pod and the
ReplicaSet too would count the same containers three times. So an object whose controller
(`ownerReferences[].controller: true`) is a listed workload that really accounts for it (the
caller's `covers`) is skipped; anything else is reported as itself.

Lists are paged (`limit`/`continue`, 500 per page) and read as raw JSON.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

# (apiVersion, plural, kind) of every built-in kind that runs containers, Pod first.
WORKLOAD_RESOURCES: Final[tuple[tuple[str, str, str], ...]] = (
    ("v1", "pods", "Pod"),
    ("apps/v1", "deployments", "Deployment"),
    ("apps/v1", "statefulsets", "StatefulSet"),
    ("apps/v1", "daemonsets", "DaemonSet"),
    ("apps/v1", "replicasets", "ReplicaSet"),
    ("batch/v1", "jobs", "Job"),
    ("batch/v1", "cronjobs", "CronJob"),
    ("v1", "replicationcontrollers", "ReplicationController"),
)
PLURALS: Final[dict[str, str]] = {kind: plural for _, plural, kind in WORKLOAD_RESOURCES}
PAGE_SIZE: Final = 500


class ClusterInventory(Protocol):
    """What the scan lists (KubernetesCluster and NoCluster implement it)."""

    async def list_all(
        self, api_version: str, plural: str, page_size: int = PAGE_SIZE
    ) -> list[dict[str, Any]]: ...

    async def namespace_labels_all(
        self, include_terminating: bool = False
    ) -> dict[str, dict[str, str]]: ...


@dataclass(frozen=True)
class Workload:
    """A top-level workload and its whole object (for `webhook.policy.workloads.pod_template`)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str
    labels: Mapping[str, str] = field(default_factory=dict, compare=False)
    obj: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The uid of the object's managing controller, if it has one."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller") is True and ref.get("uid"):
            return str(ref["uid"])
    return None


Covers = Callable[[Mapping[str, Any], Mapping[str, Any]], bool]
"""`covers(obj, owner)`: whether reporting `owner` accounts for `obj` (see the caller)."""


def top_level(objects: list[dict[str, Any]], covers: Covers) -> list[Workload]:
    """The objects not controlled by another object of the list, as Workloads.

    An object is skipped only when its controller is listed and `covers` it: ownerReferences
    are written by whoever creates the object, so a claim alone proves nothing.
    """
    by_uid = {str((o.get("metadata") or {}).get("uid", "")): o for o in objects}
    by_uid.pop("", None)
    workloads: list[Workload] = []
    for obj in objects:
        owner_uid = controller_uid(obj)
        owner = by_uid.get(owner_uid) if owner_uid is not None else None
        if owner is not None and covers(obj, owner):
            continue
        meta = obj.get("metadata") or {}
        workloads.append(
            Workload(
                api_version=str(obj.get("apiVersion", "")),
                kind=str(obj.get("kind", "")),
                namespace=str(meta.get("namespace", "")),
                name=str(meta.get("name", "")),
                uid=str(meta.get("uid", "")),
                labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
                obj=obj,
            )
        )
    return workloads


async def list_workloads(cluster: ClusterInventory, covers: Covers) -> list[Workload]:
    """Every workload in all namespaces, each once at its top-level owner (see module doc).

    Raises `ClusterError` when any kind cannot be listed: a partial inventory would make a
    report writer delete the results of workloads that still run.
    """
    lists = await asyncio.gather(
        *(cluster.list_all(version, plural, PAGE_SIZE) for version, plural, _ in WORKLOAD_RESOURCES)
    )
    objects = [obj for items in lists for obj in items]
    return top_level(objects, covers)
