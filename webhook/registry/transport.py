"""The one path to a registry's HTTP API: URLs, auth, retries, size and time limits, errors.

`RegistryClient` (cached, verified reads) and `BlobStore` (streamed layers and pushes) both
send through a `RegistryTransport`, so a fix to auth, retries or error mapping lands once:

* `url` picks the mirror and the scheme (plain HTTP only for loopback and insecure registries);
* `request` answers one 401 challenge (distribution's Bearer token flow, or Basic) and keeps
  the answer in one token cache keyed by (host, scope, credentials) until it expires;
* `_retrying` is the one retry loop: transport failures, 429 and 5xx, honouring `Retry-After`
  (capped); what cannot change by asking again (a bad URL, a redirect loop, an undecodable or
  oversized body) is not retried;
* `status_error` is the one status → exception mapping.

Every exception that leaves this module is an `ImagegateError` subclass: a hostile or broken
registry is the image's `onError` decision, never a 500 from the webhook.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import http.cookiejar
import importlib.util
import ipaddress
import json
import logging
import socket
import ssl
import sys
import urllib.request
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urljoin, urlsplit

import httpx

from webhook import __version__
from webhook.errors import (
    ImagegateError,
    ImageNotFound,
    InvalidImageData,
    RegistryError,
    RegistryForbidden,
    RegistryRateLimited,
    RegistryUnauthorized,
    RegistryUnavailable,
)
from webhook.registry.auth import (
    Challenge,
    ChallengeMemory,
    Credential,
    Keyring,
    TokenCache,
    parse_challenges,
    parse_token_response,
    pull_scope,
    token_request,
)
from webhook.registry.lean import LeanHTTP
from webhook.registry.network import PooledTransport
from webhook.registry.reference import Reference, normalize_host
from webhook.registry.tls import registry_ssl_context
from webhook.settings import RegistrySettings

log = logging.getLogger(__name__)

USER_AGENT = f"imagegate/{__version__}"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
# Layers move for minutes: a transfer has per-read timeouts of at least this, no total deadline.
TRANSFER_TIMEOUT_SECONDS = 30.0
_ERROR_BODY_LIMIT = 64 * 1024
_TOKEN_BODY_LIMIT = 1024 * 1024
_BASIC_TTL = 300.0

Sink = Callable[[AsyncIterator[bytes]], Awaitable[None]]
"""Consumes a 2xx body as it streams (a layer into a file); it is called afresh per attempt."""

Body = bytes | Callable[[], AsyncIterator[bytes]] | None
"""A request body: bytes, or a factory of a fresh stream per attempt."""


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
class Reply:
    """A response read under the limits: `body` is empty when a sink consumed it."""

    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class _TooLarge(Exception):
    def __init__(self, size: int, exact: bool, limit: int) -> None:
        super().__init__(size)
        self.size = size
        self.exact = exact
        self.limit = limit


class RegistryTransport:
    """One HTTP client, one token cache and one retry policy for every registry exchange.

    `keyring` is the process's credentials; a keyring passed to `request` replaces it for that
    call (callers put pod pull secrets in front: `pod_keyring.merged(transport.keyring)`).
    `http_transport` lets tests inject faults a real registry cannot produce on demand.
    `RegistryClient` builds it (its constructor has the defaults).
    """

    def __init__(
        self,
        settings: RegistrySettings,
        keyring: Keyring,
        http_transport: httpx.AsyncBaseTransport | None,
        timer: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.keyring = keyring
        self.stats = RegistryStats()
        _fail_sniffio_imports_fast()
        verify = registry_ssl_context(settings.ca_file)
        # Concurrency is bounded per registry by the Checker (webhook.policy.limits); one
        # pool of 100 shared by all let a few stalled registries hold every connection.
        # httpx pools per origin (scheme, host, port); idle connections are kept for
        # `keepalive_seconds` (httpx's default, 5 s, reopened them after any pause).
        limits = httpx.Limits(
            max_connections=1000,
            max_keepalive_connections=200,
            keepalive_expiry=settings.keepalive_seconds,
        )
        # Small plain-HTTP GETs skip httpx (`webhook.registry.lean`), but only beside our own
        # pooled transport: not through proxies, nor past a transport a test injects.
        self._lean: LeanHTTP | None = None
        if http_transport is None:
            http_transport = _pooled(verify, settings.http2, limits)
            if http_transport is not None:
                tls = _tls_context(settings.ca_file) if settings.http2 else None
                self._lean = LeanHTTP(settings.keepalive_seconds, USER_AGENT, tls)
        self._http = httpx.AsyncClient(
            transport=http_transport,
            verify=verify,
            # HTTPS registries that speak HTTP/2 (ALPN decides) multiplex parallel fetches on
            # one connection; plain-HTTP ones stay HTTP/1.1 (no prior-knowledge h2c).
            http2=settings.http2,
            timeout=httpx.Timeout(settings.timeout_seconds),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
            limits=limits,
            event_hooks={"request": [self._vet_hop]},
            # One client serves every tenant: a cookie one tenant's request got (a registry
            # or token server session) must never be replayed on another's.
            cookies=http.cookiejar.CookieJar(
                http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
            ),
        )
        self._redirect_networks = _networks(settings.redirect_networks)
        # asked twice per request; a pure function of the host (the settings are fixed), and
        # bounded: hosts are whatever Pods name
        self._plain_http = functools.lru_cache(maxsize=1024)(self._uses_plain_http)
        self._tokens = TokenCache(timer=timer)
        self._challenges = ChallengeMemory(timer=timer)

    async def aclose(self) -> None:
        if self._lean is not None:
            await self._lean.aclose()
        await self._http.aclose()

    # ---- addressing ----------------------------------------------------------------------------

    def api_host(self, ref: Reference) -> str:
        """The host:port actually dialled for `ref`: its mirror when one is configured."""
        return self.settings.mirrors.get(ref.registry, ref.api_host)

    def url(self, ref: Reference, path: str) -> str:
        """`/v2/<repo>/<path>` on `ref`'s registry; an absolute URL (a Location) is kept."""
        host = self.api_host(ref)
        plain = self.uses_plain_http(ref.registry) or self.uses_plain_http(host)
        base = f"{'http' if plain else 'https'}://{host}/v2/{ref.repository}/"
        return urljoin(base, path)

    def _lean_address(
        self, ref: Reference, host: str, path: str
    ) -> tuple[str, int, str, bool] | None:
        """(host, port, target, https) of a GET the lean client can send: a plain-HTTP
        registry or an HTTPS one not known to refuse HTTP/2, and a plain relative path under
        /v2/<repo>/ (anything else goes through httpx's URL rules)."""
        lean = self._lean
        if lean is None or "://" in path or path.startswith("/") or ".." in path or "#" in path:
            return None
        plain = self.uses_plain_http(ref.registry) or self.uses_plain_http(host)
        address = _host_port(host, 80 if plain else 443)
        if address is None or not (plain or lean.speaks_h2(*address)):
            return None
        return (*address, f"/v2/{ref.repository}/{path}", not plain)

    def uses_plain_http(self, host: str) -> bool:
        """Loopback registries and configured insecure ones speak HTTP, as in Docker/containerd."""
        return self._plain_http(host)

    def _uses_plain_http(self, host: str) -> bool:
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

    # ---- requests ------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        ref: Reference,
        path: str,
        *,
        what: str,
        keyring: Keyring | None = None,
        scopes: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
        content: Body = None,
        limit: int | None = None,
        sink: Sink | None = None,
        follow_redirects: bool = False,
        retry: bool | None = None,
    ) -> Reply:
        """One logical request with auth and retries; the caller judges the status.

        `scopes` default to pulling `ref`'s repository. A body over `limit` (default: the
        manifest limit) is an error; with `sink`, a 2xx body streams into it instead (a
        transfer: no total deadline). Non-idempotent methods are sent once, as is any request
        with `retry=False`. Credentials only go to `ref`'s own (or mirror) host, never to a
        Location elsewhere.
        """
        kr = keyring if keyring is not None else self.keyring
        host = self.api_host(ref)
        lean = None
        if method == "GET" and content is None and sink is None:
            lean = self._lean_address(ref, host, path)
        url: httpx.URL | None = None
        if lean is None:
            try:
                url = httpx.URL(self.url(ref, path))  # parsed once: build() reuses it
                own_host = url.netloc.decode("ascii", "replace") == host
            except (httpx.InvalidURL, ValueError) as exc:
                raise RegistryError(
                    f"cannot address {what} on {host}: {exc}", reference=str(ref)
                ) from None
        else:
            own_host = True  # a path under the registry's own /v2/<repo>/
        scopes = tuple(scopes) or (pull_scope(ref.repository),)
        token_key = (host, " ".join(scopes), kr.fingerprint(ref.registry))
        authorization = self._tokens.get(token_key)
        transfer = sink is not None or callable(content)
        cap = limit if limit is not None else self.settings.max_manifest_bytes

        def build() -> httpx.Request | LeanRequest:
            hdrs = dict(headers or {})
            if authorization and own_host:
                hdrs["Authorization"] = authorization
            if lean is not None:
                return LeanRequest(*lean, list(hdrs.items()))
            assert url is not None
            body = content() if callable(content) else content
            timeout = (
                httpx.Timeout(max(self.settings.timeout_seconds, TRANSFER_TIMEOUT_SECONDS))
                if transfer
                else httpx.USE_CLIENT_DEFAULT
            )
            return self._http.build_request(
                method, url, headers=hdrs, content=body, timeout=timeout
            )

        async def send() -> Reply:
            return await self._retrying(
                lambda: self._attempt(build(), cap, follow_redirects, sink, transfer),
                ref,
                host,
                what,
                retry=method in IDEMPOTENT_METHODS if retry is None else retry,
            )

        # A host whose challenge is known gets its credentials up front: no 401 probe per
        # new repository (a Bearer registry costs token + request, not probe + token + retry).
        # Only for the host the challenge came from; the realm is vetted again on every use.
        challenge_key = (host, ref.registry)
        remembered = self._challenges.get(challenge_key) if own_host else None
        answered: tuple[str, float] | None = None
        failed: ImagegateError | None = None
        credential: Credential | None = None
        if authorization is None and remembered is not None:
            try:
                header, credential, ttl = await self._answer(remembered, ref, kr, scopes)
            except ImagegateError as exc:
                # a stale realm, or one that refuses: forget it and probe once below
                self._challenges.forget(challenge_key)
                failed = exc
            else:
                if header is not None:
                    authorization = header
                    answered = (header, ttl)

        reply = await send()
        if reply.status != 401:
            if answered is not None:
                self._tokens.put(token_key, *answered)
            return reply
        # Refused: a cached token expired early, or a remembered challenge is stale. The 401
        # carries the host's current challenge; answer it once, never loop.
        self._tokens.discard(token_key)
        self._challenges.forget(challenge_key)
        challenge = self._pick_challenge(reply, ref)
        if remembered is not None and _same_challenge(challenge, remembered):
            if failed is not None:
                raise failed  # the same realm again: it would fail the same way
            if answered is not None:
                # a token fresh from this very realm was refused: another would be too
                raise _unauthorized(ref, reply, credential, kr)
        header, credential, ttl = await self._answer(challenge, ref, kr, scopes)
        if header is None:
            raise _unauthorized(ref, reply, None, kr)
        authorization = header
        reply = await send()
        if reply.status == 401:
            raise _unauthorized(ref, reply, credential, kr)
        self._tokens.put(token_key, authorization, ttl)
        if own_host:
            self._challenges.remember(challenge_key, _essential(challenge))
        return reply

    def check(self, reply: Reply, ref: Reference, what: str, blob: str | None = None) -> Reply:
        """`reply` when it is a 2xx, else the error its status means."""
        if reply.ok:
            return reply
        raise status_error(reply, ref, what, blob)

    # ---- auth ----------------------------------------------------------------------------------

    def _pick_challenge(self, reply: Reply, ref: Reference) -> Challenge:
        """The challenge of a 401 that imagegate answers: Bearer, else Basic."""
        challenges = parse_challenges(reply.headers.get_list("www-authenticate"))
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        chosen = bearer or basic
        if chosen is None:
            raise RegistryUnauthorized(
                f"registry {ref.registry} answered 401 for {ref} without a Bearer or Basic "
                "WWW-Authenticate challenge",
                reference=str(ref),
            )
        return chosen

    async def _answer(
        self, challenge: Challenge, ref: Reference, keyring: Keyring, scopes: Sequence[str]
    ) -> tuple[str | None, Credential | None, float]:
        """The Authorization header answering `challenge`, the credential used, and its
        lifetime; no header for a Basic challenge without credentials (the request then goes
        anonymously, and a 401 says which credentials are missing)."""
        credential = await keyring.get(ref.registry)
        if challenge.scheme == "bearer":
            if credential is not None and credential.registry_token:
                return f"Bearer {credential.registry_token}", credential, _BASIC_TTL
            header, ttl = await self._fetch_token(challenge, scopes, credential, ref, keyring)
            return header, credential, ttl
        if credential is None or not credential.has_basic:
            return None, None, 0.0
        return credential.basic_header(), credential, _BASIC_TTL

    async def _fetch_token(
        self,
        challenge: Challenge,
        scopes: Sequence[str],
        credential: Credential | None,
        ref: Reference,
        keyring: Keyring,
    ) -> tuple[str, float]:
        self.stats.token_fetches += 1
        what = f"a token for {' '.join(scopes)}"
        if not challenge.realm:
            raise RegistryUnauthorized(
                f"registry {ref.registry} sent a Bearer challenge without a realm",
                reference=str(ref),
            )
        realm_host = self._check_realm(challenge.realm, ref)
        reply = await self._retrying(
            lambda: self._attempt(
                token_request(challenge, scopes, credential), _TOKEN_BODY_LIMIT, True, None, False
            ),
            ref,
            realm_host,
            what,
            retry=True,
        )
        if reply.status in (401, 403):
            raise _unauthorized(ref, reply, credential, keyring, via=f"token server {realm_host}")
        if not reply.ok:
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

    def _check_realm(self, realm: str, ref: Reference) -> str:
        """The realm's host, when the webhook may send credentials there: https, or plain
        HTTP only to the registry's own host or a registry configured as insecure (a
        registry must not point the webhook, and its credentials, at any http:// URL)."""
        try:
            url = httpx.URL(realm)
            host = url.netloc.decode("ascii", "replace")
        except (httpx.InvalidURL, ValueError):
            raise RegistryUnauthorized(
                f"registry {ref.registry} named a token realm that is not a URL", str(ref)
            ) from None
        if url.scheme == "https":
            return host
        if url.scheme == "http" and (host == self.api_host(ref) or self.uses_plain_http(host)):
            return host
        raise RegistryUnauthorized(
            f"registry {ref.registry} named the token realm {url.scheme}://{host}: refused, a "
            "realm must be https, the registry itself, or a registry configured as insecure",
            reference=str(ref),
        )

    # ---- redirects ---------------------------------------------------------------------------

    async def _vet_hop(self, request: httpx.Request) -> None:
        """httpx request hook: a redirect to another host may not reach a private, loopback or
        link-local address unless its range is configured (`redirect_networks`): otherwise any
        registry could make the webhook GET an internal URL (SSRF). The name is resolved here
        and again by httpx when it connects; a DNS answer that changes in between (rebinding)
        is not caught."""
        origin = _ORIGIN.get()
        host = request.url.host
        if origin is None or host == origin:
            return
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        for address in await _addresses(host, port):
            if address.is_global or any(address in net for net in self._redirect_networks):
                continue
            raise RegistryError(
                f"registry {origin} redirected to {host} ({address}), a private, loopback or "
                "link-local address: refused (allow its range with "
                "IMAGEGATE_REGISTRY_REDIRECT_NETWORKS)"
            )

    # ---- the one retry loop --------------------------------------------------------------------

    async def _retrying(
        self,
        attempt: Callable[[], Awaitable[Reply]],
        ref: Reference,
        host: str,
        what: str,
        *,
        retry: bool,
    ) -> Reply:
        """Run `attempt`, retrying 429/5xx and transport failures with backoff when `retry`."""
        s = self.settings
        tries = s.retries + 1 if retry else 1
        failure: tuple[type[RegistryError], str] = (RegistryUnavailable, f"no attempt at {what}")
        for n in range(tries):
            delay = s.backoff_seconds * (2**n)
            try:
                reply = await attempt()
            except _TooLarge as exc:
                size = f"{exc.size}" if exc.exact else f"more than {exc.limit}"
                raise InvalidImageData(
                    f"{what} is {size} bytes, over the limit {exc.limit}", reference=str(ref)
                ) from None
            except (TimeoutError, httpx.TimeoutException):
                failure = (
                    RegistryUnavailable,
                    f"timed out after {s.timeout_seconds:g}s talking to {host} (fetching {what})",
                )
            except httpx.UnsupportedProtocol as exc:
                raise RegistryError(
                    f"cannot talk to {host} (fetching {what}): {exc}", reference=str(ref)
                ) from None
            except httpx.ConnectError as exc:
                untrusted = _certificate_error(exc)
                if untrusted is not None:  # asking again cannot change the answer
                    raise RegistryError(
                        f"registry {host} presented a TLS certificate imagegate does not "
                        f"trust ({untrusted}): if it is signed by a private CA, add that CA "
                        "with IMAGEGATE_REGISTRY_CA_FILE (chart value registryCA)",
                        reference=str(ref),
                    ) from None
                failure = (
                    RegistryUnavailable,
                    f"cannot reach registry {host} (fetching {what}): {_describe(exc)}",
                )
            except httpx.TransportError as exc:
                failure = (
                    RegistryUnavailable,
                    f"cannot reach registry {host} (fetching {what}): {_describe(exc)}",
                )
            except httpx.TooManyRedirects:
                raise RegistryError(
                    f"registry {host} redirected too many times (fetching {what})",
                    reference=str(ref),
                ) from None
            except httpx.DecodingError as exc:
                raise InvalidImageData(
                    f"registry {host} sent a body that cannot be decoded (fetching {what}): {exc}",
                    reference=str(ref),
                ) from None
            except ImagegateError:
                raise  # a sink's verdict (a digest mismatch), already explained
            except Exception as exc:  # httpx.InvalidURL, StreamError, or a bug below us
                log.warning("unexpected failure talking to %s", host, exc_info=True)
                raise RegistryError(
                    f"bad exchange with {host} (fetching {what}): {type(exc).__name__}: {exc}",
                    reference=str(ref),
                ) from None
            else:
                if reply.status not in RETRY_STATUSES:
                    return reply
                failure = (
                    RegistryRateLimited if reply.status == 429 else RegistryUnavailable,
                    f"registry {host} answered {_status(reply.status)} for {what}",
                )
                retry_after = _retry_after(reply.headers.get("retry-after"))
                if retry_after is not None:
                    delay = min(retry_after, s.max_retry_after_seconds)
            if n + 1 < tries:
                self.stats.retries += 1
                await asyncio.sleep(delay)
        kind, message = failure
        if tries > 1:
            message += f" (gave up after {tries - 1} retries)"
        raise kind(message, reference=str(ref))

    async def _attempt(
        self,
        request: httpx.Request | LeanRequest,
        limit: int,
        follow_redirects: bool,
        sink: Sink | None,
        transfer: bool,
    ) -> Reply:
        """Send and read the body (under one deadline unless a transfer), refusing over `limit`."""
        deadline = None if transfer else self.settings.timeout_seconds
        origin = _ORIGIN.set(request.host if isinstance(request, LeanRequest) else request.url.host)
        try:
            async with asyncio.timeout(deadline):
                return await self._read(request, limit, follow_redirects, sink)
        finally:
            _ORIGIN.reset(origin)

    async def _read(
        self,
        request: httpx.Request | LeanRequest,
        limit: int,
        follow_redirects: bool,
        sink: Sink | None,
    ) -> Reply:
        if isinstance(request, httpx.Request) and sink is None and self._lean is not None:
            lean = _lean_request(request)  # a token GET, built by httpx's rules
            if lean is not None:
                request = lean
        if isinstance(request, LeanRequest):
            try:
                reply = await self._read_lean(request, limit)
            except httpx.UnsupportedProtocol:  # an HTTPS registry without HTTP/2: httpx's
                request = request.as_httpx(USER_AGENT)
            else:
                location = reply.headers.get("location") if reply.status in _REDIRECTS else None
                if not (follow_redirects and location):
                    return reply
                request = _redirected(request.as_httpx(USER_AGENT), location)  # httpx goes on
        response = await self._http.send(request, stream=True, follow_redirects=follow_redirects)
        try:
            ok = 200 <= response.status_code < 300
            if ok and sink is not None:
                await sink(response.aiter_bytes())
                return Reply(response.status_code, response.headers, b"")
            cap = limit if ok else _ERROR_BODY_LIMIT
            length = response.headers.get("content-length", "")
            if ok and length.isascii() and length.isdigit() and int(length) > cap:
                raise _TooLarge(int(length), exact=True, limit=cap)
            chunks: list[bytes] = []
            total = 0
            async for chunk in response.aiter_bytes():
                total += len(chunk)
                if total > cap:
                    if ok:
                        raise _TooLarge(total, exact=False, limit=cap)
                    break
                chunks.append(chunk)
            return Reply(response.status_code, response.headers, b"".join(chunks))
        finally:
            await response.aclose()

    async def _read_lean(self, request: LeanRequest, limit: int) -> Reply:
        """`_read` for a small plain-HTTP GET: the same limits, the same Reply."""
        assert self._lean is not None
        get = self._lean.get_h2 if request.https else self._lean.get
        answer = await get(
            request.host,
            request.port,
            request.target,
            request.headers,
            max(limit, _ERROR_BODY_LIMIT),
        )
        reply_headers = httpx.Headers(answer.headers)
        ok = 200 <= answer.status < 300
        body = answer.body
        encoding = reply_headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):  # not asked for, but decoded as httpx would
            body = _decoded(body, encoding, max(limit, _ERROR_BODY_LIMIT) + 1)
        if ok:
            length = reply_headers.get("content-length", "")
            if length.isascii() and length.isdigit() and int(length) > limit:
                raise _TooLarge(int(length), exact=True, limit=limit)
            if len(body) > limit:
                raise _TooLarge(len(body), exact=False, limit=limit)
        else:
            body = body[:_ERROR_BODY_LIMIT]
        return Reply(answer.status, reply_headers, body)


# ---- the one status → exception mapping ----------------------------------------------------


def status_error(reply: Reply, ref: Reference, what: str, blob: str | None = None) -> RegistryError:
    """The `ImagegateError` a non-2xx answer means, in the registry's own words."""
    status = reply.status
    detail = _error_detail(reply.body)
    if status == 401:
        return RegistryUnauthorized(
            f"registry {ref.registry} refused {what} in repo {ref.repository}: {detail}",
            reference=str(ref),
        )
    if status == 403:
        return RegistryForbidden(
            f"registry {ref.registry} denied access to repo {ref.repository} for {what} "
            f"({detail}): the credentials are valid but lack permission",
            reference=str(ref),
        )
    if status == 404:
        if blob is not None:
            msg = f"blob unknown: {ref.name}@{blob}"
        elif what.startswith("manifest"):
            msg = f"manifest unknown: {ref}"
        else:
            msg = f"{what}: not found in {ref.name}"
        if "NAME_UNKNOWN" in _error_codes(reply.body):
            msg += f" (repository {ref.name} does not exist)"
        return ImageNotFound(msg, reference=str(ref))
    if status == 429:
        return RegistryRateLimited(
            f"registry {ref.registry} answered {_status(status)} for {what}: {detail}",
            reference=str(ref),
        )
    return RegistryError(
        f"registry {ref.registry} answered {_status(status)} for {what}: {detail}",
        reference=str(ref),
    )


def _unauthorized(
    ref: Reference,
    reply: Reply,
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


# ---- helpers -------------------------------------------------------------------------------


_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Headers the lean client writes itself, or must not pass on (it asks for no compression).
_LEAN_SETS = frozenset({b"host", b"user-agent", b"accept-encoding", b"connection"})


class LeanRequest(NamedTuple):
    """A GET for the lean client (`webhook.registry.lean`): no httpx URL or Request objects."""

    host: str
    port: int
    target: str  # path and query, as sent
    https: bool
    headers: list[tuple[str, str]]

    def as_httpx(self, user_agent: str) -> httpx.Request:
        """The same request for httpx (to follow a redirect from)."""
        authority = f"[{self.host}]" if ":" in self.host else self.host
        url = f"{'https' if self.https else 'http'}://{authority}:{self.port}{self.target}"
        return httpx.Request("GET", url, headers=[("User-Agent", user_agent), *self.headers])


def _lean_request(request: httpx.Request) -> LeanRequest | None:
    """`request` for the lean client when it is a GET without a body to a plain-HTTP origin
    (HTTPS stays on httpx, for HTTP/2)."""
    if request.method != "GET" or request.url.scheme != "http":
        return None
    if "content-length" in request.headers or "transfer-encoding" in request.headers:
        return None
    headers = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in request.headers.raw
        if name.lower() not in _LEAN_SETS
    ]
    url = request.url
    return LeanRequest(url.host, url.port or 80, url.raw_path.decode("ascii"), False, headers)


@functools.lru_cache(maxsize=1024)
def _host_port(authority: str, default_port: int = 80) -> tuple[str, int] | None:
    """("host", port) of a registry's `host[:port]`; None when odd."""
    try:
        parts = urlsplit(f"http://{authority}")
        port = parts.port or default_port
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname else None


def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """A context of the lean client's own (it asks for HTTP/2 by ALPN), trusting what httpx's
    does: the registry CA bundle, or httpx's default roots (SSL_CERT_FILE / SSL_CERT_DIR)."""
    context = registry_ssl_context(ca_file)
    if isinstance(context, ssl.SSLContext):
        return context
    return httpx.create_ssl_context(verify=context, trust_env=True)


def _decoded(body: bytes, encoding: str, cap: int) -> bytes:
    """A gzip or deflate body, decoded to at most `cap` bytes (a small bomb stays small)."""
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
    if encoding not in wbits:
        raise httpx.DecodingError(f"the body is {encoding}-encoded, which imagegate does not read")
    decoder = zlib.decompressobj(wbits[encoding])
    try:
        out = decoder.decompress(body, cap)
    except zlib.error as err:
        raise httpx.DecodingError(f"{encoding}: {err}") from None
    if len(out) < cap and not decoder.eof:
        raise httpx.DecodingError(f"{encoding}: the compressed body ends early")
    return out


def _redirected(request: httpx.Request, location: str) -> httpx.Request:
    """The GET a redirect asks for, as httpx would make it: credentials only to the same
    origin (scheme, host and port)."""
    url = request.url.join(location)
    headers = request.headers.copy()
    del headers["host"]
    if (url.scheme, url.host, url.port) != (request.url.scheme, request.url.host, request.url.port):
        headers.pop("authorization", None)
    return httpx.Request("GET", url, headers=headers, extensions=request.extensions)


_ORIGIN: ContextVar[str | None] = ContextVar("imagegate_request_origin", default=None)
"""The host the current request was sent to: hops to other hosts are redirects to vet."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _networks(entries: Sequence[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip())


async def _addresses(host: str, port: int) -> list[IPAddress]:
    """`host`'s addresses: itself when an IP literal, else what the resolver says (nothing
    when it cannot resolve: the connection then fails on its own)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


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
    except (ValueError, AttributeError, TypeError, RecursionError):
        return set()


# The distribution spec's error codes: a closed set, so naming them leaks nothing.
OCI_ERROR_CODES = frozenset(
    {
        "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID",
        "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED", "DENIED", "UNSUPPORTED",
        "TOOMANYREQUESTS",
    }
)  # fmt: skip


def _error_detail(body: bytes) -> str:
    """What an error answer may tell the user: the spec's error codes it carries, never its
    text. Whoever creates a Pod chooses the host the webhook asks (any URL a registry or token
    realm names), so an upstream body echoed into a denial would read internal services for
    them; the text goes to the log instead."""
    codes = sorted(_error_codes(body) & OCI_ERROR_CODES)
    if body:
        text = body[:500].decode("utf-8", "replace").strip()
        log.info("registry error answer", extra={"codes": codes, "body": text})
    return ", ".join(codes) if codes else "no error code (the answer's text is in the log)"


def _status(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _fail_sniffio_imports_fast() -> None:
    """httpcore runs `import sniffio` on every request; sniffio is optional (anyio 4 does not
    need it), and a failed import is not cached: each one scans sys.path, a third of a
    millisecond per request, more than the rest of a cold admission's HTTP work. A None in
    `sys.modules` makes that import fail at once, as httpcore expects when it is absent."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


def _pooled(
    verify: ssl.SSLContext | bool, http2: bool, limits: httpx.Limits
) -> httpx.AsyncBaseTransport | None:
    """The registry connections: httpx's transport on the asyncio network backend
    (`webhook.registry.network`), or httpx's own (None) should its internals have moved or
    HTTP(S)_PROXY / ALL_PROXY be set: httpx routes through those only with its own."""
    proxies = urllib.request.getproxies()
    if any(proxies.get(scheme) for scheme in ("http", "https", "all")):
        return None
    try:
        return PooledTransport(verify=verify, http2=http2, limits=limits)
    except TypeError:
        log.warning("httpx changed: registry connections use its default (slower) backend")
        return None


def _essential(challenge: Challenge) -> Challenge:
    """What is worth remembering of a host's challenge: not the scope of one repository."""
    kept = {k: v for k, v in challenge.params.items() if k in ("realm", "service")}
    return Challenge(challenge.scheme, kept)


def _same_challenge(a: Challenge, b: Challenge) -> bool:
    return (a.scheme, a.realm, a.service) == (b.scheme, b.realm, b.service)


def _certificate_error(exc: BaseException) -> str | None:
    """The reason a TLS peer's certificate was refused, when that is why `exc` happened."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or seen.reason or str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _describe(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({cause})"
    return text
