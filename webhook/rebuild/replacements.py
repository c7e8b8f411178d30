"""The replacement mapping: source image digest → compliant replacement reference.

The operator publishes it through succeeded ImageRebuilds (`status.sourceDigest` →
`status.replacement`); only `Succeeded` ones, whose replacement passed the re-check: a
`PartiallyFixed` replacement still fails a rule, and swapping it in would admit, under the
source's name, an image the policy refuses. A file with the same pairs works too
(`serve --replacements FILE`):

```yaml
replacements:
  - sourceDigest: sha256:…            # the non-compliant image's digest
    replacement: registry/app@sha256:… # what runs instead
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from webhook.errors import ImagegateError, UsageError
from webhook.k8s.cluster import ClusterReader
from webhook.k8s.poll import Poller
from webhook.rebuild.model import Phase
from webhook.registry.reference import Reference


class Replacements:
    """Digest → replacement, refreshed from the cluster when one is given.

    A succeeded ImageRebuild swaps images only in its own namespace (a team's rebuild must not
    rewrite another team's Pods); the file's pairs, set by whoever runs the webhook, apply
    everywhere.
    """

    def __init__(
        self,
        mapping: dict[str, str] | None = None,
        cluster: ClusterReader | None = None,
        interval: float = 5.0,
    ) -> None:
        self._static = dict(mapping or {})
        self._by_namespace: dict[tuple[str, str], str] = {}
        self._cluster = cluster
        self._poller = Poller(self.refresh, interval, "ImageRebuilds") if cluster else None

    def lookup(self, digest: str | None, namespace: str | None = None) -> str | None:
        if not digest:
            return None
        if namespace is not None and (namespace, digest) in self._by_namespace:
            return self._by_namespace[(namespace, digest)]
        return self._static.get(digest)

    async def refresh(self) -> None:
        if self._cluster is None:
            return
        mapping: dict[tuple[str, str], str] = {}
        for obj in await self._cluster.list_objects("imagerebuilds"):
            status: dict[str, Any] = obj.get("status") or {}
            source, replacement = status.get("sourceDigest"), status.get("replacement")
            namespace = (obj.get("metadata") or {}).get("namespace")
            passed = status.get("phase") == Phase.succeeded.value  # never PartiallyFixed
            if passed and source and replacement and namespace:
                mapping[(str(namespace), str(source))] = str(replacement)
        self._by_namespace = mapping

    def start(self) -> None:
        if self._poller is not None:
            self._poller.start()

    async def stop(self) -> None:
        if self._poller is not None:
            await self._poller.stop()


def read_replacements(path: Path) -> dict[str, str]:
    """The `replacements:` file as a digest → pinned reference map; errors name the entry."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise UsageError(f"{path}: cannot read replacements: {err}") from None
    entries = data.get("replacements") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise UsageError(f"{path}: expected a `replacements:` list")
    mapping: dict[str, str] = {}
    for index, entry in enumerate(entries):
        where = f"{path}: replacements[{index}]"
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: expected sourceDigest and replacement")
        mapping[_digest(entry.get("sourceDigest"), where)] = _pinned(
            entry.get("replacement"), where
        )
    return mapping


def _digest(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.startswith("sha256:") or len(value) != 71:
        raise UsageError(f"{where}: sourceDigest must be sha256:<64 hex>, got {value!r}")
    return value


def _pinned(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"{where}: replacement must be a reference, got {value!r}")
    try:
        ref = Reference.parse(value)
    except ImagegateError as err:
        raise UsageError(f"{where}: {err}") from None
    if not ref.pinned:
        raise UsageError(f"{where}: replacement {value!r} must be pinned (repo@sha256:…)")
    return value
