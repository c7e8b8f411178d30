"""Blob and manifest writes (and streamed blob reads) for the rebuild engine.

`RegistryClient` reads manifests and configs, small and cached. Rebuilds also move layers, which
can be hundreds of megabytes, so this module streams them between files and the registry and
never holds a layer in memory:

* `download` streams a blob to a file and verifies its digest;
* `exists` is a blob HEAD; `upload` is HEAD, then POST + one streamed PUT (monolithic);
* `mount` is the cross-repository mount (`POST …/blobs/uploads/?mount=<digest>&from=<repo>`);
  `copy` mounts when it can and falls back to download + upload;
* `put_manifest` PUTs by digest or by tag; `manifest_digest` HEADs a tag.

Every exchange goes through the client's `RegistryTransport` (same auth, token cache, retries
and error mapping), with push scopes: `repository:<repo>:pull,push`, plus
`repository:<from>:pull` for a mount. The upload PUT is sent once: its session URL is spent
when it fails midway, and the operator retries the whole rebuild.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx

from webhook.errors import DigestMismatch, RegistryError
from webhook.registry.auth import Keyring, pull_scope
from webhook.registry.client import RegistryClient
from webhook.registry.reference import Reference
from webhook.registry.transport import Body, Reply, Sink

CHUNK = 1024 * 1024


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


class BlobStore:
    """Streaming blob and manifest I/O through a `RegistryClient`'s transport.

    `keyring` defaults to the client's. It holds no connections of its own: the client's
    transport outlives it.
    """

    def __init__(
        self,
        client: RegistryClient,
        keyring: Keyring | None = None,
        *,
        read_as: Mapping[str, Keyring] | None = None,
    ) -> None:
        """`keyring` pushes (and reads); `read_as` maps a repository (`registry/name`) to the
        keyring its blobs are read with instead, such as a rebuild's source read with the
        requester's pull secrets."""
        self._transport = client.transport
        self._keyring = keyring if keyring is not None else client.keyring
        self._read_as = dict(read_as or {})

    # ---- blobs -------------------------------------------------------------------------------

    async def exists(self, repo: Reference, digest: str) -> bool:
        """Blob HEAD: True when `repo` already has the blob."""
        what = f"HEAD blob {digest}"
        reply = await self._send("HEAD", repo, f"blobs/{digest}", what, follow_redirects=True)
        if reply.status == 404:
            return False
        self._transport.check(reply, repo, what)
        return True

    async def download(self, repo: Reference, digest: str, dest: Path) -> int:
        """Stream blob `digest` into `dest`, verifying it; returns its size in bytes."""
        algorithm = digest.split(":", 1)[0]
        if algorithm not in ("sha256", "sha512"):
            raise RegistryError(f"cannot verify blob {digest}: unsupported digest algorithm")
        got = ""
        size = 0

        async def into_file(chunks: AsyncIterator[bytes]) -> None:
            nonlocal got, size
            hasher = hashlib.new(algorithm)
            size = 0
            with dest.open("wb") as out:
                async for chunk in chunks:
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            got = f"{algorithm}:{hasher.hexdigest()}"

        what = f"blob {digest}"
        reply = await self._send(
            "GET", repo, f"blobs/{digest}", what, sink=into_file, follow_redirects=True,
            keyring=self._read_as.get(repo.name),
        )  # fmt: skip
        self._transport.check(reply, repo, what, blob=digest)
        if got != digest:
            await asyncio.to_thread(dest.unlink, missing_ok=True)
            raise DigestMismatch(
                f"registry {repo.registry} returned content for {repo.name}@{digest} that "
                f"hashes to {got}",
                reference=str(repo),
            )
        return size

    async def upload(self, repo: Reference, digest: str, path: Path) -> bool:
        """Upload the file `path` as blob `digest` unless `repo` has it; True when uploaded.

        POST starts the session, one PUT streams the file with `?digest=` (monolithic upload).
        """
        if await self.exists(repo, digest):
            return False
        size = (await asyncio.to_thread(path.stat)).st_size
        start = await self._send("POST", repo, "blobs/uploads/", "start blob upload", push=True)
        self._transport.check(start, repo, "start blob upload")
        location = start.headers.get("location")
        if not location:
            raise RegistryError(
                f"registry {repo.registry} started an upload without a Location header",
                reference=str(repo),
            )
        what = f"upload blob {digest}"
        reply = await self._send(
            "PUT",
            repo,
            self._upload_url(repo, location, digest=digest),
            what,
            push=True,
            content=lambda: _file_chunks(path),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            once=True,
        )
        self._transport.check(reply, repo, what)
        return True

    async def mount(self, repo: Reference, digest: str, source: Reference) -> bool:
        """Cross-repository mount of `digest` from `source` (same registry); True when done.

        False when the registry declined (it then opened an upload session, which we drop):
        the caller copies the bytes instead.
        """
        if source.registry != repo.registry:
            return False
        what = f"mount blob {digest} from {source.repository}"
        reply = await self._send(
            "POST",
            repo,
            f"blobs/uploads/?mount={digest}&from={source.repository}",
            what,
            push=True,
            extra_scopes=(pull_scope(source.repository),),
        )
        if reply.status == 201:
            return True
        if reply.status == 202:
            location = reply.headers.get("location")
            if location:  # cancel the upload session the registry opened instead
                url = self._upload_url(repo, location)
                await self._send("DELETE", repo, url, "cancel blob upload", push=True)
            return False
        self._transport.check(reply, repo, what)
        return False

    async def copy(self, source: Reference, repo: Reference, digest: str, scratch: Path) -> str:
        """Make blob `digest` of `source` available in `repo`: 'present', 'mounted' or 'copied'.

        A copy streams through the file `scratch`, which is removed afterwards.
        """
        if await self.exists(repo, digest):
            return "present"
        # A mount reads the source with the pushing credentials: only when they are its readers.
        if source.name not in self._read_as and await self.mount(repo, digest, source):
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
        what = f"manifest {repo.name}:{reference}"
        path = f"manifests/{reference}"
        reply = await self._send("HEAD", repo, path, what, headers={"Accept": accept})
        if reply.status == 404:
            return None
        self._transport.check(reply, repo, what)
        digest = reply.headers.get("docker-content-digest")
        if isinstance(digest, str) and digest:
            return digest
        reply = await self._send("GET", repo, path, what, headers={"Accept": accept})
        self._transport.check(reply, repo, what)
        return "sha256:" + hashlib.sha256(reply.body).hexdigest()

    async def put_manifest(
        self, repo: Reference, reference: str, body: bytes, media_type: str
    ) -> str:
        """PUT a manifest or index under `reference` (its digest, or a tag); returns its digest."""
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        what = f"manifest {repo.name}:{reference} (PUT)"
        reply = await self._send(
            "PUT",
            repo,
            f"manifests/{reference}",
            what,
            push=True,
            content=body,
            headers={"Content-Type": media_type},
        )
        self._transport.check(reply, repo, what)
        answered = reply.headers.get("docker-content-digest")
        if answered and answered != digest:
            raise DigestMismatch(
                f"registry {repo.registry} stored manifest {reference} as {answered}, "
                f"expected {digest}",
                reference=str(repo),
            )
        return digest

    # ---- the transport -----------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        repo: Reference,
        path: str,
        what: str,
        *,
        push: bool = False,
        extra_scopes: tuple[str, ...] = (),
        headers: dict[str, str] | None = None,
        content: Body = None,
        sink: Sink | None = None,
        follow_redirects: bool = False,
        once: bool = False,
        keyring: Keyring | None = None,
    ) -> Reply:
        scope = push_scope(repo.repository) if push else pull_scope(repo.repository)
        return await self._transport.request(
            method,
            repo,
            path,
            what=what,
            keyring=keyring if keyring is not None else self._keyring,
            scopes=(scope, *extra_scopes),
            headers=headers,
            content=content,
            sink=sink,
            follow_redirects=follow_redirects,
            retry=not once,
        )

    def _upload_url(self, repo: Reference, location: str, **params: str) -> str:
        """An upload session's Location (relative to the upload URL, or absolute), plus params."""
        base = httpx.URL(self._transport.url(repo, "blobs/uploads/"))
        return str(base.join(location).copy_merge_params(params))


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return
            yield chunk
