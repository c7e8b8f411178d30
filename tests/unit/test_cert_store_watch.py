"""`CertStore.wait_for_change` when the Secret's version is older than the API server's watch
history (410 Gone): the fault a real API server gives only after minutes and an etcd
compaction, so the Kubernetes API is faked here with the semantics the e2e suite checks for
real (tests/e2e/test_cert_rotation.py)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from webhook.k8s.certs import CertStore


class FakeCore:
    """One Secret at `secret_version`; watches from before `oldest` are 410 Gone; a watch from
    a known version sees nothing until its timeout."""

    def __init__(self, secret_version: str | None, oldest: int, collection: int) -> None:
        self.secret_version = secret_version
        self.oldest = oldest
        self.collection = collection
        self.watched: list[str | None] = []
        self.lists = 0

    def list_namespaced_secret(self, namespace: str, **kwargs: Any) -> Any:
        self.lists += 1
        items = [] if self.secret_version is None else [
            SimpleNamespace(metadata=SimpleNamespace(resource_version=self.secret_version))
        ]  # fmt: skip
        return SimpleNamespace(
            items=items, metadata=SimpleNamespace(resource_version=str(self.collection))
        )


class FakeWatch:
    core: FakeCore

    def stream(self, func: Any, namespace: str, **kwargs: Any) -> Any:
        version = kwargs["resource_version"]
        self.core.watched.append(version)
        if version is not None and int(version) < self.core.oldest:
            raise ApiException(status=410, reason="Expired: too old resource version")
        time.sleep(min(kwargs["timeout_seconds"], 0.3))  # the watch times out, no event
        return iter(())

    def stop(self) -> None:
        pass


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> CertStore:
    from kubernetes import watch

    monkeypatch.setattr(watch, "Watch", FakeWatch)
    return CertStore(None, "imagegate-system", "imagegate-webhook-tls")


async def test_an_unchanged_secret_too_old_to_watch_from_is_no_change(store: CertStore) -> None:
    core = FakeWatch.core = FakeCore("100", oldest=5000, collection=7000)
    store._core = core
    started = time.monotonic()
    assert await store.wait_for_change("100", 0.5) is False
    assert time.monotonic() - started >= 0.3  # it waited, instead of answering at once
    assert core.watched[:2] == ["100", "7000"]  # then watched on from the list's version


async def test_a_secret_changed_past_the_watch_history_is_a_change(store: CertStore) -> None:
    core = FakeWatch.core = FakeCore("6000", oldest=5000, collection=7000)
    store._core = core
    started = time.monotonic()
    assert await store.wait_for_change("100", 5.0) is True
    assert time.monotonic() - started < 1.0
    FakeWatch.core = core = FakeCore(None, oldest=5000, collection=7000)  # deleted meanwhile
    store._core = core
    assert await store.wait_for_change("100", 5.0) is True
