"""Writing imagegate's own objects: ImageRebuild status, and ImageRebuilds the operator creates."""

from __future__ import annotations

from typing import Any

from webhook.errors import ClusterConflict
from webhook.k8s.calls import call
from webhook.k8s.cluster import GROUP, VERSION


class ImagegateObjects:
    """CustomObjectsApi calls for imagegate.dev objects, run in threads like the rest of k8s/."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client as k8s

        self._custom = k8s.CustomObjectsApi(api_client)

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        def read() -> Any:
            return self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )

        obj: dict[str, Any] = await call(read, f"read {plural} {namespace}/{name}")
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
        server answers 409 otherwise, raised as `ClusterConflict`): an atomic claim.
        """
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        await call(
            lambda: self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, body
            ),
            f"patch the status of {plural} {namespace}/{name}",
        )

    async def create_if_absent(self, plural: str, namespace: str, body: dict[str, Any]) -> bool:
        """Create the object; False when one with that name exists already (idempotent)."""
        name = body.get("metadata", {}).get("name", "?")
        try:
            await call(
                lambda: self._custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, body
                ),
                f"create {plural} {namespace}/{name}",
            )
        except ClusterConflict:
            return False
        return True
