"""A user switch that keeps the app working (issue 15.1), proven with the real Docker engine.

The sources are built by the engine on the busybox fixture base and pushed to the test registry:

* `root-app` runs as root: its entrypoint script reads a root-owned 0600 `/app/secret.conf`,
  a file in a 0700 directory, a 0600 config in a 0700 `/etc/app` named by `ENV APP_CONFIG`,
  and writes into its root-owned WORKDIR; it also ships a setuid-root tool and a hard link
  to it;
* `www-data` runs as `USER www-data` (uid 33, added to the base's /etc/passwd) and serves
  files only uid 33 may read.

The replacement is made as the engine will make it, without the engine: the layer blobs are
downloaded with `BlobStore`, `webhook.rebuild.ownership` plans the switch and writes the
ownership (and setuid) layers, and an `ImageDraft` with those layers and the new USER is pushed
with `webhook.rebuild.push`. Docker then pulls and runs it: the output and exit code equal the
original's (run as root, or as its own user), while the original run as the new user fails.
`docker export` shows the same tree but for the listed changes (owners and modes only).
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.registry import RegistryProcess
from webhook.rebuild.draft import ImageDraft
from webhook.rebuild.ownership import (
    Change,
    as_draft_layer,
    drop_setuid_changes,
    merged_image,
    ownership_history,
    plan_user_switch,
    setuid_history,
    write_ownership_layer,
)
from webhook.rebuild.push import BlobSource, push_blobs, push_manifest
from webhook.registry import mediatypes as mt
from webhook.registry.auth import Keyring
from webhook.registry.blobs import BlobStore
from webhook.registry.client import RegistryClient
from webhook.registry.reference import Reference
from webhook.settings import RegistrySettings

pytestmark = pytest.mark.integration

ROOT_APP = """\
FROM {base}
COPY run.sh /app/run.sh
RUN mkdir -p /app/work /app/private /etc/app /usr/local/bin \\
 && echo secret-value > /app/secret.conf && chmod 0600 /app/secret.conf \\
 && echo private-data > /app/private/data && chmod 0700 /app/private \\
 && echo app-config > /etc/app/app.conf && chmod 0600 /etc/app/app.conf && chmod 0700 /etc/app \\
 && mkdir -p /opt/conf && echo extra-config > /opt/conf/extra.conf \\
 && chmod 0600 /opt/conf/extra.conf && chown 10001:10001 /opt && chmod 0711 /opt \\
 && printf '#!/bin/sh\\necho tool ran\\n' > /usr/local/bin/tool \\
 && chmod 4755 /usr/local/bin/tool && ln /usr/local/bin/tool /usr/local/bin/tool-alias
ENV APP_CONFIG=/etc/app/app.conf EXTRA_CONFIG=/opt/conf/extra.conf
WORKDIR /app/work
ENTRYPOINT ["/app/run.sh"]
"""

RUN_SH = """\
#!/bin/sh
echo "secret: $(cat /app/secret.conf 2>&1)"
echo "private: $(cat /app/private/data 2>&1)"
echo "config: $(cat "$APP_CONFIG" 2>&1)"
echo "extra: $(cat "$EXTRA_CONFIG" 2>&1)"
echo "pwd: $(pwd)"
echo "written by the app" > state.txt
echo "state: $(cat state.txt 2>&1)"
/usr/local/bin/tool-alias
exit 3
"""

WWW_DATA = """\
FROM {base}
COPY serve.sh /serve.sh
RUN echo 'www-data:x:33:33:www-data:/var/www:/bin/false' >> /etc/passwd \\
 && echo 'www-data:x:33:' >> /etc/group \\
 && mkdir -p /var/www && echo hello-www > /var/www/index.html \\
 && chown -R 33:33 /var/www && chmod 0750 /var/www && chmod 0640 /var/www/index.html
USER www-data
WORKDIR /var/www
ENTRYPOINT ["/serve.sh"]
"""

SERVE_SH = """\
#!/bin/sh
cd /var/www || exit 1
echo "index: $(cat index.html 2>&1)"
echo "served" > served.txt && echo "wrote: $(cat served.txt)"
exit 0
"""

# What the engine adds to every container (mount points, resolv.conf …): not the image's.
CONTAINER_PATHS = {".dockerenv", "dev", "proc", "sys", "etc/hostname", "etc/hosts", "etc/mtab"}
CONTAINER_PATHS |= {"etc/resolv.conf", "dev/console", "dev/pts", "dev/shm"}
CONTAINER_DIRS = {"", "etc"}  # their mtimes change when the container is made


def docker(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["docker", *args], capture_output=True, timeout=timeout, check=False)


def run(image: str, *options: str) -> tuple[int, str]:
    proc = docker("run", "--rm", *options, image)
    return proc.returncode, proc.stdout.decode() + proc.stderr.decode()


SOURCES = {
    "root-app": (ROOT_APP, {"run.sh": RUN_SH}),
    "www-data": (WWW_DATA, {"serve.sh": SERVE_SH}),
}


@pytest.fixture
async def client() -> AsyncIterator[RegistryClient]:
    async with RegistryClient(RegistrySettings(), Keyring.empty()) as c:
        yield c


@pytest.fixture
def source(
    request: pytest.FixtureRequest,
    docker_client: Any,
    registry: RegistryProcess,
    fixture_images: dict[str, str],
    tmp_path: Path,
) -> str:
    """The source image `SOURCES[request.param]`, built on the fixture base and pushed under a
    name of its own; returns `host/repo:1`."""
    dockerfile, scripts = SOURCES[request.param]
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile.format(base=fixture_images["base"]))
    for name, text in scripts.items():
        (context / name).write_text(text)
        (context / name).chmod(0o755)
    ref = f"{registry.host}/user-switch/{request.param}-{uuid.uuid4().hex[:8]}"
    docker_client.images.build(path=str(context), tag=f"{ref}:1", rm=True, forcerm=True)
    for chunk in docker_client.api.push(ref, tag="1", stream=True, decode=True):
        assert "error" not in chunk, chunk
    return f"{ref}:1"


@dataclass
class Replacement:
    ref: str  # registry/repo@sha256:…
    user: str
    changes: list[Change]
    setuid: list[Change]
    history: list[str]


async def replace_user(client: RegistryClient, source: str, work: Path) -> Replacement:
    """The replacement of `source`, made as the engine will: layers downloaded, the switch
    planned and written by `webhook.rebuild.ownership`, the draft pushed by digest."""
    src = Reference.parse(source)
    manifest = await client.get_manifest(src)
    config = await client.get_config(
        src.with_digest(manifest.digest), str(manifest.data["config"]["digest"])
    )
    draft = ImageDraft.from_image(source, src, manifest.data, config)
    blobs = BlobStore(client)
    paths = []
    for position, layer in enumerate(draft.layers):
        paths.append(work / f"{position:04d}.blob")
        await blobs.download(src, layer.digest, paths[-1])
    merged = merged_image(paths, draft.layers, spill_dir=work)

    plan = plan_user_switch(merged, draft.inner)
    changes = list(plan.changes)
    if changes:
        written = write_ownership_layer(changes, paths, work, merged=merged)
        entry = ownership_history(draft.created, plan.choice, written)
        draft.layers.append(as_draft_layer(written, entry))
    setuid = drop_setuid_changes(merged, skip=[c.path for c in changes])
    if setuid:
        written = write_ownership_layer(setuid, paths, work, merged=merged, name="setuid")
        draft.layers.append(as_draft_layer(written, setuid_history(draft.created, written)))
    draft.inner["User"] = plan.choice.user
    draft.note("nonRootUser", {"user": plan.choice.user, "from": plan.choice.source})

    rendered = draft.render({})
    target = Reference.parse(f"{src.registry}/user-switch/replaced-{uuid.uuid4().hex[:8]}")
    config_path = work / "config.json"
    config_path.write_bytes(rendered.config)
    sources = [layer.source for layer in draft.layers]
    sources.append(BlobSource(rendered.config_digest, file=config_path))
    await push_blobs(blobs, target, sources, work)
    digest = await push_manifest(blobs, target, rendered.manifest, mt.OCI_MANIFEST)
    history = [str(h.get("created_by", "")) for h in draft.history]
    return Replacement(f"{target.name}@{digest}", plan.choice.user, changes, setuid, history)


Tree = dict[str, tuple[Any, ...]]


def export_tree(docker_client: Any, image: str) -> Tree:
    """`docker export` of a container of `image`: per path (type, permission bits, uid, gid,
    link target, mtime, sha256 of the content)."""
    container = docker_client.containers.create(image)
    try:
        exported = b"".join(container.export())
    finally:
        container.remove(force=True)
    tree: Tree = {}
    with tarfile.open(fileobj=io.BytesIO(exported), mode="r:") as tar:
        for m in tar:
            path = m.name.strip("/").removeprefix("./")
            if path in CONTAINER_PATHS:
                continue
            data = tar.extractfile(m).read() if m.isreg() else b""  # type: ignore[union-attr]
            mtime = None if path in CONTAINER_DIRS else int(m.mtime)
            digest = hashlib.sha256(data).hexdigest()
            tree[path] = (m.type, m.mode & 0o7777, m.uid, m.gid, m.linkname, mtime, digest)
    return tree


def pull(ref: str) -> None:
    proc = docker("pull", ref, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()


@pytest.mark.parametrize("source", ["root-app"], indirect=True)
async def test_a_root_app_runs_the_same_as_the_new_user(
    client: RegistryClient, docker_client: Any, source: str, tmp_path: Path
) -> None:
    root_app = source
    replacement = await replace_user(client, root_app, tmp_path)

    assert replacement.user == "65532:65532"
    assert {c.path: (c.new_uid, c.new_gid, c.new_mode) for c in replacement.changes} == {
        "/app/private": (65532, 65532, 0o700),
        "/app/secret.conf": (65532, 65532, 0o600),
        "/app/work": (65532, 65532, 0o755),
        "/etc/app": (65532, 65532, 0o700),
        "/etc/app/app.conf": (65532, 65532, 0o600),
        "/opt/conf/extra.conf": (65532, 65532, 0o600),
    }
    assert [(c.path, c.old_mode, c.new_mode, c.link) for c in replacement.setuid] == [
        ("/usr/local/bin/tool", 0o4755, 0o755, ""),
        ("/usr/local/bin/tool-alias", 0o4755, 0o755, "/usr/local/bin/tool"),
    ]
    assert any('"fix": "nonRootUser"' in h and '"chowned": 6' in h for h in replacement.history)
    assert any('"fix": "dropSetuid", "cleared": 2' in h for h in replacement.history)

    pull(replacement.ref)
    original = run(root_app)
    assert original[0] == 3
    read = ("secret: secret-value", "private: private-data", "config: app-config")
    for line in (*read, "extra: extra-config", "tool ran"):
        assert line in original[1].splitlines(), original[1]
    assert "state: written by the app" in original[1]
    assert run(replacement.ref) == original
    # Without the ownership layer, the new user could not do it: the test means something.
    broken = run(root_app, "--user", "65532:65532")
    assert broken[0] == 3
    assert "Permission denied" in broken[1]

    # Equal trees but for the changes: parents too (/opt stays 0711 10001:10001, which a
    # layer without parent entries would turn into 0755 root on this engine).
    before = export_tree(docker_client, root_app)
    after = export_tree(docker_client, replacement.ref)
    assert set(before) == set(after)
    assert before["opt"][1:4] == (0o711, 10001, 10001)
    changed = {c.path[1:]: c for c in [*replacement.changes, *replacement.setuid]}
    for path in before:
        if path not in changed:
            assert after[path] == before[path], path
            continue
        change = changed[path]
        expected = (change.new_uid, change.new_gid, change.new_mode)
        assert (after[path][2], after[path][3], after[path][1]) == expected, path
        assert after[path][5:] == before[path][5:], path  # mtime and content kept
    stat = docker(
        "run", "--rm", "--entrypoint", "stat", replacement.ref, "-c", "%i",
        "/usr/local/bin/tool", "/usr/local/bin/tool-alias",
    )  # fmt: skip
    inodes = stat.stdout.decode().split()
    assert len(inodes) == 2, stat
    assert inodes[0] == inodes[1]  # one inode, as before


@pytest.mark.parametrize("source", ["www-data"], indirect=True)
async def test_a_named_user_keeps_its_own_uid(
    client: RegistryClient, source: str, tmp_path: Path
) -> None:
    www_data = source
    replacement = await replace_user(client, www_data, tmp_path)

    assert replacement.user == "33:33"
    assert (replacement.changes, replacement.setuid) == ([], [])
    pull(replacement.ref)
    original = run(www_data)
    assert original == (0, "index: hello-www\nwrote: served\n")
    assert run(replacement.ref) == original
    # What the old fix did (USER 65532:65532) breaks it.
    broken = run(www_data, "--user", "65532:65532")
    assert broken != original
    assert "can't cd to /var/www" in broken[1] or "Permission denied" in broken[1]


# ---- the same through the rebuild engine, as `imagegate rebuild` and the operator run it ----


@pytest.mark.parametrize("squash", [False, True], ids=["layers-kept", "squashed"])
@pytest.mark.parametrize("source", ["root-app"], indirect=True)
async def test_the_rebuild_engine_makes_a_root_app_work_as_the_new_user(
    client: RegistryClient,
    fixture_images: dict[str, str],
    registry: RegistryProcess,
    source: str,
    squash: bool,
    tmp_path: Path,
) -> None:
    from webhook.policy.checker import Checker
    from webhook.policy.model import ImagePolicy
    from webhook.rebuild.engine import rebuild

    target = f"{registry.host}/user-switch/engine-{uuid.uuid4().hex[:8]}"
    policy = ImagePolicy().with_overrides([fixture_images["base"]], 2_000_000)
    result = await rebuild(
        client, Checker(client), source, target, [policy], workdir=tmp_path, squash=squash
    )
    assert result.outcome == "succeeded", result.reason
    assert "nonRootUser" in result.fixes
    assert "dropSetuid" in result.fixes  # on in the default policy
    (platform,) = result.to_json()["platforms"]
    assert platform["user"] == "65532:65532"
    assert platform["changedCount"] == 8  # 6 paths given to the new user, 2 setuid cleared
    assert {c["path"] for c in platform["changedPaths"]} >= {"/app/secret.conf", "/app/work"}

    pull(result.replacement)
    original = run(source)
    assert original[0] == 3
    assert run(result.replacement) == original, "same output and exit code as the root original"
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", result.replacement)
    shown = history.stdout.decode()
    assert '"fix": "nonRootUser"' in shown, shown  # kept through the squash too
    assert '"fix": "dropSetuid"' in shown, shown


@pytest.mark.parametrize("source", ["www-data"], indirect=True)
async def test_the_rebuild_engine_keeps_a_named_non_root_user(
    client: RegistryClient, registry: RegistryProcess, source: str, tmp_path: Path
) -> None:
    from webhook.policy.checker import Checker
    from webhook.policy.model import ImagePolicy
    from webhook.rebuild.engine import rebuild

    target = f"{registry.host}/user-switch/engine-www-{uuid.uuid4().hex[:8]}"
    result = await rebuild(
        client, Checker(client), source, target, [ImagePolicy()], workdir=tmp_path,
        fixes=["nonRootUser"],
    )  # fmt: skip
    (platform,) = result.to_json()["platforms"]
    assert platform["user"] == "33:33"
    assert platform["changedCount"] == 0
    pull(result.replacement)
    assert run(result.replacement) == run(source) == (0, "index: hello-www\nwrote: served\n")
