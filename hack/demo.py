"""`make demo`: build sample images, push them to a local registry, check them.

Starts (or reuses) a real registry on localhost:5001, builds the fixture images (good and bad)
with the Docker engine, writes a demo policy that approves the locally made base, and runs
`imagegate check` on them, first as a table, then one image as JSON.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402

from hack.registry import attach, start_registry  # noqa: E402
from tests.fixtures.images import build_fixtures  # noqa: E402

STATE = Path(os.environ.get("IMAGEGATE_STATE", "/tmp/imagegate"))
PORT = int(os.environ.get("IMAGEGATE_DEMO_PORT", "5001"))
SHOWN = (
    "good",
    "unlabelled-derived",
    "tini",
    "root-script",
    "named-user",
    "shell-chain",
    "supervisor",
    "big",
)


def say(text: str) -> None:
    print(f"\n\033[1;34m==> {text}\033[0m", flush=True)


def imagegate(*args: str) -> int:
    print(f"$ imagegate {shlex.join(args)}", flush=True)
    return subprocess.run([str(ROOT / ".venv/bin/imagegate"), *args], check=False).returncode


def main() -> int:
    say(f"registry on 127.0.0.1:{PORT}")
    registry = attach(STATE / "registry")
    if registry is None:
        registry = start_registry(STATE / "registry", PORT)
        registry.detach()  # leave it running for the user to explore
    print(
        f"registry {registry.url} (state {registry.state_dir}; stop: python hack/registry.py stop)"
    )

    say(
        "building sample images with the Docker engine (FROM scratch + static busybox), "
        "pushing them"
    )
    refs = build_fixtures(docker.from_env(timeout=300), registry.host)
    for name, ref in refs.items():
        print(f"  {name:20} {ref}")

    policy = STATE / "demo-policy.yaml"
    base = refs["base"]
    policy.write_text(
        "apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: demo}\n"
        "spec:\n  rules:\n"
        f"    allowedBases: {{references: ['{base}']}}\n"
        "    sizeBudget: {maxCompressedSize: 2MB}\n"
    )
    say(f"policy {policy}: the default policy, approving {base}, with a 2 MB budget")
    print(policy.read_text())

    say("checking them (exit code 1 means: at least one image violates the policy)")
    code = imagegate("check", *(refs[n] for n in SHOWN), "--policy", str(policy))
    print(f"exit code {code}")

    say("one image as JSON, the contract scripts rely on")
    imagegate("check", refs["root-script"], "--policy", str(policy), "--output", "json")

    say("a local image, straight from the Docker engine, before it is pushed")
    imagegate("check", "docker-daemon:imagegate-fixture/good:1", "--policy", str(policy))
    return 0 if code in (0, 1) else code


if __name__ == "__main__":
    sys.exit(main())
