"""Registry credentials and token auth, the way Docker and the kubelet find them.

Credentials come from a docker `config.json` (`auths`, `credHelpers`, `credsStore`) and, in the
cluster, from the Pod's `imagePullSecrets` (`.dockerconfigjson` / legacy `.dockercfg`). A
`Keyring` is an ordered stack of such sources; the first source that knows a host wins, so pod
pull secrets can be put in front of the webhook's own config with `merged`.

Token auth (distribution's token spec): a 401 carries `WWW-Authenticate: Bearer realm=…,
service=…,scope=…`; we ask the realm for a `repository:<repo>:pull` token, with Basic
credentials when we have them, and cache it per (host, scope, credentials) until it expires.
The HTTP exchange itself is `webhook.registry.transport`'s, so it shares retries and limits.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from webhook.caches import BoundedCache, hashed_key
from webhook.errors import RegistryUnauthorized, UsageError
from webhook.registry.reference import DOCKER_HUB, normalize_host

log = logging.getLogger(__name__)

# Docker keys Hub credentials (and asks helpers) under this legacy URL.
HUB_SERVER_URL = "https://index.docker.io/v1/"
DEFAULT_TOKEN_TTL = 60.0
_HELPER_CACHE_SECONDS = 60.0
# Byte budgets (`webhook.caches.BoundedCache`): credential helpers' answers and bearer tokens
# (a token is whatever the token server sent, often a kilobyte-sized JWT).
HELPER_CACHE_BYTES = 256 * 1024
TOKEN_CACHE_BYTES = 4 * 1024 * 1024
_NOT_ASKED = object()


@dataclass(frozen=True)
class Credential:
    """One registry login. Secrets are kept out of `repr` so they never reach logs."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)

    @property
    def has_basic(self) -> bool:
        return bool(self.username or self.password)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def fingerprint(self) -> str:
        """A hash that tells credentials apart without holding them in cache keys."""
        blob = "\0".join((self.username, self.password, self.identity_token, self.registry_token))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CredentialSource:
    """One docker config (or pull secret): static `auths`, per-host helpers, a default store.

    `allow_helpers` is False for pull secrets: running binaries named by namespaced user data
    would be a privilege escalation, and the kubelet ignores helpers there too.
    """

    description: str
    auths: Mapping[str, Credential] = field(default_factory=dict)
    helpers: Mapping[str, str] = field(default_factory=dict)
    store: str | None = None
    # When set, the source answers only for these hosts (see `Keyring.only_for`).
    hosts: frozenset[str] | None = None

    def helper_for(self, host: str) -> str | None:
        if self.hosts is not None and host not in self.hosts:
            return None
        return self.helpers.get(host) or self.store

    def static_for(self, host: str) -> Credential | None:
        if self.hosts is not None and host not in self.hosts:
            return None
        return self.auths.get(host)


class Keyring:
    """Credentials per registry host (keys normalised: Hub is `docker.io`)."""

    def __init__(self, sources: Sequence[CredentialSource] = (), helper_timeout: float = 10.0):
        self._sources = tuple(sources)
        self._helper_timeout = helper_timeout
        # hashed (helper, host) → what the helper answered (None: nothing for that host)
        self._helper_cache: BoundedCache[str, Credential | None] = BoundedCache(
            HELPER_CACHE_BYTES, ttl=_HELPER_CACHE_SECONDS
        )

    @classmethod
    def empty(cls) -> Keyring:
        return cls(())

    @classmethod
    def from_docker_config(cls, path: Path | None = None, helper_timeout: float = 10.0) -> Keyring:
        """Read a docker `config.json`: None → ~/.docker/config.json, a directory → dir/config.json.

        A missing file is an empty keyring, as for Docker: anonymous pulls still work.
        """
        if path is None:
            path = Path.home() / ".docker" / "config.json"
        elif path.is_dir():
            path = path / "config.json"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls((), helper_timeout)
        except OSError as exc:
            raise UsageError(f"cannot read docker config {path}: {exc.strerror or exc}") from exc
        data = _load_json(text, str(path))
        auths = data.get("auths")
        if auths is None:
            auths = {}
        if not isinstance(auths, dict):
            raise UsageError(f"docker config {path}: 'auths' must be an object")
        helpers_raw = data.get("credHelpers") or {}
        if not isinstance(helpers_raw, dict) or not all(
            isinstance(v, str) for v in helpers_raw.values()
        ):
            raise UsageError(f"docker config {path}: 'credHelpers' must map hosts to helper names")
        store = data.get("credsStore") or None
        if store is not None and not isinstance(store, str):
            raise UsageError(f"docker config {path}: 'credsStore' must be a helper name")
        source = CredentialSource(
            description=str(path),
            auths=_parse_auths(auths, str(path)),
            helpers={normalize_host(k): v for k, v in helpers_raw.items() if v},
            store=store,
        )
        return cls((source,), helper_timeout)

    @classmethod
    def from_dockerconfigjson(
        cls, payload: bytes | str | Mapping[str, Any], source: str = "the pod's pull secrets"
    ) -> Keyring:
        """Read a `kubernetes.io/dockerconfigjson` (or legacy `.dockercfg`) Secret payload.

        `.dockerconfigjson` is `{"auths": {...}}`; `.dockercfg` is the auths map itself.
        Helpers are ignored on purpose (see `CredentialSource`).
        """
        if isinstance(payload, bytes | str):
            text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
            data = _load_json(text, source)
        else:
            data = dict(payload)
        nested = data.get("auths")
        auths: Mapping[str, Any] = nested if isinstance(nested, dict) else data
        return cls((CredentialSource(description=source, auths=_parse_auths(auths, source)),))

    def only_for(self, hosts: Iterable[str]) -> Keyring:
        """This keyring, answering only for `hosts` (no hosts: an empty keyring).

        The webhook inspects tenants' images with their pull secrets; its own credentials are
        added only for the registries listed in IMAGEGATE_REGISTRY_TENANT_CREDENTIAL_HOSTS, so
        they never open, for a tenant without access, a private image the webhook can read.
        """
        allowed = frozenset(normalize_host(h) for h in hosts)
        if not allowed:
            return Keyring((), self._helper_timeout)
        listed = ", ".join(sorted(allowed))
        return Keyring(
            [replace(s, hosts=allowed, description=f"{s.description} (only for {listed})")
             for s in self._sources],
            self._helper_timeout,
        )  # fmt: skip

    def merged(self, other: Keyring) -> Keyring:
        """A keyring that asks `self` first, then `other`: the first source knowing a host wins."""
        return Keyring(self._sources + other._sources, self._helper_timeout)

    @property
    def sources(self) -> tuple[CredentialSource, ...]:
        return self._sources

    def describe(self) -> str:
        """Where credentials were looked for, for error messages."""
        return " or ".join(s.description for s in self._sources) or "no docker config"

    def fingerprint(self, host: str) -> str:
        """Identifies what this keyring would use for `host`, without running helpers.

        Caches and in-flight requests are shared between callers with equal fingerprints, so
        an answer fetched with one pod's credentials is never handed to a pod without them.
        """
        host = normalize_host(host)
        parts: list[str] = []
        for src in self._sources:
            helper = src.helper_for(host)
            cred = src.static_for(host)
            if helper:
                parts.append(f"helper:{helper}")
            if cred:
                parts.append(f"cred:{cred.fingerprint()}")
        if not parts:
            return "anonymous"
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    async def get(self, host: str) -> Credential | None:
        """The credential for `host`, or None to go anonymous.

        Per source, a configured helper (credHelpers[host], else credsStore) is asked first and
        the static `auths` entry is the fallback, as in Docker's native store.
        """
        host = normalize_host(host)
        for src in self._sources:
            helper = src.helper_for(host)
            if helper:
                cred = await self._from_helper(helper, host, src.description)
                if cred is not None:
                    return cred
            static = src.static_for(host)
            if static is not None:
                return static
        return None

    async def _from_helper(self, helper: str, host: str, where: str) -> Credential | None:
        key = hashed_key(helper, host)
        known = self._helper_cache.get(key, _NOT_ASKED)
        if known is None or isinstance(known, Credential):
            return known
        cred = await run_credential_helper(helper, host, where, self._helper_timeout)
        self._helper_cache[key] = cred
        return cred


async def run_credential_helper(
    helper: str, host: str, where: str, seconds: float
) -> Credential | None:
    """Run `docker-credential-<helper> get` with the server URL on stdin (Docker's protocol).

    Returns None when the helper has no credentials for the host; any other failure raises
    RegistryUnauthorized naming the helper, the host and the config that configured it.
    """
    program = f"docker-credential-{helper}"
    server = HUB_SERVER_URL if host == DOCKER_HUB else host
    prefix = f"credential helper {program} (configured in {where}) failed for {host}"
    try:
        proc = await asyncio.create_subprocess_exec(
            program,
            "get",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # so a hung helper can be killed with its children
        )
    except FileNotFoundError as exc:
        raise RegistryUnauthorized(f"{prefix}: {program} is not installed or not on PATH") from exc
    except OSError as exc:
        raise RegistryUnauthorized(f"{prefix}: cannot run it: {exc}") from exc
    try:
        async with asyncio.timeout(seconds):
            out, err = await proc.communicate(server.encode())
    except TimeoutError as exc:
        raise RegistryUnauthorized(f"{prefix}: no answer after {seconds:g}s") from exc
    finally:
        if proc.returncode is None:  # timed out or we were cancelled: do not leave it running
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    stdout = out.decode("utf-8", "replace").strip()
    stderr = err.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        detail = stdout or stderr or f"exit status {proc.returncode}"
        if "credentials not found" in detail.lower():
            return None
        raise RegistryUnauthorized(f"{prefix}: {detail}")
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise RegistryUnauthorized(f"{prefix}: output is not JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise RegistryUnauthorized(f"{prefix}: output is not a JSON object")
    username = str(data.get("Username") or "")
    secret = str(data.get("Secret") or "")
    if not username and not secret:
        return None
    if username == "<token>":  # Docker's marker for an identity (refresh) token
        return Credential(identity_token=secret)
    return Credential(username=username, password=secret)


def _load_json(text: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where} is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{where} must hold a JSON object")
    return data


def _parse_auths(auths: Mapping[str, Any], where: str) -> dict[str, Credential]:
    """Docker accepts any URL-ish key (`https://index.docker.io/v1/`, `http://h:p/v2/`, `h:p`)."""
    out: dict[str, Credential] = {}
    for key, entry in auths.items():
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: the auths entry for {key!r} must be an object")
        cred = _parse_entry(str(key), entry, where)
        host = normalize_host(str(key))
        if cred is not None and host not in out:
            out[host] = cred
    return out


def _parse_entry(key: str, entry: Mapping[str, Any], where: str) -> Credential | None:
    username = str(entry.get("username") or "")
    password = str(entry.get("password") or "")
    encoded = entry.get("auth")
    if encoded:
        try:
            decoded = base64.b64decode(str(encoded), validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise UsageError(f"{where}: the 'auth' value for {key!r} is not base64") from exc
        if ":" not in decoded:
            raise UsageError(f"{where}: the 'auth' value for {key!r} is not base64 'user:password'")
        username, password = decoded.split(":", 1)
    cred = Credential(
        username=username,
        password=password,
        identity_token=str(entry.get("identitytoken") or ""),
        registry_token=str(entry.get("registrytoken") or ""),
    )
    if not (cred.has_basic or cred.identity_token or cred.registry_token):
        return None  # `{}` placeholders written next to a credsStore
    return cred


# ---- WWW-Authenticate ----------------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True)
class Challenge:
    """One `WWW-Authenticate` challenge; scheme and parameter names are lowercase."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scope(self) -> str:
        return self.params.get("scope", "")


def parse_challenges(headers: str | Iterable[str]) -> list[Challenge]:
    """Parse RFC 7235 challenges; quoted values may hold commas and `\\"` escapes.

    Several challenges may share one header line (`Bearer realm="a", Basic realm="b"`), and
    a response may carry several header lines. Unparseable bits are skipped, never fatal.
    """
    lines = [headers] if isinstance(headers, str) else list(headers)
    found: list[Challenge] = []
    for line in lines:
        found.extend(_parse_line(line))
    return found


def _parse_line(text: str) -> list[Challenge]:
    out: list[tuple[str, dict[str, str]]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t,":
            i += 1
            continue
        m = _TOKEN.match(text, i)
        if not m:
            i += 1
            continue
        word, i = m.group(0), m.end()
        j = i
        while j < n and text[j] in " \t":
            j += 1
        if j < n and text[j] == "=" and out:
            i = j + 1
            while i < n and text[i] in " \t":
                i += 1
            value, i = _read_value(text, i)
            out[-1][1].setdefault(word.lower(), value)
        elif j < n and text[j] == "=":
            i = j + 1  # a parameter before any scheme: ignore it
            _, i = _read_value(text, i)
        else:
            out.append((word.lower(), {}))
    return [Challenge(scheme, params) for scheme, params in out]


def _read_value(text: str, i: int) -> tuple[str, int]:
    n = len(text)
    if i < n and text[i] == '"':
        i += 1
        chars: list[str] = []
        while i < n and text[i] != '"':
            if text[i] == "\\" and i + 1 < n:
                i += 1
            chars.append(text[i])
            i += 1
        return "".join(chars), i + 1
    start = i
    while i < n and text[i] not in ", \t":
        i += 1
    return text[start:i], i


# ---- tokens --------------------------------------------------------------------------------


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def token_request(
    challenge: Challenge,
    scopes: Sequence[str],
    credential: Credential | None,
    client_id: str = "imagegate",
) -> httpx.Request:
    """The token request for a Bearer challenge.

    With an identity token, the OAuth2 refresh-token POST Docker uses; otherwise a GET with
    `service` and `scope`, carrying Basic credentials when we have them.
    """
    if not challenge.realm:
        raise RegistryUnauthorized("registry sent a Bearer challenge without a realm")
    if credential is not None and credential.identity_token:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": credential.identity_token,
            "client_id": client_id,
            "scope": " ".join(scopes),
        }
        if challenge.service:
            form["service"] = challenge.service
        return httpx.Request("POST", challenge.realm, data=form)
    params: list[tuple[str, str | int | float | bool | None]] = []
    if challenge.service:
        params.append(("service", challenge.service))
    params += [("scope", scope) for scope in scopes]
    headers = {}
    if credential is not None and credential.has_basic:
        headers["Authorization"] = credential.basic_header()
        if credential.username:
            params.append(("account", credential.username))
    return httpx.Request("GET", challenge.realm, params=params, headers=headers)


@dataclass(frozen=True)
class Token:
    value: str = field(repr=False)
    expires_in: float = DEFAULT_TOKEN_TTL


def parse_token_response(body: bytes) -> Token:
    """Read `token` (or OAuth2 `access_token`) and `expires_in` (default 60 s, as the spec says)."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"token response is not JSON: {exc}") from exc
    except RecursionError:
        raise ValueError("token response is JSON nested too deeply to read") from None
    if not isinstance(data, dict):
        raise ValueError("token response is not a JSON object")
    value = data.get("token") or data.get("access_token")
    if not isinstance(value, str) or not value:
        raise ValueError("token response has neither 'token' nor 'access_token'")
    expires = data.get("expires_in")
    ttl = float(expires) if isinstance(expires, int | float) and expires > 0 else DEFAULT_TOKEN_TTL
    return Token(value, ttl)


class TokenCache:
    """Authorization header values per (host, scope, credential fingerprint) until they expire.

    Entries are dropped a little early (`margin`) so a token never expires in flight.
    """

    def __init__(
        self,
        max_bytes: int = TOKEN_CACHE_BYTES,
        margin: float = 5.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        # Keys hashed: the scope is whatever the registry's WWW-Authenticate header said.
        self._cache: BoundedCache[str, tuple[str, float]] = BoundedCache(
            max_bytes, ttl=self._lifetime, timer=timer
        )
        self._margin = margin

    def _lifetime(self, value: tuple[str, float]) -> float:
        ttl = value[1]
        return max(ttl - min(self._margin, ttl / 2), 0.0)

    def get(self, key: tuple[str, str, str]) -> str | None:
        hit = self._cache.get(hashed_key(*key))
        return hit[0] if hit else None

    def put(self, key: tuple[str, str, str], header: str, ttl: float) -> None:
        self._cache[hashed_key(*key)] = (header, ttl)

    def discard(self, key: tuple[str, str, str]) -> None:
        self._cache.pop(hashed_key(*key), None)


CHALLENGE_MEMORY_BYTES = 256 * 1024
CHALLENGE_TTL = 3600.0


class ChallengeMemory:
    """The auth challenge each registry host answered its first 401 with.

    Knowing a host's challenge lets a request for a new repository carry credentials (or a
    token) up front instead of being refused first: one round trip saved per repository.
    Keyed by (host dialled, registry), so what one host asked for is never used for another,
    and bounded: a stale entry is forgotten on the next 401, and all expire after an hour.
    """

    def __init__(
        self,
        max_bytes: int = CHALLENGE_MEMORY_BYTES,
        ttl: float = CHALLENGE_TTL,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        # Keys hashed and values whatever a registry's header said: both bounded by bytes.
        self._cache: BoundedCache[str, Challenge] = BoundedCache(max_bytes, ttl=ttl, timer=timer)

    def get(self, key: tuple[str, str]) -> Challenge | None:
        return self._cache.get(hashed_key(*key))

    def remember(self, key: tuple[str, str], challenge: Challenge) -> None:
        self._cache[hashed_key(*key)] = challenge

    def forget(self, key: tuple[str, str]) -> None:
        self._cache.pop(hashed_key(*key), None)
