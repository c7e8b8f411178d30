"""Shared test harness: real Docker engine, real Distribution registries, fixture images.

The harnesses and helpers themselves live in ``tests/support`` (importable because the
repository root is on pytest's ``pythonpath``). Session fixtures (request them by name from any
test):

* ``docker_client`` — ``docker.DockerClient`` from the environment, pinged.
* ``registry`` — a plain registry (``tests.support.registry.RegistryProcess``: ``.host``,
  ``.url``, ``.log_path``, ``.log_offset()``, ``.count_requests(...)``).
* ``auth_registry`` — a registry asking for Basic credentials ``AUTH_USER``/``AUTH_PASSWORD``
  (``alice``/``wonderland``); ``auth_registry.credentials`` holds them.
* ``private_image`` — ``"<auth_registry.host>/private/good:1"``, the ``good`` fixture pushed
  there (the engine is logged in to ``auth_registry``).
* ``fixture_images`` — ``{name: "<registry.host>/fixtures/<name>:1"}`` for ``base`` and every
  name in ``tests.fixtures.images.DERIVED``, built by the engine and pushed to ``registry``.
* ``multiarch_ref`` — ``"<registry.host>/fixtures/multi:multi"``, an OCI image index of
  ``good`` (amd64) and an arm64/v8 twin.
* ``bad_multiarch_ref`` — ``"<registry.host>/fixtures/multi:bad-arm64"``, an OCI image index
  whose first entry is ``good`` (amd64) and whose second (arm64/v8) runs as root with
  ``sh -c 'httpd … & sleep infinity'`` (``shell-chain`` without its USER), then an
  attestation entry (``unknown/unknown``).
* ``helm`` — the path of the pinned ``helm`` binary (``tests.support.tools``).

A missing part (engine, registry binary, htpasswd, static busybox, helm) skips the test with the
reason locally, and fails it under ``CI=true`` (``tests.support.parts.missing_part``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.images import (
    FixtureBuildError,
    IndexEntry,
    make_index,
    make_multiarch_index,
    push_copy,
)
from tests.support.parts import missing_part, push_fixtures
from tests.support.registry import (
    RegistryError,
    RegistryNotInstalledError,
    RegistryProcess,
    start_registry,
)
from tests.support.summary import write_sections
from tests.support.tools import require_helm

AUTH_USER = "alice"
AUTH_PASSWORD = "wonderland"
MULTIARCH_REPO = "fixtures/multi"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    write_sections(terminalreporter)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """The real Docker engine (``docker.from_env()``), pinged once for the session."""
    try:
        import docker
        import docker.errors
    except ImportError as e:  # pragma: no cover - docker is a project dependency
        missing_part(f"the docker SDK is not installed: {e}")
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except docker.errors.DockerException as e:
        missing_part(f"no Docker engine answers ({e}); run hack/start-dockerd.sh")
    try:
        yield client
    finally:
        client.close()


def _start(tmp_path_factory: pytest.TempPathFactory, name: str, **kwargs: Any) -> RegistryProcess:
    state = tmp_path_factory.mktemp(name)
    try:
        return start_registry(state, **kwargs)
    except RegistryNotInstalledError as e:
        missing_part(str(e))
    except RegistryError as e:
        pytest.fail(f"could not start the {name} registry: {e}", pytrace=False)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """A real Distribution registry on 127.0.0.1 (free port), no auth, access log on."""
    with _start(tmp_path_factory, "registry") as reg:
        yield reg


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """A real registry that asks for Basic credentials alice/wonderland (bcrypt htpasswd)."""
    with _start(tmp_path_factory, "auth-registry", htpasswd=(AUTH_USER, AUTH_PASSWORD)) as reg:
        yield reg


@pytest.fixture(scope="session")
def private_image(
    docker_client: Any, auth_registry: RegistryProcess, fixture_images: dict[str, str]
) -> str:
    """The ``good`` fixture (built for ``fixture_images``) in ``auth_registry``
    (``private/good:1``), pushed with its credentials; the engine stays logged in there."""
    user, password = auth_registry.credentials or ("", "")
    docker_client.login(username=user, password=password, registry=auth_registry.host, reauth=True)
    repo = f"{auth_registry.host}/private/good"
    push_copy(docker_client, "good", repo, "1")
    return f"{repo}:1"


@pytest.fixture(scope="session")
def fixture_images(docker_client: Any, registry: RegistryProcess) -> dict[str, str]:
    """Every fixture image built by the engine and pushed to ``registry``: name → ref:tag."""
    return push_fixtures(docker_client, registry.host, registry.log_tail)


@pytest.fixture(scope="session")
def multiarch_ref(registry: RegistryProcess, fixture_images: dict[str, str]) -> str:
    """An OCI image index (amd64 = the ``good`` fixture, plus arm64/v8) tagged ``multi``."""
    try:
        return make_multiarch_index(registry.url, MULTIARCH_REPO, fixture_images["good"])
    except FixtureBuildError as e:
        pytest.fail(f"multi-arch index: {e}")


@pytest.fixture(scope="session")
def bad_multiarch_ref(registry: RegistryProcess, fixture_images: dict[str, str]) -> str:
    """An OCI image index: compliant amd64, root shell-chain arm64/v8, an attestation."""
    entries = [
        IndexEntry(fixture_images["good"], {"os": "linux", "architecture": "amd64"}),
        IndexEntry(
            fixture_images["shell-chain"],
            {"os": "linux", "architecture": "arm64", "variant": "v8"},
            {"User": ""},
        ),
        IndexEntry(fixture_images["good"], {"os": "unknown", "architecture": "unknown"}),
    ]
    try:
        return make_index(registry.url, MULTIARCH_REPO, entries, tag="bad-arm64")
    except FixtureBuildError as e:
        pytest.fail(f"multi-arch index with a bad arm64 image: {e}")


@pytest.fixture(scope="session")
def helm() -> str:
    """The pinned ``helm`` binary (``$IMAGEGATE_TOOLS_BIN``, else ``PATH``)."""
    return require_helm()
