"""The Kubernetes side of certificate rotation: the one Secret and the webhook configurations.

`CertStore` reads and writes the Secret with optimistic concurrency (create fails with a
`ClusterConflict` when another replica created it first; an update names the resourceVersion it
read and fails the same way when another replica wrote in between), so the caller re-reads and
decides again: replicas starting together converge on one CA. `inject_ca_bundle` sets
`clientConfig.caBundle` of every webhook of the named Validating/MutatingWebhookConfigurations
with a JSON patch that tests each webhook's name first (a configuration rewritten meanwhile makes
the patch fail instead of writing the bundle into the wrong webhook).
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webhook.errors import ClusterForbidden, ClusterNotFound
from webhook.k8s.calls import call

log = logging.getLogger(__name__)

TIMEOUT = 10.0
KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
MANAGED_BY = {"app.kubernetes.io/managed-by": "imagegate"}


@dataclass(frozen=True)
class StoredSecret:
    """What the Secret holds (decoded) and the resourceVersion an update must name."""

    data: dict[str, bytes]
    resource_version: str


class CertStore:
    """The certificate Secret `namespace/name` and the webhook configurations to keep current."""

    def __init__(self, api_client: Any, namespace: str, name: str) -> None:
        from kubernetes import client as k8s

        # Typed as Any: the client's own types do not describe plain-dict bodies or JSON patches.
        self._core: Any = k8s.CoreV1Api(api_client)
        self._admission: Any = k8s.AdmissionregistrationV1Api(api_client)
        self.namespace = namespace
        self.name = name

    @property
    def where(self) -> str:
        return f"Secret {self.namespace}/{self.name}"

    async def read(self) -> StoredSecret | None:
        """The Secret, or None when it does not exist."""

        def read() -> Any:
            return self._core.read_namespaced_secret(
                self.name, self.namespace, _request_timeout=TIMEOUT
            )

        try:
            secret = await call(read, f"read {self.where}")
        except ClusterNotFound:
            return None
        return _stored(secret)

    async def create(self, data: Mapping[str, bytes]) -> StoredSecret:
        """Create the Secret; `ClusterConflict` when it exists already (another replica won)."""
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": MANAGED_BY},
            "type": "kubernetes.io/tls",
            "data": _encoded(data),
        }

        def create() -> Any:
            return self._core.create_namespaced_secret(
                self.namespace, body, _request_timeout=TIMEOUT
            )

        return _stored(await call(create, f"create {self.where}"))

    async def update(self, data: Mapping[str, bytes], resource_version: str) -> StoredSecret:
        """Write `data` into the Secret as read at `resource_version` (other keys, labels and
        its type are kept); `ClusterConflict` when it changed since."""

        def update() -> Any:
            secret = self._core.read_namespaced_secret(
                self.name, self.namespace, _request_timeout=TIMEOUT
            )
            secret.metadata.resource_version = resource_version
            secret.data = {**(secret.data or {}), **_encoded(data)}
            return self._core.replace_namespaced_secret(
                self.name, self.namespace, secret, _request_timeout=TIMEOUT
            )

        return _stored(await call(update, f"update {self.where}"))

    async def inject_ca_bundle(self, names: Sequence[str], bundle: bytes) -> list[str]:
        """Set every webhook's caBundle to `bundle` in the configurations called `names` (each
        looked up as Validating and as Mutating). Returns the ones patched ("Kind/name"); those
        already current are left alone. `ClusterNotFound` when a name exists as neither kind."""
        wanted = base64.b64encode(bundle).decode()
        patched: list[str] = []
        for name in names:
            found = False
            for kind in KINDS:
                outcome = await self._inject(kind, name, wanted)
                found = found or outcome is not None
                if outcome:
                    patched.append(f"{kind}/{name}")
            if not found:
                raise ClusterNotFound(
                    f"cannot keep the caBundle of webhook configuration {name!r} current: no "
                    f"ValidatingWebhookConfiguration or MutatingWebhookConfiguration has that name"
                )
        return patched

    async def _inject(self, kind: str, name: str, wanted: str) -> bool | None:
        """True: patched; False: already current; None: no such configuration."""
        validating = kind == KINDS[0]
        read_fn = (
            self._admission.read_validating_webhook_configuration
            if validating
            else self._admission.read_mutating_webhook_configuration
        )
        patch_fn = (
            self._admission.patch_validating_webhook_configuration
            if validating
            else self._admission.patch_mutating_webhook_configuration
        )
        try:
            config = await call(
                lambda: read_fn(name, _request_timeout=TIMEOUT), f"read {kind} {name}"
            )
        except ClusterNotFound:
            return None
        except ClusterForbidden as err:
            raise ClusterForbidden(
                f"{err} (the webhook's ServiceAccount needs get and patch on {kind.lower()}s "
                f"with resourceNames [{name}])",
                err.status,
            ) from None
        webhooks = config.webhooks or []
        operations: list[dict[str, Any]] = []
        for index, hook in enumerate(webhooks):
            if (hook.client_config.ca_bundle or "") == wanted:
                continue
            operations += [
                {"op": "test", "path": f"/webhooks/{index}/name", "value": hook.name},
                {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": wanted},
            ]
        if not operations:
            return False
        await call(
            lambda: patch_fn(name, operations, _request_timeout=TIMEOUT),
            f"patch the caBundle of {kind} {name}",
        )
        return True

    async def wait_for_change(self, resource_version: str | None, seconds: float) -> bool:
        """Block until the Secret changes after `resource_version` (True) or `seconds`
        pass (False). A watch with a `metadata.name` field selector, so RBAC can restrict it to
        this one Secret with resourceNames.

        A Secret that has not changed for a while has a version older than the API server keeps
        watch history for, and a watch from it is refused at once (410 Gone). That is no
        change: whether it changed is what a list says, and when it did not, the watch goes on
        from the list's own (current) version. (Answering "changed" to every 410 made the
        rotator re-check in a tight loop, a third of a CPU per replica, once the Secret had
        been unchanged for some minutes.)
        """
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        new_watch: Any = watch.Watch
        selector = f"metadata.name={self.name}"

        def wait() -> bool:
            version = resource_version or None
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                stream = new_watch()
                try:
                    for _event in stream.stream(
                        self._core.list_namespaced_secret,
                        self.namespace,
                        field_selector=selector,
                        resource_version=version,
                        timeout_seconds=max(1, int(left)),
                        _request_timeout=left + TIMEOUT,
                    ):
                        return True
                    return False
                except ApiException as err:
                    if err.status != 410:
                        raise
                finally:
                    stream.stop()
                listed = self._core.list_namespaced_secret(
                    self.namespace, field_selector=selector, _request_timeout=TIMEOUT
                )
                now = [str(item.metadata.resource_version) for item in listed.items or []]
                if now != ([resource_version] if resource_version else []):
                    return True
                version = str(listed.metadata.resource_version)
            return False

        return await call(wait, f"watch {self.where}")


def _stored(secret: Any) -> StoredSecret:
    data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
    return StoredSecret(data, str(secret.metadata.resource_version))


def _encoded(data: Mapping[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode() for k, v in data.items()}


def connect_api(kubeconfig: str | None) -> Any:
    """A `kubernetes` ApiClient from in-cluster config or the kubeconfig, for the rotator only
    (its own connection pool, so rotation never waits behind admission lookups)."""
    from webhook.k8s.cluster import KubernetesCluster

    return KubernetesCluster.connect(kubeconfig).api_client
