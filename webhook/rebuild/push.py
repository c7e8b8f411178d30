"""Publishing a rebuilt image: blobs, manifests by digest, then one new unique tag.

Never overwrite a tag (DESIGN §4): manifests go up by digest, and the only tag written is
`<source tag or 'untagged'>-imagegate-<12 hex of the source digest>`. If that tag already names
another digest we refuse, before anything is pushed (`check_tag`); if it names the same digest
the push is a no-op (idempotent).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webhook.errors import RebuildError
from webhook.registry import mediatypes as mt
from webhook.registry.blobs import BlobStore
from webhook.registry.reference import Reference

TAG_SUFFIX = "-imagegate-"
_MAX_TAG = 128


def replacement_tag(source: Reference, source_digest: str) -> str:
    """`<tag>-imagegate-<12 hex>`, the tag cut so the whole fits Docker's 128 characters."""
    short = source_digest.split(":", 1)[-1][:12]
    stem = source.tag or "untagged"
    stem = stem[: _MAX_TAG - len(TAG_SUFFIX) - len(short)]
    return f"{stem}{TAG_SUFFIX}{short}"


def canonical_json(data: dict[str, Any]) -> bytes:
    """Deterministic JSON bytes (key order as built, compact separators)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass(frozen=True)
class BlobSource:
    """Where a layer of the result comes from: a file we wrote, or a repository that has it."""

    digest: str
    file: Path | None = None
    repository: Reference | None = None


async def push_blobs(
    blobs: BlobStore, target: Reference, sources: list[BlobSource], scratch: Path
) -> dict[str, str]:
    """Make every blob available in `target`; returns digest → 'present'|'mounted'|'copied'|
    'uploaded'. Unchanged layers are mounted across repositories when the registry allows."""
    done: dict[str, str] = {}
    for source in sources:
        if source.digest in done:
            continue
        if source.file is not None:
            uploaded = await blobs.upload(target, source.digest, source.file)
            done[source.digest] = "uploaded" if uploaded else "present"
        elif source.repository is not None:
            done[source.digest] = await blobs.copy(
                source.repository, target, source.digest, scratch / source.digest.replace(":", "-")
            )
        else:  # pragma: no cover - construction error
            raise RebuildError(f"no source for blob {source.digest}")
    return done


async def push_manifest(blobs: BlobStore, target: Reference, body: bytes, media_type: str) -> str:
    """PUT a manifest (or index) by its digest; returns the digest."""
    return await blobs.put_manifest(target, sha256(body), body, media_type)


async def check_tag(
    blobs: BlobStore, target: Reference, tag: str, body: bytes, media_type: str
) -> bool:
    """True when `tag` already names `body`'s digest, False when it names nothing yet.

    Raises RebuildError, naming the tag and both digests, when it names another digest: tags
    are never moved. The engine asks before it pushes anything, so a conflict leaves nothing
    behind (no blob, no untagged manifest).
    """
    digest = sha256(body)
    accept = ", ".join((media_type, *sorted(mt.INDEX_TYPES | mt.MANIFEST_TYPES)))
    existing = await blobs.manifest_digest(target, tag, accept)
    if existing is not None and existing != digest:
        raise RebuildError(
            f"tag {target.name}:{tag} already points to {existing}, not to the rebuilt "
            f"{digest}; imagegate never moves a tag. The earlier rebuild of this source used "
            "other fixes or another imagegate version: delete that tag, or push to another "
            "repository"
        )
    return existing is not None


async def tag_once(
    blobs: BlobStore, target: Reference, tag: str, body: bytes, media_type: str
) -> bool:
    """Point the new tag at `body`'s digest: True when written, False when it already did.

    Asks again right before writing (`check_tag`): another rebuild may have tagged meanwhile.
    """
    if await check_tag(blobs, target, tag, body, media_type):
        return False
    await blobs.put_manifest(target, tag, body, media_type)
    return True
