"""Layer analysis of images built by the real Docker engine, read from a real registry, agrees
with Dive's definition to the byte (issue 14).

The images are built on the fixture base (FROM scratch + static busybox, no pulls) with the
cases Dive exists for: a file written then deleted in a later layer, a file overwritten, a
directory deleted then re-created (an opaque directory), apt lists left behind, an appended
/etc/passwd with a second uid-0 name, a setuid file, `USER nobody`. They are pushed to the test
registry and indexed from there through `RegistryClient` + `BlobStore` (`fetch_layer_index`).

The reference is computed independently, in this file, from `docker save` (the engine's own
uncompressed layer tars), following Dive's code (`dive/filetree/efficiency.go`: per path, the
minimum over the cumulative size of every occurrence, a whiteout sized by what it deletes
when that was a directory; wasted bytes the cumulative size of paths seen more than once;
user-wasted the wasted bytes over the bytes of every layer but the first).
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.images import FixtureBuildError, push
from tests.support.registry import RegistryProcess, await_requests
from webhook.layers.analysis import (
    LayerAnalysis,
    ResolvedUser,
    analyze_layers,
    layer_commands,
    merge_layers,
    resolve_image_user,
)
from webhook.layers.index import LayerIndex, LayerIndexStore, fetch_layer_index
from webhook.registry.auth import Keyring
from webhook.registry.blobs import BlobStore
from webhook.registry.client import RegistryClient
from webhook.registry.reference import Reference
from webhook.settings import RegistrySettings

pytestmark = pytest.mark.integration

MAX_LAYER_BYTES = 64 * 1024 * 1024

WASTEFUL = """\
FROM {base}
RUN head -c 100000 /dev/urandom > /big.bin \\
 && mkdir -p /var/lib/apt/lists/partial /opt/d /cfg \\
 && head -c 3000 /dev/urandom > /var/lib/apt/lists/deb.debian.org_dists_InRelease \\
 && head -c 300 /dev/urandom > /opt/d/a && head -c 200 /dev/urandom > /opt/d/b \\
 && echo old > /cfg/old
RUN rm /big.bin
RUN head -c 5000 /dev/urandom > /data.bin
RUN head -c 7000 /dev/urandom > /data.bin
RUN rm -rf /opt/d
RUN rm -rf /cfg && mkdir /cfg && echo new > /cfg/new
RUN echo 'toor:x:0:0:root:/root:/bin/sh' >> /etc/passwd \\
 && mkdir -p /app && head -c 64 /dev/urandom > /app/helper && chmod 4755 /app/helper \\
 && head -c 32 /dev/urandom > /app/secret && chmod 600 /app/secret
WORKDIR /app
USER nobody
"""

ROOT_ALIAS = """\
FROM {base}
RUN echo 'toor:x:0:0:root:/root:/bin/sh' >> /etc/passwd
USER toor
"""


@dataclass(frozen=True)
class Built:
    """A test image: its registry reference and the engine's layer tars (`docker save`)."""

    ref: str
    saved_layers: list[Path]


def build_and_push(
    docker_client: Any, registry: RegistryProcess, base: str, name: str, dockerfile: str
) -> str:
    import docker.errors

    repo = f"{registry.host}/layers/{name}"
    try:
        docker_client.images.build(
            fileobj=io.BytesIO(dockerfile.format(base=base).encode()),
            tag=f"{repo}:1",
            rm=True,
            forcerm=True,
        )
        push(docker_client, repo, "1")
    except (docker.errors.BuildError, docker.errors.APIError, FixtureBuildError) as e:
        pytest.fail(f"building {name}: {e}\nregistry log:\n{registry.log_tail()}", pytrace=False)
    return f"{repo}:1"


def docker_save(docker_client: Any, ref: str, dest: Path) -> list[Path]:
    """The image's layer tars, bottom first, as `docker save` writes them."""
    archive = dest / "image.tar"
    with archive.open("wb") as out:
        for chunk in docker_client.images.get(ref).save(named=False):
            out.write(chunk)
    layers: list[Path] = []
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        for i, name in enumerate(manifest[0]["Layers"]):
            path = dest / f"layer{i}.tar"
            source = tar.extractfile(name)
            assert source is not None, f"docker save has no {name}"
            path.write_bytes(source.read())
            layers.append(path)
    return layers


@pytest.fixture(scope="module")
def built(
    docker_client: Any,
    registry: RegistryProcess,
    fixture_images: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Built]:
    images: dict[str, Built] = {}
    for name, dockerfile in (("wasteful", WASTEFUL), ("root-alias", ROOT_ALIAS)):
        ref = build_and_push(docker_client, registry, fixture_images["base"], name, dockerfile)
        images[name] = Built(ref, docker_save(docker_client, ref, tmp_path_factory.mktemp(name)))
    return images


@pytest.fixture
async def client() -> AsyncIterator[RegistryClient]:
    async with RegistryClient(RegistrySettings(), Keyring.empty()) as c:
        yield c


async def read_image(
    client: RegistryClient, store: LayerIndexStore, ref: str
) -> tuple[list[LayerIndex], dict[str, Any]]:
    """Every layer of `ref` indexed from the registry (through `store`), and its config."""
    reference = Reference.parse(ref)
    manifest = await client.get_manifest(reference)
    config = await client.get_config(reference, manifest.data["config"]["digest"])
    diff_ids = config["rootfs"]["diff_ids"]
    blobs = BlobStore(client)
    indexes = [
        await fetch_layer_index(
            store,
            blobs,
            reference,
            digest=descriptor["digest"],
            media_type=descriptor["mediaType"],
            size=descriptor["size"],
            diff_id=diff_ids[i],
            max_bytes=MAX_LAYER_BYTES,
        )
        for i, descriptor in enumerate(manifest.data["layers"])
    ]
    return indexes, config


def analyse(indexes: list[LayerIndex], config: dict[str, Any]) -> LayerAnalysis:
    return analyze_layers(
        indexes,
        created_by=layer_commands(config.get("history", []), len(indexes)),
        readable_under=[config["config"].get("WorkingDir") or "/"],
    )


# ---- the reference: Dive's definition, from `docker save` ------------------------------------

Names = tuple[str, ...]


@dataclass
class Payload:
    size: int
    is_dir: bool


def dive_layer_nodes(tar_path: Path) -> dict[Names, Payload]:
    """Dive's tree of one layer as a flat map: every node a tar path makes, implied parents
    with an empty payload (size 0, not a directory), `.wh..wh.` names never added."""
    nodes: dict[Names, Payload] = {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            name = posixpath.normpath(member.name)
            if name == ".":
                continue
            names = tuple(n for n in name.split("/") if n)
            for depth in range(1, len(names) + 1):
                prefix = names[:depth]
                if prefix not in nodes:
                    if prefix[-1].startswith(".wh..wh."):
                        break
                    nodes[prefix] = Payload(0, False)
                if depth == len(names):
                    nodes[prefix] = Payload(member.size, member.isdir())
    return nodes


def whiteout_target(names: Names) -> Names | None:
    return (*names[:-1], names[-1][4:]) if names[-1].startswith(".wh.") else None


@dataclass(frozen=True)
class DiveFigures:
    efficiency: float
    wasted_bytes: int
    user_wasted_percent: float
    diff_ids: list[str]


def dive_reference(layer_tars: list[Path]) -> DiveFigures:
    minimum: dict[Names, int] = {}
    cumulative: dict[Names, int] = {}
    seen: dict[Names, int] = {}
    stacked: dict[Names, Payload] = {}
    sizes: list[int] = []
    for position, tar_path in enumerate(layer_tars):
        nodes = dive_layer_nodes(tar_path)
        with tarfile.open(tar_path) as tar:
            sizes.append(sum(m.size for m in tar))
        if position == 0:
            stacked = dict(nodes)
        parents = {names[:-1] for names in nodes}
        for names in (n for n in nodes if n not in parents):  # leaves
            target = whiteout_target(names)
            if target is None:
                path, size = names, nodes[names].size
            else:
                assert target in stacked, f"whiteout of {target}, which no lower layer has"
                path = target
                lower = stacked[target]
                size = (
                    sum(p.size for n, p in stacked.items() if n[: len(target)] == target)
                    if lower.is_dir
                    else 0
                )
            seen[path] = seen.get(path, 0) + 1
            cumulative[path] = cumulative.get(path, 0) + size
            minimum[path] = min(minimum.get(path, size), size)
        for names in nodes:  # stack the layer: whiteouts delete, the rest sets payloads
            target = whiteout_target(names)
            if target is not None:
                for n in [n for n in stacked if n[: len(target)] == target]:
                    del stacked[n]
        stacked.update((n, p) for n, p in nodes.items() if whiteout_target(n) is None)
    wasted = sum(cumulative[p] for p, count in seen.items() if count > 1)
    return DiveFigures(
        efficiency=sum(minimum.values()) / sum(cumulative.values()),
        wasted_bytes=wasted,
        user_wasted_percent=wasted / sum(sizes[1:]),
        diff_ids=[sha256_file(p) for p in layer_tars],
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


# ---- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["wasteful", "root-alias"])
async def test_efficiency_and_wasted_bytes_match_dive_to_the_byte(
    name: str, built: dict[str, Built], client: RegistryClient, tmp_path: Path
) -> None:
    image = built[name]
    indexes, config = await read_image(client, LayerIndexStore(tmp_path), image.ref)

    analysis = analyse(indexes, config)
    reference = dive_reference(image.saved_layers)

    assert [i.diff_id for i in indexes] == reference.diff_ids == config["rootfs"]["diff_ids"]
    assert analysis.wasted_bytes == reference.wasted_bytes
    assert analysis.efficiency == reference.efficiency
    assert analysis.user_wasted_percent == reference.user_wasted_percent
    assert sum(layer.wasted_bytes for layer in analysis.layers) == analysis.wasted_bytes


async def test_the_wasteful_image_shows_its_waste_caches_setuid_file_and_users(
    built: dict[str, Built], client: RegistryClient, tmp_path: Path
) -> None:
    image = built["wasteful"]
    indexes, config = await read_image(client, LayerIndexStore(tmp_path), image.ref)

    analysis = analyse(indexes, config)
    merged = merge_layers(indexes)

    wasted = {w.path: w.bytes for w in analysis.top_wasted}
    assert wasted["/big.bin"] == 100_000  # written, then deleted (the whiteout counts 0)
    assert wasted["/data.bin"] == 5000 + 7000  # overwritten: both copies
    assert wasted["/etc/passwd"] > 0  # appended to: the whole file again
    assert {(c.kind, c.path, c.bytes) for c in analysis.cache_files} == {
        ("apt-lists", "/var/lib/apt/lists", 3000)
    }
    assert analysis.setuid == ("/app/helper",)
    assert analysis.unreadable_by_others == ("/app/secret",)
    removed_big = next(s for s in analysis.layers if "rm /big.bin" in s.created_by)
    assert removed_big.removed == 1
    assert merged.get("/cfg/old") is None
    assert merged.get("/cfg/new") is not None
    assert resolve_image_user(merged, config["config"]["User"]) == ResolvedUser(
        "nobody", 65534, 65534
    )
    assert resolve_image_user(merged, "toor") == ResolvedUser("toor", 0, 0)


async def test_a_named_user_that_is_uid_0_resolves_to_root(
    built: dict[str, Built], client: RegistryClient, tmp_path: Path
) -> None:
    indexes, config = await read_image(client, LayerIndexStore(tmp_path), built["root-alias"].ref)

    user = resolve_image_user(merge_layers(indexes), config["config"]["User"])

    assert user == ResolvedUser("toor", 0, 0)


async def test_base_layers_shared_by_two_images_are_fetched_once(
    built: dict[str, Built], client: RegistryClient, registry: RegistryProcess, tmp_path: Path
) -> None:
    store = LayerIndexStore(tmp_path)
    mark = registry.log_offset()

    first, _ = await read_image(client, store, built["wasteful"].ref)
    second, _ = await read_image(client, store, built["root-alias"].ref)

    shared = [i.digest for i in first if i.digest in {j.digest for j in second}]
    assert shared, "the two images share the fixture base's layers"
    for digest in shared:
        gets = await_requests(registry.log_path, "GET", f"/blobs/{digest}", 1, since=mark)
        assert gets == 1, f"layer {digest} fetched {gets} times"
    assert store.stats.indexed == len({i.digest for i in [*first, *second]})
