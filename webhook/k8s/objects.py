"""Writing imagegate's own objects: ImageRebuild status, and ImageRebuilds the operator creates."""

from __future__ import annotations

import asyncio
from typing import Any

from webhook.k8s.cluster import GROUP, VERSION, ClusterError


class Conflict(ClusterError):
    """The object changed since it was read (HTTP 409 on a resourceVersion precondition)."""


class ImagegateObjects:
    """CustomObjectsApi calls for imagegate.dev objects, run in threads like the rest of k8s/."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client as k8s

        self._custom = k8s.CustomObjectsApi(api_client)

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = await self._call(
            lambda: self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            ),
            f"{plural} {namespace}/{name}",
        )
        return obj

    async def patch_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> None:
        """Merge-patch `status` through the status subresource (the spec is never touched).

        With `resource_version` the patch only applies to that version of the object (the API
        server answers 409 otherwise, raised as Conflict): an atomic claim.
        """
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        await self._call(
            lambda: self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, body
            ),
            f"{plural} {namespace}/{name} status",
        )

    async def create_if_absent(self, plural: str, namespace: str, body: dict[str, Any]) -> bool:
        """Create the object; False when one with that name exists already (idempotent)."""
        from kubernetes.client.exceptions import ApiException

        def create() -> bool:
            try:
                self._custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, body
                )
            except ApiException as err:
                if err.status == 409:
                    return False
                raise
            return True

        name = body.get("metadata", {}).get("name", "?")
        created: bool = await self._call(create, f"{plural} {namespace}/{name}")
        return created

    async def _call(self, fn: Any, what: str) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return await asyncio.to_thread(fn)
        except ApiException as err:
            if err.status == 409:
                raise Conflict(f"{what} changed meanwhile") from None
            raise ClusterError(f"cannot access {what}: {err.status} {err.reason}") from None
        except (HTTPError, OSError) as err:
            raise ClusterError(f"cannot reach the Kubernetes API for {what}: {err}") from None
