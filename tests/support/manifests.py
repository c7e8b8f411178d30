"""Kubernetes objects as a user writes them (before defaulting), for e2e and kind tests and the
demo."""

from __future__ import annotations

from typing import Any

IMAGEGATE_V1ALPHA1 = "imagegate.dev/v1alpha1"


def manifest(api_version: str, kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """An object ``kind``/``name`` with ``spec``."""
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, "spec": spec}


def pod(name: str, image: str, **spec: Any) -> dict[str, Any]:
    return manifest("v1", "Pod", name, {"containers": [{"name": "app", "image": image}], **spec})


def deployment(name: str, image: str, replicas: int = 1) -> dict[str, Any]:
    labels = {"app": name}
    template = {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }
    spec = {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template}
    return manifest("apps/v1", "Deployment", name, spec)


def image_rebuild(name: str, source: str, target: str) -> dict[str, Any]:
    """An ImageRebuild as a user writes it: rebuild ``source`` into ``target`` (a repository)."""
    spec = {"source": source, "targetRepository": target}
    return manifest(IMAGEGATE_V1ALPHA1, "ImageRebuild", name, spec)


def image_policy(
    name: str, match: dict[str, Any], base: str, mode: str = "audit", **spec: Any
) -> dict[str, Any]:
    """An ImagePolicy in ``mode`` for the namespaces ``match`` selects, approving ``base``."""
    rules = {"allowedBases": {"references": [base]}}
    return manifest(
        IMAGEGATE_V1ALPHA1,
        "ImagePolicy",
        name,
        {"mode": mode, "match": match, "rules": rules, **spec},
    )
