"""What the chart's Helm hook Jobs do with imagegate's own image.

* pre-delete (`imagegate uninstall-cleanup`): delete the webhook configurations first, so an
  uninstall never leaves a cluster-scoped, fail-closed ValidatingWebhookConfiguration pointing at
  webhook Pods that are gone (every Pod in every checked namespace would then be refused), and
  the TLS Secret that certificate rotation made (no release object, so Helm would leave it):
  the webhook Deployment is scaled to 0 and its Pods waited for first, since a running
  rotator recreates a deleted Secret at once.
* post-install (`imagegate install-objects`): `helm install` cannot create a custom resource in
  the release that also creates its CRD (Helm maps the whole manifest to API resources before it
  creates anything), so the default ImagePolicy and the ClusterKopfPeering are server-side
  applied here once their CRDs are served.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from webhook.errors import ClusterError, ClusterNotFound, ClusterUnavailable, UsageError
from webhook.k8s.calls import call

__all__ = [
    "BOOTSTRAP_PLURALS",
    "FIELD_MANAGER",
    "Applied",
    "apply_cluster_objects",
    "delete_secret",
    "delete_webhook_configurations",
    "scale_to_zero",
]

# The cluster-scoped kinds the chart bootstraps, by (group, kind): their plural.
BOOTSTRAP_PLURALS: Final = {
    ("imagegate.dev", "ImagePolicy"): "imagepolicies",
    ("kopf.dev", "ClusterKopfPeering"): "clusterkopfpeerings",
}
# Helm's own field manager: the `helm upgrade` that adopts these objects later owns the same
# fields instead of conflicting with a foreign manager.
FIELD_MANAGER: Final = "helm"
TIMEOUT: Final = 10.0
_KINDS: Final = ("validating", "mutating")


@dataclass(frozen=True)
class Applied:
    """One object `apply_cluster_objects` applied, and how many attempts its CRD took."""

    kind: str
    name: str
    attempts: int


async def delete_webhook_configurations(api_client: Any, names: Sequence[str]) -> list[str]:
    """Delete the Validating- and MutatingWebhookConfigurations called `names` (missing ones
    are fine: a configuration may be disabled). Returns `kind/name` of each one deleted."""
    from kubernetes import client as k8s

    api = k8s.AdmissionregistrationV1Api(api_client)
    deleted: list[str] = []
    for name in names:
        for kind in _KINDS:
            delete = (
                api.delete_validating_webhook_configuration
                if kind == "validating"
                else api.delete_mutating_webhook_configuration
            )
            try:
                await call(
                    lambda d=delete, n=name: d(n, _request_timeout=TIMEOUT),  # type: ignore[misc]
                    f"delete {kind} webhook configuration {name}",
                )
            except ClusterNotFound:
                continue
            deleted.append(f"{kind.capitalize()}WebhookConfiguration/{name}")
    return deleted


async def scale_to_zero(api_client: Any, namespace: str, name: str, seconds: float) -> int:
    """Scale the Deployment `namespace/name` to 0 and wait until none of its Pods is left
    (terminating ones included), at most `seconds`. Returns how many Pods were waited for;
    a missing Deployment is 0."""
    from kubernetes import client as k8s

    apps = k8s.AppsV1Api(api_client)
    core = k8s.CoreV1Api(api_client)
    try:
        scale = await call(
            lambda: apps.patch_namespaced_deployment_scale(
                name, namespace, {"spec": {"replicas": 0}}, _request_timeout=TIMEOUT
            ),
            f"scale Deployment {namespace}/{name} to 0",
        )
    except ClusterNotFound:
        return 0
    selector = scale.status.selector if scale.status else None
    if not selector:
        raise ClusterError(f"Deployment {namespace}/{name} has no selector in its scale")
    deadline = time.monotonic() + seconds
    first: int | None = None
    while True:
        pods = await call(
            lambda: core.list_namespaced_pod(
                namespace, label_selector=selector, _request_timeout=TIMEOUT
            ),
            f"list the Pods of Deployment {namespace}/{name}",
        )
        left = len(pods.items)
        first = left if first is None else first
        if left == 0:
            return first
        if time.monotonic() > deadline:
            raise ClusterError(
                f"{left} Pod(s) of Deployment {namespace}/{name} still there after {seconds:.0f}s"
            )
        await asyncio.sleep(1.0)


async def delete_secret(api_client: Any, namespace: str, name: str) -> bool:
    """Delete the Secret `namespace/name`; False when it was not there."""
    from kubernetes import client as k8s

    core = k8s.CoreV1Api(api_client)
    try:
        await call(
            lambda: core.delete_namespaced_secret(name, namespace, _request_timeout=TIMEOUT),
            f"delete Secret {namespace}/{name}",
        )
    except ClusterNotFound:
        return False
    return True


def _target(document: dict[str, Any]) -> tuple[str, str, str, str]:
    """(group, version, plural, name) of a bootstrap object; anything else is refused."""
    api_version = str(document.get("apiVersion", ""))
    group, _, version = api_version.rpartition("/")
    kind = str(document.get("kind", ""))
    plural = BOOTSTRAP_PLURALS.get((group, kind))
    name = (document.get("metadata") or {}).get("name")
    if plural is None or not version or not name:
        known = ", ".join(f"{g}/{k}" for g, k in BOOTSTRAP_PLURALS)
        raise UsageError(f"cannot bootstrap {api_version} {kind} {name!r}: only {known} by name")
    return group, version, plural, str(name)


async def _apply(custom: Any, target: tuple[str, str, str, str], document: Any) -> None:
    group, version, plural, name = target
    await call(
        lambda: custom.patch_cluster_custom_object(
            group, version, plural, name, document,
            field_manager=FIELD_MANAGER, force=True,
            _content_type="application/apply-patch+yaml", _request_timeout=TIMEOUT,
        ),
        f"apply {plural}.{group} {name}",
    )  # fmt: skip


async def apply_cluster_objects(
    api_client: Any,
    documents: Sequence[dict[str, Any]],
    seconds: float,
    interval: float = 1.0,
) -> list[Applied]:
    """Server-side apply each document (cluster-scoped, a kind of `BOOTSTRAP_PLURALS`),
    retrying while its CRD is not served yet (404 on the type) or the API is unavailable, for
    at most `seconds` in all. Other errors (forbidden, invalid) fail at once."""
    from kubernetes import client as k8s

    custom = k8s.CustomObjectsApi(api_client)
    targets = [(_target(d), d) for d in documents]  # refuse a wrong file before applying any
    deadline = time.monotonic() + seconds
    applied: list[Applied] = []
    for target, document in targets:
        attempts = 0
        while True:
            attempts += 1
            try:
                await _apply(custom, target, document)
            except (ClusterNotFound, ClusterUnavailable) as err:
                if time.monotonic() + interval > deadline:
                    raise ClusterError(f"{err} (gave up after {attempts} attempts)") from None
                await asyncio.sleep(interval)
                continue
            applied.append(Applied(str(document["kind"]), target[3], attempts))
            break
    return applied
