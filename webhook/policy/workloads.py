"""Finding the containers of every kind of workload the webhook admits.

A Deployment is checked at `kubectl apply`, not later through a ReplicaSet nobody watches, so
every pod controller's template is read. Each container carries the JSON pointer of its image
(for patches) and the pod-spec fields that change what runs (command, args, users).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webhook.policy.outcome import ContainerContext

POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


@dataclass(frozen=True)
class Container:
    list_name: str
    index: int
    name: str
    image: str
    context: ContainerContext
    spec_path: tuple[str, ...]

    @property
    def image_pointer(self) -> str:
        """JSON pointer of this container's `image` field, for a JSONPatch."""
        return "/" + "/".join((*self.spec_path, self.list_name, str(self.index), "image"))

    @property
    def label(self) -> str:
        kind = {"initContainers": "init container ", "ephemeralContainers": "ephemeral container "}
        return f"{kind.get(self.list_name, 'container ')}{self.name}"


@dataclass(frozen=True)
class PodTemplate:
    """The pod spec of an admitted object, and what the kubelet would pull it with."""

    kind: str
    containers: list[Container]
    service_account: str
    pull_secret_names: list[str]


def pod_template(kind: str, obj: dict[str, Any]) -> PodTemplate | None:
    """None for kinds that run no containers (or objects without a pod spec yet)."""
    path = POD_SPEC_PATHS.get(kind)
    if path is None:
        return None
    spec: Any = obj
    for key in path:
        spec = spec.get(key) if isinstance(spec, dict) else None
    if not isinstance(spec, dict):
        return None
    pod_security = spec.get("securityContext") or {}
    containers: list[Container] = []
    for list_name in CONTAINER_LISTS:
        items = spec.get(list_name) or []
        if not isinstance(items, list):
            continue
        for index, item in enumerate(items):
            image = item.get("image") if isinstance(item, dict) else None
            if not isinstance(image, str) or not image:
                continue  # the API server's own validation refuses it
            security = item.get("securityContext") or {}
            context = ContainerContext(
                command=_str_list(item.get("command")),
                args=_str_list(item.get("args")),
                run_as_user=_int(security.get("runAsUser")),
                pod_run_as_user=_int(pod_security.get("runAsUser")),
                run_as_non_root=security.get("runAsNonRoot", pod_security.get("runAsNonRoot")),
            )
            name = str(item.get("name") or f"#{index}")
            containers.append(Container(list_name, index, name, image, context, path))
    secrets = [
        str(ref["name"])
        for ref in spec.get("imagePullSecrets") or []
        if isinstance(ref, dict) and ref.get("name")
    ]
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    return PodTemplate(kind, containers, str(account), secrets)


def changed(new: PodTemplate, old: PodTemplate | None) -> list[Container]:
    """On UPDATE only containers that changed what runs are evaluated again: a new image, or
    new command, args or users (the verdicts of non-root-user and single-entrypoint depend
    on them too). Unrelated edits (replicas, labels, resources) re-check nothing."""
    if old is None:
        return new.containers
    before = {(c.list_name, c.name): (c.image, c.context) for c in old.containers}
    return [c for c in new.containers if before.get((c.list_name, c.name)) != (c.image, c.context)]


def _str_list(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
