"""imagegate against a real API server: the chart installed with helm, the webhook called by it.

No kubelet runs here, so the webhook is `imagegate serve` on the host and the chart's webhook
configurations use `url` mode. The webhook reads the cluster with the chart's own webhook
ServiceAccount token, which proves the chart's RBAC is enough.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.conftest import AUDIT_LABEL, RELEASE, SYSTEM, Install
from tests.support.kube import fresh_namespace
from tests.support.manifests import deployment, image_policy, pod
from tests.support.paths import CHART
from tests.support.registry import RegistryProcess
from tests.support.webhook import WebhookServer

pytestmark = pytest.mark.integration


def test_the_chart_is_accepted_by_a_real_api_server(installed: Install) -> None:
    crds = installed.kubectl("get", "crds", "-o", "name").stdout
    assert "customresourcedefinition.apiextensions.k8s.io/imagepolicies.imagegate.dev" in crds
    assert "customresourcedefinition.apiextensions.k8s.io/imagerebuilds.imagegate.dev" in crds
    assert "customresourcedefinition.apiextensions.k8s.io/policyreports.wgpolicyk8s.io" in crds
    policy = json.loads(installed.kubectl("get", "imagepolicy", "default", "-o", "json").stdout)
    assert policy["spec"]["mode"] == "enforce"
    hooks = json.loads(
        installed.kubectl("get", "validatingwebhookconfigurations", "-o", "json").stdout
    )
    urls = [w["clientConfig"]["url"] for item in hooks["items"] for w in item["webhooks"]]
    assert urls == [f"{installed.webhook.url}/validate"]
    with installed.webhook.client() as http:
        assert http.get("/readyz").json()["policies"] == ["default"]


@pytest.mark.parametrize("make", [pod, deployment], ids=["pod", "deployment"])
def test_a_root_image_is_denied_with_the_fix(
    installed: Install, namespace: str, fixture_images: dict[str, str], make: Any
) -> None:
    answer = installed.apply(make("root", fixture_images["root-script"]), "-n", namespace)
    assert answer.returncode != 0
    assert 'admission webhook "validate.imagegate.dev" denied the request' in answer.stderr
    assert "non-root-user" in answer.stderr
    assert "USER 65532:65532" in answer.stderr
    kind = make.__name__
    assert installed.kubectl("get", kind, "root", "-n", namespace, check=False).returncode != 0


def test_a_good_image_is_stored_pinned_to_the_checked_digest(
    installed: Install, namespace: str, fixture_images: dict[str, str]
) -> None:
    good = fixture_images["good"]
    answer = installed.apply(pod("good", good), "-n", namespace)
    assert answer.returncode == 0, answer.stderr
    stored = json.loads(
        installed.kubectl("get", "pod", "good", "-n", namespace, "-o", "json").stdout
    )
    image = stored["spec"]["containers"][0]["image"]
    assert image.startswith(f"{good}@sha256:")
    record = json.loads(stored["metadata"]["annotations"]["imagegate.dev/mutations"])
    assert record[0]["why"] == "pinned"


def test_server_side_dry_run_has_no_side_effects(
    installed: Install, namespace: str, fixture_images: dict[str, str]
) -> None:
    denied = installed.apply(
        pod("dry-bad", fixture_images["zero"]), "-n", namespace, "--dry-run=server"
    )
    assert denied.returncode != 0
    assert "non-root-user" in denied.stderr
    admitted = installed.apply(
        pod("dry-good", fixture_images["good"]), "-n", namespace, "--dry-run=server"
    )
    assert admitted.returncode == 0, admitted.stderr
    assert installed.kubectl("get", "pod", "dry-good", "-n", namespace, check=False).returncode != 0
    real = installed.apply(pod("real-bad", fixture_images["zero"]), "-n", namespace)
    assert real.returncode != 0
    subjects = _audit_subjects(installed.webhook)
    assert f"Pod {namespace}/real-bad" in subjects  # denials are recorded (logDenies)...
    assert f"Pod {namespace}/dry-bad" not in subjects  # ...but not dry runs


def test_audit_mode_admits_and_kubectl_prints_the_warnings(
    installed: Install, fixture_images: dict[str, str]
) -> None:
    with fresh_namespace(installed.cluster, "audit", {AUDIT_LABEL: "audit"}) as namespace:
        match = {"namespaceSelector": {"matchLabels": {AUDIT_LABEL: "audit"}}}
        audit_policy = image_policy(f"audit-{namespace}", match, fixture_images["base"])
        assert installed.apply(audit_policy).returncode == 0
        installed.webhook.wait_ready(policy=audit_policy["metadata"]["name"], timeout=15)
        legacy = deployment("legacy", fixture_images["root-script"])
        answer = installed.apply(legacy, "-n", namespace)
        assert answer.returncode == 0, answer.stderr
        assert "Warning: imagegate (audit): container app: non-root-user:" in answer.stderr
        assert installed.kubectl("get", "deployment", "legacy", "-n", namespace).returncode == 0
        assert f"Deployment {namespace}/legacy" in _audit_subjects(installed.webhook)


def test_pull_secrets_of_the_pod_and_its_service_account_open_private_images(
    installed: Install, namespace: str, auth_registry: RegistryProcess, private_image: str
) -> None:
    user, password = auth_registry.credentials or ("", "")
    image = private_image
    installed.kubectl(
        "create", "secret", "docker-registry", "regcred", "-n", namespace,
        f"--docker-server={auth_registry.host}", f"--docker-username={user}",
        f"--docker-password={password}",
    )  # fmt: skip

    without = installed.apply(pod("nocreds", image), "-n", namespace)
    assert without.returncode != 0
    assert "onError: deny" in without.stderr
    assert "credentials" in without.stderr

    with_secret = installed.apply(
        pod("podsecret", image, imagePullSecrets=[{"name": "regcred"}]), "-n", namespace
    )
    assert with_secret.returncode == 0, with_secret.stderr

    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "puller"},
        "imagePullSecrets": [{"name": "regcred"}],
    }
    assert installed.apply(account, "-n", namespace).returncode == 0
    via_account = installed.apply(
        pod("sasecret", image, serviceAccountName="puller"), "-n", namespace
    )
    assert via_account.returncode == 0, via_account.stderr


def test_with_the_webhook_down_failure_policy_decides(
    installed: Install, namespace: str, fixture_images: dict[str, str]
) -> None:
    installed.webhook.stop()
    try:
        refused = installed.apply(pod("down", fixture_images["good"]), "-n", namespace)
        assert refused.returncode != 0
        assert "failed calling webhook" in refused.stderr
        installed.run_helm(
            "upgrade", RELEASE, str(CHART), "--namespace", SYSTEM,
            "--values", str(installed.values), "--set", "webhook.failurePolicy=Ignore",
        )  # fmt: skip
        admitted = installed.apply(pod("down", fixture_images["root-script"]), "-n", namespace)
        assert admitted.returncode == 0, admitted.stderr
    finally:
        installed.run_helm(
            "upgrade", RELEASE, str(CHART), "--namespace", SYSTEM, "--values", str(installed.values)
        )
        installed.webhook = installed.restart()


def _audit_subjects(server: WebhookServer) -> set[str]:
    subjects = set()
    for line in server.logs().splitlines():
        if line.startswith("{") and "admission audit record" in line:
            subjects.add(json.loads(line)["subject"])
    return subjects
