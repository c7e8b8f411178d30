"""Real parts a test needs (engine, registry binary, helm, API server binaries ...).

A missing one skips the test with the reason locally, and fails it under ``CI=true``
(DESIGN.md §5: never pass silently).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NoReturn

import pytest

from tests.fixtures.images import FixtureBuildError, build_fixtures


def in_ci() -> bool:
    """True when running under CI (``CI=true``, as CI systems set it)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing_part(reason: str) -> NoReturn:
    """A needed real part is missing: fail under CI, skip (with the reason) locally."""
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


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
