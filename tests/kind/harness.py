"""A small harness for the in-cluster suite: kubectl and helm on the kind cluster, bounded waits.

Every call names the kube context explicitly (``--context`` / ``--kube-context``) and goes
through one kubeconfig file holding that context alone, so nothing here can touch another
cluster. Waits are bounded and fail with what a person would look at next: ``kubectl describe``,
the container logs and the namespace's events.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

T = TypeVar("T")

SYSTEM = "imagegate-system"
RELEASE = "imagegate"


class KubectlError(RuntimeError):
    """kubectl exited non-zero (the message has the command and its stderr)."""


@dataclass
class Kind:
    """The kind cluster: ``context``, a ``kubeconfig`` holding only it, and its registry."""

    context: str
    kubeconfig: Path
    registry: str  # as the host (and Pods, through containerd's hosts.toml) name it
    registry_internal: str  # as containers on the kind network reach it
    helm_bin: str

    # ---- kubectl -------------------------------------------------------------------------

    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        cmd = ["kubectl", "--kubeconfig", str(self.kubeconfig), "--context", self.context, *args]
        done = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise KubectlError(
                f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stderr}"
            )
        return done

    def apply(
        self, manifest: dict[str, Any], namespace: str | None = None, *extra: str
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl apply`` as a user runs it: the answer (stderr has warnings and denials)."""
        where = ["-n", namespace] if namespace else []
        return self.kubectl(
            "apply", *where, "-f", "-", *extra, check=False, stdin=yaml.safe_dump(manifest)
        )

    def create(
        self, manifest: dict[str, Any], namespace: str, *extra: str
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl create`` (works with generateName, unlike apply)."""
        return self.kubectl(
            "create", "-n", namespace, "-f", "-", *extra, check=False,
            stdin=yaml.safe_dump(manifest),
        )  # fmt: skip

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        where = ["-n", namespace] if namespace else []
        return dict(json.loads(self.kubectl("get", kind, name, *where, "-o", "json").stdout))

    def items(
        self, kind: str, namespace: str | None = None, selector: str | None = None
    ) -> list[dict[str, Any]]:
        where = ["-n", namespace] if namespace else ["-A"]
        labels = ["-l", selector] if selector else []
        got = self.kubectl("get", kind, *where, *labels, "-o", "json")
        return list(json.loads(got.stdout).get("items", []))

    def events(self, namespace: str, involved: str | None = None) -> list[dict[str, Any]]:
        fields = ["--field-selector", f"involvedObject.name={involved}"] if involved else []
        got = self.kubectl("get", "events", "-n", namespace, *fields, "-o", "json")
        return list(json.loads(got.stdout).get("items", []))

    def exec(self, pod: str, namespace: str, *command: str) -> subprocess.CompletedProcess[str]:
        return self.kubectl("exec", "-n", namespace, pod, "--", *command, check=False)

    def logs(self, pod: str, namespace: str, *extra: str) -> str:
        got = self.kubectl("logs", "-n", namespace, pod, "--all-containers", *extra, check=False)
        return got.stdout + got.stderr

    def describe(self, kind: str, name: str, namespace: str | None = None) -> str:
        where = ["-n", namespace] if namespace else []
        got = self.kubectl("describe", kind, name, *where, check=False)
        return got.stdout + got.stderr

    def diagnose(self, namespace: str, selector: str | None = None) -> str:
        """What to read when something in ``namespace`` did not happen: pods, logs, events."""
        labels = ["-l", selector] if selector else []
        parts = [self.kubectl("get", "pods,replicasets", "-n", namespace, "-o", "wide",
                              *labels, check=False).stdout]  # fmt: skip
        for pod in self.items("pods", namespace, selector):
            name = pod["metadata"]["name"]
            parts.append(self.describe("pod", name, namespace))
            parts.append(f"--- logs of {name}:\n{self.logs(name, namespace, '--tail=60')}")
        events = self.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp",
                              check=False).stdout  # fmt: skip
        parts.append(f"--- events in {namespace}:\n{events}")
        return "\n".join(parts)

    # ---- helm ----------------------------------------------------------------------------

    def helm(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """helm with this cluster's context; a failure fails the test with helm's stderr."""
        cmd = [self.helm_bin, *args, "--kubeconfig", str(self.kubeconfig),
               "--kube-context", self.context]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            pytest.fail(
                f"helm {' '.join(args[:2])} failed ({done.returncode}):\n{done.stdout}\n"
                f"{done.stderr}\n{self.diagnose(SYSTEM)}",
                pytrace=False,
            )
        return done

    # ---- waiting -------------------------------------------------------------------------

    def wait_for(
        self,
        what: str,
        probe: Callable[[], T | None],
        timeout: float,
        diagnose: Callable[[], str] | None = None,
        interval: float = 1.0,
    ) -> T:
        """Call ``probe`` until it returns something other than None/False; fail after
        ``timeout`` seconds with ``what`` and the diagnosis."""
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            try:
                got = probe()
            except KubectlError as e:  # not there yet (NotFound) or a transient API error
                got, last_error = None, str(e)
            if got is not None and got is not False:
                return got
            if time.monotonic() > deadline:
                details = (f"last error: {last_error}\n" if last_error else "") + (
                    diagnose() if diagnose else ""
                )
                pytest.fail(
                    f"timed out after {timeout:.0f}s waiting for {what}\n{details}", pytrace=False
                )
            time.sleep(interval)

    def wait_pod(self, namespace: str, name: str, timeout: float = 120) -> dict[str, Any]:
        """Wait until the Pod is Running and Ready; return it."""

        def ready() -> dict[str, Any] | None:
            pod = self.get("pod", name, namespace)
            return pod if _ready(pod) else None

        return self.wait_for(
            f"Pod {namespace}/{name} to be Ready", ready, timeout,
            lambda: self.diagnose(namespace),
        )  # fmt: skip

    def wait_selector_ready(
        self, namespace: str, selector: str, count: int, timeout: float = 180
    ) -> list[dict[str, Any]]:
        """Wait until exactly ``count`` Pods match ``selector`` and all are Ready (none
        terminating); return them."""

        def ready() -> list[dict[str, Any]] | None:
            pods = [
                p
                for p in self.items("pods", namespace, selector)
                if not p["metadata"].get("deletionTimestamp")
            ]
            return pods if len(pods) == count and all(_ready(p) for p in pods) else None

        return self.wait_for(
            f"{count} Ready Pod(s) {selector} in {namespace}", ready, timeout,
            lambda: self.diagnose(namespace, selector),
        )  # fmt: skip

    def wait_gone(self, namespace: str, selector: str, timeout: float = 90) -> None:
        self.wait_for(
            f"no Pods {selector} in {namespace}",
            lambda: not self.items("pods", namespace, selector),
            timeout,
            lambda: self.diagnose(namespace, selector),
        )

    def wait_rebuilt(self, namespace: str, name: str, timeout: float = 180) -> dict[str, Any]:
        """Wait until the ImageRebuild finished (Succeeded, PartiallyFixed, Failed, Unfixable);
        its status."""

        def finished() -> dict[str, Any] | None:
            status = self.get("imagerebuild", name, namespace).get("status") or {}
            return (
                status
                if status.get("phase") in ("Succeeded", "PartiallyFixed", "Failed", "Unfixable")
                else None
            )

        def diagnosis() -> str:
            got = self.kubectl("get", "imagerebuild", name, "-n", namespace, "-o", "yaml",
                               check=False)  # fmt: skip
            operator = self.diagnose(SYSTEM, "app.kubernetes.io/component=operator")
            return f"{got.stdout}\n{operator}"

        return self.wait_for(f"ImageRebuild {namespace}/{name} to finish", finished, timeout,
                             diagnosis)  # fmt: skip


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    return status.get("phase") == "Running" and conditions.get("Ready") == "True"


def container_state(pod: dict[str, Any]) -> dict[str, Any]:
    """The first container's state (``{"waiting": {"reason", "message"}}``, ``running`` …)."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return dict(statuses[0].get("state") or {}) if statuses else {}


def restarts(pod: dict[str, Any]) -> dict[str, int]:
    """Restart count of every container of the Pod, by name."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return {s["name"]: int(s.get("restartCount", 0)) for s in statuses}
