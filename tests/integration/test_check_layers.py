"""`imagegate check --layers` end to end (issue 14): the CLI as a user runs it, on images built
by the real engine and read from the real registry.

The wasted bytes are compared with the Dive reference computed from `docker save` in
tests/integration/test_layer_dive_reference.py; named users are resolved through the image's
own /etc/passwd; `deepInspection: cachedOnly` uses what an earlier `--layers` run indexed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_layer_dive_reference import (
    ROOT_ALIAS,
    WASTEFUL,
    build_and_push,
    dive_reference,
    docker_save,
)
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.integration

# The textbook Dockerfile: a builder stage, exec-form entrypoint, `USER nobody`.
TEXTBOOK = """\
FROM {base} AS build
RUN mkdir -p /out && echo 'echo hello' > /out/app && chmod 755 /out/app
FROM {base}
COPY --from=build /out/app /app
USER nobody
ENTRYPOINT ["/bin/sh", "/app"]
"""

GHOST = """\
FROM {base}
USER ghost
ENTRYPOINT ["/bin/true"]
"""


@pytest.fixture(scope="module")
def images(
    docker_client: Any, registry: RegistryProcess, fixture_images: dict[str, str]
) -> dict[str, str]:
    base = fixture_images["base"]
    cases = {"wasteful": WASTEFUL, "textbook": TEXTBOOK, "toor": ROOT_ALIAS, "ghost": GHOST}
    return {
        name: build_and_push(docker_client, registry, base, f"cli-{name}", dockerfile)
        for name, dockerfile in cases.items()
    }


def policy(directory: Path, base: str, *, numeric: bool, deep: str = "cachedOnly") -> Path:
    path = directory / f"policy-{numeric}-{deep}.yaml"
    path.write_text(
        "apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: layers}\n"
        f"spec:\n  deepInspection: {deep}\n  rules:\n"
        f"    allowedBases: {{references: ['{base}']}}\n"
        f"    nonRootUser: {{requireNumericUser: {str(numeric).lower()}}}\n"
        "    singleEntrypoint: {enabled: false}\n"
        "    immutableReference: {enabled: false}\n"
    )
    return path


def check(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IMAGEGATE_LAYERS_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "webhook", "check", *args],
        capture_output=True, text=True, timeout=180, env=env, check=False,
    )  # fmt: skip


def result(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        (only,) = json.loads(proc.stdout)["results"]
    except (json.JSONDecodeError, KeyError, ValueError):
        pytest.fail(f"exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    found: dict[str, Any] = only
    return found


def failed(r: dict[str, Any]) -> dict[str, str]:
    return {v["rule"]: v["message"] for v in r["violations"]}


def test_layers_report_the_exact_waste_the_caches_and_the_resolved_user(
    images: dict[str, str],
    docker_client: Any,
    fixture_images: dict[str, str],
    tmp_path: Path,
) -> None:
    ref = images["wasteful"]
    rules = policy(tmp_path, fixture_images["base"], numeric=False)
    proc = check(tmp_path / "cache", ref, "--layers", "--policy", str(rules), "--output", "json")
    r = result(proc)
    analysis = r["facts"]["layerAnalysis"]
    reference = dive_reference(docker_save(docker_client, ref, tmp_path))
    assert analysis["wastedBytes"] == reference.wasted_bytes
    assert analysis["efficiency"] == pytest.approx(reference.efficiency, abs=1e-12)
    assert len(analysis["layers"]) == len(reference.diff_ids)
    assert {c["kind"] for c in analysis["cacheFiles"]} >= {"apt-lists"}
    assert "/app/helper" in analysis["setuid"]
    assert r["facts"]["resolvedUser"] == {"name": "nobody", "uid": 65534, "gid": 65534}
    message = failed(r)["layer-efficiency"]
    assert "/var/lib/apt/lists" in message, message
    assert "same RUN" in message, message
    assert "non-root-user" not in failed(r)
    assert proc.returncode == 1

    table = check(tmp_path / "cache", ref, "--layers", "--policy", str(rules))
    assert "efficiency" in table.stdout, table.stdout
    assert "/var/lib/apt/lists" in table.stdout, table.stdout
    assert "USER nobody is 65534:65534" in table.stdout, table.stdout


def test_the_textbook_image_passes_non_root_unless_numeric_users_are_required(
    images: dict[str, str], fixture_images: dict[str, str], tmp_path: Path
) -> None:
    ref, base, cache = images["textbook"], fixture_images["base"], tmp_path / "cache"
    named_ok = policy(tmp_path, base, numeric=False)
    r = result(check(cache, ref, "--layers", "--policy", str(named_ok), "--output", "json"))
    assert "non-root-user" not in failed(r), r
    assert r["facts"]["resolvedUser"]["uid"] == 65534

    strict = policy(tmp_path, base, numeric=True)
    r = result(check(cache, ref, "--layers", "--policy", str(strict), "--output", "json"))
    message = failed(r)["non-root-user"]
    assert "cannot verify user is non-root" in message, message
    assert "USER 65534:65534" in message, message


def test_a_name_for_uid_0_fails_and_an_unknown_name_is_an_error(
    images: dict[str, str], fixture_images: dict[str, str], tmp_path: Path
) -> None:
    rules = policy(tmp_path, fixture_images["base"], numeric=False)
    cache = tmp_path / "cache"
    r = result(check(cache, images["toor"], "--layers", "--policy", str(rules), "--output", "json"))
    assert "uid 0" in failed(r)["non-root-user"]

    proc = check(cache, images["ghost"], "--layers", "--policy", str(rules), "--output", "json")
    r = result(proc)
    assert r["verdict"] == "error"
    assert proc.returncode == 2
    assert "USER ghost cannot be resolved" in r["error"], r["error"]


def test_cached_only_uses_layers_indexed_earlier_and_reads_none_itself(
    images: dict[str, str],
    fixture_images: dict[str, str],
    registry: RegistryProcess,
    tmp_path: Path,
) -> None:
    ref, cache = images["textbook"], tmp_path / "cache"
    rules = policy(tmp_path, fixture_images["base"], numeric=False)
    cold = result(check(cache, ref, "--policy", str(rules), "--output", "json"))
    assert "layerAnalysis" not in cold["facts"]  # cachedOnly, nothing indexed yet
    assert "layer-efficiency" not in failed(cold)

    result(check(cache, ref, "--layers", "--policy", str(rules), "--output", "json"))
    before = len(registry.log_tail(1_000_000).splitlines())
    warm = result(check(cache, ref, "--policy", str(rules), "--output", "json"))
    layers = [layer["digest"] for layer in warm["facts"]["layerAnalysis"]["layers"]]
    assert layers, warm["facts"]
    since = "\n".join(registry.log_tail(1_000_000).splitlines()[before:])
    assert "/manifests/" in since, "the registry log shows the warm run"
    assert not [d for d in layers if f"/blobs/{d}" in since], "layers came from the cache"

    never = policy(tmp_path, fixture_images["base"], numeric=False, deep="never")
    r = result(check(cache, ref, "--policy", str(never), "--output", "json"))
    assert "layerAnalysis" not in r["facts"]
