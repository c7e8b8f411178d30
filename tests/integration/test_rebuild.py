"""The rebuild engine against a real registry, proven with the real Docker engine.

The proof that matters: the replacement of a root fixture image, pulled and run by Docker,
runs as a non-zero uid and still does its job, and the core's re-check passes.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.images import MANIFEST_ACCEPT
from tests.support.registry import RegistryProcess
from webhook.errors import Unfixable
from webhook.policy.checker import Checker
from webhook.policy.model import ImagePolicy
from webhook.rebuild.engine import RebuildResult, rebuild
from webhook.registry.auth import Keyring
from webhook.registry.client import RegistryClient
from webhook.settings import RegistrySettings

pytestmark = pytest.mark.integration


@pytest.fixture
def policies(fixture_images: dict[str, str]) -> list[ImagePolicy]:
    return [ImagePolicy().with_overrides([fixture_images["base"]], 2_000_000)]


@pytest.fixture
async def client() -> AsyncIterator[RegistryClient]:
    async with RegistryClient(RegistrySettings(), Keyring.empty()) as c:
        yield c


def docker(*args: str, timeout: float = 120) -> str:
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"docker {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout.strip()


def manifest(registry: RegistryProcess, ref: str) -> tuple[str, dict[str, Any]]:
    """(digest, manifest JSON) of `host/repo:tag` or `host/repo@digest`, read over HTTP."""
    name, sep, reference = ref.partition("@")
    if not sep:
        name, _, reference = ref.rpartition(":")
    repo = name.split("/", 1)[1]
    resp = httpx.get(
        f"{registry.url}/v2/{repo}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT}
    )
    resp.raise_for_status()
    return resp.headers["Docker-Content-Digest"], resp.json()


def http_answer(container: str) -> str:
    """What busybox wget in `container` gets from its own port 8080 (retried while starting)."""
    answer = ""
    for _ in range(20):
        proc = subprocess.run(
            ["docker", "exec", container, "wget", "-S", "-O-", "http://127.0.0.1:8080/"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        answer = proc.stdout + proc.stderr
        if "HTTP/1." in answer:
            break
        time.sleep(0.25)
    return answer


def remove_container(container: str) -> None:
    subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)


def blob_json(registry: RegistryProcess, repo_ref: str, digest: str) -> Any:
    return httpx.get(f"{registry.url}/v2/{repo_ref.split('/', 1)[1]}/blobs/{digest}").json()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def read(path: Path) -> bytes:
    return path.read_bytes()


def is_empty(path: Path) -> bool:
    return not any(path.iterdir())


async def run_rebuild(
    client: RegistryClient,
    source: str,
    target: str,
    policies: list[ImagePolicy],
    tmp_path: Path,
    **kwargs: Any,
) -> RebuildResult:
    return await rebuild(
        client, Checker(client), source, target, policies, workdir=tmp_path, **kwargs
    )


async def test_root_script_replacement_runs_as_non_root_and_still_serves(
    client: RegistryClient,
    registry: RegistryProcess,
    fixture_images: dict[str, str],
    policies: list[ImagePolicy],
    tmp_path: Path,
) -> None:
    source = fixture_images["root-script"]
    original_digest, _ = manifest(registry, source)
    target = f"{registry.host}/rebuilt/root-script-{uuid.uuid4().hex[:8]}"

    result = await run_rebuild(client, source, target, policies, tmp_path)

    assert result.before.verdict == "fail"
    assert {v.rule for v in result.before.violations} == {"non-root-user"}
    assert result.fixes == ["nonRootUser"]
    assert result.outcome == "succeeded", result.reason
    assert result.after.verdict == "pass", result.after.violations
    assert result.replacement.startswith(f"{target}@sha256:")
    assert result.replacement_tag == f"{target}:1-imagegate-{original_digest[7:19]}"
    assert manifest(registry, source)[0] == original_digest, "the original tag moved"
    digest, body = manifest(registry, result.replacement_tag)
    assert f"{target}@{digest}" == result.replacement
    assert body["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert body["annotations"]["dev.imagegate.source.digest"] == original_digest
    assert body["annotations"]["dev.imagegate.fixes"] == "nonRootUser"
    assert result.platforms[0].blobs  # every layer mounted or already there, config uploaded
    assert set(result.platforms[0].blobs.values()) <= {"mounted", "present", "uploaded"}

    # The proof: Docker pulls it, runs it as a non-zero uid, and the app still works.
    docker("pull", result.replacement)
    uid = docker("run", "--rm", result.replacement, "id", "-u")  # through the entrypoint script
    assert uid == "65532"
    served = docker(
        "run",
        "--rm",
        result.replacement,
        "sh",
        "-c",
        "echo hello-from-$(id -u) > /tmp/index.html && httpd -p 8080 -h /tmp && "
        "for i in 1 2 3 4 5 6 7 8 9 10; do "
        "wget -qO- http://127.0.0.1:8080/index.html && exit 0; sleep 0.2; done; exit 1",
    )
    assert served == "hello-from-65532"
    # Its own default command (httpd on 8080) runs as PID 1 under that uid and answers HTTP.
    container = docker("run", "-d", result.replacement)
    try:
        status = docker("exec", container, "cat", "/proc/1/status")
        assert any(line.split()[:2] == ["Uid:", "65532"] for line in status.splitlines()), status
        answer = http_answer(container)
        assert "HTTP/1." in answer, answer
    finally:
        remove_container(container)


async def test_rebuilding_the_same_source_twice_gives_the_same_digest(
    client: RegistryClient,
    registry: RegistryProcess,
    fixture_images: dict[str, str],
    policies: list[ImagePolicy],
    tmp_path: Path,
) -> None:
    source = fixture_images["root-script"]
    target = f"{registry.host}/rebuilt/twice-{uuid.uuid4().hex[:8]}"

    first = await run_rebuild(client, source, target, policies, tmp_path / "1")
    second = await run_rebuild(client, source, target, policies, tmp_path / "2")

    assert first.replacement == second.replacement
    assert first.replacement_tag == second.replacement_tag
    assert first.tag_created
    assert not second.tag_created
    assert set(second.platforms[0].blobs.values()) == {"present"}


async def test_a_tag_is_never_moved(
    client: RegistryClient,
    registry: RegistryProcess,
    fixture_images: dict[str, str],
    policies: list[ImagePolicy],
    tmp_path: Path,
) -> None:
    from webhook.errors import RebuildError

    source = fixture_images["root-script"]
    target = f"{registry.host}/rebuilt/conflict-{uuid.uuid4().hex[:8]}"
    first = await run_rebuild(client, source, target, policies, tmp_path / "1")
    with pytest.raises(RebuildError, match="never moves a tag"):
        await run_rebuild(client, source, target, policies, tmp_path / "2", user="1000:1000")
    assert manifest(registry, first.replacement_tag)[0] == first.replacement.split("@")[1]


async def test_shell_chain_is_unfixable_with_the_reason(
    client: RegistryClient,
    registry: RegistryProcess,
    fixture_images: dict[str, str],
    policies: list[ImagePolicy],
    tmp_path: Path,
) -> None:
    target = f"{registry.host}/rebuilt/shell-chain"
    with pytest.raises(Unfixable, match=r"chains or backgrounds processes \(&\)"):
        await run_rebuild(client, fixture_images["shell-chain"], target, policies, tmp_path)


CACHE_DOCKERFILE = """\
FROM {base}
RUN mkdir -p /var/cache/apt/archives /app \\
 && head -c 1048576 /dev/urandom > /var/cache/apt/archives/pkg.deb \\
 && head -c 524288 /dev/urandom > /tmp/build.tmp \\
 && echo ready > /app/ready \\
 && ln /app/ready /app/ready-link
RUN head -c 524288 /dev/urandom > /app/scratch.bin
RUN rm /app/scratch.bin
USER 65532:65532
ENTRYPOINT ["/bin/cat", "/app/ready"]
"""


@pytest.fixture
def cache_image(
    docker_client: Any, registry: RegistryProcess, fixture_images: dict[str, str]
) -> str:
    """An image whose layers hold apt caches, /tmp junk and a file deleted by a later layer."""
    ref = f"{registry.host}/rebuild-fixtures/cache-dirs"
    dockerfile = CACHE_DOCKERFILE.format(base=fixture_images["base"])
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{ref}:1", rm=True)
    for chunk in docker_client.api.push(ref, tag="1", stream=True, decode=True):
        assert "error" not in chunk, chunk
    return f"{ref}:1"


async def test_squash_drops_caches_and_deleted_files_and_reports_bytes_saved(
    client: RegistryClient,
    registry: RegistryProcess,
    fixture_images: dict[str, str],
    policies: list[ImagePolicy],
    cache_image: str,
    tmp_path: Path,
) -> None:
    target = f"{registry.host}/rebuilt/cache-dirs-{uuid.uuid4().hex[:8]}"
    _, base_manifest = manifest(registry, fixture_images["base"])
    _, source_manifest = manifest(registry, cache_image)

    result = await run_rebuild(client, cache_image, target, policies, tmp_path, squash=True)

    assert result.fixes == ["sizeBudget"]
    assert result.bytes_saved > 1_500_000, result.bytes_saved
    assert result.outcome == "succeeded", result.reason
    platform = result.platforms[0]
    assert platform.squashed_layers == len(source_manifest["layers"]) - len(base_manifest["layers"])
    _, body = manifest(registry, result.replacement)
    assert len(body["layers"]) == len(base_manifest["layers"]) + 1
    assert body["layers"][: len(base_manifest["layers"])] == [
        {**layer, "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}
        for layer in base_manifest["layers"]
    ]
    assert is_empty(tmp_path), "the work directory was not cleaned up"

    docker("pull", result.replacement)
    assert docker("run", "--rm", result.replacement) == "ready"
    listing = docker(
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        result.replacement,
        "-c",
        "ls -A /tmp /var/cache/apt/archives; test -e /app/scratch.bin && echo scratch-present; "
        "stat -c %h /app/ready",
    )
    assert "build.tmp" not in listing
    assert "pkg.deb" not in listing
    assert "scratch-present" not in listing
    assert listing.splitlines()[-1] == "2", "the hard link was not kept"

    again = await run_rebuild(client, cache_image, target, policies, tmp_path, squash=True)
    assert again.replacement == result.replacement, "the squash is not reproducible"


async def test_multi_arch_source_gets_a_new_index(
    client: RegistryClient,
    registry: RegistryProcess,
    multiarch_ref: str,
    policies: list[ImagePolicy],
    tmp_path: Path,
) -> None:
    target = f"{registry.host}/rebuilt/multi-{uuid.uuid4().hex[:8]}"

    result = await run_rebuild(
        client, multiarch_ref, target, policies, tmp_path, fixes=["nonRootUser"], user="1000:1000"
    )

    assert result.outcome == "succeeded", result.reason
    _, index = manifest(registry, result.replacement)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    platforms = {
        "/".join(
            filter(
                None,
                (m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant")),
            )
        )
        for m in index["manifests"]
    }
    assert platforms == {"linux/amd64", "linux/arm64/v8"}
    assert sorted(p.platform for p in result.platforms) == ["linux/amd64", "linux/arm64/v8"]
    for entry in index["manifests"]:
        _, child = manifest(registry, f"{target}@{entry['digest']}")
        config = blob_json(registry, target, child["config"]["digest"])
        assert config["config"]["User"] == "1000:1000"
    assert json.dumps(index)  # a valid document the registry accepted


async def test_blob_store_pushes_and_mounts_with_credentials(
    auth_registry: RegistryProcess, tmp_path: Path
) -> None:
    from webhook.registry.blobs import BlobStore
    from webhook.registry.reference import Reference

    assert auth_registry.credentials is not None
    user, password = auth_registry.credentials
    keyring = Keyring.from_dockerconfigjson(
        {"auths": {auth_registry.host: {"username": user, "password": password}}}
    )
    data = uuid.uuid4().bytes * 1000
    blob = write(tmp_path / "blob", data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    first = Reference.parse(f"{auth_registry.host}/blobs/one")
    second = Reference.parse(f"{auth_registry.host}/blobs/two")
    async with RegistryClient(RegistrySettings(), keyring) as c:
        blobs = BlobStore(c)
        assert await blobs.upload(first, digest, blob)
        assert not await blobs.upload(first, digest, blob)  # HEAD says it is there
        assert await blobs.copy(first, second, digest, tmp_path / "scratch") == "mounted"
        await blobs.download(second, digest, tmp_path / "back")
    assert read(tmp_path / "back") == data


def test_the_rebuild_command_prints_the_replacement(
    fixture_images: dict[str, str], tmp_path: Path
) -> None:
    """`imagegate rebuild` is the same engine from the command line (exit codes as documented)."""
    import sys

    source = fixture_images["root-script"]
    target = f"{source.rsplit(':', 1)[0]}-cli"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: cli}\n"
        f"spec:\n  rules:\n    allowedBases: {{references: ['{fixture_images['base']}']}}\n"
    )
    command = [sys.executable, "-m", "webhook", "rebuild", source, "--to", target]
    done = subprocess.run(
        [*command, "--policy", str(policy)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(f"{target}@sha256:")
    assert "succeeded: fixes nonRootUser" in done.stderr
    unfixable = subprocess.run(
        [sys.executable, "-m", "webhook", "rebuild", fixture_images["shell-chain"], "--to", target,
         "--policy", str(policy)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert unfixable.returncode == 1
    assert "cannot fix" in unfixable.stderr


async def test_the_source_is_read_with_the_requesters_credentials_not_the_operators(
    private_image: str,
    auth_registry: RegistryProcess,
    fixture_images: dict[str, str],
    tmp_path: Path,
) -> None:
    """The operator may push to a target with its own login, but a source only someone else
    can read stays unread: a copy of another team's private image is refused, not made."""
    from webhook.errors import RegistryUnauthorized

    assert auth_registry.credentials is not None
    user, password = auth_registry.credentials
    operator = Keyring.from_dockerconfigjson(
        {"auths": {auth_registry.host: {"username": user, "password": password}}}
    )
    policy = ImagePolicy().with_overrides([fixture_images["base"]], None)
    async with RegistryClient(RegistrySettings(), operator) as c:
        with pytest.raises(RegistryUnauthorized):
            await rebuild(
                c, Checker(c), private_image, f"{auth_registry.host}/private/good", [policy],
                source_keyring=Keyring.empty(), workdir=tmp_path,
            )  # fmt: skip
