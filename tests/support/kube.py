"""Helpers for any cluster the tests reach with kubectl (the e2e control plane, kind)."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from typing import Protocol


class Kubectl(Protocol):
    def kubectl(self, *args: str, check: bool = ...) -> subprocess.CompletedProcess[str]: ...


@contextlib.contextmanager
def fresh_namespace(
    cluster: Kubectl, prefix: str, labels: Mapping[str, str] | None = None
) -> Iterator[str]:
    """A new namespace ``<prefix>-<random>`` with ``labels``; deleted afterwards without waiting
    (where no controller-manager runs it stays ``Terminating`` in etcd: harmless)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    try:
        if labels:
            cluster.kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in labels.items()))
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
