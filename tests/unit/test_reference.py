"""Image references parse and normalise exactly as Docker's distribution/reference does."""

from __future__ import annotations

import pytest

from webhook.errors import InvalidReference
from webhook.registry.reference import Reference, normalize_host

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        pytest.param("nginx", "docker.io", "library/nginx", "latest", None, id="official-image"),
        pytest.param("library/nginx", "docker.io", "library/nginx", "latest", None, id="library"),
        pytest.param("user/app", "docker.io", "user/app", "latest", None, id="hub-user-repo"),
        pytest.param(
            "docker.io/x", "docker.io", "library/x", "latest", None, id="docker-io-prefix"
        ),
        pytest.param(
            "index.docker.io/nginx:1.27",
            "docker.io",
            "library/nginx",
            "1.27",
            None,
            id="index-alias",
        ),
        pytest.param(
            "registry-1.docker.io/x/y:2", "docker.io", "x/y", "2", None, id="registry-1-alias"
        ),
        pytest.param(
            "localhost:5001/a/b:1", "localhost:5001", "a/b", "1", None, id="localhost-port-nested"
        ),
        pytest.param(
            "myhost:5000/app", "myhost:5000", "app", "latest", None, id="host-port-without-tag"
        ),
        pytest.param("localhost/app", "localhost", "app", "latest", None, id="localhost-no-port"),
        pytest.param(
            "nginx:1.27@" + D, "docker.io", "library/nginx", "1.27", D, id="tag-and-digest"
        ),
        pytest.param("nginx@" + D, "docker.io", "library/nginx", None, D, id="digest-only"),
        pytest.param("[::1]:5000/x", "[::1]:5000", "x", "latest", None, id="ipv6-loopback"),
        pytest.param("ghcr.io/org/x", "ghcr.io", "org/x", "latest", None, id="other-registry"),
        pytest.param("a/b/c/d", "docker.io", "a/b/c/d", "latest", None, id="deep-hub-path"),
    ],
)
def test_parse_normalises_like_docker(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("Nginx", "must be lowercase", id="uppercase-repo"),
        pytest.param("user/App", "must be lowercase", id="uppercase-nested-repo"),
        pytest.param("ghcr.io/Org/x", "must be lowercase", id="uppercase-org-on-registry"),
        pytest.param("nginx:-bad", "bad tag", id="tag-starting-with-dash"),
        pytest.param("nginx:", "bad tag", id="empty-tag"),
        pytest.param("nginx@sha256:abc", "bad digest", id="short-digest"),
        pytest.param("nginx@sha256:" + "A" * 64, "lowercase hex", id="uppercase-digest"),
        pytest.param("https://ghcr.io/x", "URL scheme", id="url-scheme"),
        pytest.param("", "empty", id="empty"),
    ],
)
def test_invalid_references_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message):
        Reference.parse(text)


@pytest.mark.parametrize(
    ("text", "full", "familiar", "name"),
    [
        pytest.param(
            "nginx",
            "docker.io/library/nginx:latest",
            "nginx:latest",
            "docker.io/library/nginx",
            id="official",
        ),
        pytest.param(
            "user/app:2", "docker.io/user/app:2", "user/app:2", "docker.io/user/app", id="hub-user"
        ),
        pytest.param(
            "localhost:5001/app:1.2",
            "localhost:5001/app:1.2",
            "localhost:5001/app:1.2",
            "localhost:5001/app",
            id="local-registry",
        ),
        pytest.param(
            "nginx:1@" + D,
            f"docker.io/library/nginx:1@{D}",
            f"nginx:1@{D}",
            "docker.io/library/nginx",
            id="tag-and-digest",
        ),
    ],
)
def test_str_familiar_and_name(text: str, full: str, familiar: str, name: str) -> None:
    ref = Reference.parse(text)
    assert str(ref) == full
    assert ref.familiar() == familiar
    assert ref.name == name
    assert Reference.parse(str(ref)) == ref


@pytest.mark.parametrize(
    ("text", "lookup", "api_host", "pinned"),
    [
        pytest.param("nginx", "latest", "registry-1.docker.io", False, id="hub-tag"),
        pytest.param("nginx:1@" + D, D, "registry-1.docker.io", True, id="digest-wins"),
        pytest.param("localhost:5001/app:3", "3", "localhost:5001", False, id="local"),
    ],
)
def test_what_is_fetched_and_from_where(
    text: str, lookup: str, api_host: str, pinned: bool
) -> None:
    ref = Reference.parse(text)
    assert (ref.lookup, ref.api_host, ref.pinned) == (lookup, api_host, pinned)


def test_with_digest_keeps_the_tag() -> None:
    ref = Reference.parse("localhost:5001/app:1").with_digest(D)
    assert str(ref) == f"localhost:5001/app:1@{D}"
    assert ref.lookup == D


@pytest.mark.parametrize(
    ("key", "host"),
    [
        pytest.param("https://index.docker.io/v1/", "docker.io", id="legacy-hub-url"),
        pytest.param("index.docker.io", "docker.io", id="hub-alias"),
        pytest.param("registry-1.docker.io", "docker.io", id="hub-api-host"),
        pytest.param("localhost:5001", "localhost:5001", id="host-port"),
        pytest.param("http://host:5000/v2/", "host:5000", id="http-url-with-path"),
        pytest.param(" ghcr.io ", "ghcr.io", id="whitespace"),
    ],
)
def test_normalize_host_matches_docker_config_keys(key: str, host: str) -> None:
    assert normalize_host(key) == host


def test_a_reference_longer_than_any_valid_one_is_refused_briefly() -> None:
    """Tenants must not fill the parse memo (or messages) with megabytes."""
    huge = "registry.example/app@sha256:" + "a" * 65_536
    with pytest.raises(InvalidReference, match="over the 1024") as info:
        Reference.parse(huge)
    assert len(str(info.value)) < 200
