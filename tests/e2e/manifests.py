"""Kubernetes objects as a user writes them (before defaulting), for e2e tests and the demo."""

from __future__ import annotations

from typing import Any


def pod(name: str, image: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": image}], **spec},
    }


def deployment(name: str, image: str, replicas: int = 1) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def image_rebuild(name: str, source: str, target: str) -> dict[str, Any]:
    """An ImageRebuild as a user writes it: rebuild ``source`` into ``target`` (a repository)."""
    return {
        "apiVersion": "imagegate.dev/v1alpha1",
        "kind": "ImageRebuild",
        "metadata": {"name": name},
        "spec": {"source": source, "targetRepository": target},
    }
