"""Async OCI distribution client: manifests and configs, never layers (DESIGN §1, §4).

What it guarantees, because the webhook sits in every Pod creation:

* every byte is verified against its digest (a lying registry is an error, not an answer);
* digests are cached forever (bounded by size), tag→digest briefly, failures very briefly;
* concurrent requests for the same thing share one HTTP exchange (single flight);
* token auth, Basic auth, retries with backoff and `Retry-After`, hard size and time limits;
* errors name the registry, the reference and what to do.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http import HTTPStatus
from types import TracebackType
from typing import Any, TypeVar

import httpx
from cachetools import LRUCache

from webhook import __version__
from webhook.errors import (
    DigestMismatch,
    ImageNotFound,
    InvalidImageData,
    PlatformNotFound,
    RegistryError,
    RegistryForbidden,
    RegistryRateLimited,
    RegistryUnauthorized,
    RegistryUnavailable,
    UnsupportedMediaType,
)
from webhook.registry import mediatypes as mt
from webhook.registry.auth import (
    Challenge,
    Credential,
    Keyring,
    TokenCache,
    parse_challenges,
    parse_token_response,
    pull_scope,
    token_request,
)
from webhook.registry.cache import DigestCache, NegativeCache, SingleFlight, TagCache
from webhook.registry.facts import ImageFacts, Platform
from webhook.registry.reference import Reference, normalize_host
from webhook.settings import RegistrySettings

T = TypeVar("T")

USER_AGENT = f"imagegate/{__version__}"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_ERROR_BODY_LIMIT = 64 * 1024
_TOKEN_BODY_LIMIT = 1024 * 1024
_BASIC_TTL = 300.0
_MAX_INDEX_DEPTH = 2

FlightKey = tuple[str, str, str, str, str]


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


@dataclass
class RegistryStats:
    """Counters for metrics: HTTP fetches actually made versus answers served from cache."""

    manifest_fetches: int = 0
    config_fetches: int = 0
    cache_hits: int = 0
    token_fetches: int = 0
    retries: int = 0
    negative_hits: int = 0


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: httpx.Headers
    body: bytes


class _TooLarge(Exception):
    def __init__(self, size: int, exact: bool) -> None:
        super().__init__(size)
        self.size = size
        self.exact = exact


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
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.keyring = (
            keyring if keyring is not None else Keyring.from_docker_config(settings.docker_config)
        )
        self.stats = RegistryStats()
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(settings.timeout_seconds),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
        )
        self._digests = DigestCache(settings.cache_bytes)
        self._media_types: LRUCache[str, str] = LRUCache(maxsize=65536)
        self._facts: LRUCache[tuple[str, str], ImageFacts] = LRUCache(maxsize=16384)
        self._tags = TagCache(settings.tag_ttl_seconds, timer=timer)
        self._negative: NegativeCache[FlightKey] = NegativeCache(
            settings.negative_ttl_seconds, timer=timer
        )
        self._flights: SingleFlight[FlightKey] = SingleFlight()
        self._tokens = TokenCache(timer=timer)

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
        await self._http.aclose()

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
        )

    def uses_plain_http(self, host: str) -> bool:
        """Loopback registries and configured insecure ones speak HTTP, as in Docker/containerd."""
        host = normalize_host(host)
        bare = _strip_port(host)
        if bare == "localhost":
            return True
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
        try:
            ip = ipaddress.ip_address(bare)
        except ValueError:
            ip = None
        if ip is not None and ip.is_loopback:
            return True
        for entry in self.settings.insecure_registries:
            wanted = normalize_host(entry)
            if wanted in (host, bare):
                return True
            if ip is not None and "/" in entry and "://" not in entry:  # a CIDR, as in Docker
                try:
                    if ip in ipaddress.ip_network(entry.strip(), strict=False):
                        return True
                except ValueError:
                    continue
        return False

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
        reply = await self._get(
            ref,
            f"manifests/{ref.lookup}",
            accept=mt.ACCEPT,
            limit=self.settings.max_manifest_bytes,
            what=f"manifest {ref}",
            keyring=keyring,
        )
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
        return manifest

    async def _fetch_config(self, ref: Reference, digest: str, keyring: Keyring) -> dict[str, Any]:
        self.stats.config_fetches += 1
        reply = await self._get(
            ref,
            f"blobs/{digest}",
            accept=f"{mt.OCI_CONFIG}, {mt.DOCKER_CONFIG}, application/json, */*",
            limit=self.settings.max_config_bytes,
            what=f"image config {digest} of {ref}",
            keyring=keyring,
            follow_redirects=True,
            blob=digest,
        )
        _verify(reply.body, ref, digest)
        config = _parse_config(reply.body, ref, digest)
        self._digests.put(digest, reply.body)
        return config

    async def _get(
        self,
        ref: Reference,
        path: str,
        *,
        accept: str,
        limit: int,
        what: str,
        keyring: Keyring,
        follow_redirects: bool = False,
        blob: str | None = None,
    ) -> _Reply:
        """GET with auth: cached token first, then answer one 401 challenge and retry once."""
        host = self.settings.mirrors.get(ref.registry, ref.api_host)
        plain = self.uses_plain_http(ref.registry) or self.uses_plain_http(host)
        url = f"{'http' if plain else 'https'}://{host}/v2/{ref.repository}/{path}"
        scope = pull_scope(ref.repository)
        token_key = (host, scope, keyring.fingerprint(ref.registry))
        authorization = self._tokens.get(token_key)

        def build() -> httpx.Request:
            headers = {"Accept": accept}
            if authorization:
                headers["Authorization"] = authorization
            return httpx.Request("GET", url, headers=headers)

        reply = await self._send(build, ref, host, limit, what, follow_redirects)
        if reply.status == 401:
            self._tokens.discard(token_key)
            authorization, credential, ttl = await self._authorize(reply, ref, keyring, scope)
            reply = await self._send(build, ref, host, limit, what, follow_redirects)
            if reply.status == 401:
                raise self._unauthorized(ref, reply, credential, keyring)
            self._tokens.put(token_key, authorization, ttl)
        self._check_status(reply, ref, what, blob)
        return reply

    async def _authorize(
        self, reply: _Reply, ref: Reference, keyring: Keyring, scope: str
    ) -> tuple[str, Credential | None, float]:
        """The Authorization header answering a 401, the credential used, and its lifetime."""
        challenges = parse_challenges(reply.headers.get_list("www-authenticate"))
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        credential = await keyring.get(ref.registry)
        if bearer is not None:
            if credential is not None and credential.registry_token:
                return f"Bearer {credential.registry_token}", credential, _BASIC_TTL
            header, ttl = await self._fetch_token(bearer, scope, credential, ref, keyring)
            return header, credential, ttl
        if basic is not None:
            if credential is None or not credential.has_basic:
                raise self._unauthorized(ref, reply, None, keyring)
            return credential.basic_header(), credential, _BASIC_TTL
        raise RegistryUnauthorized(
            f"registry {ref.registry} answered 401 for {ref} without a Bearer or Basic "
            "WWW-Authenticate challenge",
            reference=str(ref),
        )

    async def _fetch_token(
        self,
        challenge: Challenge,
        scope: str,
        credential: Credential | None,
        ref: Reference,
        keyring: Keyring,
    ) -> tuple[str, float]:
        self.stats.token_fetches += 1
        try:
            realm_host = httpx.URL(challenge.realm).host or challenge.realm
        except httpx.InvalidURL:
            realm_host = challenge.realm
        reply = await self._send(
            lambda: token_request(challenge, scope, credential),
            ref,
            realm_host,
            _TOKEN_BODY_LIMIT,
            f"a token for {scope}",
            True,
        )
        if reply.status in (401, 403):
            raise self._unauthorized(
                ref, reply, credential, keyring, via=f"token server {realm_host}"
            )
        if not 200 <= reply.status < 300:
            raise RegistryError(
                f"token server {realm_host} for registry {ref.registry} answered "
                f"{_status(reply.status)}: {_error_detail(reply.body)}",
                reference=str(ref),
            )
        try:
            token = parse_token_response(reply.body)
        except ValueError as exc:
            raise RegistryUnauthorized(
                f"token server {realm_host} for registry {ref.registry}: {exc}", reference=str(ref)
            ) from exc
        return f"Bearer {token.value}", token.expires_in

    def _unauthorized(
        self,
        ref: Reference,
        reply: _Reply,
        credential: Credential | None,
        keyring: Keyring,
        via: str = "",
    ) -> RegistryUnauthorized:
        detail = _error_detail(reply.body)
        if via:
            detail = f"{via} answered {_status(reply.status)}: {detail}"
        if credential is not None:
            return RegistryUnauthorized(
                f"registry {ref.registry} refused credentials for repo {ref.repository}: {detail}",
                reference=str(ref),
            )
        return RegistryUnauthorized(
            f"registry {ref.registry} needs credentials for repo {ref.repository} ({detail}); "
            f"none found for host {ref.registry} in {keyring.describe()}",
            reference=str(ref),
        )

    def _check_status(self, reply: _Reply, ref: Reference, what: str, blob: str | None) -> None:
        status = reply.status
        if 200 <= status < 300:
            return
        detail = _error_detail(reply.body)
        if status == 403:
            raise RegistryForbidden(
                f"registry {ref.registry} denied access to repo {ref.repository} ({detail}): "
                "the credentials are valid but may not pull it",
                reference=str(ref),
            )
        if status == 404:
            if blob is not None:
                msg = f"blob unknown: {ref.name}@{blob}"
            else:
                msg = f"manifest unknown: {ref}"
            codes = _error_codes(reply.body)
            if "NAME_UNKNOWN" in codes:
                msg += f" (repository {ref.name} does not exist)"
            raise ImageNotFound(msg, reference=str(ref))
        raise RegistryError(
            f"registry {ref.registry} answered {_status(status)} for {what}: {detail}",
            reference=str(ref),
        )

    async def _send(
        self,
        build: Callable[[], httpx.Request],
        ref: Reference,
        host: str,
        limit: int,
        what: str,
        follow_redirects: bool,
    ) -> _Reply:
        """One logical request: retries 429/5xx and transport failures with backoff."""
        s = self.settings
        failure: tuple[type[RegistryError], str] = (RegistryUnavailable, f"no attempt at {what}")
        for attempt in range(s.retries + 1):
            delay = s.backoff_seconds * (2**attempt)
            try:
                reply = await self._attempt(build(), limit, follow_redirects)
            except _TooLarge as exc:
                size = f"{exc.size}" if exc.exact else f"more than {limit}"
                raise InvalidImageData(
                    f"{what} is {size} bytes, over the limit {limit}", reference=str(ref)
                ) from None
            except (TimeoutError, httpx.TimeoutException):
                failure = (
                    RegistryUnavailable,
                    f"timed out after {s.timeout_seconds:g}s talking to {host} (fetching {what})",
                )
            except httpx.TransportError as exc:
                failure = (
                    RegistryUnavailable,
                    f"cannot reach registry {host} (fetching {what}): {_describe(exc)}",
                )
            else:
                if reply.status not in RETRY_STATUSES:
                    return reply
                failure = (
                    RegistryRateLimited,
                    f"registry {host} answered {_status(reply.status)} for {what}",
                )
                retry_after = _retry_after(reply.headers.get("retry-after"))
                if retry_after is not None:
                    delay = min(retry_after, s.max_retry_after_seconds)
            if attempt < s.retries:
                self.stats.retries += 1
                await asyncio.sleep(delay)
        kind, message = failure
        if s.retries:
            message += f" (gave up after {s.retries} retries)"
        raise kind(message, reference=str(ref))

    async def _attempt(self, request: httpx.Request, limit: int, follow_redirects: bool) -> _Reply:
        """Send and read the body under one deadline, refusing bodies over `limit`."""
        async with asyncio.timeout(self.settings.timeout_seconds):
            response = await self._http.send(
                request, stream=True, follow_redirects=follow_redirects
            )
            try:
                ok = 200 <= response.status_code < 300
                cap = limit if ok else _ERROR_BODY_LIMIT
                length = response.headers.get("content-length", "")
                if ok and length.isdigit() and int(length) > limit:
                    raise _TooLarge(int(length), exact=True)
                chunks: list[bytes] = []
                total = 0
                async for chunk in response.aiter_bytes():
                    total += len(chunk)
                    if total > cap:
                        if ok:
                            raise _TooLarge(total, exact=False)
                        break
                    chunks.append(chunk)
                return _Reply(response.status_code, response.headers, b"".join(chunks))
            finally:
                await response.aclose()


# ---- helpers -------------------------------------------------------------------------------


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


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


def _choose_entry(
    index: Manifest, platform: Platform, ref: Reference
) -> tuple[dict[str, Any], Platform]:
    """The index entry for `platform`: an exact variant beats an implied one, then index order."""
    where = f"index {index.digest} of {ref}"
    entries = _require(index.data, "manifests", list, where)
    best: tuple[int, int, dict[str, Any], Platform] | None = None
    available: list[str] = []
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
        candidate = Platform(os_, arch, variant)
        available.append(str(candidate))
        if not platform.matches(os_, arch, variant):
            continue
        exact = variant == platform.variant
        score = 0 if exact else 1
        if best is None or (score, i) < (best[0], best[1]):
            best = (score, i, entry, candidate)
    if best is None:
        listed = ", ".join(available) if available else "no platforms"
        raise PlatformNotFound(
            f"{ref} has no manifest for platform {platform}; the index has: {listed}",
            reference=str(ref),
        )
    return best[2], best[3]


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


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _error_codes(body: bytes) -> set[str]:
    try:
        data = json.loads(body)
        return {str(e.get("code")) for e in data.get("errors", []) if isinstance(e, dict)}
    except (ValueError, AttributeError, TypeError):
        return set()


def _error_detail(body: bytes) -> str:
    """The registry's own words: `CODE: message` from the OCI error body, else the text."""
    try:
        data = json.loads(body)
        errors = data.get("errors") if isinstance(data, dict) else None
        if isinstance(errors, list) and errors:
            parts = []
            for err in errors:
                if isinstance(err, dict):
                    code, message = err.get("code", ""), err.get("message", "")
                    parts.append(": ".join(str(p) for p in (code, message) if p))
            if parts:
                return "; ".join(parts)
        if isinstance(data, dict) and isinstance(data.get("details"), str):
            return str(data["details"])
    except (ValueError, UnicodeDecodeError):
        pass
    text = body.decode("utf-8", "replace").strip()
    return text[:200] if text else "no details"


def _status(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _describe(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({cause})"
    return text
