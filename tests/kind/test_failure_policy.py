"""With no webhook Pod serving, the webhook configurations' failurePolicy decides: Fail refuses
every Pod, Ignore admits it unchecked. Both are set with `helm upgrade`, as users do."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kind.conftest import Release
from tests.kind.harness import SYSTEM, Kind
from tests.support.manifests import pod


def scale_webhook(kind: Kind, release: Release, replicas: int) -> None:
    kind.kubectl("scale", f"deployment/{release.deployment('webhook')}", "-n", SYSTEM,
                 f"--replicas={replicas}")  # fmt: skip
    if replicas:
        release.wait_ready("webhook")
    else:
        kind.wait_gone(SYSTEM, release.selector("webhook"))


@pytest.fixture
def webhook_down(kind: Kind, release: Release) -> Iterator[None]:
    """No webhook Pod (the Deployment scaled to 0); the release and its replicas restored after."""
    replicas = release.replicas("webhook")
    scale_webhook(kind, release, 0)
    try:
        yield
    finally:
        release.upgrade()  # the release's failurePolicy (Fail)
        scale_webhook(kind, release, replicas)


def test_with_no_webhook_serving_fail_refuses_and_ignore_admits(
    kind: Kind, release: Release, webhook_down: None, namespace: str, kind_images: dict[str, str]
) -> None:
    refused = kind.apply(pod("good", kind_images["good"]), namespace)
    assert refused.returncode != 0, "failurePolicy Fail must refuse while no webhook serves"
    assert 'failed calling webhook "' in refused.stderr, refused.stderr

    release.upgrade("--set", "webhook.failurePolicy=Ignore", wait=False)
    scale_webhook(kind, release, 0)  # helm puts the Deployment's replicas back: take them away
    (hook,) = kind.get("validatingwebhookconfiguration", release.deployment("webhook"))["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    admitted = kind.apply(pod("root", kind_images["root-script"]), namespace)
    assert admitted.returncode == 0, admitted.stderr
    stored = kind.get("pod", "root", namespace)
    assert stored["spec"]["containers"][0]["image"] == kind_images["root-script"], "unchecked"


def test_once_the_webhook_is_back_it_decides_again(
    kind: Kind, release: Release, namespace: str, kind_images: dict[str, str]
) -> None:
    (hook,) = kind.get("validatingwebhookconfiguration", release.deployment("webhook"))["webhooks"]
    assert hook["failurePolicy"] == "Fail"
    denied = kind.apply(pod("root", kind_images["root-script"]), namespace)
    assert denied.returncode != 0
    assert "non-root-user" in denied.stderr
