"""What the in-process benches serve and send: one small valid image, one Pod review."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from webhook.registry import mediatypes as mt

CONFIG = json.dumps(
    {
        "architecture": "amd64",
        "os": "linux",
        "config": {"User": "65532", "Entrypoint": ["/app"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]},
    }
).encode()
CONFIG_DIGEST = "sha256:" + hashlib.sha256(CONFIG).hexdigest()
LAYER = {
    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
    "digest": "sha256:" + "2" * 64,
    "size": 1000,
}
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": CONFIG_DIGEST, "size": len(CONFIG)},
        "layers": [LAYER],
    }
).encode()


def review(container: dict[str, Any]) -> dict[str, Any]:
    """A Pod CREATE review in namespace team-a with one container (`name` is set here)."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "team-a",
            "operation": "CREATE",
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": "team-a"},
                "spec": {"containers": [{"name": "app", **container}]},
            },
        },
    }
