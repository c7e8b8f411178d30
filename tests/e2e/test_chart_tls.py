"""The chart's own TLS, in a real API server: generated once, kept across `helm upgrade`.

`helm template` cannot prove this (its `lookup` sees no cluster); a real install can. The
release here uses the in-cluster Service mode; no webhook Pod runs (no kubelet), so the
webhooks are installed with failurePolicy Ignore and an objectSelector nothing matches.
"""

from __future__ import annotations

import base64
import json
import os

import pytest
from cryptography import x509

from tests.e2e.conftest import run_helm
from tests.support.chart import apply_chart_crds
from tests.support.cluster import Cluster
from tests.support.paths import CHART

pytestmark = pytest.mark.integration

RELEASE = "tls-check"
NAMESPACE = "imagegate-tls"
QUIET = [
    "--set", "webhook.failurePolicy=Ignore",
    "--set", "operator.enabled=false",
    "--set", "policy.create=false",
    "--set", "certificates.mode=helm",  # this test is about the chart-generated Secret
    "--set", "hooks.cleanup=false",  # no Job runs on a bare API server
    "--set", "crds.install=false",  # shared with the other modules: apply_chart_crds
    "--set-json", 'webhook.objectSelector={"matchLabels":{"e2e.imagegate.dev/never":"true"}}',
]  # fmt: skip


def _tls(cluster: Cluster) -> tuple[dict[str, str], set[str]]:
    secrets = json.loads(cluster.kubectl("get", "secrets", "-n", NAMESPACE, "-o", "json").stdout)
    [secret] = [s for s in secrets["items"] if s["metadata"]["name"].endswith("-tls")]
    hooks = json.loads(
        cluster.kubectl(
            "get", "validatingwebhookconfigurations,mutatingwebhookconfigurations", "-o", "json"
        ).stdout
    )
    bundles = {
        w["clientConfig"]["caBundle"]
        for item in hooks["items"]
        if item["metadata"]["name"].startswith(RELEASE)
        for w in item["webhooks"]
    }
    return secret["data"], bundles


def test_generated_certificate_survives_upgrades_and_matches_the_ca_bundle(
    cluster: Cluster, helm: str
) -> None:
    install = ["--namespace", NAMESPACE, "--create-namespace", *QUIET]
    apply_chart_crds(helm, {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)})
    run_helm(helm, cluster, "install", RELEASE, str(CHART), *install)
    try:
        before, bundles = _tls(cluster)
        assert bundles == {before["ca.crt"]}, "every webhook trusts the CA that signed the cert"
        ca = x509.load_pem_x509_certificate(base64.b64decode(before["ca.crt"]))
        served = x509.load_pem_x509_certificate(base64.b64decode(before["tls.crt"]))
        served.verify_directly_issued_by(ca)

        run_helm(helm, cluster, "upgrade", RELEASE, str(CHART), *install)
        after, bundles_after = _tls(cluster)
        assert after == before, "helm upgrade must keep the serving certificate"
        assert bundles_after == bundles
    finally:
        run_helm(helm, cluster, "uninstall", RELEASE, "--namespace", NAMESPACE)
