"""Async OCI distribution client: manifests and configs, never layers (DESIGN §1, §4).

What it guarantees, because the webhook sits in every Pod creation:

* every byte is verified against its digest (a lying registry is an error, not an answer);
* digests are cached forever (bounded by size), tag→digest briefly, failures very briefly;
* concurrent requests for the same thing share one HTTP exchange (single flight);
* auth, retries, size and time limits and error mapping are the transport's
  (`webhook.registry.transport`), shared with the rebuild engine's `BlobStore`;
* errors name the registry, the reference and what to do.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, TypeVar

import httpx

from webhook.caches import BoundedCache, hashed_key
from webhook.errors import (
    DigestMismatch,
    InvalidImageData,
    PlatformNotFound,
    UnsupportedMediaType,
)
from webhook.registry import mediatypes as mt
from webhook.registry.auth import Keyring
from webhook.registry.cache import DigestCache, NegativeCache, SingleFlight, TagCache
from webhook.registry.facts import ImageFacts, Platform, best_match, runnable_platforms
from webhook.registry.reference import Reference
from webhook.registry.transport import RegistryStats, RegistryTransport
from webhook.settings import RegistrySettings

__all__ = ["Manifest", "RegistryClient", "RegistryStats", "ResolvedImage"]

T = TypeVar("T")

_MAX_INDEX_DEPTH = 2

FlightKey = tuple[str, str, str, str, str]

# Byte budgets of the client's caches (`webhook.caches.BoundedCache`); the digest cache's is
# the `cache_bytes` setting. Keys are digests this process computed, or hashed.
MEDIA_TYPES_BYTES = 4 * 1024 * 1024  # digest → media type: ~6,900 manifests
FACTS_BYTES = 16 * 1024 * 1024  # (digest, platform) → ImageFacts: a few KB each
PLATFORMS_BYTES = 4 * 1024 * 1024  # index digest → its runnable platforms: ~2,400 indexes
READERS_BYTES = 2 * 1024 * 1024  # who was shown to read which repository: ~4,000 at once


@dataclass(frozen=True)
class Manifest:
    """A verified manifest or index: `digest` is sha256 of `raw`, `data` its parsed JSON."""

    digest: str
    media_type: str
    raw: bytes = field(repr=False)
    data: Mapping[str, Any] = field(repr=False)

    @property
    def is_index(self) -> bool:
        return mt.is_index(self.media_type)


@dataclass(frozen=True)
class ResolvedImage:
    """A reference resolved for one platform.

    `digest` is what a Pod pins: the index digest for multi-arch images, else the manifest's.
    `manifest` is the platform's own manifest (its digest is `manifest.digest`). `platform` is
    the chosen index entry's platform, or None for a single-platform manifest (the config says).
    `annotations` are the index's and the chosen entry descriptor's (entry wins).
    """

    reference: Reference
    digest: str
    manifest: Manifest
    platform: str | None = None
    index_digest: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def manifest_digest(self) -> str:
        return self.manifest.digest


class RegistryClient:
    """One shared HTTP client plus caches; use as `async with RegistryClient(settings) as c`.

    `keyring` defaults to the docker config named in settings (or ~/.docker/config.json). A
    keyring passed to a method replaces it for that call: callers merge pod pull secrets in
    front of the base keyring themselves (`pod_keyring.merged(client.keyring)`).
    """

    def __init__(
        self,
        settings: RegistrySettings,
        keyring: Keyring | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        *,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.keyring = (
            keyring if keyring is not None else Keyring.from_docker_config(settings.docker_config)
        )
        self.transport = RegistryTransport(settings, self.keyring, http_transport, timer)
        self.stats = self.transport.stats
        self._digests = DigestCache(settings.cache_bytes)
        self._media_types: BoundedCache[str, str] = BoundedCache(MEDIA_TYPES_BYTES)
        self._facts: BoundedCache[tuple[str, str], ImageFacts] = BoundedCache(FACTS_BYTES)
        # index digest → its runnable platforms; a single-platform manifest's digest → None
        self._platforms: BoundedCache[str, tuple[Platform, ...] | None] = BoundedCache(
            PLATFORMS_BYTES
        )
        # hashed (registry, repository, credential fingerprint) shown to read the repository
        # lately: cached content is handed out only to credentials in here (see `_may_read`).
        self._readers: BoundedCache[str, bool] = BoundedCache(
            READERS_BYTES, ttl=settings.tag_ttl_seconds, timer=timer
        )
        self._tags = TagCache(settings.tag_ttl_seconds, timer=timer)
        self._negative: NegativeCache[FlightKey] = NegativeCache(
            settings.negative_ttl_seconds, timer=timer
        )
        self._flights: SingleFlight[FlightKey] = SingleFlight()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()

    # ---- public API ------------------------------------------------------------------------

    async def get_manifest(self, ref: Reference, keyring: Keyring | None = None) -> Manifest:
        """The manifest or index `ref` names, verified; by tag it may come from the tag cache."""
        kr = keyring if keyring is not None else self.keyring
        digest = ref.digest
        if digest is None and ref.tag:
            digest = self._tags.get(ref.registry, ref.repository, ref.tag)
        if digest is not None:
            cached = self._cached_manifest(digest)
            if cached is not None:
                await self._may_read(ref, kr)
                self.stats.cache_hits += 1
                return cached
        key: FlightKey = (
            "manifest",
            ref.registry,
            ref.repository,
            ref.lookup,
            kr.fingerprint(ref.registry),
        )
        return await self._flight(key, lambda: self._fetch_manifest(ref, kr))

    async def get_config(
        self, ref: Reference, digest: str, keyring: Keyring | None = None
    ) -> dict[str, Any]:
        """The image config blob `digest` from `ref`'s repository, verified and cached.

        The returned dict may be shared with concurrent callers: do not mutate it.
        """
        kr = keyring if keyring is not None else self.keyring
        cached = self._digests.get(digest)
        if cached is not None:
            await self._may_read(ref, kr)
            self.stats.cache_hits += 1
            return _parse_config(cached, ref, digest)
        key: FlightKey = (
            "blob",
            ref.registry,
            ref.repository,
            digest,
            kr.fingerprint(ref.registry),
        )
        return await self._flight(key, lambda: self._fetch_config(ref, digest, kr))

    async def platforms(
        self, ref: Reference, keyring: Keyring | None = None
    ) -> tuple[Platform, ...] | None:
        """The platforms of `ref` a Linux node can run, in index order; None when `ref` is a
        single-platform manifest (one platform, whatever its config says).

        Attestations (`unknown/unknown`), entries without os/architecture and other operating
        systems are left out, and of entries equal once normalised (`arm64`, `arm64/v8`) only
        the first is listed: the one containerd pulls (`facts.runnable_platforms`). Each
        listed platform resolves (`resolve`, `inspect`) to exactly its own entry. Cached by
        digest, so a warm call costs a tag-cache lookup.
        """
        kr = keyring if keyring is not None else self.keyring
        digest = ref.digest or (ref.tag and self._tags.get(ref.registry, ref.repository, ref.tag))
        if digest and digest in self._platforms:
            known = self._platforms[digest]  # before the await: it may be evicted meanwhile
            await self._may_read(ref, kr)
            self.stats.cache_hits += 1
            return known
        top = await self.get_manifest(ref, kr)
        listed = tuple(runnable_platforms(_index_platforms(top, ref))) if top.is_index else None
        self._platforms[top.digest] = listed
        return listed

    async def resolve(
        self, ref: Reference, platform: Platform, keyring: Keyring | None = None
    ) -> ResolvedImage:
        """Resolve `ref` to the manifest for `platform`, choosing from an index if it is one."""
        kr = keyring if keyring is not None else self.keyring
        top = await self.get_manifest(ref, kr)
        if not top.is_index:
            return ResolvedImage(reference=ref, digest=top.digest, manifest=top)
        annotations = _str_map(
            top.data.get("annotations"), f"index {top.digest} of {ref}", "annotations"
        )
        index = top
        for _ in range(_MAX_INDEX_DEPTH):
            entry, chosen = _choose_entry(index, platform, ref)
            annotations.update(
                _str_map(entry.get("annotations"), f"index {index.digest} of {ref}", "annotations")
            )
            child = await self.get_manifest(ref.with_digest(entry["digest"]), kr)
            if not child.is_index:
                return ResolvedImage(
                    reference=ref,
                    digest=top.digest,
                    manifest=child,
                    platform=str(chosen),
                    index_digest=top.digest,
                    annotations=annotations,
                )
            index = child
        raise InvalidImageData(
            f"index {top.digest} of {ref} nests indexes more than {_MAX_INDEX_DEPTH} deep",
            reference=str(ref),
        )

    async def inspect(
        self, ref: Reference, platform: Platform, keyring: Keyring | None = None
    ) -> ImageFacts:
        """Everything the rules need, from the platform manifest and its config blob.

        Facts derive from immutable content, so they are cached by (digest, platform): a warm
        check costs no JSON parsing at all.
        """
        digest = ref.digest or (ref.tag and self._tags.get(ref.registry, ref.repository, ref.tag))
        if digest:
            known = self._facts.get((digest, str(platform)))
            if known is not None:
                await self._may_read(ref, keyring if keyring is not None else self.keyring)
                self.stats.cache_hits += 1
                return replace(known, reference=str(ref))
        facts = await self._inspect(ref, platform, keyring)
        self._facts[(facts.digest, str(platform))] = facts
        return facts

    async def _inspect(
        self, ref: Reference, platform: Platform, keyring: Keyring | None
    ) -> ImageFacts:
        kr = keyring if keyring is not None else self.keyring
        resolved = await self.resolve(ref, platform, kr)
        manifest = resolved.manifest
        where = f"manifest {manifest.digest} of {ref}"
        data = manifest.data
        config_desc = _require(data, "config", dict, where)
        config_digest = _require(config_desc, "digest", str, where, "config.digest")
        config_type = config_desc.get("mediaType")
        if config_type is not None and mt.normalize(str(config_type)) not in mt.CONFIG_TYPES:
            raise UnsupportedMediaType(
                f"{ref} is not a container image: its config has media type {config_type} "
                f"(expected {mt.OCI_CONFIG} or {mt.DOCKER_CONFIG})",
                reference=str(ref),
            )
        layers = _require(data, "layers", list, where)
        sizes: list[int] = []
        for i, layer in enumerate(layers):
            if not isinstance(layer, dict):
                raise _bad_field(where, f"layers[{i}]", "an object", layer)
            size = layer.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise _bad_field(where, f"layers[{i}].size", "a non-negative integer", size)
            sizes.append(size)
        annotations = dict(resolved.annotations)
        annotations.update(_str_map(data.get("annotations"), where, "annotations"))

        config = await self.get_config(ref, config_digest, kr)
        cwhere = f"image config {config_digest} of {ref}"
        inner = config.get("config")
        if inner is None:
            inner = {}
        if not isinstance(inner, dict):
            raise _bad_field(cwhere, "config", "an object", inner)
        user = inner.get("User")
        if user is None:
            user = ""
        if not isinstance(user, str):
            raise _bad_field(cwhere, "config.User", "a string", user)
        entrypoint = _str_list(inner.get("Entrypoint"), cwhere, "config.Entrypoint")
        cmd = _str_list(inner.get("Cmd"), cwhere, "config.Cmd")
        labels = _str_map(inner.get("Labels"), cwhere, "config.Labels")
        rootfs = _require(config, "rootfs", dict, cwhere)
        diff_ids_raw = _require(rootfs, "diff_ids", list, cwhere, "rootfs.diff_ids")
        diff_ids = _str_list(diff_ids_raw, cwhere, "rootfs.diff_ids") or []
        if len(diff_ids) != len(sizes):
            raise InvalidImageData(
                f"{ref}: the manifest lists {len(sizes)} layers but the config's rootfs.diff_ids "
                f"has {len(diff_ids)}",
                reference=str(ref),
            )
        return ImageFacts(
            reference=str(ref),
            digest=resolved.digest,
            platform=resolved.platform or _config_platform(config),
            user=user,
            entrypoint=entrypoint,
            cmd=cmd,
            diff_ids=diff_ids,
            layer_sizes=sizes,
            labels=labels,
            annotations=annotations,
            source="registry",
            config_digest=config_digest,
            manifest_digest=manifest.digest,
        )

    # ---- who may read what ------------------------------------------------------------------

    async def _may_read(self, ref: Reference, keyring: Keyring) -> None:
        """Raise unless `keyring` was shown lately to read `ref`'s repository.

        Caches are shared by every tenant, so an answer fetched with one Pod's pull secret
        must not be handed to a Pod without it: before cached content goes to credentials
        that have not fetched from the repository, one authenticated HEAD of the manifest
        proves they can (then remembered for the tag TTL, per credential fingerprint).
        """
        reader = _reader(ref, keyring)
        if hashed_key(*reader) in self._readers:
            return
        key: FlightKey = ("access", *reader, ref.lookup)
        await self._flight(key, lambda: self._prove_access(ref, keyring))

    async def _prove_access(self, ref: Reference, keyring: Keyring) -> None:
        what = f"manifest {ref}"
        reply = await self.transport.request(
            "HEAD", ref, f"manifests/{ref.lookup}", what=what, keyring=keyring,
            headers={"Accept": mt.ACCEPT},
        )  # fmt: skip
        self.transport.check(reply, ref, what)
        self._readers[hashed_key(*_reader(ref, keyring))] = True

    # ---- fetching --------------------------------------------------------------------------

    async def _flight(self, key: FlightKey, factory: Callable[[], Awaitable[T]]) -> T:
        try:
            self._negative.check(key)
        except Exception:
            self.stats.negative_hits += 1
            raise

        async def run() -> T:
            try:
                return await factory()
            except BaseException as exc:
                self._negative.remember(key, exc)
                raise

        return await self._flights.do(key, run)

    def _cached_manifest(self, digest: str) -> Manifest | None:
        raw = self._digests.get(digest)
        media_type = self._media_types.get(digest)
        if raw is None or media_type is None:
            return None
        return Manifest(digest, media_type, raw, json.loads(raw))

    async def _fetch_manifest(self, ref: Reference, keyring: Keyring) -> Manifest:
        self.stats.manifest_fetches += 1
        what = f"manifest {ref}"
        reply = await self.transport.request(
            "GET",
            ref,
            f"manifests/{ref.lookup}",
            what=what,
            keyring=keyring,
            headers={"Accept": mt.ACCEPT},
            limit=self.settings.max_manifest_bytes,
        )
        self.transport.check(reply, ref, what)
        body = reply.body
        digest = _verify(body, ref, ref.digest)
        header = reply.headers.get("docker-content-digest")
        if header and header.split(":", 1)[0] == digest.split(":", 1)[0] and header != digest:
            raise DigestMismatch(
                f"registry {ref.registry} returned content for {ref} that hashes to {digest}, "
                f"but its Docker-Content-Digest header says {header}",
                reference=str(ref),
            )
        manifest = _parse_manifest(ref, digest, body, reply.headers.get("content-type"))
        self._digests.put(digest, body)
        self._media_types[digest] = manifest.media_type
        if ref.digest is None and ref.tag:
            self._tags.put(ref.registry, ref.repository, ref.tag, digest)
        self._readers[hashed_key(*_reader(ref, keyring))] = True
        return manifest

    async def _fetch_config(self, ref: Reference, digest: str, keyring: Keyring) -> dict[str, Any]:
        self.stats.config_fetches += 1
        what = f"image config {digest} of {ref}"
        reply = await self.transport.request(
            "GET",
            ref,
            f"blobs/{digest}",
            what=what,
            keyring=keyring,
            headers={"Accept": f"{mt.OCI_CONFIG}, {mt.DOCKER_CONFIG}, application/json, */*"},
            limit=self.settings.max_config_bytes,
            follow_redirects=True,
        )
        self.transport.check(reply, ref, what, blob=digest)
        _verify(reply.body, ref, digest)
        config = _parse_config(reply.body, ref, digest)
        self._digests.put(digest, reply.body)
        self._readers[hashed_key(*_reader(ref, keyring))] = True
        return config


# ---- helpers -------------------------------------------------------------------------------


def _reader(ref: Reference, keyring: Keyring) -> tuple[str, str, str]:
    return (ref.registry, ref.repository, keyring.fingerprint(ref.registry))


def _verify(body: bytes, ref: Reference, expected: str | None) -> str:
    """sha256 (or the expected digest's algorithm) of `body`; DigestMismatch if it differs."""
    algorithm = expected.split(":", 1)[0] if expected else "sha256"
    if algorithm not in ("sha256", "sha512"):
        raise InvalidImageData(
            f"cannot verify {expected}: digest algorithm {algorithm} is not supported",
            reference=str(ref),
        )
    digest = f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"
    if expected is not None and digest != expected:
        raise DigestMismatch(
            f"registry {ref.registry} returned content for {ref.name}@{expected} that hashes "
            f"to {digest}",
            reference=str(ref),
        )
    return digest


def _json_object(body: bytes, what: str, ref: Reference) -> dict[str, Any]:
    """Parse a manifest or config; say which one and why when it is not a JSON object."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidImageData(f"{what} is not valid JSON: {exc}", reference=str(ref)) from exc
    except RecursionError:  # a hostile registry's [[[[…]]]]: no image config nests like that
        raise InvalidImageData(
            f"{what} is JSON nested too deeply to read", reference=str(ref)
        ) from None
    if not isinstance(data, dict):
        raise InvalidImageData(f"{what} is not a JSON object", reference=str(ref))
    return data


def _parse_manifest(ref: Reference, digest: str, body: bytes, content_type: str | None) -> Manifest:
    data = _json_object(body, f"manifest for {ref}", ref)
    media_type = mt.normalize(content_type)
    known = mt.INDEX_TYPES | mt.MANIFEST_TYPES | mt.SCHEMA1_TYPES
    if media_type not in known:  # generic (application/json) or absent: trust the body
        body_type = data.get("mediaType")
        if isinstance(body_type, str) and body_type:
            media_type = mt.normalize(body_type)
        elif "manifests" in data:
            media_type = mt.OCI_INDEX
        elif "config" in data and "layers" in data:
            media_type = mt.OCI_MANIFEST
    if mt.is_schema1(media_type) or data.get("schemaVersion") == 1:
        raise UnsupportedMediaType(
            f"{ref} is a Docker schema 1 manifest, which has no image config to check; "
            "re-push it with a current Docker, or convert it (e.g. `skopeo copy` or "
            "`crane copy`) to schema 2 / OCI",
            reference=str(ref),
        )
    if not (mt.is_index(media_type) or mt.is_manifest(media_type)):
        raise UnsupportedMediaType(
            f"registry {ref.registry} returned media type {media_type or '(none)'} for {ref}; "
            f"imagegate reads {', '.join(sorted(mt.INDEX_TYPES | mt.MANIFEST_TYPES))}",
            reference=str(ref),
        )
    return Manifest(digest, media_type, body, data)


def _parse_config(body: bytes, ref: Reference, digest: str) -> dict[str, Any]:
    return _json_object(body, f"image config {digest} of {ref}", ref)


def _index_entries(index: Manifest, ref: Reference) -> list[tuple[dict[str, Any], Platform]]:
    """The entries of `index` that name a platform (os and architecture), in index order."""
    where = f"index {index.digest} of {ref}"
    entries = _require(index.data, "manifests", list, where)
    found: list[tuple[dict[str, Any], Platform]] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _bad_field(where, f"manifests[{i}]", "an object", entry)
        _require(entry, "digest", str, where, f"manifests[{i}].digest")
        plat = entry.get("platform") or {}
        if not isinstance(plat, dict):
            raise _bad_field(where, f"manifests[{i}].platform", "an object", plat)
        os_ = str(plat.get("os") or "")
        arch = str(plat.get("architecture") or "")
        variant = str(plat.get("variant") or "") or None
        if not os_ or not arch or os_ == "unknown":  # attestations and other non-images
            continue
        found.append((entry, Platform(os_, arch, variant)))
    return found


def _index_platforms(index: Manifest, ref: Reference) -> list[Platform]:
    return [platform for _, platform in _index_entries(index, ref)]


def _choose_entry(
    index: Manifest, platform: Platform, ref: Reference
) -> tuple[dict[str, Any], Platform]:
    """The index entry a node of `platform` pulls, chosen as containerd does
    (`facts.best_match`): normalised platforms compared, compatible ones ranked, and among
    equals the first in index order."""
    entries = _index_entries(index, ref)
    chosen = best_match(platform, [p for _, p in entries])
    if chosen is None:
        available = [str(p) for _, p in entries]
        listed = ", ".join(available) if available else "no platforms"
        raise PlatformNotFound(
            f"{ref} has no manifest for platform {platform}; the index has: {listed}",
            reference=str(ref),
        )
    return entries[chosen]


def _config_platform(config: Mapping[str, Any]) -> str:
    os_, arch, variant = (config.get(k) for k in ("os", "architecture", "variant"))
    if isinstance(os_, str) and isinstance(arch, str) and os_ and arch:
        return str(Platform(os_, arch, variant if isinstance(variant, str) and variant else None))
    return ""


def _bad_field(where: str, name: str, expected: str, value: object) -> InvalidImageData:
    got = "missing" if value is None else f"{type(value).__name__} {value!r:.60}"
    return InvalidImageData(f"{where}: field {name} should be {expected}, got {got}")


def _require(
    data: Mapping[str, Any], key: str, kind: type[T], where: str, name: str | None = None
) -> T:
    value = data.get(key)
    if not isinstance(value, kind):
        names: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}
        raise _bad_field(where, name or key, names.get(kind, kind.__name__), value)
    return value


def _str_list(value: object, where: str, name: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad_field(where, name, "a list of strings", value)
    return list(value)


def _str_map(value: object, where: str, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _bad_field(where, name, "an object of strings", value)
    return dict(value)
