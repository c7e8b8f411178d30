"""Where the webhook gets its ImagePolicies: files, or ImagePolicy objects in the cluster.

`ready` turns true once a valid set of policies is loaded; `/readyz` reports it. Invalid
objects in the cluster are skipped and named in `problems` (the CRD schema refuses most of
them before they get here).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from webhook.errors import ImagegateError
from webhook.k8s.cluster import ClusterReader
from webhook.k8s.poll import Poller
from webhook.policy.loader import load_policies, parse_policy
from webhook.policy.model import ImagePolicy

log = logging.getLogger(__name__)


class PolicyStore(Protocol):
    @property
    def policies(self) -> list[ImagePolicy]: ...

    @property
    def ready(self) -> bool: ...

    @property
    def problems(self) -> list[str]: ...

    def start(self) -> None: ...

    async def stop(self) -> None: ...


class StaticPolicies:
    """Policies loaded once from a file or directory; invalid ones stop the server at start."""

    def __init__(self, policies: list[ImagePolicy]) -> None:
        self._policies = policies

    @classmethod
    def from_path(cls, path: Path) -> StaticPolicies:
        return cls(load_policies(path))

    @property
    def policies(self) -> list[ImagePolicy]:
        return self._policies

    @property
    def ready(self) -> bool:
        return True

    @property
    def problems(self) -> list[str]:
        return []

    def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class ClusterPolicies:
    """ImagePolicy objects, re-listed every `interval` seconds."""

    def __init__(self, cluster: ClusterReader, interval: float) -> None:
        self._cluster = cluster
        self._policies: list[ImagePolicy] = []
        self._problems: list[str] = []
        self._ready = False
        self._poller = Poller(self.refresh, interval, "ImagePolicies")

    @property
    def policies(self) -> list[ImagePolicy]:
        return self._policies

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def problems(self) -> list[str]:
        return self._problems

    async def refresh(self) -> None:
        objects = await self._cluster.list_objects("imagepolicies")
        policies: list[ImagePolicy] = []
        problems: list[str] = []
        for obj in objects:
            name = (obj.get("metadata") or {}).get("name", "?")
            try:
                policies.append(parse_policy(obj, f"ImagePolicy {name}"))
            except ImagegateError as err:
                problems.append(str(err))
        if problems and problems != self._problems:
            log.error("invalid ImagePolicies skipped", extra={"problems": problems})
        if policies != self._policies:  # unchanged objects keep the checker's verdict cache warm
            self._policies = policies
        self._problems, self._ready = problems, True

    def start(self) -> None:
        self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()
