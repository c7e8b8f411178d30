"""imagegate's own image (the root Dockerfile) passes `imagegate check` under the default policy.

The image is built by the real Docker engine on a locally made base (hack/make-base-images.sh:
debootstrap bookworm + python3; nothing can be pulled here), pushed with that base to the test
registry, and checked by digest with `policies/default.yaml` plus `--allow-base <the base>`.
The first run on a fresh machine takes a few minutes (debootstrap ~3 min, pip ~2 min); later
runs reuse the base image and the engine's build cache.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.fixtures.images import FixtureBuildError
from tests.fixtures.own_image import BaseMissingError, OwnImage, build_own_image
from tests.support.parts import missing_part
from tests.support.paths import ROOT
from tests.support.registry import RegistryProcess
from webhook import __version__

pytestmark = pytest.mark.integration

IMAGE_TAG = f"{__version__}-test"
RUN_AS = 65532


@pytest.fixture(scope="module")
def own_image(docker_client: Any, registry: RegistryProcess) -> OwnImage:
    """Build the root Dockerfile on the local base; push base and image; return references."""
    try:
        image = build_own_image(docker_client, registry.host, IMAGE_TAG)
    except BaseMissingError as e:
        missing_part(str(e))
    except FixtureBuildError as e:
        pytest.fail(str(e), pytrace=False)
    return image


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


def test_own_image_passes_every_rule_of_the_default_policy(own_image: OwnImage) -> None:
    code, data, stderr = _check(
        own_image.pinned,
        "--policy",
        str(ROOT / "policies" / "default.yaml"),
        "--allow-base",
        own_image.base,
    )
    (result,) = data["results"]
    assert result["violations"] == [], stderr
    assert result["verdict"] == "pass"
    assert code == 0
    facts = result["facts"]
    assert facts["user"] == f"{RUN_AS}:{RUN_AS}"
    assert facts["entrypoint"] == ["/opt/imagegate/bin/imagegate"]
    assert facts["base"]["name"] == own_image.base
    assert facts["base"]["digest"] == own_image.base_digest
    assert facts["base"]["evidence"] in {"annotation", "label"}
    assert facts["compressedSize"] < 200_000_000


def test_own_image_fails_allowed_base_without_the_local_base_approved(
    own_image: OwnImage,
) -> None:
    """Control: the pass above is owed to --allow-base, not to a rule that never fires."""
    code, data, _ = _check(own_image.pinned, "--policy", str(ROOT / "policies" / "default.yaml"))
    (result,) = data["results"]
    assert {v["rule"] for v in result["violations"]} == {"allowed-base"}
    assert code == 1


def test_own_image_prints_its_version(docker_client: Any, own_image: OwnImage) -> None:
    out = docker_client.containers.run(own_image.local, ["version"], remove=True)
    assert out.decode().strip() == __version__


def test_own_image_runs_as_a_numeric_non_root_user(docker_client: Any, own_image: OwnImage) -> None:
    out = docker_client.containers.run(own_image.local, ["-u"], entrypoint="id", remove=True)
    uid = int(out.decode().strip())
    assert uid == RUN_AS
    assert uid != 0


@pytest.mark.parametrize(
    "code",
    [
        "import getpass; print(getpass.getuser())",
        "import os, pwd; print(pwd.getpwuid(os.getuid()).pw_name)",
    ],
    ids=["getpass", "pwd"],
)
def test_own_image_knows_its_user_by_name(
    docker_client: Any, own_image: OwnImage, code: str
) -> None:
    """kopf's peering asks getpass.getuser(): uid 65532 needs a passwd entry (issue 10)."""
    out = docker_client.containers.run(
        own_image.local, ["-c", code], entrypoint="/opt/imagegate/bin/python", remove=True
    )
    assert out.decode().strip() == "nonroot"


def test_own_image_stops_at_once_on_sigterm_as_pid_1(
    docker_client: Any, own_image: OwnImage
) -> None:
    """The kernel drops signals that PID 1 has no handler for, so without one a SIGTERM would
    wait for the kubelet's SIGKILL (issue 10: Pods stuck Terminating for 30 s). Here the
    container waits on a registry that never answers when it is stopped."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        port = silent.getsockname()[1]
        container = docker_client.containers.run(
            own_image.local, ["check", f"127.0.0.1:{port}/never/answers:1"],
            network_mode="host", detach=True,
        )  # fmt: skip
        try:
            time.sleep(3)  # well past start-up: waiting for the registry's answer
            container.reload()
            assert container.status == "running", container.logs().decode()
            started = time.monotonic()
            container.stop(timeout=20)
            assert time.monotonic() - started < 5, "SIGTERM was ignored until SIGKILL"
            assert container.wait(timeout=10)["StatusCode"] == 128 + signal.SIGTERM
        finally:
            container.remove(force=True)


def test_own_image_carries_oci_labels(docker_client: Any, own_image: OwnImage) -> None:
    labels = docker_client.images.get(own_image.local).labels
    assert labels["org.opencontainers.image.base.name"] == own_image.base
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.title"] == "imagegate"
