"""Deep inspection for the checker: an image's layers read through the layer index store.

The Checker asks `LayerInspector.inspect` for the findings of one image (one platform's
manifest): the layer analysis and the image USER resolved through the image's own
`/etc/passwd`. `download=False` (a policy's `deepInspection: cachedOnly`) uses only layers
already indexed, so an admission never waits for a download; `download=True` fetches what is
missing, once per layer digest (a base shared by a thousand images is read once). Findings
are cached per manifest digest (they are a function of the layers).

The manifest and config are read through the `RegistryClient`, with the caller's keyring, so
the tenant checks of the client (`_may_read`) apply before any layer digest is known.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webhook.caches import BoundedCache, hashed_key
from webhook.errors import ImagegateError, InvalidImageData
from webhook.layers.analysis import (
    LayerAnalysis,
    ResolvedUser,
    UnresolvedUser,
    analyze_layers,
    is_numeric_user,
    layer_commands,
    merge_layers,
    resolve_image_user,
)
from webhook.layers.index import LayerIndex, LayerIndexStore, fetch_layer_index
from webhook.registry.auth import Keyring
from webhook.registry.blobs import BlobStore
from webhook.registry.client import RegistryClient
from webhook.registry.facts import ImageFacts
from webhook.registry.reference import Reference

log = logging.getLogger("imagegate.layers")
FINDINGS_BYTES = 8 * 1024 * 1024
WARM_QUEUE = 32  # images whose layers are being read in the background, at most
LISTED_PATHS = 100  # setuid, world-writable, unreadable: the first ones are enough to act on


@dataclass(frozen=True)
class LayerFindings:
    """What the layers say about one image: the analysis, and its USER resolved (None when
    the USER is numeric or absent: there is nothing to look up)."""

    analysis: LayerAnalysis
    user: ResolvedUser | UnresolvedUser | None

    def facts(self) -> dict[str, Any]:
        """`facts.layerAnalysis` and `facts.resolvedUser` of a check result."""
        resolved = self.user.to_json() if isinstance(self.user, ResolvedUser) else None
        return {"layerAnalysis": self.analysis.to_json(), "resolvedUser": resolved}


class LayerInspector:
    """Layer findings for the Checker, bounded: layers over `max_layer_bytes` are refused
    (an error decided by onError), and at most `concurrency` layers download at once.

    With `warm`, an image found without its indexes when downloads are off has them read in
    the background (at most `WARM_QUEUE` images at a time; more are skipped), so its next
    check finds them: that is how `deepInspection: cachedOnly` ever sees layers at admission.
    """

    def __init__(
        self,
        client: RegistryClient,
        store: LayerIndexStore,
        *,
        max_layer_bytes: int,
        concurrency: int = 2,
        warm: bool = False,
    ) -> None:
        self._client = client
        self._store = store
        self._max_layer_bytes = max_layer_bytes
        self._downloads = asyncio.Semaphore(concurrency)
        self._findings: BoundedCache[str, LayerFindings] = BoundedCache(FINDINGS_BYTES)
        self._warm = warm
        self._warming: dict[str, asyncio.Task[None]] = {}

    @classmethod
    def at(
        cls,
        client: RegistryClient,
        root: Path,
        *,
        max_layer_bytes: int,
        max_disk_bytes: int,
        concurrency: int = 2,
        warm: bool = False,
    ) -> LayerInspector:
        store = LayerIndexStore(root, max_disk_bytes=max_disk_bytes)
        return cls(
            client, store, max_layer_bytes=max_layer_bytes, concurrency=concurrency, warm=warm
        )

    async def aclose(self) -> None:
        """Stop background reads (the registry client they use is closing)."""
        tasks = list(self._warming.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def inspect(
        self,
        image: str,
        facts: ImageFacts,
        keyring: Keyring | None,
        *,
        download: bool,
        base_layers: int = 1,
        readable_under: tuple[str, ...] = (),
    ) -> LayerFindings | None:
        """The findings, or None when a layer is not indexed yet and `download` is off.

        Raises `ImagegateError` when a layer cannot be read (too large, corrupt, a registry
        failure): the image's onError decides, as for any other read.
        """
        if facts.source != "registry":
            return None  # a local image: `imagegate check` reads the registry copy only
        # `digest` is what a Pod pins (an index's, for a multi-arch image); the layers are
        # those of this platform's own manifest
        manifest_digest = facts.manifest_digest or facts.digest
        key = hashed_key(manifest_digest, str(base_layers), *readable_under)
        known = self._findings.get(key)
        if known is not None:
            return known
        ref = Reference.parse(image)
        manifest = await self._client.get_manifest(ref.with_digest(manifest_digest), keyring)
        config = await self._client.get_config(ref, facts.config_digest, keyring)
        described = _layers(manifest.data, facts)
        if not download:
            cached = [await asyncio.to_thread(self._store.get, d) for d, _m, _s in described]
            if any(index is None for index in cached):
                self._warm_later(image, facts, keyring, base_layers, readable_under)
                return None
            indexes = [i for i in cached if i is not None]
        else:
            blobs = BlobStore(self._client, keyring)
            indexes = list(
                await asyncio.gather(
                    *(
                        self._index(blobs, ref, digest, media_type, size, diff_id)
                        for (digest, media_type, size), diff_id in zip(
                            described, facts.diff_ids, strict=True
                        )
                    )
                )
            )
        history = config.get("history")
        commands = layer_commands(history if isinstance(history, list) else [], len(indexes))
        findings = await asyncio.to_thread(
            _analyze, indexes, commands, base_layers, readable_under, facts.user.strip()
        )
        self._findings[key] = findings
        return findings

    def _warm_later(
        self,
        image: str,
        facts: ImageFacts,
        keyring: Keyring | None,
        base_layers: int,
        readable_under: tuple[str, ...],
    ) -> None:
        key = facts.manifest_digest or facts.digest
        if not self._warm or key in self._warming or len(self._warming) >= WARM_QUEUE:
            return

        async def read() -> None:
            try:
                await self.inspect(
                    image, facts, keyring, download=True,
                    base_layers=base_layers, readable_under=readable_under,
                )  # fmt: skip
            except ImagegateError as err:  # the next check meets it again, and says so
                log.info("background layer read failed", extra={"image": image, "error": str(err)})
            finally:
                self._warming.pop(key, None)

        self._warming[key] = asyncio.create_task(read(), name=f"layers {key}")

    async def _index(
        self,
        blobs: BlobStore,
        ref: Reference,
        digest: str,
        media_type: str,
        size: int,
        diff_id: str,
    ) -> LayerIndex:
        async with self._downloads:
            return await fetch_layer_index(
                self._store, blobs, ref, digest=digest, media_type=media_type,
                max_bytes=self._max_layer_bytes, size=size, diff_id=diff_id,
            )  # fmt: skip


def _layers(data: Any, facts: ImageFacts) -> list[tuple[str, str, int]]:
    """(digest, media type, size) of each layer of a manifest the client already verified."""
    layers = data.get("layers") if isinstance(data, dict) else None
    out: list[tuple[str, str, int]] = []
    for layer in layers if isinstance(layers, list) else []:
        if not isinstance(layer, dict):
            continue
        digest, media_type, size = layer.get("digest"), layer.get("mediaType"), layer.get("size")
        if isinstance(digest, str) and isinstance(size, int):
            out.append((digest, str(media_type or ""), size))
    if len(out) != len(facts.diff_ids):
        raise InvalidImageData(
            f"manifest {facts.manifest_digest or facts.digest} lists {len(out)} readable "
            f"layers for {len(facts.diff_ids)} diff_ids",
            reference=facts.reference,
        )
    return out


def _analyze(
    indexes: list[LayerIndex],
    commands: tuple[str, ...],
    base_layers: int,
    readable_under: tuple[str, ...],
    user: str,
) -> LayerFindings:
    """CPU-bound (a tree of every path): run in a worker thread."""
    merged = merge_layers(indexes)
    analysis = analyze_layers(
        indexes, created_by=commands, base_layers=base_layers,
        readable_under=readable_under, merged=merged,
    )  # fmt: skip
    analysis = analysis.clipped(LISTED_PATHS)
    resolved = None if is_numeric_user(user) else resolve_image_user(merged, user)
    return LayerFindings(analysis, resolved)
