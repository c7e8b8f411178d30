"""One small valid image and one Pod review, for the in-process benches and the chaos suite."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
CONFIG = json.dumps(
    {
        "architecture": "amd64",
        "os": "linux",
        "config": {"User": "65532", "Entrypoint": ["/app"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]},
    }
).encode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest(config: bytes = CONFIG) -> bytes:
    """An OCI manifest of `config` and one (absent) 1 kB layer."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:" + "2" * 64,
                    "size": 1000,
                }
            ],
        }
    ).encode()


MANIFEST = manifest()


def review(*containers: dict[str, Any], namespace: str = "team-a") -> dict[str, Any]:
    """A Pod CREATE review; containers are named c0, c1, … unless they say otherwise."""
    named = [{"name": f"c{i}", **c} for i, c in enumerate(containers)]
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": namespace},
                "spec": {"containers": named},
            },
        },
    }
