"""Helm chart test harness: a real `helm` binary and rendered manifests.

``helm`` (the session fixture of ``tests/conftest.py``) is the pinned binary that
``tests.support.tools.find_helm`` finds. Missing: the tests skip locally and fail under
``CI=true`` (``missing_part``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import CHART

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KUBE_VERSION = "1.30.0"
NAMESPACE = "imagegate-system"
RELEASE = "ig"
# What the API server serves once the chart's CRDs exist (every `helm upgrade`): `render(...,
# served=True)` passes them as --api-versions, as Helm's Capabilities would have them.
SERVED_CRDS = ("imagegate.dev/v1alpha1/ImagePolicy", "kopf.dev/v1/ClusterKopfPeering")


@dataclass(frozen=True)
class Rendered:
    """`helm template` output: every document, with lookups by kind and name."""

    docs: list[dict[str, Any]]

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d.get("kind") == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.kinds(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def pod_specs(self) -> dict[str, dict[str, Any]]:
        """`Kind/name` → pod spec, for Deployments, Jobs (hooks) and bare Pods (helm test)."""
        specs = {
            f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"]
            for d in self.kinds("Deployment") + self.kinds("Job")
        }
        specs |= {f"Pod/{d['metadata']['name']}": d["spec"] for d in self.kinds("Pod")}
        return specs


class HelmError(AssertionError):
    def __init__(self, args: Sequence[str], proc: subprocess.CompletedProcess[str]) -> None:
        super().__init__(f"helm {' '.join(args)} → exit {proc.returncode}\n{proc.stderr}")
        self.stderr = proc.stderr


@pytest.fixture(scope="session")
def run_helm(helm: str) -> Callable[..., str]:
    def run(*args: str) -> str:
        proc = subprocess.run(
            [helm, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if proc.returncode != 0:
            raise HelmError(args, proc)
        return proc.stdout

    return run


@pytest.fixture(scope="session")
def render(run_helm: Callable[..., str]) -> Callable[..., Rendered]:
    """`render(*value_files, set=[...], namespace=..., served=...)` → `Rendered` (helm
    template; `served`: as on an upgrade, with the chart's CRDs already in the cluster)."""

    def _render(
        *value_files: Path,
        set: Sequence[str] = (),  # mirrors helm's --set
        namespace: str = NAMESPACE,
        include_crds: bool = False,
        served: bool = False,
        kube_version: str = KUBE_VERSION,
    ) -> Rendered:
        args = ["template", RELEASE, str(CHART), "--namespace", namespace]
        args += ["--kube-version", kube_version]
        if served:
            args += [a for v in SERVED_CRDS for a in ("--api-versions", v)]
        if include_crds:
            args.append("--include-crds")
        for f in value_files:
            args += ["--values", str(f)]
        for s in set:
            args += ["--set", s]
        out = run_helm(*args)
        return Rendered([d for d in yaml.safe_load_all(out) if d])

    return _render
