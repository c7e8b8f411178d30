"""`helm install` of the chart on kind: imagegate's own Pods run, and the API server reaches the
webhook through its Service with the TLS the webhook made itself (certificates.mode rotate)."""

from __future__ import annotations

import base64

from tests.kind.conftest import Release
from tests.kind.harness import SYSTEM, Kind
from tests.support.manifests import pod


def test_the_webhook_and_the_operator_run_the_pushed_image_pinned_by_digest(
    kind: Kind, release: Release
) -> None:
    for component in ("webhook", "operator"):
        pods = release.wait_ready(component)
        assert len(pods) == release.replicas(component) >= 1
        for p in pods:
            (container,) = p["spec"]["containers"]
            assert container["image"] == release.image_ref
            (status,) = p["status"]["containerStatuses"]
            assert status["imageID"].endswith(release.image.digest), status
            assert status["ready"] is True


def test_helm_test_reads_readyz_through_the_service_verifying_the_webhooks_ca(
    release: Release,
) -> None:
    assert release.test_phase == "Succeeded"


def test_the_webhook_configurations_call_the_service_with_the_ca_of_the_served_certificate(
    kind: Kind, release: Release
) -> None:
    secret = kind.get("secret", f"{release.deployment('webhook')}-tls", SYSTEM)
    ca = base64.b64decode(secret["data"]["ca.crt"])
    assert ca.startswith(b"-----BEGIN CERTIFICATE-----")
    # The Secret is the webhook's (the chart renders no key material), and so is the caBundle
    # it patched in: the current CA, plus the previous one while a CA rotation is under way.
    assert (secret["metadata"].get("labels") or {}).get("helm.sh/chart") is None
    for kind_name in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        (hook,) = kind.get(kind_name, release.deployment("webhook"))["webhooks"]
        assert ca.strip() in base64.b64decode(hook["clientConfig"]["caBundle"])
        service = hook["clientConfig"]["service"]
        assert (service["namespace"], service["name"]) == (SYSTEM, release.deployment("webhook"))
        assert hook["failurePolicy"] == "Fail"


def test_the_api_server_gets_imagegates_answer_through_the_service(
    kind: Kind, namespace: str, kind_images: dict[str, str]
) -> None:
    denied = kind.create(pod("root", kind_images["zero"]), namespace, "--dry-run=server")
    assert denied.returncode != 0
    assert 'admission webhook "validate.imagegate.dev" denied the request' in denied.stderr
    assert "non-root-user" in denied.stderr


def test_the_operator_runs_under_kopf_peering_with_a_known_user(
    kind: Kind, release: Release
) -> None:
    """Issue 10: kopf's peering identity is ``getpass.getuser()@host/…``, so uid 65532 needs
    a name; each replica keeps its entry in the ClusterKopfPeering alive."""

    def identities() -> set[str]:
        peering = kind.get("clusterkopfpeering", "imagegate")
        return set((peering.get("status") or {}).keys())

    logs = release.logs("operator")
    for name, text in logs.items():
        assert "getpwuid" not in text, f"{name}:\n{text[-3000:]}"

    def every_replica_is_a_peer() -> bool:
        peers = identities()
        return all(any(p.startswith(f"nonroot@{name}/") for p in peers) for name in logs)

    kind.wait_for(
        f"operators {sorted(logs)} in the ClusterKopfPeering",
        every_replica_is_a_peer,
        30,
        lambda: f"peers: {identities()}",
    )
