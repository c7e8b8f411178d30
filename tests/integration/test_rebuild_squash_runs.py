"""A squashed replacement still runs, and shows the same files (issue 15.2, 15.3).

The source is built by the real Docker engine on the busybox fixture base (no Python image is
available offline, so the Python part is a `.py` and its timestamp-based `.pyc` compiled here and
COPYed in, their mtimes kept by the build): runtime assets under `~/.cache` (a Playwright
browser, a HuggingFace model), package caches (pip, apt lists), a seeded `/tmp` file, a hard-link
group whose first path a later layer overwrites, a file made and deleted within the squashed
layers, a base file deleted, a 0600 file owned by the app's uid. It is pushed to the test
registry, rebuilt with `squash=True`, pulled back and run: the same output and exit code. The
`docker export` trees (paths, kinds, modes, owners, link targets, mtimes, content hashes,
hard-link groups) are equal but for the package caches the squash dropped.
"""

from __future__ import annotations

import hashlib
import io
import os
import py_compile
import subprocess
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.registry import RegistryProcess
from webhook.policy.checker import Checker
from webhook.policy.model import ImagePolicy
from webhook.rebuild.engine import rebuild
from webhook.rebuild.layers import is_cache_path, normalize
from webhook.registry.auth import Keyring
from webhook.registry.client import RegistryClient
from webhook.settings import RegistrySettings

pytestmark = pytest.mark.integration

SOURCE_MTIME = 1_600_000_000
PYC = "app/__pycache__/app.cpython-311.pyc"

DOCKERFILE = """\
FROM {base}
ENV HOME=/home/app
COPY app.py /app/app.py
COPY app.cpython-311.pyc /{pyc}
COPY run.sh /app/run.sh
RUN chmod 0755 /app/run.sh \\
 && mkdir -p /home/app/.cache/ms-playwright/chromium-1091/chrome-linux \\
    /home/app/.cache/huggingface/hub /home/app/.cache/pip/http /var/lib/apt/lists \\
 && echo chromium-bits > /home/app/.cache/ms-playwright/chromium-1091/chrome-linux/chrome \\
 && echo model-weights > /home/app/.cache/huggingface/hub/model.bin \\
 && head -c 4096 /dev/urandom > /home/app/.cache/pip/http/wheel-cache \\
 && echo lists > /var/lib/apt/lists/deb.debian.org_Packages \\
 && echo tool-v1 > /app/tool && ln /app/tool /app/tool-link && ln /app/tool /app/tool-link2 \\
 && echo secret > /app/secret.conf && chown 65532:65532 /app/secret.conf \\
 && chmod 0600 /app/secret.conf \\
 && echo seeded > /tmp/seeded && echo scratch > /app/scratch
RUN echo tool-v2 > /app/tool.new && mv /app/tool.new /app/tool && rm /app/scratch /bin/vi
RUN echo later > /app/later
USER 65532:65532
ENTRYPOINT ["/app/run.sh"]
"""

# Not `stat -c %h`: under overlayfs the original's link count is 3, the replaced path's old
# name still counting in the lower layer; the squashed group is two paths, as its tree says.
RUN_SH = """\
#!/bin/sh
echo "app.py mtime: $(stat -c %Y /app/app.py)"
echo "pyc source mtime: $(od -An -tu4 -j8 -N4 /{pyc} | tr -d ' ')"
echo "browser: $(cat $HOME/.cache/ms-playwright/chromium-1091/chrome-linux/chrome)"
echo "model: $(cat $HOME/.cache/huggingface/hub/model.bin)"
echo "tool: $(cat /app/tool), link: $(cat /app/tool-link)"
[ "$(stat -c %i /app/tool-link)" = "$(stat -c %i /app/tool-link2)" ] && echo "one inode"
echo "secret: $(cat /app/secret.conf)"
echo "tmp: $(cat /tmp/seeded)"
test -e /bin/vi || echo "vi deleted"
test -e /app/scratch || echo "scratch deleted"
exit 7
"""

# What the engine adds to every container (mount points, resolv.conf …): not the image's.
CONTAINER_PATHS = {
    ".dockerenv",
    "dev",
    "dev/console",
    "dev/pts",
    "dev/shm",
    "etc/hostname",
    "etc/hosts",
    "etc/mtab",
    "etc/resolv.conf",
    "proc",
    "sys",
}
CONTAINER_DIRS = {"", "etc"}  # their mtimes change when the container is made


@pytest.fixture
async def client() -> AsyncIterator[RegistryClient]:
    async with RegistryClient(RegistrySettings(), Keyring.empty()) as c:
        yield c


def docker(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["docker", *args], capture_output=True, timeout=timeout, check=False)


def ok(*args: str) -> str:
    proc = docker(*args)
    assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr.decode()}"
    return proc.stdout.decode().strip()


@pytest.fixture
def app_image(
    docker_client: Any, registry: RegistryProcess, fixture_images: dict[str, str], tmp_path: Path
) -> str:
    """The source image, built from a context made here and pushed to the test registry."""
    context = tmp_path / "context"
    context.mkdir()
    source = context / "app.py"
    source.write_text('print("hello from app")\n')
    os.utime(source, (SOURCE_MTIME, SOURCE_MTIME))
    py_compile.compile(
        str(source),
        cfile=str(context / "app.cpython-311.pyc"),
        invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP,
    )
    (context / "run.sh").write_text(RUN_SH.format(pyc=PYC))
    dockerfile = DOCKERFILE.format(base=fixture_images["base"], pyc=PYC)
    (context / "Dockerfile").write_text(dockerfile)
    ref = f"{registry.host}/squash-runs/app"
    docker_client.images.build(path=str(context), tag=f"{ref}:1", rm=True, forcerm=True)
    for chunk in docker_client.api.push(ref, tag="1", stream=True, decode=True):
        assert "error" not in chunk, chunk
    return f"{ref}:1"


def run(image: str) -> tuple[int, str]:
    proc = docker("run", "--rm", image)
    return proc.returncode, proc.stdout.decode() + proc.stderr.decode()


Tree = dict[str, tuple[Any, ...]]


def export_tree(image: str) -> tuple[Tree, dict[str, bytes]]:
    """What `docker export` of a container of `image` holds: per path (kind, mode, uid, gid,
    symlink target, mtime, sha256, hard-link group), and the contents of small files."""
    container = ok("create", image)
    try:
        proc = docker("export", container, timeout=300)
        assert proc.returncode == 0, proc.stderr.decode()
    finally:
        docker("rm", "-f", container)
    tree: Tree = {}
    contents: dict[str, bytes] = {}
    roots: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(proc.stdout), mode="r:") as tar:
        for m in tar:
            path = normalize(m.name)
            if path in CONTAINER_PATHS:
                continue
            digest = ""
            if m.islnk():
                root = roots.setdefault(normalize(m.linkname), normalize(m.linkname))
                roots[path] = root
                digest = tree[root][6]
                contents[path] = contents[root]
            elif m.isreg():
                data = tar.extractfile(m).read()  # type: ignore[union-attr]
                digest = hashlib.sha256(data).hexdigest()
                contents[path] = data
            mtime = None if path in CONTAINER_DIRS else int(m.mtime)
            kind = tarfile.REGTYPE if m.islnk() else m.type
            target = m.linkname if m.issym() else ""
            tree[path] = (kind, m.mode, m.uid, m.gid, target, mtime, digest)
    groups: dict[str, set[str]] = {}
    for path, root in roots.items():
        groups.setdefault(root, set()).add(path)
    for members in groups.values():
        for path in members:
            tree[path] = (*tree[path], tuple(sorted(members)))
    return {p: v if len(v) == 8 else (*v, ()) for p, v in tree.items()}, contents


async def test_a_squashed_replacement_runs_and_shows_the_same_files(
    client: RegistryClient,
    registry: RegistryProcess,
    fixture_images: dict[str, str],
    app_image: str,
    tmp_path: Path,
) -> None:
    policies = [ImagePolicy().with_overrides([fixture_images["base"]], 2_000_000)]
    target = f"{registry.host}/rebuilt/squash-runs-{uuid.uuid4().hex[:8]}"
    result = await rebuild(
        client, Checker(client), app_image, target, policies, workdir=tmp_path / "work",
        squash=True,
    )  # fmt: skip
    assert "sizeBudget" in result.fixes
    assert result.platforms[0].squashed_layers >= 3

    ok("pull", result.replacement)
    original_exit, original_output = run(app_image)
    exit_code, output = run(result.replacement)
    assert (exit_code, output) == (original_exit, original_output)
    assert original_exit == 7
    for line in (
        f"app.py mtime: {SOURCE_MTIME}",
        f"pyc source mtime: {SOURCE_MTIME}",
        "browser: chromium-bits",
        "model: model-weights",
        "tool: tool-v2, link: tool-v1",
        "one inode",
        "secret: secret",
        "tmp: seeded",
        "vi deleted",
        "scratch deleted",
    ):
        assert line in output.splitlines(), output

    before, _ = export_tree(app_image)
    after, after_contents = export_tree(result.replacement)
    dropped = sorted(set(before) - set(after))
    assert dropped == [
        "home/app/.cache/pip/http",
        "home/app/.cache/pip/http/wheel-cache",
        "var/lib/apt/lists/deb.debian.org_Packages",
    ]
    assert all(is_cache_path(p) for p in dropped)
    assert result.platforms[0].dropped_paths == len(dropped)
    assert set(after) <= set(before), sorted(set(after) - set(before))
    changed = {p: (before[p], after[p]) for p in after if before[p] != after[p]}
    assert not changed, changed

    # The timestamp-based .pyc still matches its source: Python will not recompile it.
    pyc = after_contents[PYC]
    assert int.from_bytes(pyc[8:12], "little") == after["app/app.py"][5] == SOURCE_MTIME
    assert int.from_bytes(pyc[12:16], "little") == len(after_contents["app/app.py"])
    assert after["app/tool-link"][7] == ("app/tool-link", "app/tool-link2")
    assert after_contents["app/tool-link"] == b"tool-v1\n"
