"""Everything imagegate reads from the Kubernetes API, behind one small interface.

The webhook needs namespace labels (policy selectors, the opt-out label), pull secrets (a Pod's
and its ServiceAccount's `imagePullSecrets`), ImagePolicies and ImageRebuilds. The `kubernetes`
client is synchronous, so calls run in a thread; answers are cached for a few seconds because
every admission asks the same questions.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from webhook.caches import BoundedCache, hashed_key
from webhook.errors import ClusterError, ClusterNotFound
from webhook.k8s.calls import call
from webhook.k8s.workloads import PLURALS
from webhook.singleflight import SingleFlight

log = logging.getLogger(__name__)
T = TypeVar("T")

GROUP = "imagegate.dev"
VERSION = "v1alpha1"
DOCKERCONFIGJSON = "kubernetes.io/dockerconfigjson"
DOCKERCFG = "kubernetes.io/dockercfg"
# Lookups made while an admission waits: a slow API server must not eat the webhook's budget
# (the answer then comes from onError and the cache, not from the API server's timeout).
LOOKUP_TIMEOUT = 2.0
# Byte budget of the lookup cache (`webhook.caches.BoundedCache`): labels, pull secrets, owners.
CLUSTER_CACHE_BYTES = 8 * 1024 * 1024
_MISSING: Any = object()  # a cached None is an answer (a missing pull secret)


@dataclass(frozen=True)
class PullSecret:
    """A pull secret's docker config payload, with where it came from (for messages)."""

    namespace: str
    name: str
    payload: bytes
    legacy: bool = False


class ClusterReader(Protocol):
    async def namespace_labels(self, namespace: str) -> dict[str, str]: ...

    async def service_account_pull_secret_names(
        self, namespace: str, service_account: str
    ) -> list[str]: ...

    async def pull_secrets(self, namespace: str, names: list[str]) -> list[PullSecret]: ...

    async def list_objects(self, plural: str) -> list[dict[str, Any]]: ...

    async def controller_of(self, namespace: str, ref: dict[str, Any]) -> dict[str, Any] | None: ...


class NoCluster:
    """Used when imagegate runs without a Kubernetes API (tests, `serve` on a laptop)."""

    async def namespace_labels(self, namespace: str) -> dict[str, str]:
        return {}

    async def service_account_pull_secret_names(
        self, namespace: str, service_account: str
    ) -> list[str]:
        return []

    async def pull_secrets(self, namespace: str, names: list[str]) -> list[PullSecret]:
        return []

    async def list_objects(self, plural: str) -> list[dict[str, Any]]:
        return []

    async def controller_of(self, namespace: str, ref: dict[str, Any]) -> dict[str, Any] | None:
        return None

    async def list_all(
        self, api_version: str, plural: str, page_size: int = 500
    ) -> list[dict[str, Any]]:
        return []

    async def namespace_labels_all(
        self, include_terminating: bool = False
    ) -> dict[str, dict[str, str]]:
        return {}


class KubernetesCluster:
    """ClusterReader on the `kubernetes` client, from in-cluster config or a kubeconfig."""

    def __init__(self, api_client: Any, cache_seconds: float = 10.0) -> None:
        from kubernetes import client as k8s

        self._core = k8s.CoreV1Api(api_client)
        self._custom = k8s.CustomObjectsApi(api_client)
        self._api_client = api_client
        # Keys are `hashed_key`s of the lookup: names come from the objects under review.
        self._cache: BoundedCache[str, Any] = BoundedCache(CLUSTER_CACHE_BYTES, ttl=cache_seconds)
        self._flights: SingleFlight[tuple[str, ...]] = SingleFlight()

    @classmethod
    def connect(
        cls, kubeconfig: str | None = None, cache_seconds: float = 10.0
    ) -> KubernetesCluster:
        """In-cluster config when running in a Pod, else the kubeconfig (KUBECONFIG/~/.kube)."""
        from kubernetes import client as k8s
        from kubernetes import config

        configuration = k8s.Configuration()
        try:
            if kubeconfig is None:
                try:
                    config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                except config.ConfigException:
                    config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=kubeconfig, client_configuration=configuration
                )
        except (config.ConfigException, OSError) as err:
            raise ClusterError(f"cannot configure the Kubernetes client: {err}") from None
        return cls(k8s.ApiClient(configuration), cache_seconds)

    def close(self) -> None:
        self._api_client.close()

    async def namespace_labels(self, namespace: str) -> dict[str, str]:
        def read() -> dict[str, str]:
            ns = self._core.read_namespace(namespace, _request_timeout=LOOKUP_TIMEOUT)
            return dict((ns.metadata.labels if ns.metadata else None) or {})

        return await self._cached(("ns", namespace), read, f"read namespace {namespace}")

    async def service_account_pull_secret_names(
        self, namespace: str, service_account: str
    ) -> list[str]:
        def read() -> list[str]:
            sa = self._core.read_namespaced_service_account(
                service_account, namespace, _request_timeout=LOOKUP_TIMEOUT
            )
            return [ref.name for ref in (sa.image_pull_secrets or []) if ref.name]

        where = f"read serviceaccount {namespace}/{service_account}"
        return await self._cached(("sa", namespace, service_account), read, where)

    async def pull_secrets(self, namespace: str, names: list[str]) -> list[PullSecret]:
        """The named pull secrets that exist and hold a docker config, read concurrently."""
        found = await asyncio.gather(*(self._pull_secret(namespace, name) for name in names))
        return [secret for secret in found if secret is not None]

    async def _pull_secret(self, namespace: str, name: str) -> PullSecret | None:
        def read() -> PullSecret | None:
            secret = self._core.read_namespaced_secret(
                name, namespace, _request_timeout=LOOKUP_TIMEOUT
            )
            data = secret.data or {}
            if secret.type == DOCKERCONFIGJSON and ".dockerconfigjson" in data:
                payload = base64.b64decode(data[".dockerconfigjson"])
                return PullSecret(namespace, name, payload)
            if secret.type == DOCKERCFG and ".dockercfg" in data:
                return PullSecret(namespace, name, base64.b64decode(data[".dockercfg"]), True)
            log.warning(
                "pull secret is not a docker config",
                extra={"secret": f"{namespace}/{name}", "type": secret.type},
            )
            return None

        try:
            return await self._cached(
                ("secret", namespace, name), read, f"read secret {namespace}/{name}"
            )
        except ClusterError as err:
            # The kubelet ignores a missing pull secret too; say so in the logs and go on. A
            # missing one is remembered as missing, so a Pod naming hundreds costs one read each.
            if isinstance(err, ClusterNotFound):
                self._cache[hashed_key("secret", namespace, name)] = None
            log.warning("pull secret unavailable", extra={"error": str(err)})
            return None

    async def list_objects(self, plural: str) -> list[dict[str, Any]]:
        """Every imagegate.dev object of a kind (cluster-scoped, or in all namespaces)."""

        def read() -> list[dict[str, Any]]:
            answer: Any = self._custom.list_cluster_custom_object(GROUP, VERSION, plural)
            return list(answer.get("items", []))

        return await call(read, f"list {plural}.{GROUP}")

    async def _cached(self, key: tuple[str, ...], read: Callable[[], T], what: str) -> T:
        value: T = self._cache.get(hashed_key(*key), _MISSING)
        if value is not _MISSING:
            return value

        async def fetch() -> T:
            fresh = await call(read, what)
            self._cache[hashed_key(*key)] = fresh
            return fresh

        return await self._flights.do(key, fetch)

    # ---- inventory for the operator's background scan (appended; see webhook.k8s.workloads)

    @property
    def api_client(self) -> Any:
        """The underlying `kubernetes.client.ApiClient` (for writers such as ReportWriter)."""
        return self._api_client

    async def list_all(
        self, api_version: str, plural: str, page_size: int = 500
    ) -> list[dict[str, Any]]:
        """Every object of a built-in resource in all namespaces, as plain dicts.

        Paged (`limit`/`continue`) so that a big cluster never answers one huge list; the
        raw JSON is kept (no model deserialisation: it is the slow part of the client) and
        each item gets its `apiVersion` and `kind`, which list items omit. Not cached.
        """
        group = "apis" if "/" in api_version else "api"  # core/v1 lives under /api
        path = f"/{group}/{api_version}/{plural}"

        def read() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            token: str | None = None
            while True:
                query: list[tuple[str, Any]] = [("limit", page_size)]
                if token:
                    query.append(("continue", token))
                page = self._get_json(path, query)
                kind = str(page.get("kind", ""))
                item_kind = kind[: -len("List")] if kind.endswith("List") else kind
                for item in page.get("items") or []:
                    item.setdefault("apiVersion", api_version)
                    item.setdefault("kind", item_kind)
                    items.append(item)
                token = (page.get("metadata") or {}).get("continue") or None
                if not token:
                    return items

        return await call(read, f"list {plural} ({api_version}) in all namespaces")

    async def get_path(self, path: str, what: str) -> dict[str, Any]:
        """One object by its API path (e.g. `/apis/kopf.dev/v1/clusterkopfpeerings/x`), fresh."""
        return await call(lambda: self._get_json(path, [], LOOKUP_TIMEOUT), what)

    async def controller_of(self, namespace: str, ref: dict[str, Any]) -> dict[str, Any] | None:
        """The object a controller ownerReference of an object in `namespace` names, as plain
        JSON; None when there is none with that uid (the reference is a false claim)."""
        api_version, kind, name = (str(ref.get(k) or "") for k in ("apiVersion", "kind", "name"))
        plural = PLURALS.get(kind)
        if plural is None or not api_version or not name:
            return None
        group = "apis" if "/" in api_version else "api"
        path = f"/{group}/{api_version}/namespaces/{namespace}/{plural}/{name}"

        def read() -> dict[str, Any] | None:
            obj = self._get_json(path, [], LOOKUP_TIMEOUT)
            if (obj.get("metadata") or {}).get("uid") != ref.get("uid"):
                return None
            obj.setdefault("apiVersion", api_version)
            obj.setdefault("kind", kind)
            return obj

        try:
            return await self._cached(("owner", namespace, path), read, f"read {kind} {name}")
        except ClusterNotFound:
            return None

    def _get_json(
        self, path: str, query: list[tuple[str, Any]], timeout: float | None = None
    ) -> dict[str, Any]:
        """One GET answered as raw JSON (no model deserialisation: it is the slow part)."""
        import json

        from kubernetes.client.exceptions import ApiException

        request = self._api_client.param_serialize(
            method="GET",
            resource_path=path,
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self._api_client.call_api(*request, _request_timeout=timeout)
        data = response.read()
        if not 200 <= response.status < 300:
            raise ApiException(response.status, response.reason, body=data.decode())
        answer: dict[str, Any] = json.loads(data)
        return answer

    async def namespace_labels_all(
        self, include_terminating: bool = False
    ) -> dict[str, dict[str, str]]:
        """Labels of every namespace in one list call (fills the `namespace_labels` cache).

        Terminating namespaces are left out unless asked for: their workloads are going away
        and nothing (reports, events) can be created in them any more.
        """
        namespaces = await self.list_all("v1", "namespaces")
        labels: dict[str, dict[str, str]] = {}
        for ns in namespaces:
            meta = ns.get("metadata") or {}
            name = str(meta.get("name", ""))
            own = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
            self._cache[hashed_key("ns", name)] = own
            if include_terminating or (ns.get("status") or {}).get("phase") != "Terminating":
                labels[name] = own
        return labels
