"""imagegate's own image (the root Dockerfile) passes `imagegate check` under the default policy.

The image is built by the real Docker engine on a locally made base (hack/make-base-images.sh:
debootstrap bookworm + python3; nothing can be pulled here), pushed with that base to the test
registry, and checked by digest with `policies/default.yaml` plus `--allow-base <the base>`.
The first run on a fresh machine takes a few minutes (debootstrap ~3 min, pip ~2 min); later
runs reuse the base image and the engine's build cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hack.registry import RegistryProcess
from tests.conftest import ROOT, missing_part
from webhook import __version__

pytestmark = pytest.mark.integration

BASE_IMAGE = os.environ.get("IMAGEGATE_LOCAL_BASE", "imagegate-local/python:3.11-slim")
BASE_SCRIPT = ROOT / "hack" / "make-base-images.sh"
IMAGE_REPO = "imagegate"
IMAGE_TAG = f"{__version__}-test"
RUN_AS = 65532


def _extra_ca_certs() -> str:
    """PEM CAs the build's pip needs behind a TLS-intercepting proxy (empty when none)."""
    explicit = os.environ.get("IMAGEGATE_BUILD_CA_FILE")
    paths = (
        [Path(explicit)]
        if explicit
        else sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    )
    return "\n".join(p.read_text() for p in paths if p.is_file())


def _ensure_base(docker_client: Any) -> None:
    import docker.errors

    try:
        docker_client.images.get(BASE_IMAGE)
        return
    except docker.errors.ImageNotFound:
        pass
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        missing_part(
            f"no local base image {BASE_IMAGE} and cannot make one (needs root and debootstrap: "
            "apt-get install debootstrap; then hack/make-base-images.sh)"
        )
    proc = subprocess.run(
        [str(BASE_SCRIPT)],
        env={**os.environ, "IMAGE": BASE_IMAGE},
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"{BASE_SCRIPT.name} failed:\n{proc.stderr[-4000:]}")


def _push(docker_client: Any, repository: str, tag: str) -> str:
    digest = ""
    for chunk in docker_client.api.push(repository, tag=tag, stream=True, decode=True):
        if "error" in chunk:
            pytest.fail(f"docker push {repository}:{tag}: {chunk['error']}")
        aux = chunk.get("aux")
        if isinstance(aux, dict) and aux.get("Digest"):
            digest = str(aux["Digest"])
    assert digest, f"docker push {repository}:{tag} reported no digest"
    return digest


@pytest.fixture(scope="module")
def own_image(docker_client: Any, registry: RegistryProcess) -> dict[str, str]:
    """Build the root Dockerfile on the local base; push base and image; return references."""
    import docker.errors

    _ensure_base(docker_client)
    base_name, _, base_tag = BASE_IMAGE.rpartition(":")
    pushed_base_repo = f"{registry.host}/{base_name}"
    docker_client.images.get(BASE_IMAGE).tag(pushed_base_repo, base_tag)
    base_digest = _push(docker_client, pushed_base_repo, base_tag)
    pushed_base = f"{pushed_base_repo}:{base_tag}"

    repo = f"{registry.host}/{IMAGE_REPO}"
    try:
        docker_client.images.build(
            path=str(ROOT),
            tag=f"{repo}:{IMAGE_TAG}",
            buildargs={
                "BUILDER_IMAGE": pushed_base,
                "RUNTIME_IMAGE": pushed_base,
                "RUNTIME_DIGEST": base_digest,
                "VERSION": __version__,
                "BUILD_CA_CERTS": _extra_ca_certs(),
            },
            pull=False,
            rm=True,
            forcerm=True,
        )
    except docker.errors.BuildError as e:
        log = "".join(str(c.get("stream", c.get("error", ""))) for c in e.build_log)
        pytest.fail(f"docker build of the root Dockerfile failed: {e.msg}\n{log[-6000:]}")
    digest = _push(docker_client, repo, IMAGE_TAG)
    return {
        "local": f"{repo}:{IMAGE_TAG}",
        "pinned": f"{repo}@{digest}",
        "base": pushed_base,
        "base_digest": base_digest,
    }


def _check(*args: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "webhook", "check", *args, "--output", "json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"not JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.returncode, data, proc.stderr


def test_own_image_passes_every_rule_of_the_default_policy(own_image: dict[str, str]) -> None:
    code, data, stderr = _check(
        own_image["pinned"],
        "--policy",
        str(ROOT / "policies" / "default.yaml"),
        "--allow-base",
        own_image["base"],
    )
    (result,) = data["results"]
    assert result["violations"] == [], stderr
    assert result["verdict"] == "pass"
    assert code == 0
    facts = result["facts"]
    assert facts["user"] == f"{RUN_AS}:{RUN_AS}"
    assert facts["entrypoint"] == ["/opt/imagegate/bin/imagegate"]
    assert facts["base"]["name"] == own_image["base"]
    assert facts["base"]["digest"] == own_image["base_digest"]
    assert facts["base"]["evidence"] in {"annotation", "label"}
    assert facts["compressedSize"] < 200_000_000


def test_own_image_fails_allowed_base_without_the_local_base_approved(
    own_image: dict[str, str],
) -> None:
    """Control: the pass above is owed to --allow-base, not to a rule that never fires."""
    code, data, _ = _check(own_image["pinned"], "--policy", str(ROOT / "policies" / "default.yaml"))
    (result,) = data["results"]
    assert {v["rule"] for v in result["violations"]} == {"allowed-base"}
    assert code == 1


def test_own_image_prints_its_version(docker_client: Any, own_image: dict[str, str]) -> None:
    out = docker_client.containers.run(own_image["local"], ["version"], remove=True)
    assert out.decode().strip() == __version__


def test_own_image_runs_as_a_numeric_non_root_user(
    docker_client: Any, own_image: dict[str, str]
) -> None:
    out = docker_client.containers.run(own_image["local"], ["-u"], entrypoint="id", remove=True)
    uid = int(out.decode().strip())
    assert uid == RUN_AS
    assert uid != 0


def test_own_image_carries_oci_labels(docker_client: Any, own_image: dict[str, str]) -> None:
    labels = docker_client.images.get(own_image["local"]).labels
    assert labels["org.opencontainers.image.base.name"] == own_image["base"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.title"] == "imagegate"
