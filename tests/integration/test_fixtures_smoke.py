"""The test harness itself works: real registry, real engine, real fixture images."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.fixtures.images import DERIVED, MANIFEST_ACCEPT, OCI_INDEX
from tests.support.registry import RegistryProcess, await_requests, count_requests

pytestmark = pytest.mark.integration


def _repo_and_tag(ref: str) -> tuple[str, str]:
    name, _, tag = ref.rpartition(":")
    return name.split("/", 1)[1], tag


def test_registry_serves_the_v2_api(registry: RegistryProcess) -> None:
    resp = httpx.get(f"{registry.url}/v2/")

    assert resp.status_code == 200
    assert resp.headers["Docker-Distribution-Api-Version"] == "registry/2.0"


def test_every_fixture_is_built_and_pushed(fixture_images: dict[str, str]) -> None:
    assert set(fixture_images) == {"base", *DERIVED}


@pytest.mark.parametrize("name", ["base", *DERIVED])
def test_fixture_manifest_and_config_are_fetchable(
    registry: RegistryProcess, fixture_images: dict[str, str], name: str
) -> None:
    repo, tag = _repo_and_tag(fixture_images[name])
    with httpx.Client(base_url=registry.url) as http:
        resp = http.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT})
        assert resp.status_code == 200, resp.text
        manifest = resp.json()
        config = http.get(f"/v2/{repo}/blobs/{manifest['config']['digest']}").json()

    spec = DERIVED.get(name)
    assert config["architecture"] == "amd64"
    assert config["os"] == "linux"
    if spec is not None:
        assert config["config"].get("User", "") == spec.user
        assert tuple(config["config"].get("Entrypoint") or ()) == (spec.entrypoint or ())
        assert tuple(config["config"].get("Cmd") or ()) == (spec.cmd or ())
        labels = config["config"].get("Labels") or {}
        assert ("org.opencontainers.image.base.name" in labels) is spec.base_label


def test_derived_fixtures_start_with_the_base_layers(
    registry: RegistryProcess, fixture_images: dict[str, str]
) -> None:
    def diff_ids(ref: str) -> list[str]:
        repo, tag = _repo_and_tag(ref)
        with httpx.Client(base_url=registry.url) as http:
            manifest = http.get(
                f"/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT}
            ).json()
            config = http.get(f"/v2/{repo}/blobs/{manifest['config']['digest']}").json()
        ids: list[str] = config["rootfs"]["diff_ids"]
        return ids

    base = diff_ids(fixture_images["base"])
    for name in DERIVED:
        derived = diff_ids(fixture_images[name])
        assert derived[: len(base)] == base, name
        assert len(derived) > len(base), name


def test_good_fixture_names_its_base(
    registry: RegistryProcess, fixture_images: dict[str, str]
) -> None:
    repo, tag = _repo_and_tag(fixture_images["good"])
    with httpx.Client(base_url=registry.url) as http:
        manifest = http.get(
            f"/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT}
        ).json()
        labels = http.get(f"/v2/{repo}/blobs/{manifest['config']['digest']}").json()["config"][
            "Labels"
        ]
        base_repo, base_tag = _repo_and_tag(fixture_images["base"])
        base = http.head(
            f"/v2/{base_repo}/manifests/{base_tag}", headers={"Accept": MANIFEST_ACCEPT}
        )

    assert labels["org.opencontainers.image.base.name"] == fixture_images["base"]
    assert labels["org.opencontainers.image.base.digest"] == base.headers["Docker-Content-Digest"]


def test_big_fixture_breaks_a_small_budget(
    registry: RegistryProcess, fixture_images: dict[str, str]
) -> None:
    repo, tag = _repo_and_tag(fixture_images["big"])
    manifest = httpx.get(
        f"{registry.url}/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT}
    ).json()

    assert sum(layer["size"] for layer in manifest["layers"]) > 3 * 1024 * 1024


def test_multiarch_index_lists_amd64_and_arm64_v8(
    registry: RegistryProcess, multiarch_ref: str
) -> None:
    repo, tag = _repo_and_tag(multiarch_ref)
    with httpx.Client(base_url=registry.url) as http:
        resp = http.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT})
        assert resp.status_code == 200, resp.text
        index = resp.json()
        platforms: dict[str, Any] = {}
        for entry in index["manifests"]:
            child = http.get(
                f"/v2/{repo}/manifests/{entry['digest']}", headers={"Accept": entry["mediaType"]}
            )
            assert child.status_code == 200, child.text
            config = http.get(f"/v2/{repo}/blobs/{child.json()['config']['digest']}").json()
            platforms[json.dumps(entry["platform"], sort_keys=True)] = config

    assert resp.headers["Content-Type"] == OCI_INDEX
    assert [
        (e["platform"]["architecture"], e["platform"].get("variant")) for e in index["manifests"]
    ] == [
        ("amd64", None),
        ("arm64", "v8"),
    ]
    assert sorted((c["architecture"], c.get("variant")) for c in platforms.values()) == [
        ("amd64", None),
        ("arm64", "v8"),
    ]


def test_good_fixture_runs_as_uid_65532(docker_client: Any, fixture_images: dict[str, str]) -> None:
    output: bytes = docker_client.containers.run(
        fixture_images["good"], ["-u"], entrypoint=["/bin/id"], remove=True
    )

    assert output.decode().strip() == "65532"


def test_auth_registry_wants_basic_credentials(auth_registry: RegistryProcess) -> None:
    assert auth_registry.credentials is not None
    anonymous = httpx.get(f"{auth_registry.url}/v2/")
    authenticated = httpx.get(f"{auth_registry.url}/v2/", auth=auth_registry.credentials)
    wrong = httpx.get(f"{auth_registry.url}/v2/", auth=("alice", "looking-glass"))

    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert authenticated.status_code == 200
    assert wrong.status_code == 401


def test_count_requests_counts_what_the_registry_served(registry: RegistryProcess) -> None:
    mark = registry.log_offset()
    with httpx.Client(base_url=registry.url) as http:
        for _ in range(3):
            http.get("/v2/imagegate-count-probe/manifests/v1")
        http.head("/v2/imagegate-count-probe/manifests/v1")
        http.get("/v2/")

    assert await_requests(registry.log_path, "GET", "-count-probe/manifests/", 3, since=mark) == 3
    assert count_requests(registry.log_path, "HEAD", "-count-probe/", since=mark) == 1
    assert count_requests(registry.log_path, "GET", "-count-probe/", status=404, since=mark) == 3
    assert registry.count_requests("GET", "-count-probe/", status=200, since=mark) == 0
    assert registry.count_requests("GET", "/v2/", since=mark) == 4
