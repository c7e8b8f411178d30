"""`imagegate check` end to end: real images built by the engine, in a real registry.

The CLI runs as a subprocess (the installed console script), exactly as a user runs it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.images import DERIVED, MANIFEST_ACCEPT, push_copy, push_unique
from tests.support.registry import RegistryProcess, await_requests
from webhook.policy.checker import Checker
from webhook.policy.model import ImagePolicy
from webhook.registry.client import RegistryClient
from webhook.registry.facts import Platform
from webhook.settings import RegistrySettings

pytestmark = pytest.mark.integration

IMAGEGATE = [sys.executable, "-m", "webhook"]

# fixture → the rule ids it must fail (empty: passes), under the test policy below.
EXPECTED: dict[str, set[str]] = {
    "good": set(),
    "unlabelled-derived": set(),
    "tini": set(),
    "root-script": {"non-root-user"},
    "named-user": {"non-root-user"},
    "zero": {"non-root-user"},
    "shell-chain": {"single-entrypoint"},
    "supervisor": {"single-entrypoint"},
    "no-entrypoint": {"single-entrypoint"},
    "big": {"size-budget"},
}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IMAGEGATE, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def results(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"not JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return {r["image"]: r for r in data["results"]}


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory, fixture_images: dict[str, str]) -> Path:
    """The default policy, approving the locally made base, with a 2 MB budget."""
    path = tmp_path_factory.mktemp("policy") / "local.yaml"
    base = fixture_images["base"]
    path.write_text(
        "apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: local}\n"
        "spec:\n  rules:\n"
        f"    allowedBases: {{references: ['{base}']}}\n"
        "    sizeBudget: {maxCompressedSize: 2MB}\n"
    )
    return path


def test_every_fixture_gets_the_expected_verdict(
    fixture_images: dict[str, str], policy_file: Path
) -> None:
    refs = [fixture_images[name] for name in EXPECTED]
    proc = run("check", *refs, "--policy", str(policy_file), "--output", "json")
    assert proc.returncode == 1, proc.stderr
    by_image = results(proc)
    for name, rules in EXPECTED.items():
        r = by_image[fixture_images[name]]
        failed = {v["rule"] for v in r["violations"]}
        assert failed == rules, f"{name}: {r['violations']}"
        assert r["verdict"] == ("fail" if rules else "pass")
        assert r["digest"].startswith("sha256:")
        assert r["platform"] == "linux/amd64"
        for v in r["violations"]:
            assert v["severity"] in {"low", "medium", "high", "critical"}
            assert v["message"]


def served_manifest(registry: RegistryProcess, ref: str) -> tuple[str, dict[str, Any]]:
    """(digest, manifest) of `host/repo:tag` as the registry itself serves it."""
    repo, tag = ref.split("/", 1)[1].rsplit(":", 1)
    answer = httpx.get(
        f"{registry.url}/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT}
    )
    answer.raise_for_status()
    return answer.headers["Docker-Content-Digest"], answer.json()


def test_facts_match_the_images(
    fixture_images: dict[str, str], policy_file: Path, registry: RegistryProcess
) -> None:
    refs = [fixture_images[n] for n in ("good", "unlabelled-derived", "root-script", "big")]
    by_image = results(run("check", *refs, "--policy", str(policy_file), "--output", "json"))
    base = fixture_images["base"]
    good = by_image[fixture_images["good"]]["facts"]
    assert good["user"] == DERIVED["good"].user
    assert good["entrypoint"] == list(DERIVED["good"].entrypoint or [])
    assert good["base"]["name"].startswith(base)
    assert good["base"]["evidence"] == "label"
    base_digest, _ = served_manifest(registry, base)
    assert good["base"]["digest"] == base_digest  # the label names the base by its digest
    unlabelled = by_image[fixture_images["unlabelled-derived"]]["facts"]
    assert unlabelled["base"] == {
        "name": base,
        "digest": base_digest,  # the approved base as resolved, not the image's own digest
        "evidence": "diff_ids",
        "verified": True,
    }
    root = by_image[fixture_images["root-script"]]["facts"]
    assert root["user"] == ""
    assert root["argv"][0] == "/docker-entrypoint.sh"
    big = by_image[fixture_images["big"]]["facts"]
    big_digest, big_manifest = served_manifest(registry, fixture_images["big"])
    assert by_image[fixture_images["big"]]["digest"] == big_digest
    sizes = [layer["size"] for layer in big_manifest["layers"]]
    assert [layer["size"] for layer in big["layers"]] == sizes
    assert big["compressedSize"] == sum(sizes) > 3 * 1024 * 1024  # the 3 MiB random layer


def test_exit_code_zero_when_all_pass_and_table_output(
    fixture_images: dict[str, str], policy_file: Path
) -> None:
    proc = run(
        "check", fixture_images["good"], fixture_images["tini"], "--policy", str(policy_file)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout
    assert "2 of 2 images pass" in proc.stdout


def test_violations_in_table_say_how_to_fix(
    fixture_images: dict[str, str], policy_file: Path
) -> None:
    proc = run("check", fixture_images["zero"], "--policy", str(policy_file))
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout
    assert "USER 65532:65532" in " ".join(proc.stdout.split())


@pytest.mark.parametrize(
    ("args", "says"),
    [
        pytest.param(["localhost:1/nothing:1"], "localhost:1/nothing:1", id="unreachable-registry"),
        pytest.param(
            ["{registry}/fixtures/good:does-not-exist"], "does-not-exist", id="unknown-tag"
        ),
        pytest.param(["{good}", "--max-size", "huge"], "invalid --max-size 'huge'", id="bad-size"),
        pytest.param(["{good}", "--platform", "linux"], "invalid platform", id="bad-platform"),
        pytest.param(["Not/A:Ref!"], "invalid reference", id="bad-reference"),
        pytest.param(
            ["{good}", "--policy", "/nonexistent.yaml"], "no such file", id="missing-policy"
        ),
    ],
)
def test_errors_exit_2_and_name_the_problem(
    fixture_images: dict[str, str], registry: RegistryProcess, args: list[str], says: str
) -> None:
    args = [a.format(registry=registry.host, good=fixture_images["good"]) for a in args]
    proc = run("check", *args, "--output", "json")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert says in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_immutable_reference_modes(
    fixture_images: dict[str, str], policy_file: Path, tmp_path: Path
) -> None:
    good = fixture_images["good"]
    digest = results(run("check", good, "--policy", str(policy_file), "--output", "json"))[good][
        "digest"
    ]
    strict = tmp_path / "strict.yaml"
    strict.write_text(policy_file.read_text() + "    immutableReference: {mode: requireDigest}\n")
    pinned = f"{good.rsplit(':', 1)[0]}@{digest}"
    by_image = results(run("check", good, pinned, "--policy", str(strict), "--output", "json"))
    [violation] = by_image[good]["violations"]
    assert violation["rule"] == "immutable-reference"
    assert pinned in violation["message"]
    assert by_image[pinned]["verdict"] == "pass"
    assert by_image[pinned]["digest"] == digest


def test_latest_is_refused(
    docker_client: Any, registry: RegistryProcess, policy_file: Path
) -> None:
    repo = f"{registry.host}/fixtures/latest-{uuid.uuid4().hex[:8]}"
    push_copy(docker_client, "good", repo, "latest")
    by_image = results(run("check", repo, "--policy", str(policy_file), "--output", "json"))
    assert {v["rule"] for v in by_image[repo]["violations"]} == {"immutable-reference"}


def test_multiarch_index_platforms(multiarch_ref: str, policy_file: Path) -> None:
    amd = results(
        run(
            "check",
            multiarch_ref,
            "--policy",
            str(policy_file),
            "--platform",
            "linux/amd64",
            "--output",
            "json",
        )
    )[multiarch_ref]
    arm = results(
        run(
            "check",
            multiarch_ref,
            "--policy",
            str(policy_file),
            "--platform",
            "linux/arm64",
            "--output",
            "json",
        )
    )[multiarch_ref]
    assert amd["platform"] == "linux/amd64"
    assert arm["platform"] == "linux/arm64/v8"
    assert amd["digest"] == arm["digest"], "an index is pinned by the index digest"
    missing = run(
        "check",
        multiarch_ref,
        "--policy",
        str(policy_file),
        "--platform",
        "linux/s390x",
        "--output",
        "json",
    )
    assert missing.returncode == 2
    error = results(missing)[multiarch_ref]["error"]
    assert "linux/s390x" in error
    assert "linux/amd64" in error
    assert "linux/arm64" in error


def test_docker_daemon_images_yield_the_same_facts(
    fixture_images: dict[str, str], policy_file: Path
) -> None:
    local = "docker-daemon:imagegate-fixture/good:1"
    by_image = results(
        run(
            "check", local, fixture_images["good"], "--policy", str(policy_file), "--output", "json"
        )
    )
    daemon, pushed = by_image[local], by_image[fixture_images["good"]]
    assert daemon["verdict"] == "pass", daemon
    assert daemon["facts"]["source"] == "docker-daemon"
    for key in ("user", "entrypoint", "cmd", "labels", "base"):
        assert daemon["facts"][key] == pushed["facts"][key], key
    assert [layer["diffId"] for layer in daemon["facts"]["layers"]] == [
        layer["diffId"] for layer in pushed["facts"]["layers"]
    ]


def test_docker_daemon_unknown_image_is_an_error() -> None:
    proc = run("check", "docker-daemon:imagegate-fixture/none:404", "--output", "json")
    assert proc.returncode == 2
    assert "imagegate-fixture/none:404" in proc.stdout


def test_auth_registry_uses_docker_config_credentials(
    auth_registry: RegistryProcess, private_image: str, policy_file: Path, tmp_path: Path
) -> None:
    user, password = auth_registry.credentials or ("", "")
    ref = private_image

    anonymous = tmp_path / "anonymous"
    anonymous.mkdir()
    (anonymous / "config.json").write_text("{}")
    env = {**os.environ, "DOCKER_CONFIG": str(anonymous)}
    refused = run("check", ref, "--policy", str(policy_file), "--output", "json", env=env)
    assert refused.returncode == 2
    assert "credentials" in results(refused)[ref]["error"].lower()

    with_creds = tmp_path / "with-creds"
    with_creds.mkdir()
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    (with_creds / "config.json").write_text(
        json.dumps({"auths": {auth_registry.host: {"auth": token}}})
    )
    env = {**os.environ, "DOCKER_CONFIG": str(with_creds)}
    accepted = run("check", ref, "--policy", str(policy_file), "--output", "json", env=env)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert results(accepted)[ref]["digest"].startswith("sha256:")


def test_concurrent_checks_of_one_uncached_image_fetch_once(
    docker_client: Any, registry: RegistryProcess
) -> None:
    repo_path = f"fixtures/once-{uuid.uuid4().hex[:8]}"
    repo = f"{registry.host}/{repo_path}"
    push_unique(docker_client, "tini", repo, "1")
    since = registry.log_offset()
    policy = ImagePolicy()

    async def fifty() -> list[str]:
        async with RegistryClient(RegistrySettings()) as client:
            checker = Checker(client, concurrency=64)
            got = await asyncio.gather(
                *(
                    checker.check(f"{repo}:1", [policy], Platform.parse("linux/amd64"))
                    for _ in range(50)
                )
            )
        return [r.verdict for r in got]

    verdicts = asyncio.run(fifty())
    assert len(verdicts) == 50
    assert "error" not in verdicts
    manifests = await_requests(
        registry.log_path, "GET", f"/v2/{repo_path}/manifests/", 1, status=200, since=since
    )
    blobs = await_requests(
        registry.log_path, "GET", f"/v2/{repo_path}/blobs/", 1, status=200, since=since
    )
    assert (manifests, blobs) == (1, 1)


def test_an_unreadable_approved_base_is_an_error_not_a_violation(
    fixture_images: dict[str, str], tmp_path: Path
) -> None:
    """Without base evidence, a base that cannot be read might still be the right one."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: p}\n"
        "spec:\n  rules:\n    allowedBases: {references: ['localhost:1/gone/base:1']}\n"
    )
    image = fixture_images["unlabelled-derived"]
    proc = run("check", image, "--policy", str(policy), "--output", "json")
    assert proc.returncode == 2, proc.stdout
    result = results(proc)[image]
    assert result["verdict"] == "error"
    assert "cannot read the approved base images (localhost:1/gone/base:1:" in result["error"]
