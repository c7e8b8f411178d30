"""Digest verification: manifests, configs, blobs and pushed manifests, over an in-process HTTP
registry (`httpx.MockTransport`: the client, its transport, auth and retries are the real ones;
only the socket is not).

`make mutate` found the verification paths held loosely: which error a lying registry gets and
for which reference, what each request asks for (Accept, limits, retries, redirects, the
keyring and scope it uses), and `BlobStore.put_manifest` not tested in-process at all.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.unit.fakes import dockerconfigjson
from webhook.errors import DigestMismatch, ImageNotFound, InvalidImageData, RegistryError
from webhook.registry import mediatypes as mt
from webhook.registry.auth import Keyring
from webhook.registry.blobs import BlobStore
from webhook.registry.client import RegistryClient, _verify
from webhook.registry.reference import Reference
from webhook.settings import RegistrySettings

HOST = "localhost:5001"
CONFIG_ACCEPT = f"{mt.OCI_CONFIG}, {mt.DOCKER_CONFIG}, application/json, */*"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ref(rest: str) -> Reference:
    return Reference.parse(f"{HOST}/{rest}")


class Chunks(httpx.AsyncByteStream):
    """A body that arrives in several chunks, as a large blob does."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] | None = None

    def response(self) -> httpx.Response:
        if self.chunks is not None:
            return httpx.Response(self.status, headers=self.headers, stream=Chunks(self.chunks))
        return httpx.Response(self.status, headers=self.headers, content=self.body)


@dataclass
class Registry:
    """Answers by path (one answer, or a list used in turn, the last one repeated); 404 else.

    `basic`: the `user:password` every /v2/ request must carry. `bearer`: /v2/ requests need
    a token, which /token hands out (and records the scope asked for)."""

    routes: dict[str, Answer | list[Answer]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    basic: str | None = None
    bearer: bool = False
    scopes: list[str] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/token":
            self.scopes += request.url.params.get_list("scope")
            return httpx.Response(200, json={"token": "t"})
        refused = self._refused(request.headers.get("authorization"))
        if refused is not None:
            return refused
        route = self.routes.get(path)
        if route is None:
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN"}]})
        if isinstance(route, list):
            return (route.pop(0) if len(route) > 1 else route[0]).response()
        return route.response()

    def _refused(self, authorization: str | None) -> httpx.Response | None:
        if self.basic is not None:
            wanted = "Basic " + base64.b64encode(self.basic.encode()).decode()
            if authorization != wanted:
                return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        if self.bearer and authorization != "Bearer t":
            challenge = f'Bearer realm="http://{HOST}/token",service="{HOST}"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return None

    def sent(self, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == path]

    def add_manifest(
        self, repo: str, tag: str, config: bytes, *, headers: dict[str, str] | None = None,
        media_type: str | None = mt.OCI_MANIFEST,
    ) -> tuple[str, bytes]:  # fmt: skip
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": sha(config), "size": len(config)},
            "layers": [],
        }
        if media_type:
            manifest["mediaType"] = media_type
        body = json.dumps(manifest).encode()
        answer = Answer(
            200, body, headers if headers is not None else {"Content-Type": mt.OCI_MANIFEST}
        )
        self.routes[f"/v2/{repo}/manifests/{tag}"] = answer
        self.routes[f"/v2/{repo}/manifests/{sha(body)}"] = answer
        self.routes[f"/v2/{repo}/blobs/{sha(config)}"] = Answer(200, config)
        return sha(body), body


def settings(**overrides: Any) -> RegistrySettings:
    values: dict[str, Any] = {
        "timeout_seconds": 2.0,
        "retries": 1,
        "backoff_seconds": 0.0,
        "max_retry_after_seconds": 0.0,
        "negative_ttl_seconds": 0.0,
    }
    return RegistrySettings(**(values | overrides))


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
async def client_for(registry: Registry) -> AsyncIterator[Callable[..., RegistryClient]]:
    """Makes RegistryClients talking to `registry` (closed after the test)."""
    made: list[RegistryClient] = []

    def make(keyring: Keyring | None = None, **overrides: Any) -> RegistryClient:
        c = RegistryClient(
            settings(**overrides), keyring or Keyring.empty(), httpx.MockTransport(registry)
        )
        made.append(c)
        return c

    yield make
    for c in made:
        await c.aclose()


CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"diff_ids": []}}).encode()


# ---- manifests -------------------------------------------------------------------------------


async def test_every_fetch_is_counted_and_asks_for_what_imagegate_reads(
    registry: Registry, client_for: Callable[..., RegistryClient]
) -> None:
    other = CONFIG.replace(b"amd64", b"arm64")
    registry.add_manifest("app", "1", CONFIG)
    registry.add_manifest("app", "2", other)
    client = client_for()
    await client.get_manifest(ref("app:1"))
    await client.get_manifest(ref("app:2"))
    await client.get_config(ref("app:1"), sha(CONFIG))
    await client.get_config(ref("app:2"), sha(other))
    assert (client.stats.manifest_fetches, client.stats.config_fetches) == (2, 2)
    assert {r.headers["accept"] for r in registry.sent("/v2/app/manifests/1")} == {mt.ACCEPT}
    assert {r.headers["accept"] for r in registry.sent(f"/v2/app/blobs/{sha(CONFIG)}")} == {
        CONFIG_ACCEPT
    }


@pytest.mark.parametrize(
    "header",
    ["sha256:" + "0" * 64, "sha256:" + "0" * 64 + ":x"],
    ids=["another-digest", "another-digest-with-a-colon"],
)
async def test_a_digest_header_of_the_bodys_algorithm_that_differs_is_refused(
    registry: Registry, client_for: Callable[..., RegistryClient], header: str
) -> None:
    digest, _ = registry.add_manifest(
        "app",
        "1",
        CONFIG,
        headers={"Content-Type": mt.OCI_MANIFEST, "Docker-Content-Digest": header},
    )
    with pytest.raises(DigestMismatch) as caught:
        await client_for().get_manifest(ref("app:1"))
    assert caught.value.message == (
        f"registry {HOST} returned content for {HOST}/app:1 that hashes to {digest}, but its "
        f"Docker-Content-Digest header says {header}"
    )
    assert caught.value.reference == f"{HOST}/app:1"


async def test_the_content_type_names_the_manifest_type_when_the_body_does_not(
    registry: Registry, client_for: Callable[..., RegistryClient]
) -> None:
    registry.add_manifest(
        "app", "1", CONFIG, headers={"Content-Type": mt.DOCKER_MANIFEST}, media_type=None
    )
    manifest = await client_for().get_manifest(ref("app:1"))
    assert manifest.media_type == mt.DOCKER_MANIFEST


# ---- configs ---------------------------------------------------------------------------------


async def test_a_config_is_read_under_its_own_size_limit(
    registry: Registry, client_for: Callable[..., RegistryClient]
) -> None:
    big = json.dumps({"rootfs": {"diff_ids": []}, "pad": "x" * 5000}).encode()
    registry.add_manifest("app", "1", big)
    client = client_for(max_manifest_bytes=1000, max_config_bytes=100_000)
    assert (await client.get_config(ref("app:1"), sha(big)))["pad"] == "x" * 5000


async def test_a_config_request_is_retried_once_the_registry_recovers(
    registry: Registry, client_for: Callable[..., RegistryClient]
) -> None:
    path = f"/v2/app/blobs/{sha(CONFIG)}"
    registry.routes[path] = [Answer(503), Answer(200, CONFIG)]
    client = client_for()
    assert (await client.get_config(ref("app:1"), sha(CONFIG)))["os"] == "linux"
    assert client.stats.retries == 1


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        pytest.param(
            Answer(400, b'{"errors": [{"code": "DENIED"}]}'), RegistryError,
            "registry {host} answered 400 Bad Request for image config {d} of {host}/app:1: DENIED",
            id="refused",
        ),
        pytest.param(
            Answer(503), RegistryError,
            "registry {host} answered 503 Service Unavailable for image config {d} of "
            "{host}/app:1 (gave up after 1 retries)",
            id="unavailable",
        ),
        pytest.param(Answer(404), ImageNotFound, "blob unknown: {host}/app@{d}", id="missing"),
        pytest.param(
            Answer(200, b"not json"), InvalidImageData,
            "image config {d} of {host}/app:1 is not valid JSON: Expecting value: line 1 column 1 "
            "(char 0)",
            id="not-json",
        ),
    ],
)  # fmt: skip
async def test_a_config_that_cannot_be_read_says_which_and_why(
    registry: Registry,
    client_for: Callable[..., RegistryClient],
    answer: Answer,
    error: type[RegistryError],
    message: str,
) -> None:
    digest = sha(b"not json") if answer.body == b"not json" else sha(CONFIG)
    registry.routes[f"/v2/app/blobs/{digest}"] = answer
    with pytest.raises(error) as caught:
        await client_for().get_config(ref("app:1"), digest)
    assert caught.value.message == message.format(host=HOST, d=digest)
    assert caught.value.reference == f"{HOST}/app:1"


# ---- _verify ---------------------------------------------------------------------------------


def test_verify_hashes_with_the_expected_digests_algorithm() -> None:
    body = b"content"
    assert _verify(body, ref("app:1"), None) == sha(body)
    sha512 = "sha512:" + hashlib.sha512(body).hexdigest()
    assert _verify(body, ref("app:1"), sha512) == sha512


@pytest.mark.parametrize(
    ("expected", "error", "message"),
    [
        pytest.param(
            "sha256:" + "0" * 64, DigestMismatch,
            "registry {host} returned content for {host}/app@{e} that hashes to {got}",
            id="another-digest",
        ),
        pytest.param(
            "sha256:" + "0" * 64 + ":x", DigestMismatch,
            "registry {host} returned content for {host}/app@{e} that hashes to {got}",
            id="an-extra-colon-is-part-of-the-value",
        ),
        pytest.param(
            "md5:" + "0" * 32, InvalidImageData,
            "cannot verify {e}: digest algorithm md5 is not supported",
            id="unsupported",
        ),
    ],
)  # fmt: skip
def test_verify_refuses_content_that_is_not_what_was_asked_for(
    expected: str, error: type[RegistryError], message: str
) -> None:
    with pytest.raises(error) as caught:
        _verify(b"content", ref("app:1"), expected)
    assert caught.value.message == message.format(host=HOST, e=expected, got=sha(b"content"))
    assert caught.value.reference == f"{HOST}/app:1"


# ---- blob downloads --------------------------------------------------------------------------

LAYER = b"layer " * 1000


async def test_a_blob_in_several_chunks_is_written_and_its_whole_size_returned(
    registry: Registry, client_for: Callable[..., RegistryClient], tmp_path: Path
) -> None:
    chunks = [LAYER[:1000], LAYER[1000:2500], LAYER[2500:]]
    registry.routes[f"/v2/app/blobs/{sha(LAYER)}"] = Answer(chunks=chunks)
    size = await BlobStore(client_for()).download(ref("app"), sha(LAYER), tmp_path / "layer")
    assert size == len(LAYER)
    assert (tmp_path / "layer").read_bytes() == LAYER


async def test_a_blob_download_follows_a_redirect_and_retries(
    registry: Registry, client_for: Callable[..., RegistryClient], tmp_path: Path
) -> None:
    registry.routes[f"/v2/app/blobs/{sha(LAYER)}"] = Answer(307, headers={"Location": "/data/1"})
    registry.routes["/data/1"] = [Answer(503), Answer(200, LAYER)]
    client = client_for()
    assert await BlobStore(client).download(ref("app"), sha(LAYER), tmp_path / "l") == len(LAYER)
    assert client.stats.retries == 1


async def test_a_blob_is_read_with_the_keyring_named_for_its_repository(
    registry: Registry, client_for: Callable[..., RegistryClient], tmp_path: Path
) -> None:
    registry.basic = "alice:s3cret"
    registry.routes[f"/v2/app/blobs/{sha(LAYER)}"] = Answer(200, LAYER)
    reader = Keyring.from_dockerconfigjson(dockerconfigjson(HOST, "alice", "s3cret"))
    store = BlobStore(client_for(), read_as={f"{HOST}/app": reader})
    assert await store.download(ref("app"), sha(LAYER), tmp_path / "layer") == len(LAYER)


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        pytest.param(Answer(404), ImageNotFound, "blob unknown: {host}/app@{d}", id="missing"),
        pytest.param(
            Answer(400, b'{"errors": [{"code": "DENIED"}]}'), RegistryError,
            "registry {host} answered 400 Bad Request for blob {d}: DENIED",
            id="refused",
        ),
        pytest.param(
            Answer(503), RegistryError,
            "registry {host} answered 503 Service Unavailable for blob {d} (gave up after 1 "
            "retries)",
            id="unavailable",
        ),
        pytest.param(
            Answer(200, b"something else"), DigestMismatch,
            "registry {host} returned content for {host}/app@{d} that hashes to {got}",
            id="other-content",
        ),
    ],
)  # fmt: skip
async def test_a_blob_that_cannot_be_read_says_which_and_why(
    registry: Registry,
    client_for: Callable[..., RegistryClient],
    tmp_path: Path,
    answer: Answer,
    error: type[RegistryError],
    message: str,
) -> None:
    digest = sha(LAYER)
    registry.routes[f"/v2/app/blobs/{digest}"] = answer
    with pytest.raises(error) as caught:
        await BlobStore(client_for()).download(ref("app"), digest, tmp_path / "layer")
    assert caught.value.message == message.format(host=HOST, d=digest, got=sha(b"something else"))
    assert caught.value.reference == f"{HOST}/app:latest"
    assert not (tmp_path / "layer").exists()


async def test_a_blob_digest_with_an_extra_colon_is_a_mismatch_not_an_algorithm(
    registry: Registry, client_for: Callable[..., RegistryClient], tmp_path: Path
) -> None:
    digest = sha(LAYER) + ":x"
    registry.routes[f"/v2/app/blobs/{digest}"] = Answer(200, LAYER)
    with pytest.raises(DigestMismatch):
        await BlobStore(client_for()).download(ref("app"), digest, tmp_path / "layer")


# ---- pushed manifests ------------------------------------------------------------------------

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST}).encode()


@pytest.mark.parametrize(
    "answered", [{}, {"Docker-Content-Digest": sha(MANIFEST)}], ids=["no-header", "same-digest"]
)
async def test_put_manifest_sends_the_body_and_returns_its_digest(
    registry: Registry, client_for: Callable[..., RegistryClient], answered: dict[str, str]
) -> None:
    registry.bearer = True
    registry.routes["/v2/app/manifests/1"] = Answer(201, headers=answered)
    digest = await BlobStore(client_for()).put_manifest(ref("app"), "1", MANIFEST, mt.OCI_MANIFEST)
    assert digest == sha(MANIFEST)
    [put] = [r for r in registry.sent("/v2/app/manifests/1") if "authorization" in r.headers]
    assert (put.method, put.content, put.headers["content-type"]) == (
        "PUT", MANIFEST, mt.OCI_MANIFEST,
    )  # fmt: skip
    assert registry.scopes == ["repository:app:pull,push"]


async def test_put_manifest_refuses_a_registry_that_stored_other_bytes(
    registry: Registry, client_for: Callable[..., RegistryClient]
) -> None:
    other = "sha256:" + "0" * 64
    registry.routes["/v2/app/manifests/1"] = Answer(201, headers={"Docker-Content-Digest": other})
    with pytest.raises(DigestMismatch) as caught:
        await BlobStore(client_for()).put_manifest(ref("app"), "1", MANIFEST, mt.OCI_MANIFEST)
    assert caught.value.message == (
        f"registry {HOST} stored manifest 1 as {other}, expected {sha(MANIFEST)}"
    )
    assert caught.value.reference == f"{HOST}/app:latest"


async def test_put_manifest_refused_says_which_manifest(
    registry: Registry, client_for: Callable[..., RegistryClient]
) -> None:
    registry.routes["/v2/app/manifests/1"] = Answer(
        400, b'{"errors": [{"code": "MANIFEST_INVALID"}]}'
    )
    with pytest.raises(RegistryError) as caught:
        await BlobStore(client_for()).put_manifest(ref("app"), "1", MANIFEST, mt.OCI_MANIFEST)
    assert caught.value.message == (
        f"registry {HOST} answered 400 Bad Request for manifest {HOST}/app:1 (PUT): "
        "MANIFEST_INVALID"
    )
    assert caught.value.reference == f"{HOST}/app:latest"


async def test_put_manifest_unavailable_says_which_manifest(
    registry: Registry, client_for: Callable[..., RegistryClient]
) -> None:
    registry.routes["/v2/app/manifests/1"] = Answer(503)
    with pytest.raises(RegistryError) as caught:
        await BlobStore(client_for()).put_manifest(ref("app"), "1", MANIFEST, mt.OCI_MANIFEST)
    assert caught.value.message == (
        f"registry {HOST} answered 503 Service Unavailable for manifest {HOST}/app:1 (PUT) "
        "(gave up after 1 retries)"
    )
