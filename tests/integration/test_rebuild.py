"""The rebuild engine against a real registry, proven with the real Docker engine.

The proof that matters: the replacement of a root fixture image, pulled and run by Docker,
runs as a non-zero uid and still does its job, and the core's re-check passes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
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


def served_manifest(registry: RegistryProcess, ref: str) -> httpx.Response:
    """The registry's answer for the manifest `host/repo:tag` or `host/repo@digest`."""
    name, sep, reference = ref.partition("@")
    if not sep:
        name, _, reference = ref.rpartition(":")
    repo = name.split("/", 1)[1]
    resp = httpx.get(
        f"{registry.url}/v2/{repo}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT}
    )
    resp.raise_for_status()
    return resp


def manifest(registry: RegistryProcess, ref: str) -> tuple[str, dict[str, Any]]:
    """(digest, manifest JSON) of `host/repo:tag` or `host/repo@digest`, read over HTTP."""
    resp = served_manifest(registry, ref)
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


async def test_shell_chain_is_unfixable_with_the_reason(
    client: RegistryClient,
    registry: RegistryProcess,
    fixture_images: dict[str, str],
    policies: list[ImagePolicy],
    tmp_path: Path,
) -> None:
    target = f"{registry.host}/rebuilt/shell-chain"
    since = registry.log_offset()
    with pytest.raises(Unfixable, match=r"chains or backgrounds processes \(&\)"):
        await run_rebuild(client, fixture_images["shell-chain"], target, policies, tmp_path)
    assert writes_since(registry, "rebuilt/shell-chain", since) == []  # no fix: nothing pushed


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
    return build_and_push(docker_client, registry, fixture_images, "cache-dirs", CACHE_DOCKERFILE)


def build_and_push(
    docker_client: Any,
    registry: RegistryProcess,
    fixture_images: dict[str, str],
    name: str,
    dockerfile: str,
) -> str:
    """Build `dockerfile` (`{base}`: the fixture base) with the engine, push it as
    `<registry>/rebuild-fixtures/<name>:1` and return that reference."""
    ref = f"{registry.host}/rebuild-fixtures/{name}"
    text = dockerfile.format(base=fixture_images["base"])
    docker_client.images.build(fileobj=io.BytesIO(text.encode()), tag=f"{ref}:1", rm=True)
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
    assert "build.tmp" in listing  # /tmp is what the app starts with: kept (issue 15.2)
    assert "pkg.deb" not in listing
    assert "scratch-present" not in listing
    assert listing.splitlines()[-1] == "2", "the hard link was not kept"

    again = await run_rebuild(client, cache_image, target, policies, tmp_path, squash=True)
    assert again.replacement == result.replacement, "the squash is not reproducible"


@pytest.mark.parametrize(
    ("platforms", "rebuilt", "dropped"),
    [
        pytest.param(None, ["linux/amd64", "linux/arm64/v8"], [], id="every-platform"),
        pytest.param(["linux/arm64"], ["linux/arm64/v8"], ["linux/amd64"], id="just-arm64"),
    ],
)
async def test_multi_arch_source_gets_a_new_index_of_the_platforms_asked_for(
    client: RegistryClient,
    registry: RegistryProcess,
    multiarch_ref: str,
    policies: list[ImagePolicy],
    tmp_path: Path,
    platforms: list[str] | None,
    rebuilt: list[str],
    dropped: list[str],
) -> None:
    from webhook.registry.facts import Platform

    target = f"{registry.host}/rebuilt/multi-{uuid.uuid4().hex[:8]}"

    result = await run_rebuild(
        client, multiarch_ref, target, policies, tmp_path, fixes=["nonRootUser"],
        user="1000:1000", platforms=[Platform.parse(p) for p in platforms] if platforms else None,
    )  # fmt: skip

    assert result.outcome == "succeeded", result.reason
    index_digest, index = manifest(registry, result.replacement)
    assert result.replacement == f"{target}@{index_digest}"
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [
        "/".join(filter(None, (m["platform"]["os"], m["platform"]["architecture"],
                               m["platform"].get("variant"))))
        for m in index["manifests"]
    ] == rebuilt  # fmt: skip
    assert [p.platform for p in result.platforms] == rebuilt
    assert result.dropped_platforms == dropped
    assert result.to_json()["droppedPlatforms"] == dropped
    for entry in index["manifests"]:
        # each descriptor describes the manifest the registry serves: type, size, digest
        served = served_manifest(registry, f"{target}@{entry['digest']}")
        assert entry["mediaType"] == served.headers["Content-Type"]
        assert entry["size"] == len(served.content)
        assert entry["digest"] == "sha256:" + hashlib.sha256(served.content).hexdigest()
        child = served.json()
        assert child["mediaType"] == entry["mediaType"]
        config = blob_json(registry, target, child["config"]["digest"])
        # ... and the platform it names is the one that image is built for
        assert (config["os"], config["architecture"], config.get("variant")) == (
            entry["platform"]["os"],
            entry["platform"]["architecture"],
            entry["platform"].get("variant"),
        )
        # the source already runs as its own non-root user: the fix keeps it (issue 15.1)
        assert config["config"]["User"] == "65532:65532"


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


def rebuild_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`imagegate rebuild ARGS` in a subprocess.

    Deep inspection is pinned off: with `deepInspection: cachedOnly` the layers are read only
    when an earlier run indexed them, so whether `layer-efficiency` is evaluated would depend
    on what ran before on this machine. These tests are about the rebuild's flow."""
    import sys

    return subprocess.run(
        [sys.executable, "-m", "webhook", "rebuild", *args],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "IMAGEGATE_LAYERS_DEEP": "never"},
    )  # fmt: skip


def test_the_rebuild_command_prints_the_replacement(
    fixture_images: dict[str, str], tmp_path: Path
) -> None:
    """`imagegate rebuild` is the same engine from the command line (exit codes as documented)."""
    source = fixture_images["root-script"]
    target = f"{source.rsplit(':', 1)[0]}-cli"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: cli}\n"
        f"spec:\n  rules:\n    allowedBases: {{references: ['{fixture_images['base']}']}}\n"
    )
    done = rebuild_cli(source, "--to", target, "--policy", str(policy))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(f"{target}@sha256:")
    assert "Succeeded: fixes nonRootUser" in done.stderr
    unfixable = rebuild_cli(fixture_images["shell-chain"], "--to", target, "--policy", str(policy))
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


# ---- issue 15: fail early, provenance, platforms, partial fixes ------------------------------

SOURCE_DIGEST = "dev.imagegate.source.digest"
WRITES = (("POST", "/blobs/uploads"), ("PUT", "/v2/"), ("PATCH", "/v2/"), ("DELETE", "/v2/"))

ROOT_SHELL_DOCKERFILE = """\
FROM {base}
RUN mkdir -p /www && echo hello > /www/index.html
RUN echo more > /www/more.html
CMD httpd -f -p 8080 -h /www
"""


@pytest.fixture
def root_shell_image(
    docker_client: Any, registry: RegistryProcess, fixture_images: dict[str, str]
) -> str:
    """Root (no USER), a shell-form CMD and two layers above the base: three fixes to make."""
    return build_and_push(
        docker_client, registry, fixture_images, "root-shell", ROOT_SHELL_DOCKERFILE
    )


def writes_since(registry: RegistryProcess, repository: str, since: int) -> list[str]:
    """Every request that changes `repository` (uploads, mounts, manifest and tag writes)."""
    from tests.support.registry import parse_access_log

    time.sleep(0.3)  # access lines are written once the response completed
    return [
        f"{e.method} {e.uri}"
        for e in parse_access_log(registry.log_path, since=since)
        if f"/v2/{repository}/" in e.uri
        and any(e.method == m and part in e.uri for m, part in WRITES)
    ]


def manifest_status(registry: RegistryProcess, repository: str, reference: str) -> int:
    url = f"{registry.url}/v2/{repository}/manifests/{reference}"
    return httpx.head(url, headers={"Accept": MANIFEST_ACCEPT}).status_code


def history_texts(registry: RegistryProcess, ref: str) -> list[str]:
    _, body = manifest(registry, ref)
    config = blob_json(registry, ref.split("@")[0], body["config"]["digest"])
    return [str(h.get("created_by", "")) for h in config["history"]]


def policy_file(tmp_path: Path, bases: list[str]) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: cli}\n"
        f"spec:\n  rules:\n    allowedBases: {{references: {json.dumps(bases)}}}\n"
        "    sizeBudget: {maxCompressedSize: 2MB}\n"
    )
    return path


async def test_a_tag_conflict_fails_before_any_blob_moves_naming_both_digests(
    client: RegistryClient,
    registry: RegistryProcess,
    fixture_images: dict[str, str],
    policies: list[ImagePolicy],
    tmp_path: Path,
) -> None:
    from webhook.errors import RebuildError

    source = fixture_images["root-script"]
    repository = f"rebuilt/early-{uuid.uuid4().hex[:8]}"
    target = f"{registry.host}/{repository}"
    first = await run_rebuild(client, source, target, policies, tmp_path / "1")
    # What the conflicting rebuild makes, pushed elsewhere (digests do not depend on the repo).
    other = await run_rebuild(
        client, source, f"{target}-other", policies, tmp_path / "2", user="1000:1000"
    )
    since = registry.log_offset()

    with pytest.raises(RebuildError) as raised:
        await run_rebuild(client, source, target, policies, tmp_path / "3", user="1000:1000")

    message = str(raised.value)
    assert "imagegate never moves a tag" in message
    assert manifest(registry, first.replacement_tag)[0] == first.replacement.split("@")[1]
    assert first.replacement_tag in message
    assert first.replacement.split("@")[1] in message  # what the tag names
    assert other.replacement.split("@")[1] in message  # what the rebuild would have pushed
    assert writes_since(registry, repository, since) == []  # no blob, no manifest, no tag
    absent = manifest_status(registry, repository, other.replacement.split("@")[1])
    assert absent == 404, "an untagged manifest was left behind"
    assert is_empty(tmp_path / "3")


async def test_history_has_one_json_entry_per_fix_and_keeps_them_through_the_squash(
    client: RegistryClient,
    registry: RegistryProcess,
    policies: list[ImagePolicy],
    root_shell_image: str,
    tmp_path: Path,
) -> None:
    source_digest, source_manifest = manifest(registry, root_shell_image)
    target = f"{registry.host}/rebuilt/root-shell-{uuid.uuid4().hex[:8]}"

    result = await run_rebuild(client, root_shell_image, target, policies, tmp_path, squash=True)

    assert result.outcome == "succeeded", result.reason
    assert result.fixes == ["nonRootUser", "singleEntrypoint", "sizeBudget"]
    texts = history_texts(registry, result.replacement)
    ours = [t for t in texts if t.startswith("imagegate")]
    httpd = ["httpd", "-f", "-p", "8080", "-h", "/www"]
    assert [json.loads(t.removeprefix("imagegate: ")) for t in ours] == [
        {"fix": "sizeBudget", "squashedLayers": 2, "droppedPaths": 0, "droppedBytes": 0},
        {"fix": "singleEntrypoint", "entrypoint": None, "cmd": httpd},
        # from root, and nothing the new user could not read: no ownership layer
        {"fix": "nonRootUser", "user": "65532:65532", "from": ""},
    ]
    assert ours == texts[-3:], "the fixes' entries are on top"
    assert not any("None" in t for t in texts)
    _, body = manifest(registry, result.replacement)
    config = blob_json(registry, target, body["config"]["digest"])
    assert config["config"]["Labels"][SOURCE_DIGEST] == source_digest
    assert body["annotations"][SOURCE_DIGEST] == source_digest
    assert len(body["layers"]) < len(source_manifest["layers"])

    # Docker reads the same history and label, and runs the replacement as 65532.
    docker("pull", result.replacement)
    shown = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", result.replacement)
    assert 'imagegate: {"fix": "nonRootUser", "user": "65532:65532", "from": ""}' in shown
    label = docker("inspect", "--format", f'{{{{index .Config.Labels "{SOURCE_DIGEST}"}}}}',
                   result.replacement)  # fmt: skip
    assert label == source_digest
    container = docker("run", "-d", result.replacement)
    try:
        status = docker("exec", container, "cat", "/proc/1/status")
        assert any(line.split()[:2] == ["Uid:", "65532"] for line in status.splitlines()), status
        assert "HTTP/1." in http_answer(container)
    finally:
        remove_container(container)


async def test_each_manifest_of_an_index_names_its_own_source(
    client: RegistryClient,
    registry: RegistryProcess,
    multiarch_ref: str,
    fixture_images: dict[str, str],
    policies: list[ImagePolicy],
    tmp_path: Path,
) -> None:
    index_digest, source_index = manifest(registry, multiarch_ref)
    sources = {
        json.dumps(m["platform"], sort_keys=True): m["digest"] for m in source_index["manifests"]
    }
    target = f"{registry.host}/rebuilt/provenance-{uuid.uuid4().hex[:8]}"

    result = await run_rebuild(
        client, multiarch_ref, target, policies, tmp_path, fixes=["nonRootUser"]
    )

    _, index = manifest(registry, result.replacement)
    assert index["annotations"][SOURCE_DIGEST] == index_digest
    assert index["annotations"]["org.opencontainers.image.base.name"] == fixture_images["base"]
    assert index["annotations"]["org.opencontainers.image.base.digest"].startswith("sha256:")
    for entry in index["manifests"]:
        own = sources[json.dumps(entry["platform"], sort_keys=True)]
        assert own != index_digest
        _, child = manifest(registry, f"{target}@{entry['digest']}")
        config = blob_json(registry, target, child["config"]["digest"])
        assert child["annotations"][SOURCE_DIGEST] == own
        assert config["config"]["Labels"][SOURCE_DIGEST] == own
    assert sorted(p.source_manifest for p in result.platforms) == sorted(sources.values())


async def test_a_platform_the_source_lacks_is_an_error_naming_those_it_has(
    client: RegistryClient,
    registry: RegistryProcess,
    multiarch_ref: str,
    policies: list[ImagePolicy],
    tmp_path: Path,
) -> None:
    from webhook.errors import PlatformNotFound
    from webhook.registry.facts import Platform

    target = f"{registry.host}/rebuilt/no-such-platform-{uuid.uuid4().hex[:8]}"
    since = registry.log_offset()
    wanted = [Platform.parse("linux/amd64"), Platform.parse("linux/s390x")]
    with pytest.raises(PlatformNotFound, match=r"no linux/s390x image; it has linux/amd64, linux/"):
        await run_rebuild(client, multiarch_ref, target, policies, tmp_path, platforms=wanted)
    assert writes_since(registry, target.split("/", 1)[1], since) == []


async def test_an_index_is_fixed_where_it_can_be_and_says_where_it_could_not(
    client: RegistryClient,
    registry: RegistryProcess,
    bad_multiarch_ref: str,
    policies: list[ImagePolicy],
    tmp_path: Path,
) -> None:
    """amd64 passes, arm64/v8 is root and chains two processes: the user is fixed everywhere,
    the chain cannot be, and the result says so for that platform."""
    target = f"{registry.host}/rebuilt/partial-index-{uuid.uuid4().hex[:8]}"

    result = await run_rebuild(client, bad_multiarch_ref, target, policies, tmp_path)

    assert result.outcome == "partial"
    assert result.phase.value == "PartiallyFixed"
    assert result.fixes == ["nonRootUser"]
    [still] = result.still_failing
    assert still.rule == "single-entrypoint"
    assert still.reason.startswith("linux/arm64/v8: the shell command")
    assert "chains or backgrounds processes (&)" in still.reason
    assert {v.rule for v in result.after.violations} == {"single-entrypoint"}
    _, index = manifest(registry, result.replacement)
    assert len(index["manifests"]) == 2  # the attestation is not carried over


def test_the_command_pushes_what_it_can_fix_and_exits_1_with_what_still_fails(
    registry: RegistryProcess, fixture_images: dict[str, str], tmp_path: Path
) -> None:
    """An unlabelled root image on a base the policy does not approve: it used to be refused
    whole; now it gets its user and the allowed-base failure is reported with the way out."""
    source = fixture_images["root-script"]
    policy = policy_file(tmp_path, [fixture_images["good"]])  # the fixture base is not approved
    target = f"{registry.host}/rebuilt/partial-cli-{uuid.uuid4().hex[:8]}"

    done = rebuild_cli(source, "--to", target, "--policy", str(policy), "--output", "json")

    assert done.returncode == 1, done.stderr
    out = json.loads(done.stdout)
    assert out["outcome"] == "partial"
    assert out["fixes"] == ["nonRootUser"]
    [still] = out["stillFailing"]
    assert still["rule"] == "allowed-base"
    assert "--rebase-onto" in still["reason"]
    assert out["after"]["verdict"] == "fail"
    assert out["replacement"].startswith(f"{target}@sha256:")
    docker("pull", out["replacement"])
    assert docker("run", "--rm", out["replacement"], "id", "-u") == "65532"

    table = rebuild_cli(source, "--to", target, "--policy", str(policy))
    assert table.returncode == 1
    assert table.stdout.strip() == out["replacement"]  # the same digest: idempotent
    assert "PartiallyFixed: fixes nonRootUser" in table.stderr
    assert "still fails allowed-base" in table.stderr


def test_fix_limits_the_fixes_and_platform_takes_comma_lists(
    registry: RegistryProcess,
    fixture_images: dict[str, str],
    root_shell_image: str,
    bad_multiarch_ref: str,
    tmp_path: Path,
) -> None:
    policy = policy_file(tmp_path, [fixture_images["base"]])
    target = f"{registry.host}/rebuilt/fix-limit-{uuid.uuid4().hex[:8]}"

    done = rebuild_cli(root_shell_image, "--to", target, "--policy", str(policy), "--fix",
                       "nonRootUser", "--output", "json")  # fmt: skip

    assert done.returncode == 1, done.stderr
    out = json.loads(done.stdout)
    assert out["fixes"] == ["nonRootUser"]
    assert [(s["rule"], s["reason"]) for s in out["stillFailing"]] == [
        ("single-entrypoint", "the singleEntrypoint fix was not asked for (fixes: nonRootUser)")
    ]

    both = rebuild_cli(root_shell_image, "--to", f"{target}-both", "--policy", str(policy),
                       "--fix", "nonRootUser", "--fix", "singleEntrypoint")  # fmt: skip
    assert both.returncode == 0, both.stderr
    assert "Succeeded: fixes nonRootUser, singleEntrypoint;" in both.stderr

    bad = rebuild_cli(root_shell_image, "--to", target, "--fix", "nonRoot")
    assert bad.returncode == 2
    valid = "nonRootUser, dropSetuid, singleEntrypoint, sizeBudget, allowedBase"
    assert f"unknown fix nonRoot: choose from {valid}" in " ".join(bad.stderr.split())

    arm = rebuild_cli(bad_multiarch_ref, "--to", target, "--policy", str(policy),
                      "--platform", "linux/amd64,linux/arm64/v8", "--output", "json")  # fmt: skip
    assert arm.returncode == 1, arm.stderr
    assert json.loads(arm.stdout)["droppedPlatforms"] == []
    amd = rebuild_cli(bad_multiarch_ref, "--to", f"{target}-amd", "--policy", str(policy),
                      "--platform", "linux/amd64", "--output", "json")  # fmt: skip
    assert amd.returncode == 0, amd.stderr
    assert json.loads(amd.stdout)["droppedPlatforms"] == ["linux/arm64/v8"]
    invalid = rebuild_cli(bad_multiarch_ref, "--to", target, "--platform", "linux/amd64,bogus")
    assert invalid.returncode == 2
    assert "invalid platform 'bogus'" in invalid.stderr
