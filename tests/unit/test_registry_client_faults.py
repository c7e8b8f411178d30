"""The registry client against a real, scriptable, misbehaving HTTP server on 127.0.0.1.

A real Distribution registry (tests/integration) cannot lie about digests, stall, rate-limit
or serve garbage on demand; this server can. Each test scripts the answers per path.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

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
from webhook.registry.auth import Keyring
from webhook.registry.blobs import BlobStore
from webhook.registry.client import RegistryClient
from webhook.registry.facts import Platform
from webhook.registry.reference import Reference
from webhook.settings import RegistrySettings

AMD64 = Platform("linux", "amd64")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_length: bool = True
    stall: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


Route = Callable[[Seen], Reply] | Reply | list[Reply]


class FakeRegistry:
    """A threaded HTTP server; tests set routes: path → reply, list of replies, or function."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._answer()

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self._answer()

            def _answer(self, body: bool = True) -> None:
                parts = urlsplit(self.path)
                seen = Seen(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                )
                reply = registry.reply_for(seen)
                if reply.stall:
                    registry.stop.wait(reply.stall)
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.content_length:
                    self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if body:
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        self.wfile.write(reply.body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def reply_for(self, seen: Seen) -> Reply:
        with self._lock:
            self.seen.append(seen)
            route = self.routes.get(seen.path)
            if route is None:
                body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]})
                return Reply(404, body.encode(), {"Content-Type": "application/json"})
            if isinstance(route, list):
                return route.pop(0) if len(route) > 1 else route[0]
        if isinstance(route, Reply):
            return route
        return route(seen)

    def count(self, path: str) -> int:
        return sum(1 for s in self.seen if s.path == path)

    def ref(self, rest: str) -> Reference:
        return Reference.parse(f"{self.host}/{rest}")

    # ---- image helpers ---------------------------------------------------------------------

    def add_image(
        self,
        repo: str = "app",
        tag: str | None = "1",
        *,
        user: Any = "1000",
        arch: str = "amd64",
        variant: str | None = None,
        annotations: dict[str, str] | None = None,
        config_extra: dict[str, Any] | None = None,
    ) -> tuple[str, bytes]:
        """Serve a one-layer image; returns (manifest digest, manifest bytes)."""
        config: dict[str, Any] = {
            "architecture": arch,
            "os": "linux",
            "config": {
                "User": user,
                "Entrypoint": ["/app"],
                "Cmd": ["--serve"],
                "Labels": {"a": "b"},
            },
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "d" * 64]},
        }
        if variant:
            config["variant"] = variant
        config.update(config_extra or {})
        config_bytes = json.dumps(config).encode()
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {
                "mediaType": mt.OCI_CONFIG,
                "digest": sha(config_bytes),
                "size": len(config_bytes),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:" + "e" * 64,
                    "size": 1234,
                }
            ],
        }
        if annotations:
            manifest["annotations"] = annotations
        body = json.dumps(manifest).encode()
        digest = sha(body)
        self.routes[f"/v2/{repo}/blobs/{sha(config_bytes)}"] = Reply(200, config_bytes)
        reply = Reply(200, body, {"Content-Type": mt.OCI_MANIFEST, "Docker-Content-Digest": digest})
        self.routes[f"/v2/{repo}/manifests/{digest}"] = reply
        if tag:
            self.routes[f"/v2/{repo}/manifests/{tag}"] = reply
        return digest, body

    def add_index(self, repo: str, tag: str, entries: list[tuple[str, dict[str, Any]]]) -> str:
        index = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [
                {"mediaType": mt.OCI_MANIFEST, "digest": d, "size": 1, "platform": p}
                for d, p in entries
            ],
            "annotations": {"org.opencontainers.image.base.name": "from-index"},
        }
        body = json.dumps(index).encode()
        reply = Reply(200, body, {"Content-Type": mt.OCI_INDEX})
        self.routes[f"/v2/{repo}/manifests/{tag}"] = reply
        self.routes[f"/v2/{repo}/manifests/{sha(body)}"] = reply
        return sha(body)


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    reg = FakeRegistry()
    reg.thread.start()
    yield reg
    reg.stop.set()
    reg.server.shutdown()
    reg.server.server_close()


def make_settings(**overrides: Any) -> RegistrySettings:
    values: dict[str, Any] = {
        "timeout_seconds": 2.0,
        "retries": 2,
        "backoff_seconds": 0.01,
        "max_retry_after_seconds": 0.25,
        "negative_ttl_seconds": 0.0,
    }
    values.update(overrides)
    return RegistrySettings(**values)


@pytest.fixture
async def client() -> Any:
    async with RegistryClient(make_settings(), keyring=Keyring.empty()) as c:
        yield c


# ---- happy path and caching ----------------------------------------------------------------


async def test_inspect_reads_manifest_and_config(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    digest, _ = registry.add_image(annotations={"org.opencontainers.image.base.name": "busybox"})
    facts = await client.inspect(registry.ref("app:1"), AMD64)
    assert facts.digest == digest
    assert facts.user == "1000"
    assert facts.entrypoint == ["/app"]
    assert facts.cmd == ["--serve"]
    assert facts.labels == {"a": "b"}
    assert facts.layer_sizes == [1234]
    assert facts.platform == "linux/amd64"
    assert facts.annotations == {"org.opencontainers.image.base.name": "busybox"}
    assert facts.config_digest.startswith("sha256:")
    assert facts.source == "registry"


async def test_mirror_endpoint_serves_a_registry_name(registry: FakeRegistry) -> None:
    """A webhook in kind reads `localhost:5001/...` from the registry container's own name."""
    digest, _ = registry.add_image()
    settings = make_settings(mirrors={"localhost:5001": registry.host})
    async with RegistryClient(settings, keyring=Keyring.empty()) as client:
        facts = await client.inspect(Reference.parse("localhost:5001/app:1"), AMD64)
    assert facts.digest == digest
    assert facts.reference == "localhost:5001/app:1"
    assert registry.count("/v2/app/manifests/1") == 1


async def test_tag_and_digest_caches_avoid_requests(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    digest, _ = registry.add_image()
    await client.inspect(registry.ref("app:1"), AMD64)
    await client.inspect(registry.ref("app:1"), AMD64)
    await client.get_manifest(registry.ref(f"app@{digest}"))
    assert registry.count("/v2/app/manifests/1") == 1
    assert registry.count(f"/v2/app/manifests/{digest}") == 0
    assert client.stats.manifest_fetches == 1
    assert client.stats.config_fetches == 1
    assert client.stats.cache_hits == 2  # facts by (digest, platform), then manifest by digest


async def test_fifty_concurrent_inspections_make_one_manifest_and_one_config_request(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    import asyncio

    registry.add_image()
    slow = registry.routes["/v2/app/manifests/1"]
    assert isinstance(slow, Reply)

    def delayed(_: Seen) -> Reply:
        time.sleep(0.1)  # keep the first request in flight while the others arrive
        return slow

    registry.routes["/v2/app/manifests/1"] = delayed
    results = await asyncio.gather(
        *(client.inspect(registry.ref("app:1"), AMD64) for _ in range(50))
    )
    assert len({r.digest for r in results}) == 1
    manifest_gets = registry.count("/v2/app/manifests/1")
    config_gets = sum(1 for s in registry.seen if "/blobs/" in s.path)
    assert (manifest_gets, config_gets) == (1, 1)


async def test_config_blob_redirect_is_followed(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    registry.add_image()
    blob_path = next(p for p in registry.routes if "/blobs/" in p)
    registry.routes["/storage/config"] = registry.routes[blob_path]
    registry.routes[blob_path] = Reply(
        307, b"", {"Location": f"http://{registry.host}/storage/config"}
    )
    facts = await client.inspect(registry.ref("app:1"), AMD64)
    assert facts.user == "1000"
    assert registry.count("/storage/config") == 1


# ---- lying and broken registries -----------------------------------------------------------


async def test_body_that_does_not_hash_to_the_requested_digest_is_refused(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    wanted = "sha256:" + "1" * 64
    registry.routes[f"/v2/app/manifests/{wanted}"] = Reply(
        200, b'{"schemaVersion": 2}', {"Content-Type": mt.OCI_MANIFEST}
    )
    with pytest.raises(DigestMismatch, match=r"returned content for .* that hashes to sha256:"):
        await client.get_manifest(registry.ref(f"app@{wanted}"))


async def test_docker_content_digest_header_that_lies_is_refused(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    registry.add_image()
    reply = registry.routes["/v2/app/manifests/1"]
    assert isinstance(reply, Reply)
    reply.headers["Docker-Content-Digest"] = "sha256:" + "2" * 64
    with pytest.raises(DigestMismatch, match="Docker-Content-Digest"):
        await client.get_manifest(registry.ref("app:1"))


async def test_config_blob_that_does_not_match_its_digest_is_refused(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    registry.add_image()
    blob_path = next(p for p in registry.routes if "/blobs/" in p)
    registry.routes[blob_path] = Reply(200, b'{"tampered": true}')
    with pytest.raises(DigestMismatch):
        await client.inspect(registry.ref("app:1"), AMD64)


async def test_oversized_manifest_is_refused_by_content_length(registry: FakeRegistry) -> None:
    registry.routes["/v2/app/manifests/big"] = Reply(
        200, b" " * 5000, {"Content-Type": mt.OCI_MANIFEST}
    )
    async with RegistryClient(make_settings(max_manifest_bytes=1000), Keyring.empty()) as c:
        with pytest.raises(InvalidImageData, match=r"is 5000 bytes, over the limit 1000"):
            await c.get_manifest(registry.ref("app:big"))


async def test_oversized_manifest_without_content_length_is_cut_off(registry: FakeRegistry) -> None:
    registry.routes["/v2/app/manifests/big"] = Reply(
        200, b" " * 50_000, {"Content-Type": mt.OCI_MANIFEST}, content_length=False
    )
    async with RegistryClient(make_settings(max_manifest_bytes=1000), Keyring.empty()) as c:
        with pytest.raises(InvalidImageData, match=r"more than 1000 bytes, over the limit 1000"):
            await c.get_manifest(registry.ref("app:big"))


async def test_garbage_json_names_the_reference(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    registry.routes["/v2/app/manifests/1"] = Reply(
        200, b"{not json", {"Content-Type": mt.OCI_MANIFEST}
    )
    with pytest.raises(
        InvalidImageData, match=rf"manifest for {registry.host}/app:1 is not valid JSON"
    ):
        await client.get_manifest(registry.ref("app:1"))


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        pytest.param(
            "application/vnd.example.thing+json",
            {"schemaVersion": 2, "mediaType": "application/vnd.example.thing+json"},
            "returned media type application/vnd.example.thing",
            id="unknown-type",
        ),
        pytest.param(
            mt.DOCKER_SCHEMA1_SIGNED,
            {"schemaVersion": 1, "name": "app", "tag": "1", "fsLayers": []},
            "schema 1 manifest.*re-push",
            id="schema1",
        ),
    ],
)
async def test_unreadable_media_types_are_refused(
    registry: FakeRegistry,
    client: RegistryClient,
    content_type: str,
    body: dict[str, Any],
    message: str,
) -> None:
    registry.routes["/v2/app/manifests/1"] = Reply(
        200, json.dumps(body).encode(), {"Content-Type": content_type}
    )
    with pytest.raises(UnsupportedMediaType, match=message):
        await client.get_manifest(registry.ref("app:1"))


async def test_generic_content_type_falls_back_to_the_body_media_type(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    digest, body = registry.add_image()
    registry.routes["/v2/app/manifests/1"] = Reply(200, body, {"Content-Type": "application/json"})
    manifest = await client.get_manifest(registry.ref("app:1"))
    assert (manifest.digest, manifest.media_type) == (digest, mt.OCI_MANIFEST)


@pytest.mark.parametrize(
    ("config_extra", "field_name"),
    [
        pytest.param({"config": {"User": 0}}, "config.User", id="user-not-string"),
        pytest.param(
            {"config": {"Entrypoint": "/app"}}, "config.Entrypoint", id="entrypoint-string"
        ),
        pytest.param({"config": {"Labels": {"a": 1}}}, "config.Labels", id="label-not-string"),
        pytest.param({"rootfs": {"type": "layers"}}, "rootfs.diff_ids", id="no-diff-ids"),
    ],
)
async def test_ill_typed_config_fields_are_named(
    registry: FakeRegistry, client: RegistryClient, config_extra: dict[str, Any], field_name: str
) -> None:
    registry.add_image(config_extra=config_extra)
    with pytest.raises(InvalidImageData, match=rf"field {field_name} should be"):
        await client.inspect(registry.ref("app:1"), AMD64)


# ---- status codes, retries, timeouts -------------------------------------------------------


async def test_503_twice_then_200_succeeds_honouring_retry_after(registry: FakeRegistry) -> None:
    digest, _ = registry.add_image()
    ok = registry.routes["/v2/app/manifests/1"]
    assert isinstance(ok, Reply)
    unavailable = Reply(503, b"busy", {"Retry-After": "1"})
    registry.routes["/v2/app/manifests/1"] = [unavailable, unavailable, ok]
    settings = make_settings(backoff_seconds=0.0, max_retry_after_seconds=0.25, retries=3)
    async with RegistryClient(settings, Keyring.empty()) as c:
        started = time.monotonic()
        manifest = await c.get_manifest(registry.ref("app:1"))
        elapsed = time.monotonic() - started
        assert c.stats.retries == 2
    assert manifest.digest == digest
    assert registry.count("/v2/app/manifests/1") == 3
    assert 0.45 <= elapsed < 2.0  # two Retry-After waits, each capped at 0.25 s


async def test_always_429_gives_up_with_rate_limited(registry: FakeRegistry) -> None:
    registry.routes["/v2/app/manifests/1"] = Reply(429, b"slow down", {"Retry-After": "0"})
    async with RegistryClient(make_settings(retries=2), Keyring.empty()) as c:
        with pytest.raises(RegistryRateLimited, match=r"429 Too Many Requests.*after 2 retries"):
            await c.get_manifest(registry.ref("app:1"))
    assert registry.count("/v2/app/manifests/1") == 3


async def test_stalled_registry_times_out(registry: FakeRegistry) -> None:
    registry.routes["/v2/app/manifests/1"] = Reply(stall=30)
    async with RegistryClient(make_settings(timeout_seconds=0.3, retries=1), Keyring.empty()) as c:
        started = time.monotonic()
        with pytest.raises(
            RegistryUnavailable, match=rf"timed out after 0.3s talking to {registry.host}"
        ):
            await c.get_manifest(registry.ref("app:1"))
        assert time.monotonic() - started < 2.0


async def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with RegistryClient(make_settings(retries=1), Keyring.empty()) as c:
        with pytest.raises(RegistryUnavailable, match=f"cannot reach registry 127.0.0.1:{port}"):
            await c.get_manifest(Reference.parse(f"127.0.0.1:{port}/app:1"))


async def test_unknown_tag_is_image_not_found(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    with pytest.raises(ImageNotFound, match=rf"manifest unknown: {registry.host}/app:nope"):
        await client.get_manifest(registry.ref("app:nope"))


async def test_403_is_forbidden(registry: FakeRegistry, client: RegistryClient) -> None:
    registry.routes["/v2/app/manifests/1"] = Reply(
        403, b'{"errors":[{"code":"DENIED","message":"no"}]}'
    )
    with pytest.raises(RegistryForbidden, match="DENIED") as info:
        await client.get_manifest(registry.ref("app:1"))
    assert ": no" not in str(info.value)  # the code, not the registry's free text


async def test_failures_are_negatively_cached(registry: FakeRegistry) -> None:
    async with RegistryClient(make_settings(negative_ttl_seconds=30), Keyring.empty()) as c:
        for _ in range(3):
            with pytest.raises(ImageNotFound):
                await c.get_manifest(registry.ref("app:nope"))
        assert c.stats.negative_hits == 2
    assert registry.count("/v2/app/manifests/nope") == 1


# ---- auth ----------------------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def login(registry: FakeRegistry, user: str, password: str) -> Keyring:
    """A keyring holding `user`'s password for `registry`, as `docker login` leaves it."""
    return Keyring.from_dockerconfigjson(
        {"auths": {registry.host: {"username": user, "password": password}}}
    )


def protect_with_tokens(registry: FakeRegistry, user: str, password: str) -> None:
    """Every /v2/app path needs `Bearer tok-123`; /token hands it out for the right Basic creds."""
    challenge = (
        f'Bearer realm="http://{registry.host}/token",service="fake registry",'
        'scope="repository:app:pull"'
    )
    for path, route in list(registry.routes.items()):
        if not path.startswith("/v2/app/"):
            continue

        def guarded(seen: Seen, route: Route = route) -> Reply:
            if seen.headers.get("authorization") != "Bearer tok-123":
                body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
                return Reply(401, body, {"WWW-Authenticate": challenge})
            assert isinstance(route, Reply)
            return route

        registry.routes[path] = guarded

    def token(seen: Seen) -> Reply:
        if seen.headers.get("authorization") != basic(user, password):
            return Reply(401, b'{"details":"incorrect username or password"}')
        return Reply(200, json.dumps({"token": "tok-123", "expires_in": 300}).encode())

    registry.routes["/token"] = token


async def test_bearer_challenge_fetches_a_scoped_token_with_basic_credentials(
    registry: FakeRegistry,
) -> None:
    registry.add_image()
    protect_with_tokens(registry, "alice", "s3cret")
    keyring = login(registry, "alice", "s3cret")
    async with RegistryClient(make_settings(), Keyring.empty()) as c:
        facts = await c.inspect(registry.ref("app:1"), AMD64, keyring)
        assert facts.user == "1000"
        await c.get_manifest(registry.ref(f"app@{facts.digest}"), keyring)
        assert c.stats.token_fetches == 1  # cached for the config fetch and later calls
    token_calls = [s for s in registry.seen if s.path == "/token"]
    assert len(token_calls) == 1
    assert token_calls[0].query == {
        "service": ["fake registry"],
        "scope": ["repository:app:pull"],
        "account": ["alice"],
    }
    assert token_calls[0].headers["authorization"] == basic("alice", "s3cret")


async def test_wrong_credentials_are_refused_by_name(registry: FakeRegistry) -> None:
    registry.add_image()
    protect_with_tokens(registry, "alice", "s3cret")
    keyring = Keyring.from_dockerconfigjson(
        {"auths": {registry.host: {"auth": "YWxpY2U6d3Jvbmc="}}}
    )
    async with RegistryClient(make_settings(), Keyring.empty()) as c:
        with pytest.raises(
            RegistryUnauthorized,
            match=rf"{registry.host} refused credentials for repo app: token server",
        ):
            await c.get_manifest(registry.ref("app:1"), keyring)


async def test_missing_credentials_say_where_we_looked(registry: FakeRegistry) -> None:
    registry.add_image()
    protect_with_tokens(registry, "alice", "s3cret")
    registry.routes["/token"] = Reply(200, b'{"token": "anonymous-token"}')
    async with RegistryClient(make_settings(), Keyring.from_dockerconfigjson({})) as c:
        with pytest.raises(
            RegistryUnauthorized,
            match=rf"none found for host {registry.host} in the pod's pull secrets",
        ):
            await c.get_manifest(registry.ref("app:1"))


async def test_basic_challenge_retries_with_basic_credentials(registry: FakeRegistry) -> None:
    registry.add_image()
    inner = registry.routes["/v2/app/manifests/1"]
    assert isinstance(inner, Reply)

    def guarded(seen: Seen) -> Reply:
        if seen.headers.get("authorization") != basic("bob", "pw"):
            return Reply(401, b"", {"WWW-Authenticate": 'Basic realm="fake"'})
        return inner

    registry.routes["/v2/app/manifests/1"] = guarded
    keyring = login(registry, "bob", "pw")
    async with RegistryClient(make_settings(), keyring) as c:
        manifest = await c.get_manifest(registry.ref("app:1"))
    assert manifest.media_type == mt.OCI_MANIFEST


# ---- platforms -----------------------------------------------------------------------------


async def test_index_without_the_platform_lists_what_it_has(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    amd, _ = registry.add_image(tag=None)
    arm, _ = registry.add_image(tag=None, arch="arm", variant="v7")
    registry.add_index(
        "app",
        "multi",
        [
            (amd, {"os": "linux", "architecture": "amd64"}),
            (arm, {"os": "linux", "architecture": "arm", "variant": "v7"}),
            ("sha256:" + "f" * 64, {"os": "unknown", "architecture": "unknown"}),
        ],
    )
    with pytest.raises(
        PlatformNotFound,
        match=r"no manifest for platform linux/s390x; the index has: linux/amd64, linux/arm/v7$",
    ):
        await client.resolve(registry.ref("app:multi"), Platform("linux", "s390x"))


async def test_arm64_v8_matches_an_entry_that_omits_the_variant(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    amd, _ = registry.add_image(tag=None)
    arm, _ = registry.add_image(tag=None, arch="arm64", user="65532")
    index_digest = registry.add_index(
        "app",
        "multi",
        [
            (amd, {"os": "linux", "architecture": "amd64"}),
            (arm, {"os": "linux", "architecture": "arm64"}),
        ],
    )
    resolved = await client.resolve(registry.ref("app:multi"), Platform("linux", "arm64", "v8"))
    assert resolved.digest == index_digest  # what a Pod pins
    assert resolved.manifest_digest == arm
    assert resolved.platform == "linux/arm64"
    facts = await client.inspect(registry.ref("app:multi"), Platform("linux", "arm64", "v8"))
    assert (facts.digest, facts.user) == (index_digest, "65532")
    assert facts.annotations["org.opencontainers.image.base.name"] == "from-index"


@pytest.mark.parametrize(
    ("host", "insecure", "plain"),
    [
        pytest.param("localhost:5001", [], True, id="localhost"),
        pytest.param("127.0.0.2:5000", [], True, id="loopback-v4"),
        pytest.param("[::1]:5000", [], True, id="loopback-v6"),
        pytest.param("registry.lan:5000", ["registry.lan:5000"], True, id="insecure-host-port"),
        pytest.param("registry.lan:5000", ["registry.lan"], True, id="insecure-host-any-port"),
        pytest.param("10.1.2.3:5000", ["10.0.0.0/8"], True, id="insecure-cidr"),
        pytest.param("ghcr.io", [], False, id="public"),
        pytest.param("localhost.evil.com", [], False, id="lookalike"),
    ],
)
async def test_plain_http_only_for_loopback_and_insecure_registries(
    host: str, insecure: list[str], plain: bool
) -> None:
    async with RegistryClient(make_settings(insecure_registries=insecure), Keyring.empty()) as c:
        assert c.transport.uses_plain_http(host) is plain


# ---- the one transport: blob transfers share auth, retries and error mapping ---------------


async def test_blob_download_reuses_the_read_token_and_honours_retry_after(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    """BlobStore and RegistryClient share one token cache and one retry loop."""
    registry.add_image()
    layer = b"layer bytes" * 100
    layer_path = f"/v2/app/blobs/{sha(layer)}"
    registry.routes[layer_path] = Reply(200, layer)
    protect_with_tokens(registry, "alice", "s3cret")
    answers = [Reply(503, b"busy", {"Retry-After": "0"})]
    guarded_layer = registry.routes[layer_path]
    assert callable(guarded_layer)

    def flaky(seen: Seen) -> Reply:
        reply = guarded_layer(seen)
        return answers.pop(0) if reply.status == 200 and answers else reply

    registry.routes[layer_path] = flaky
    keyring = login(registry, "alice", "s3cret")
    async with RegistryClient(make_settings(), keyring) as c:
        await c.inspect(registry.ref("app:1"), AMD64)
        size = await BlobStore(c).download(registry.ref("app"), sha(layer), tmp_path / "layer")
        assert (c.stats.token_fetches, c.stats.retries) == (1, 1)
    assert size == len(layer)
    assert (tmp_path / "layer").read_bytes() == layer


async def test_a_redirect_loop_is_an_error_and_not_retried(registry: FakeRegistry) -> None:
    digest, _ = registry.add_image()
    manifest = json.loads(registry.routes[f"/v2/app/manifests/{digest}"].body)  # type: ignore[union-attr]
    config_path = f"/v2/app/blobs/{manifest['config']['digest']}"
    registry.routes[config_path] = Reply(302, b"", {"Location": config_path})
    async with RegistryClient(make_settings(retries=2), Keyring.empty()) as c:
        with pytest.raises(RegistryError, match="redirected too many times"):
            await c.inspect(registry.ref("app:1"), AMD64)
    # the first hop (the lean client's), then httpx's limit of 20 redirects, once
    assert registry.count(config_path) == 22


async def test_a_body_that_cannot_be_decoded_is_invalid_image_data(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    registry.routes["/v2/app/manifests/1"] = Reply(
        200, b"this is not gzip", {"Content-Type": mt.OCI_MANIFEST, "Content-Encoding": "gzip"}
    )
    with pytest.raises(InvalidImageData, match="cannot be decoded"):
        await client.get_manifest(registry.ref("app:1"))


async def test_credentials_never_follow_a_location_to_another_host(
    registry: FakeRegistry,
) -> None:
    """A hostile registry's Location must not collect the token issued for this registry."""
    registry.add_image()
    protect_with_tokens(registry, "alice", "s3cret")
    keyring = login(registry, "alice", "s3cret")
    elsewhere = FakeRegistry()
    elsewhere.thread.start()
    elsewhere.routes["/collect"] = Reply(200, b"{}")
    try:
        async with RegistryClient(make_settings(), keyring) as c:
            await c.get_manifest(registry.ref("app:1"))
            ref = registry.ref("app")
            reply = await c.transport.request(
                "GET", ref, f"http://{elsewhere.host}/collect", what="a Location"
            )
            assert reply.status == 200
            own = await c.transport.request("GET", ref, "manifests/1", what="manifest app:1")
            assert own.status == 200  # the cached token still goes to the registry itself
    finally:
        elsewhere.stop.set()
        elsewhere.server.shutdown()
        elsewhere.server.server_close()
    assert [s.headers.get("authorization") for s in elsewhere.seen] == [None]


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "http://10.96.0.1:443/api",  # a cluster service (private)
        "http://[fd00::1]/x",  # unique local IPv6
    ],
)
async def test_a_redirect_to_a_private_address_is_refused(
    registry: FakeRegistry, client: RegistryClient, location: str
) -> None:
    """SSRF: a hostile registry must not point the webhook at internal services."""
    digest, _ = registry.add_image()
    manifest = json.loads(registry.routes[f"/v2/app/manifests/{digest}"].body)  # type: ignore[union-attr]
    registry.routes[f"/v2/app/blobs/{manifest['config']['digest']}"] = Reply(
        307, b"", {"Location": location}
    )
    with pytest.raises(RegistryError, match=r"redirected to .*private, loopback or link-local"):
        await client.inspect(registry.ref("app:1"), AMD64)


async def test_a_redirect_to_a_name_resolving_to_loopback_is_refused_unless_configured(
    registry: FakeRegistry,
) -> None:
    """The name is resolved before the hop: `localhost` is the webhook's own Pod."""
    registry.add_image()
    blob_path = next(p for p in registry.routes if "/blobs/" in p)
    elsewhere = FakeRegistry()
    elsewhere.thread.start()
    elsewhere.routes["/storage/config"] = registry.routes[blob_path]
    port = elsewhere.host.rsplit(":", 1)[1]
    registry.routes[blob_path] = Reply(
        307, b"", {"Location": f"http://localhost:{port}/storage/config"}
    )
    try:
        async with RegistryClient(make_settings(), Keyring.empty()) as c:
            with pytest.raises(
                RegistryError, match=r"redirected to localhost \((127\.0\.0\.1|::1)\)"
            ):
                await c.inspect(registry.ref("app:1"), AMD64)
        assert elsewhere.count("/storage/config") == 0
        allowed = make_settings(redirect_networks=["127.0.0.0/8", "::1/128"])
        async with RegistryClient(allowed, Keyring.empty()) as c:
            facts = await c.inspect(registry.ref("app:1"), AMD64)
        assert facts.user == "1000"
        assert elsewhere.count("/storage/config") == 1
    finally:
        elsewhere.stop.set()
        elsewhere.server.shutdown()
        elsewhere.server.server_close()


async def test_an_unusable_location_is_a_registry_error(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    with pytest.raises(RegistryError, match="cannot address"):
        await client.transport.request(
            "GET", registry.ref("app"), "http://[not-an-ip/x", what="an upload session"
        )


# ---- tenants: cached content only for credentials that can read it -------------------------


@pytest.mark.parametrize("call", ["inspect", "get_manifest", "get_config", "platforms"])
async def test_cached_content_is_not_handed_to_credentials_that_cannot_read_it(
    registry: FakeRegistry, call: str
) -> None:
    """team-a's pull secret fetched a private image; team-b, without one, must not get it
    from the caches (nor learn its digest): one authenticated HEAD decides."""
    digest, body = registry.add_image()
    protect_with_tokens(registry, "alice", "s3cret")
    team_a, team_b = login(registry, "alice", "s3cret"), Keyring.empty()
    ref = registry.ref("app:1")
    config_digest = json.loads(body)["config"]["digest"]
    async with RegistryClient(make_settings(), Keyring.empty()) as c:
        await c.inspect(ref, AMD64, team_a)
        await c.get_config(ref, config_digest, team_a)
        await c.platforms(ref, team_a)
        calls = {
            "inspect": lambda kr: c.inspect(ref, AMD64, kr),
            "get_manifest": lambda kr: c.get_manifest(registry.ref(f"app@{digest}"), kr),
            "get_config": lambda kr: c.get_config(ref, config_digest, kr),
            "platforms": lambda kr: c.platforms(ref, kr),
        }
        with pytest.raises(RegistryUnauthorized, match="needs credentials"):
            await calls[call](team_b)
        before = len(registry.seen)
        await calls[call](team_a)  # the reader who fetched it is served from the cache
        assert len(registry.seen) == before


# ---- hostile answers: no echo, no crash ----------------------------------------------------


async def test_an_upstream_error_body_never_reaches_the_message(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    """A Pod creator picks the host the webhook asks: its answer must not come back to them."""
    secret = "internal-service-says: db password is hunter2"
    registry.routes["/v2/app/manifests/1"] = Reply(500, secret.encode(), {"Retry-After": "0"})
    with pytest.raises(RegistryUnavailable) as info:
        await client.get_manifest(registry.ref("app:1"))
    assert "hunter2" not in str(info.value)
    registry.routes["/v2/app/manifests/2"] = Reply(
        418, json.dumps({"errors": [{"code": "DENIED", "message": secret}]}).encode()
    )
    with pytest.raises(RegistryError) as teapot:
        await client.get_manifest(registry.ref("app:2"))
    assert "DENIED" in str(teapot.value)
    assert "hunter2" not in str(teapot.value)


@pytest.mark.parametrize("where", ["manifest", "config", "error-body"])
async def test_json_nested_too_deeply_is_invalid_data_not_a_crash(
    registry: FakeRegistry, client: RegistryClient, where: str
) -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    _, body = registry.add_image()
    if where == "manifest":
        registry.routes["/v2/app/manifests/1"] = Reply(200, deep, {"Content-Type": mt.OCI_MANIFEST})
    elif where == "config":  # a config that hashes right but nests [[[…]]] inside
        config = b'{"config": {"Labels": ' + deep + b"}}"
        manifest = json.loads(body)
        manifest["config"].update(digest=sha(config), size=len(config))
        registry.routes[f"/v2/app/blobs/{sha(config)}"] = Reply(200, config)
        registry.routes["/v2/app/manifests/1"] = Reply(
            200, json.dumps(manifest).encode(), {"Content-Type": mt.OCI_MANIFEST}
        )
    else:
        registry.routes["/v2/app/manifests/1"] = Reply(404, deep)
    expected = ImageNotFound if where == "error-body" else InvalidImageData
    with pytest.raises(expected):
        await client.inspect(registry.ref("app:1"), AMD64)


@pytest.mark.parametrize(
    ("realm", "refused"),
    [
        pytest.param("http://metadata.internal/token", True, id="plain-http-elsewhere"),
        pytest.param("gopher://x/token", True, id="other-scheme"),
        pytest.param("http://{host}/token", False, id="the-registry-itself"),
    ],
)
async def test_a_token_realm_must_be_https_or_the_registry_itself(
    registry: FakeRegistry, realm: str, refused: bool
) -> None:
    registry.add_image()
    protect_with_tokens(registry, "alice", "s3cret")
    challenge = f'Bearer realm="{realm.format(host=registry.host)}",service="x"'
    inner = registry.routes["/v2/app/manifests/1"]
    assert callable(inner)

    def challenging(seen: Seen) -> Reply:
        reply = inner(seen)
        return Reply(401, b"", {"WWW-Authenticate": challenge}) if reply.status == 401 else reply

    registry.routes["/v2/app/manifests/1"] = challenging
    async with RegistryClient(make_settings(), login(registry, "alice", "s3cret")) as c:
        if refused:
            with pytest.raises(RegistryUnauthorized, match="refused, a realm must be https"):
                await c.get_manifest(registry.ref("app:1"))
        else:
            await c.get_manifest(registry.ref("app:1"))


async def test_a_cookie_a_registry_sets_is_never_sent_back(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    """One client serves every tenant: a session cookie a registry (or its token server) sets
    on one tenant's request must not ride along on the next tenant's, where a registry that
    authenticates by session would hand it the first tenant's images."""
    for repo in ("team-a/app", "team-b/app"):
        digest, body = registry.add_image(repo)
        headers = {"Content-Type": mt.OCI_MANIFEST, "Docker-Content-Digest": digest,
                   "Set-Cookie": f"session={repo.split('/')[0]}; Path=/"}  # fmt: skip
        registry.routes[f"/v2/{repo}/manifests/1"] = Reply(200, body, headers)
    await client.inspect(registry.ref("team-a/app:1"), AMD64)
    await client.inspect(registry.ref("team-b/app:1"), AMD64)
    assert registry.count("/v2/team-b/app/manifests/1") == 1
    assert [s.headers["cookie"] for s in registry.seen if "cookie" in s.headers] == []
