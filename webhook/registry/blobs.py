"""Blob and manifest writes (and streamed blob reads) for the rebuild engine.

`RegistryClient` reads manifests and configs, small and cached. Rebuilds also move layers, which
can be hundreds of megabytes, so this module streams them between files and the registry and
never holds a layer in memory:

* `download` streams a blob to a file and verifies its digest;
* `exists` is a blob HEAD; `upload` is HEAD, then POST + one streamed PUT (monolithic);
* `mount` is the cross-repository mount (`POST …/blobs/uploads/?mount=<digest>&from=<repo>`);
  `copy` mounts when it can and falls back to download + upload;
* `put_manifest` PUTs by digest or by tag; `manifest_digest` HEADs a tag.

Auth is the same flow as `RegistryClient`'s (Bearer token or Basic from the same `Keyring`,
helpers from `webhook.registry.auth`), with push scopes: `repository:<repo>:pull,push`, plus
`repository:<from>:pull` for a mount.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from urllib.parse import urljoin

import httpx

from webhook.errors import (
    DigestMismatch,
    ImageNotFound,
    RegistryError,
    RegistryForbidden,
    RegistryUnauthorized,
    RegistryUnavailable,
)
from webhook.registry.auth import Keyring, parse_challenges, parse_token_response
from webhook.registry.client import RETRY_STATUSES, USER_AGENT, RegistryClient
from webhook.registry.reference import Reference

CHUNK = 1024 * 1024
_ERROR_LIMIT = 2000


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


class BlobStore:
    """Streaming blob and manifest I/O against registries, sharing a `RegistryClient`'s settings.

    Use as `async with BlobStore(client) as blobs:`. `keyring` defaults to the client's.
    """

    def __init__(self, client: RegistryClient, keyring: Keyring | None = None) -> None:
        self._client = client
        self._settings = client.settings
        self._keyring = keyring if keyring is not None else client.keyring
        timeout = max(self._settings.timeout_seconds, 30.0)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), headers={"User-Agent": USER_AGENT}
        )
        self._auth: dict[tuple[str, str], str] = {}

    async def __aenter__(self) -> BlobStore:
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

    # ---- blobs -------------------------------------------------------------------------------

    async def exists(self, repo: Reference, digest: str) -> bool:
        """Blob HEAD: True when `repo` already has the blob."""
        resp = await self._request("HEAD", repo, f"blobs/{digest}", follow_redirects=True)
        if resp.status_code == 404:
            return False
        self._check(resp, repo, f"HEAD blob {digest}")
        return True

    async def download(self, repo: Reference, digest: str, dest: Path) -> int:
        """Stream blob `digest` into `dest`, verifying it; returns its size in bytes."""
        algorithm = digest.split(":", 1)[0]
        if algorithm not in ("sha256", "sha512"):
            raise RegistryError(f"cannot verify blob {digest}: unsupported digest algorithm")
        url = self._url(repo, f"blobs/{digest}")
        scope = f"repository:{repo.repository}:pull"
        for attempt in range(self._settings.retries + 1):
            hasher = hashlib.new(algorithm)
            size = 0
            try:
                header = await self._authorization(repo, scope)
                headers = {"Authorization": header} if header else {}
                request = self._http.build_request("GET", url, headers=headers)
                resp = await self._http.send(request, stream=True, follow_redirects=True)
                try:
                    if resp.status_code == 401:
                        await resp.aread()
                        await self._answer(resp, repo, scope)
                        continue
                    if resp.status_code in RETRY_STATUSES:
                        raise _Retry(f"registry answered {resp.status_code}")
                    if resp.status_code >= 300:
                        await resp.aread()
                        self._check(resp, repo, f"GET blob {digest}", blob=digest)
                    with dest.open("wb") as out:
                        async for chunk in resp.aiter_bytes(CHUNK):
                            hasher.update(chunk)
                            out.write(chunk)
                            size += len(chunk)
                finally:
                    await resp.aclose()
            except (httpx.TransportError, _Retry) as exc:
                if attempt >= self._settings.retries:
                    raise RegistryUnavailable(
                        f"cannot download blob {digest} from {repo.name}: {exc}",
                        reference=str(repo),
                    ) from exc
                await asyncio.sleep(self._settings.backoff_seconds * 2**attempt)
                continue
            got = f"{algorithm}:{hasher.hexdigest()}"
            if got != digest:
                await asyncio.to_thread(dest.unlink, missing_ok=True)
                raise DigestMismatch(
                    f"registry {repo.registry} returned content for {repo.name}@{digest} that "
                    f"hashes to {got}",
                    reference=str(repo),
                )
            return size
        raise RegistryUnauthorized(
            f"registry {repo.registry} kept answering 401 for blob {digest}", reference=str(repo)
        )

    async def upload(self, repo: Reference, digest: str, path: Path) -> bool:
        """Upload the file `path` as blob `digest` unless `repo` has it; True when uploaded.

        POST starts the session, one PUT streams the file with `?digest=` (monolithic upload).
        """
        if await self.exists(repo, digest):
            return False
        size = (await asyncio.to_thread(path.stat)).st_size
        for attempt in range(self._settings.retries + 1):
            start = await self._request("POST", repo, "blobs/uploads/", push=True)
            self._check(start, repo, "start blob upload")
            location = self._location(start, repo)
            target = httpx.URL(location).copy_merge_params({"digest": digest})
            resp = await self._request(
                "PUT",
                repo,
                str(target),
                push=True,
                body=lambda: _file_chunks(path),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )
            if resp.status_code in RETRY_STATUSES and attempt < self._settings.retries:
                await asyncio.sleep(self._settings.backoff_seconds * 2**attempt)
                continue
            self._check(resp, repo, f"upload blob {digest}")
            return True
        raise RegistryUnavailable(f"could not upload {digest} to {repo.name}", reference=str(repo))

    async def mount(self, repo: Reference, digest: str, source: Reference) -> bool:
        """Cross-repository mount of `digest` from `source` (same registry); True when done.

        False when the registry declined (it then opened an upload session, which we drop):
        the caller copies the bytes instead.
        """
        if source.registry != repo.registry:
            return False
        resp = await self._request(
            "POST",
            repo,
            f"blobs/uploads/?mount={digest}&from={source.repository}",
            push=True,
            extra_scope=f"repository:{source.repository}:pull",
        )
        if resp.status_code == 201:
            return True
        if resp.status_code == 202:
            location = resp.headers.get("location")
            if location:  # cancel the upload session the registry opened instead
                url = urljoin(self._url(repo, "blobs/uploads/"), location)
                await self._request("DELETE", repo, url, push=True)
            return False
        self._check(resp, repo, f"mount blob {digest} from {source.repository}")
        return False

    async def copy(self, source: Reference, repo: Reference, digest: str, scratch: Path) -> str:
        """Make blob `digest` of `source` available in `repo`: 'present', 'mounted' or 'copied'.

        A copy streams through the file `scratch`, which is removed afterwards.
        """
        if await self.exists(repo, digest):
            return "present"
        if await self.mount(repo, digest, source):
            return "mounted"
        try:
            await self.download(source, digest, scratch)
            await self.upload(repo, digest, scratch)
        finally:
            await asyncio.to_thread(scratch.unlink, missing_ok=True)
        return "copied"

    # ---- manifests ---------------------------------------------------------------------------

    async def manifest_digest(self, repo: Reference, reference: str, accept: str) -> str | None:
        """The digest a tag (or digest) names in `repo`, or None when it does not exist."""
        resp = await self._request(
            "HEAD", repo, f"manifests/{reference}", headers={"Accept": accept}
        )
        if resp.status_code == 404:
            return None
        self._check(resp, repo, f"HEAD manifest {reference}")
        digest = resp.headers.get("docker-content-digest")
        if isinstance(digest, str) and digest:
            return digest
        resp = await self._request(
            "GET", repo, f"manifests/{reference}", headers={"Accept": accept}
        )
        self._check(resp, repo, f"GET manifest {reference}")
        return "sha256:" + hashlib.sha256(resp.content).hexdigest()

    async def put_manifest(
        self, repo: Reference, reference: str, body: bytes, media_type: str
    ) -> str:
        """PUT a manifest or index under `reference` (its digest, or a tag); returns its digest."""
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        resp = await self._request(
            "PUT",
            repo,
            f"manifests/{reference}",
            push=True,
            content=body,
            headers={"Content-Type": media_type},
        )
        self._check(resp, repo, f"PUT manifest {repo.name}:{reference}")
        answered = resp.headers.get("docker-content-digest")
        if answered and answered != digest:
            raise DigestMismatch(
                f"registry {repo.registry} stored manifest {reference} as {answered}, "
                f"expected {digest}",
                reference=str(repo),
            )
        return digest

    # ---- HTTP with auth ----------------------------------------------------------------------

    def _url(self, repo: Reference, path: str) -> str:
        host = self._settings.mirrors.get(repo.registry, repo.api_host)
        plain = self._client.uses_plain_http(repo.registry) or self._client.uses_plain_http(host)
        return f"{'http' if plain else 'https'}://{host}/v2/{repo.repository}/{path}"

    def _location(self, resp: httpx.Response, repo: Reference) -> str:
        location = resp.headers.get("location")
        if not location:
            raise RegistryError(
                f"registry {repo.registry} started an upload without a Location header",
                reference=str(repo),
            )
        return urljoin(self._url(repo, "blobs/uploads/"), str(location))

    async def _request(
        self,
        method: str,
        repo: Reference,
        path_or_url: str,
        *,
        push: bool = False,
        extra_scope: str = "",
        content: bytes | None = None,
        body: Callable[[], AsyncIterator[bytes]] | None = None,
        headers: dict[str, str] | None = None,
        follow_redirects: bool = False,
    ) -> httpx.Response:
        """One request with auth (answering one 401) and retries on transport errors/5xx."""
        url = path_or_url if "://" in path_or_url else self._url(repo, path_or_url)
        scope = push_scope(repo.repository) if push else f"repository:{repo.repository}:pull"
        if extra_scope:
            scope = f"{scope} {extra_scope}"
        answered = False
        attempt = 0
        while True:
            header = await self._authorization(repo, scope)
            hdrs = dict(headers or {})
            if header:
                hdrs["Authorization"] = header
            try:
                resp = await self._http.request(
                    method,
                    url,
                    headers=hdrs,
                    content=body() if body is not None else content,
                    follow_redirects=follow_redirects,
                )
            except httpx.TransportError as exc:
                if attempt >= self._settings.retries:
                    raise RegistryUnavailable(
                        f"cannot reach registry {repo.registry} ({method} {url}): {exc}",
                        reference=str(repo),
                    ) from exc
                await asyncio.sleep(self._settings.backoff_seconds * 2**attempt)
                attempt += 1
                continue
            if resp.status_code == 401 and not answered:
                answered = True
                await self._answer(resp, repo, scope)
                continue
            if (
                resp.status_code in RETRY_STATUSES
                and method in ("GET", "HEAD", "DELETE")
                and attempt < self._settings.retries
            ):
                await asyncio.sleep(self._settings.backoff_seconds * 2**attempt)
                attempt += 1
                continue
            return resp

    async def _authorization(self, repo: Reference, scope: str) -> str | None:
        return self._auth.get((repo.registry, scope))

    async def _answer(self, resp: httpx.Response, repo: Reference, scope: str) -> None:
        """Work out the Authorization header answering `resp`'s 401 challenge for `scope`."""
        challenges = parse_challenges(resp.headers.get_list("www-authenticate"))
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        credential = await self._keyring.get(repo.registry)
        if bearer is not None:
            if credential is not None and credential.registry_token:
                self._auth[(repo.registry, scope)] = f"Bearer {credential.registry_token}"
                return
            if not bearer.realm:
                raise RegistryUnauthorized(
                    f"registry {repo.registry} sent a Bearer challenge without a realm",
                    reference=str(repo),
                )
            params: list[tuple[str, str | int | float | bool | None]] = [
                ("scope", s) for s in scope.split()
            ]
            if bearer.service:
                params.insert(0, ("service", bearer.service))
            headers: dict[str, str] = {}
            if credential is not None and credential.identity_token:
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": credential.identity_token,
                    "client_id": "imagegate",
                    "scope": scope,
                }
                if bearer.service:
                    form["service"] = bearer.service
                token_resp = await self._http.post(bearer.realm, data=form)
            else:
                if credential is not None and credential.has_basic:
                    headers["Authorization"] = credential.basic_header()
                    params.append(("account", credential.username))
                token_resp = await self._http.get(bearer.realm, params=params, headers=headers)
            if token_resp.status_code != 200:
                raise RegistryUnauthorized(
                    f"token server for {repo.registry} refused scope {scope!r}: "
                    f"{token_resp.status_code} {token_resp.text[:_ERROR_LIMIT]}",
                    reference=str(repo),
                )
            try:
                token = parse_token_response(token_resp.content)
            except ValueError as exc:
                raise RegistryUnauthorized(
                    f"token server for {repo.registry}: {exc}", reference=str(repo)
                ) from exc
            self._auth[(repo.registry, scope)] = f"Bearer {token.value}"
            return
        if basic is not None and credential is not None and credential.has_basic:
            self._auth[(repo.registry, scope)] = credential.basic_header()
            return
        raise RegistryUnauthorized(
            f"registry {repo.registry} needs credentials to {scope.replace(' ', ' and ')}; "
            f"none usable found in {self._keyring.describe()}",
            reference=str(repo),
        )

    def _check(
        self, resp: httpx.Response, repo: Reference, what: str, blob: str | None = None
    ) -> None:
        status = resp.status_code
        if 200 <= status < 300:
            return
        text = resp.text[:_ERROR_LIMIT] if resp.is_stream_consumed or resp.is_closed else ""
        if status == 401:
            raise RegistryUnauthorized(
                f"registry {repo.registry} refused {what} in {repo.repository}: {text}",
                reference=str(repo),
            )
        if status == 403:
            raise RegistryForbidden(
                f"registry {repo.registry} denied {what} in {repo.repository}: {text}",
                reference=str(repo),
            )
        if status == 404:
            raise ImageNotFound(
                f"{what}: not found in {repo.name}" + (f" ({blob})" if blob else ""),
                reference=str(repo),
            )
        raise RegistryError(
            f"registry {repo.registry} answered {status} for {what} in {repo.repository}: {text}",
            reference=str(repo),
        )


class _Retry(Exception):
    pass


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return
            yield chunk
