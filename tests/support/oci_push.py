"""Push small images (one layer, a config, a manifest; or an index of them) over HTTP.

For tests that need fresh, never-seen images in a registry that may ask for a token or speak
HTTPS only, without the Docker engine::

    pusher = Pusher(reg.url, authorization=lambda repo: "Bearer …", verify=ca_pem)
    ref = pusher.image("cold/a", "1")               # "HOST:PORT/cold/a:1", a unique image
    ref = pusher.index("cold/multi", "1", ["amd64", "arm64"])
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

__all__ = ["Pusher"]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Pusher:
    """Pushes to the registry at `url` (its host is what references name)."""

    def __init__(
        self,
        url: str,
        *,
        authorization: Callable[[str], str] | None = None,
        verify: Path | bool = True,
        host: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.host = host or httpx.URL(url).netloc.decode()
        self._authorization = authorization
        trust = (
            ssl.create_default_context(cafile=str(verify)) if isinstance(verify, Path) else verify
        )
        self._http = httpx.Client(verify=trust)

    def close(self) -> None:
        self._http.close()

    def _headers(self, repo: str) -> dict[str, str]:
        return {"Authorization": self._authorization(repo)} if self._authorization else {}

    def blob(self, repo: str, data: bytes) -> str:
        digest = _digest(data)
        start = self._http.post(f"{self.url}/v2/{repo}/blobs/uploads/", headers=self._headers(repo))
        start.raise_for_status()
        location = httpx.URL(self.url).join(start.headers["location"])
        put = self._http.put(
            location.copy_merge_params({"digest": digest}),
            content=data,
            headers={**self._headers(repo), "Content-Type": "application/octet-stream"},
        )
        put.raise_for_status()
        return digest

    def manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> str:
        put = self._http.put(
            f"{self.url}/v2/{repo}/manifests/{reference}",
            content=body,
            headers={**self._headers(repo), "Content-Type": media_type},
        )
        put.raise_for_status()
        return _digest(body)

    def _platform_manifest(self, repo: str, arch: str, user: str) -> tuple[bytes, int]:
        layer = os.urandom(64)
        layer_digest = self.blob(repo, layer)
        config = json.dumps(
            {
                "architecture": arch,
                "os": "linux",
                "config": {
                    "User": user,
                    "Entrypoint": ["/app"],
                    "Labels": {"unique": uuid.uuid4().hex},
                },
                "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
            }
        ).encode()
        config_digest = self.blob(repo, config)
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
            }
        ).encode()
        return body, len(body)

    def image(self, repo: str, tag: str, *, arch: str = "amd64", user: str = "65532") -> str:
        """A new single-platform image (unique config) tagged `tag`: its reference by tag."""
        body, _ = self._platform_manifest(repo, arch, user)
        self.manifest(repo, tag, body, OCI_MANIFEST)
        return f"{self.host}/{repo}:{tag}"

    def digest_of(self, repo: str, tag: str) -> str:
        got = self._http.get(
            f"{self.url}/v2/{repo}/manifests/{tag}",
            headers={**self._headers(repo), "Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"},
        )
        got.raise_for_status()
        return _digest(got.content)

    def index(self, repo: str, tag: str, arches: list[str], *, user: str = "65532") -> str:
        """A new multi-platform index of `arches` tagged `tag`: its reference by tag."""
        entries = []
        for arch in arches:
            body, size = self._platform_manifest(repo, arch, user)
            digest = self.manifest(repo, _digest(body), body, OCI_MANIFEST)
            entries.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": size,
                    "platform": {"os": "linux", "architecture": arch},
                }
            )
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        ).encode()
        self.manifest(repo, tag, index, OCI_INDEX)
        return f"{self.host}/{repo}:{tag}"
