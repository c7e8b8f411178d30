"""Shared test harness: real Docker engine, real Distribution registries, fixture images.

Session fixtures (request them by name from any test):

* ``docker_client`` — ``docker.DockerClient`` from the environment, pinged.
* ``registry`` — a plain registry (``hack.registry.RegistryProcess``: ``.host``, ``.url``,
  ``.log_path``, ``.log_offset()``, ``.count_requests(...)``).
* ``auth_registry`` — a registry asking for Basic credentials ``AUTH_USER``/``AUTH_PASSWORD``
  (``alice``/``wonderland``); ``auth_registry.credentials`` holds them.
* ``fixture_images`` — ``{name: "<registry.host>/fixtures/<name>:1"}`` for ``base`` and every
  name in ``tests.fixtures.images.DERIVED``, built by the engine and pushed to ``registry``.
* ``multiarch_ref`` — ``"<registry.host>/fixtures/multi:multi"``, an OCI image index of
  ``good`` (amd64) and an arm64/v8 twin.

A missing part (engine, registry binary, htpasswd, static busybox) skips the test with the
reason locally, and fails it under ``CI=true`` (DESIGN.md §5: never pass silently).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # makes `hack.registry` and `tests.fixtures.images` importable
    sys.path.insert(0, str(ROOT))

from hack.registry import (  # noqa: E402
    RegistryError,
    RegistryNotInstalledError,
    RegistryProcess,
    start_registry,
)
from tests.fixtures.images import (  # noqa: E402
    FixtureBuildError,
    build_fixtures,
    make_multiarch_index,
)

AUTH_USER = "alice"
AUTH_PASSWORD = "wonderland"
MULTIARCH_REPO = "fixtures/multi"


def in_ci() -> bool:
    """True when running under CI (``CI=true``, as CI systems set it)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing_part(reason: str) -> NoReturn:
    """A needed real part is missing: fail under CI, skip (with the reason) locally."""
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


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
    reg = _start(tmp_path_factory, "registry")
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """A real registry that asks for Basic credentials alice/wonderland (bcrypt htpasswd)."""
    reg = _start(tmp_path_factory, "auth-registry", htpasswd=(AUTH_USER, AUTH_PASSWORD))
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def fixture_images(docker_client: Any, registry: RegistryProcess) -> dict[str, str]:
    """Every fixture image built by the engine and pushed to ``registry``: name → ref:tag."""
    return push_fixtures(docker_client, registry.host, lambda: registry.log_tail())


def push_fixtures(
    docker_client: Any, host: str, log_tail: Callable[[], str] | None = None
) -> dict[str, str]:
    """``build_fixtures`` for a test: a missing static busybox is a missing part, any other
    failure fails the test (with the registry's log, when there is one)."""
    try:
        return build_fixtures(docker_client, host)
    except FixtureBuildError as e:
        if "busybox" in str(e) and "install-deps" in str(e):
            missing_part(str(e))
        tail = f"\nregistry log tail:\n{log_tail()}" if log_tail else ""
        pytest.fail(f"fixture images: {e}{tail}", pytrace=False)


@pytest.fixture(scope="session")
def multiarch_ref(registry: RegistryProcess, fixture_images: dict[str, str]) -> str:
    """An OCI image index (amd64 = the ``good`` fixture, plus arm64/v8) tagged ``multi``."""
    try:
        return make_multiarch_index(registry.url, MULTIARCH_REPO, fixture_images["good"])
    except FixtureBuildError as e:
        pytest.fail(f"multi-arch index: {e}")
