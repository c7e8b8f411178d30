"""Manifest and config media types imagegate reads (DESIGN §4).

Registries pick the manifest format from the Accept header, so we always offer every type we
can read; anything else (schema 1, artifacts) must be refused with a clear message rather than
misread.
"""

from __future__ import annotations

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"

INDEX_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
MANIFEST_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
CONFIG_TYPES = frozenset({DOCKER_CONFIG, OCI_CONFIG})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})

# Indexes first: asking for a tag must give us the multi-arch index so we can pick the platform.
ACCEPT = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))


def normalize(media_type: str | None) -> str:
    """Drop parameters (`; charset=utf-8`) and case, as servers add them freely."""
    if not media_type:
        return ""
    return media_type.split(";", 1)[0].strip().lower()


def is_index(media_type: str | None) -> bool:
    """A multi-platform index (OCI image index or Docker manifest list)."""
    return normalize(media_type) in INDEX_TYPES


def is_manifest(media_type: str | None) -> bool:
    """A single-platform image manifest (OCI or Docker schema 2)."""
    return normalize(media_type) in MANIFEST_TYPES


def is_schema1(media_type: str | None) -> bool:
    """A deprecated Docker schema 1 manifest, which has no config blob we could read."""
    return normalize(media_type) in SCHEMA1_TYPES
