"""Finding the containers of every kind of workload the webhook admits.

A Deployment is checked at `kubectl apply`, not later through a ReplicaSet nobody watches, so
every pod controller's template is read. Each container carries the JSON pointer of its image
(for patches) and the pod-spec fields that change what runs (command, args, users).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

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
class AdmittedResource:
    """A resource (or `resource/subresource`) through which a container image enters, the
    kind of the object the API server sends for it, and the operations that can bring one."""

    group: str
    version: str
    resource: str
    kind: str
    operations: tuple[str, ...] = ("CREATE", "UPDATE")


# What the service claims to check: the chart's webhook rules must cover exactly these
# (tests/chart asserts it), and every kind is one of POD_SPEC_PATHS (tests/unit asserts it).
# `pods/ephemeralcontainers` is how `kubectl debug` adds a container to a running Pod: an
# UPDATE of that subresource with the whole Pod as the object, which a `pods` rule does not
# match. Left out on purpose: `podtemplates` (no built-in controller runs them; whatever makes
# Pods from one makes Pods, checked at CREATE), `pods/binding`, `pods/status`, `pods/resize`,
# `*/scale`, and CONNECT of `pods/exec|attach|portforward` (none sets an image).
ADMITTED_RESOURCES: tuple[AdmittedResource, ...] = (
    AdmittedResource("", "v1", "pods", "Pod"),
    AdmittedResource("", "v1", "pods/ephemeralcontainers", "Pod", ("UPDATE",)),
    AdmittedResource("", "v1", "replicationcontrollers", "ReplicationController"),
    AdmittedResource("apps", "v1", "deployments", "Deployment"),
    AdmittedResource("apps", "v1", "replicasets", "ReplicaSet"),
    AdmittedResource("apps", "v1", "statefulsets", "StatefulSet"),
    AdmittedResource("apps", "v1", "daemonsets", "DaemonSet"),
    AdmittedResource("batch", "v1", "jobs", "Job"),
    AdmittedResource("batch", "v1", "cronjobs", "CronJob"),
)


class Container(NamedTuple):
    """One container of an admitted object (a NamedTuple: built per container per review)."""

    list_name: str
    position: int  # in its list (`index` would shadow tuple.index)
    name: str
    image: str
    context: ContainerContext
    spec_path: tuple[str, ...]

    @property
    def image_pointer(self) -> str:
        """JSON pointer of this container's `image` field, for a JSONPatch."""
        return "/" + "/".join((*self.spec_path, self.list_name, str(self.position), "image"))

    @property
    def label(self) -> str:
        return f"{_LABELS.get(self.list_name, 'container ')}{self.name}"


_LABELS = {"initContainers": "init container ", "ephemeralContainers": "ephemeral container "}


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
    # The API server validates what it stores, but a review is only as well-formed as the
    # code that sent it: every field is read defensively, so a surprise is never a 500.
    pod_security = _dict(spec.get("securityContext"))
    containers: list[Container] = []
    for list_name in CONTAINER_LISTS:
        for index, item in enumerate(_list(spec.get(list_name))):
            image = item.get("image") if isinstance(item, dict) else None
            if not isinstance(image, str) or not image:
                continue  # the API server's own validation refuses it
            security = _dict(item.get("securityContext"))
            context = ContainerContext(
                command=_str_list(item.get("command")),
                args=_str_list(item.get("args")),
                run_as_user=_int(security.get("runAsUser")),
                pod_run_as_user=_int(pod_security.get("runAsUser")),
                run_as_non_root=_bool(
                    security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
                ),
            )
            name = str(item.get("name") or f"#{index}")
            containers.append(Container(list_name, index, name, image, context, path))
    secrets = [
        str(ref["name"])
        for ref in _list(spec.get("imagePullSecrets"))
        if isinstance(ref, dict) and ref.get("name")
    ]
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    return PodTemplate(kind, containers, str(account), secrets)


# The kinds whose controller makes objects of a kind from its template.
CONTROLLER_KINDS: dict[str, frozenset[str]] = {
    "Pod": frozenset({"ReplicaSet", "Job", "StatefulSet", "DaemonSet", "ReplicationController"}),
    "ReplicaSet": frozenset({"Deployment"}),
    "Job": frozenset({"CronJob"}),
}


def covered_by_owner(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    """Whether `owner` (the object `obj`'s controller reference points at) accounts for what
    `obj` runs, so reporting `owner` covers `obj`.

    An ownerReference is written by whoever creates the object: a hand-made Pod can claim a
    compliant Deployment's ReplicaSet. It is believed only when the owner is of a kind that
    makes such objects, lives in the same namespace, and its template holds every image the
    object runs (a tag pinned to a digest by our own mutation counts as the same image; an
    ephemeral container added later does not, so a debugged Pod is reported itself).
    """
    kind, owner_kind = str(obj.get("kind", "")), str(owner.get("kind", ""))
    if owner_kind not in CONTROLLER_KINDS.get(kind, frozenset()):
        return False
    if _namespace(obj) != _namespace(owner):
        return False
    mine, theirs = pod_template(kind, dict(obj)), pod_template(owner_kind, dict(owner))
    if mine is None or theirs is None:
        return False
    allowed = {c.image for c in theirs.containers}
    return all(c.image in allowed or c.image.split("@", 1)[0] in allowed for c in mine.containers)


def _namespace(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    return str(meta.get("namespace", "")) if isinstance(meta, Mapping) else ""


def changed(new: PodTemplate, old: PodTemplate | None) -> list[Container]:
    """On UPDATE only containers that changed what runs are evaluated again: a new image, or
    new command, args or users (the verdicts of non-root-user and single-entrypoint depend
    on them too). Unrelated edits (replicas, labels, resources) re-check nothing."""
    if old is None:
        return new.containers
    before = {(c.list_name, c.name): (c.image, c.context) for c in old.containers}
    return [c for c in new.containers if before.get((c.list_name, c.name)) != (c.image, c.context)]


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str_list(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
