"""hack/kind/shim/docker: what kind's `docker` calls become on a host where --privileged fails.

A stand-in `docker` later in PATH prints the arguments it gets, so the test sees exactly what
the real engine would be asked (the shim must find the next `docker`, not itself).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIM = ROOT / "hack" / "kind" / "shim"
CAPABILITIES = [
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--security-opt", "systempaths=unconfined",
    "--device-cgroup-rule", "a *:* rwm", "--device", "/dev/kmsg", "--device", "/dev/fuse",
]  # fmt: skip


def through_shim(tmp_path: Path, *args: str) -> list[str]:
    real = tmp_path / "bin"
    real.mkdir(exist_ok=True)
    docker = real / "docker"
    docker.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    docker.chmod(0o755)
    env = {**os.environ, "PATH": f"{SHIM}:{real}:/usr/bin:/bin"}
    done = subprocess.run(
        [str(SHIM / "docker"), *args], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.splitlines()


@pytest.mark.parametrize("verb", ["run", "create"])
def test_privileged_becomes_every_capability_but_sys_resource(tmp_path: Path, verb: str) -> None:
    args = [verb, "--name", "n", "--privileged", "--tmpfs", "/run", "image"]
    assert through_shim(tmp_path, *args) == [
        verb, "--name", "n", *CAPABILITIES, "--tmpfs", "/run", "image",
    ]  # fmt: skip


def test_exec_drops_privileged(tmp_path: Path) -> None:
    assert through_shim(tmp_path, "exec", "--privileged", "node", "cat", "/kind/version") == [
        "exec", "node", "cat", "/kind/version",
    ]  # fmt: skip


def test_other_commands_pass_unchanged(tmp_path: Path) -> None:
    args = ["inspect", "-f", "{{.State.Running}}", "--privileged-looking-name"]
    assert through_shim(tmp_path, *args) == args
