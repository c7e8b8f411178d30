"""The image a rebuild is making: one record per layer, and the config.

An OCI image keeps three lists that must agree by position: the manifest's `layers`, the
config's `rootfs.diff_ids` and the config's `history`, in which entries marked `empty_layer`
(ENV, USER, LABEL…) belong to no layer. An `ImageDraft` holds one `DraftLayer` per layer
instead: descriptor, diff_id, history and where the blob comes from travel together, so a fix
that replaces or drops layers cannot misalign them. `ImageDraft.render` writes the lists back.

History belongs to layers as `docker history` shows it: a layer's own entry, then the
`empty_layer` entries after it (config changes made on top of it). Empty entries before the
first layer go with the first layer. Entries beyond the last layer (a history naming more
layers than the image has) stay in `extra_history`, after every layer. For histories that
match their layers (what the OCI spec asks for) and for images without history this is what
counting non-empty entries gives, so the result is the same bytes.

The rebuild's own config changes (`note`: one entry per fix, its text JSON) are kept apart, in
`notes`, and rendered on top of everything: a fix that replaces layers (rebase, squash) then
cannot drop another fix's provenance with the history of the layers it replaced.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook import __version__
from webhook.errors import RebuildError
from webhook.rebuild.push import BlobSource, canonical_json, sha256
from webhook.registry import mediatypes as mt
from webhook.registry.reference import Reference

EPOCH_CREATED = "1970-01-01T00:00:00Z"
HISTORY_PREFIX = "imagegate: "

OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
_LAYER_TYPES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": OCI_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    ),
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
}

HistoryEntry = dict[str, Any]


@dataclass(frozen=True)
class DraftLayer:
    """One layer: its manifest descriptor, its diff_id, its history and where its blob is."""

    descriptor: dict[str, Any]  # as in the manifest: mediaType, digest, size (annotations…)
    diff_id: str
    source: BlobSource
    history: tuple[HistoryEntry, ...] = ()  # its own entry, then the empty_layer ones after it

    @property
    def digest(self) -> str:
        return str(self.descriptor["digest"])

    @property
    def size(self) -> int:
        return int(self.descriptor.get("size", 0))


@dataclass(frozen=True)
class BaseImage:
    """What an image is built on, and how many of its layers are the base's."""

    name: str
    digest: str | None
    evidence: str  # "annotation", "label", "diff_ids" or "rebase"
    layers: int | None  # None: not verified to be a prefix of the image's layers


@dataclass(frozen=True)
class Rendered:
    """A draft written out: the config blob and the manifest that names it."""

    config: bytes
    manifest: bytes

    @property
    def config_digest(self) -> str:
        return sha256(self.config)


@dataclass
class ImageDraft:
    """The image being rebuilt; the fixes in `webhook.rebuild.fixes` edit it in place.

    `config` is the image config, except `rootfs.diff_ids` and `history`: those are the layers'
    (`render` writes them, in the positions the source config had them).
    """

    name: str  # the image, as messages name it
    config: dict[str, Any]
    layers: list[DraftLayer]
    annotations: dict[str, str] = field(default_factory=dict)  # the manifest's
    extra_history: list[HistoryEntry] = field(default_factory=list)
    base: BaseImage | None = None
    notes: list[HistoryEntry] = field(default_factory=list)  # the fixes' entries, on top
    applied: list[str] = field(default_factory=list)
    squashed_layers: int = 0
    dropped_paths: int = 0

    @classmethod
    def from_image(
        cls,
        name: str,
        repository: Reference,
        manifest: Mapping[str, Any],
        config: Mapping[str, Any],
        base: BaseImage | None = None,
    ) -> ImageDraft:
        """The draft of an image whose blobs are in `repository` (the config is copied)."""
        copied: dict[str, Any] = copy.deepcopy(dict(config))
        rootfs = copied.setdefault("rootfs", {"type": "layers", "diff_ids": []})
        diff_ids = [str(d) for d in rootfs.get("diff_ids") or []]
        descriptors = [dict(x) for x in manifest.get("layers") or []]
        if len(descriptors) != len(diff_ids):
            raise RebuildError(
                f"{name}: the manifest lists {len(descriptors)} layers but the config's "
                f"rootfs.diff_ids has {len(diff_ids)}"
            )
        groups, extra = _layer_history(
            [dict(h) for h in copied.get("history") or []], len(descriptors)
        )
        rootfs["diff_ids"] = []  # the layers' now: render() writes both back
        if "history" in copied:
            copied["history"] = []
        if not isinstance(copied.get("config"), dict):
            copied["config"] = {}
        layers = [
            DraftLayer(desc, diff_id, BlobSource(str(desc["digest"]), repository=repository), hist)
            for desc, diff_id, hist in zip(descriptors, diff_ids, groups, strict=True)
        ]
        annotations = {
            k: v for k, v in (manifest.get("annotations") or {}).items() if isinstance(v, str)
        }
        return cls(name, copied, layers, annotations, extra, base)

    @property
    def inner(self) -> dict[str, Any]:
        """The runtime config (`config.config`: User, Entrypoint, Cmd, Labels…)."""
        inner: dict[str, Any] = self.config["config"]
        return inner

    def labels(self) -> dict[str, str]:
        """The config's labels, created when there are none."""
        inner = self.inner
        if inner.setdefault("Labels", {}) is None:
            inner["Labels"] = {}
        labels: dict[str, str] = inner["Labels"]
        return labels

    @property
    def created(self) -> str:
        """The time the rebuild's history entries carry: the source's, never the clock's."""
        return str(self.config.get("created") or EPOCH_CREATED)

    @property
    def base_layers(self) -> int:
        """How many of the layers are verified to be the base's (0 when not known)."""
        if self.base is None or self.base.layers is None:
            return 0
        return self.base.layers

    @property
    def size(self) -> int:
        """Compressed bytes of all layers."""
        return sum(layer.size for layer in self.layers)

    @property
    def history(self) -> list[HistoryEntry]:
        """The config's `history`: every layer's entries in order, the extra ones, the notes."""
        return [h for layer in self.layers for h in layer.history] + self.extra_history + self.notes

    def mark(self, fix: str) -> None:
        """Record that `fix` was applied."""
        if fix not in self.applied:
            self.applied.append(fix)

    def note(self, fix: str, details: Mapping[str, Any]) -> None:
        """Record `fix` and its config change as an empty_layer history entry on top."""
        self.mark(fix)
        self.notes.append(history_entry(self.created, fix, details, empty_layer=True))

    def render(self, annotations: Mapping[str, str]) -> Rendered:
        """Config and manifest bytes (deterministic); `annotations` are added to the manifest's."""
        config = dict(self.config)
        rootfs = dict(config["rootfs"])
        rootfs["type"] = "layers"
        rootfs["diff_ids"] = [layer.diff_id for layer in self.layers]
        config["rootfs"] = rootfs
        config["history"] = self.history
        config_bytes = canonical_json(config)
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {
                "mediaType": mt.OCI_CONFIG,
                "digest": sha256(config_bytes),
                "size": len(config_bytes),
            },
            "layers": [_oci_layer(layer.descriptor) for layer in self.layers],
            "annotations": {**self.annotations, **annotations},
        }
        return Rendered(config_bytes, canonical_json(manifest))


def history_entry(
    created: str, fix: str, details: Mapping[str, Any], *, empty_layer: bool
) -> HistoryEntry:
    """A history entry of the rebuild: `imagegate: {"fix": …, …}`, JSON that tools can read
    back (`docker history` shows it as it is), never a Python repr."""
    text = json.dumps({"fix": fix, **details}, ensure_ascii=False)
    entry: HistoryEntry = {
        "created": created,
        "created_by": f"{HISTORY_PREFIX}{text}",
        "comment": f"imagegate {__version__}",
    }
    if empty_layer:
        entry["empty_layer"] = True
    return entry


def _layer_history(
    history: list[HistoryEntry], layers: int
) -> tuple[list[tuple[HistoryEntry, ...]], list[HistoryEntry]]:
    """Each layer's history entries, and the entries beyond the last layer.

    The n-th entry without `empty_layer` is the n-th layer's; empty entries go with the layer
    before them (those before any layer, with the first).
    """
    groups: list[list[HistoryEntry]] = [[] for _ in range(layers)]
    extra: list[HistoryEntry] = []
    target = groups[0] if groups else extra
    seen = 0
    for entry in history:
        if not entry.get("empty_layer"):
            seen += 1
            target = groups[seen - 1] if seen <= layers else extra
        target.append(entry)
    return [tuple(g) for g in groups], extra


def _oci_layer(descriptor: dict[str, Any]) -> dict[str, Any]:
    out = dict(descriptor)
    media_type = str(out.get("mediaType") or OCI_LAYER_GZIP)
    out["mediaType"] = _LAYER_TYPES.get(media_type, media_type)
    return out
