"""End-to-end harness: a real control plane (etcd + kube-apiserver, ``tests/support/cluster.py``).

Session fixture (request it by name from any test under ``tests/e2e``):

* ``cluster`` — a started ``tests.support.cluster.Cluster``: ``.kubeconfig`` (admin,
  ``system:masters`` client cert), ``.server`` (``https://127.0.0.1:PORT``), ``.ca_path``,
  ``.log_dir``, ``.start_seconds``, ``.kubectl(*args, kubeconfig=None, input=None, check=True)``,
  ``.env(kubeconfig=None)`` (environment with ``KUBECONFIG``),
  ``.serviceaccount_kubeconfig(namespace, name)`` (a TokenRequest token kubeconfig for that
  ServiceAccount, created if missing, no permissions until bound). Started once per session,
  stopped at its end; its state dir (PKI, logs, kubeconfigs) is removed when every test passed
  and kept — its path printed in the summary — when one failed.

Module fixtures:

* ``installed`` — the chart installed with helm, its webhook (``imagegate serve``) served from
  the host in url mode with the chart's webhook ServiceAccount (``Install``).
* ``report_crds`` — the chart's PolicyReport CRDs in the API server.

Function fixtures:

* ``namespace``, ``other_namespace`` — fresh namespaces (``e2e-<random>``) for the test; deleted
  afterwards without waiting (no controller-manager runs, so they stay ``Terminating`` in etcd:
  harmless).
* ``kube`` — imagegate's ``KubernetesCluster`` connected as admin; ``writer`` — its
  ``ReportWriter`` (with ``report_crds``).

The binaries come from ``hack/build-tools.sh`` (or ``$IMAGEGATE_TOOLS_BIN``,
``$KUBEBUILDER_ASSETS``). Missing ones skip these tests with the reason locally and fail them
under ``CI=true`` (DESIGN.md §5), via ``tests.support.parts.missing_part``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.chart import BARE_API_VALUES, apply_chart_crds
from tests.support.cluster import BinaryNotFoundError, Cluster, ClusterError, start_cluster
from tests.support.kube import fresh_namespace
from tests.support.parts import missing_part
from tests.support.paths import CHART
from tests.support.processes import free_port
from tests.support.summary import section
from tests.support.tools import require_helm
from tests.support.webhook import WebhookServer, start_webhook
from webhook.admission.tls import self_signed
from webhook.k8s.cluster import KubernetesCluster
from webhook.k8s.reports import ReportWriter
from webhook.report.policyreport import MANAGED_BY, MANAGED_BY_LABEL


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """etcd + kube-apiserver on free loopback ports for the whole session (see module doc)."""
    summary = section(request.config, "e2e control plane")
    state = tmp_path_factory.mktemp("cluster")
    try:
        started = start_cluster(state)
    except BinaryNotFoundError as e:
        missing_part(str(e))
    except ClusterError as e:
        summary.append(f"control plane failed to start; logs kept in {state / 'logs'}")
        pytest.fail(f"could not start the control plane: {e}", pytrace=False)
    version = started.kubectl("version", "-o", "json", check=False).stdout
    server_version = _server_git_version(version)
    summary.append(
        f"etcd + kube-apiserver {server_version} ({started.server}) "
        f"ready in {started.start_seconds:.1f}s"
    )
    failed_before = request.session.testsfailed
    try:
        yield started
    finally:
        started.stop()
        if request.session.testsfailed > failed_before:
            summary.append(f"a test failed: control plane logs kept in {started.log_dir}")
        else:
            shutil.rmtree(state, ignore_errors=True)


def _server_git_version(kubectl_version_json: str) -> str:
    try:
        return str(json.loads(kubectl_version_json)["serverVersion"]["gitVersion"])
    except (ValueError, KeyError, TypeError):
        return "(unknown version)"


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace for one test."""
    with fresh_namespace(cluster, "e2e") as name:
        yield name


@pytest.fixture
def other_namespace(cluster: Cluster) -> Iterator[str]:
    """A second fresh namespace for one test."""
    with fresh_namespace(cluster, "e2e") as name:
        yield name


# ---- imagegate installed with helm, its webhook served from the host (url mode) ----------

RELEASE = "imagegate"
SYSTEM = "imagegate-system"
AUDIT_LABEL = "e2e.imagegate.dev/mode"


@dataclass
class Install:
    cluster: Cluster
    helm: str
    values: Path
    webhook: WebhookServer
    restart: Any
    directory: Path

    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, check=check, input=stdin)

    def apply(self, manifest: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", *extra, check=False, stdin=yaml.safe_dump(manifest))

    def run_helm(self, *args: str) -> None:
        run_helm(self.helm, self.cluster, *args)


def run_helm(helm: str, cluster: Cluster, *args: str) -> None:
    done = subprocess.run(
        [helm, *args, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"helm {' '.join(args[:2])} failed:\n{done.stderr}", pytrace=False)


@pytest.fixture(scope="module")
def installed(
    cluster: Cluster, fixture_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Install]:
    helm = require_helm()
    directory = tmp_path_factory.mktemp("e2e-webhook")
    # A fresh start per module (the operator puts no finalizer on policies: nothing to strip).
    cluster.kubectl("delete", "imagepolicies", "--all", check=False)
    certs = self_signed(["127.0.0.1"], directory / "tls")
    port = free_port()
    values = directory / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "webhook": {
                    "external": {"url": f"https://127.0.0.1:{port}", "caBundle": certs.ca_bundle()},
                    "failurePolicy": "Fail",
                    "timeoutSeconds": 10,
                },
                **BARE_API_VALUES,
                "operator": {"enabled": True},
                "policyReports": {"installCRDs": "auto"},
                "policy": {
                    "spec": {
                        "exclude": {"namespaceSelector": {"matchLabels": {AUDIT_LABEL: "audit"}}},
                        "rules": {
                            "allowedBases": {"references": [fixture_images["base"]]},
                            "sizeBudget": {"maxCompressedSize": "2MB"},
                        },
                        # ImageRebuilds of the tests push next to the fixtures.
                        "remediation": {
                            "targetRepositories": [fixture_images["base"].split("/")[0] + "/*"]
                        },
                    }
                },
            }
        )
    )
    apply_chart_crds(helm, {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)})
    run_helm(
        helm, cluster, "install", RELEASE, str(CHART), "--namespace", SYSTEM, "--create-namespace",
        "--values", str(values),
    )  # fmt: skip
    account = cluster.kubectl(
        "get", "serviceaccounts", "-n", SYSTEM, "-l", "app.kubernetes.io/component=webhook",
        "-o", "jsonpath={.items[0].metadata.name}",
    ).stdout.strip()  # fmt: skip
    kubeconfig = cluster.serviceaccount_kubeconfig(SYSTEM, account)
    empty_docker_config = directory / "docker"
    empty_docker_config.mkdir()
    (empty_docker_config / "config.json").write_text("{}")
    env = {
        "KUBECONFIG": str(kubeconfig),
        "IMAGEGATE_WEBHOOK_KUBERNETES": "required",
        "IMAGEGATE_NAMESPACE": SYSTEM,
        "IMAGEGATE_WEBHOOK_POLICY_REFRESH_SECONDS": "0.5",
        "IMAGEGATE_WEBHOOK_LOG_DENIES": "true",  # a dry run's missing record then means something
        "DOCKER_CONFIG": str(empty_docker_config),  # only pull secrets may open private images
    }

    def start() -> WebhookServer:
        server = start_webhook(directory, ["--policies-from-cluster"], env, certs=certs, port=port)
        server.wait_ready()
        return server

    install = Install(cluster, helm, values, start(), start, directory)
    yield install
    install.webhook.stop()
    # Other modules' tests must not meet this webhook (CRDs stay, as helm leaves them).
    run_helm(helm, cluster, "uninstall", RELEASE, "--namespace", SYSTEM)


# ---- PolicyReports ---------------------------------------------------------------------------

REPORT_CRDS = ("policyreports.wgpolicyk8s.io", "clusterpolicyreports.wgpolicyk8s.io")
SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"


@pytest.fixture(scope="module")
def report_crds(cluster: Cluster, helm: str) -> None:
    """The chart's PolicyReport CRDs in the API server (kept when already there), labelled as if
    installed by ``helm install imagegate -n imagegate-system`` (``installed``), so that a later
    helm install in the same session adopts them instead of refusing them."""
    if cluster.kubectl("get", "crd", *REPORT_CRDS, check=False).returncode == 0:
        return
    rendered = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--namespace", SYSTEM,
         "--set", "policyReports.installCRDs=true",
         "--show-only", "templates/policyreport-crds.yaml"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if rendered.returncode != 0:
        pytest.fail(f"helm template failed:\n{rendered.stderr}", pytrace=False)
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    for doc in docs:
        meta = doc.setdefault("metadata", {})
        meta.setdefault("labels", {})["app.kubernetes.io/managed-by"] = "Helm"
        meta.setdefault("annotations", {}).update(
            {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": SYSTEM}
        )
    assert {d["metadata"]["name"] for d in docs} == set(REPORT_CRDS)
    manifest = {"apiVersion": "v1", "kind": "List", "items": docs}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    cluster.kubectl(
        "wait", "--for", "condition=Established", "--timeout", "60s",
        *(f"crd/{name}" for name in REPORT_CRDS),
    )  # fmt: skip


@pytest.fixture
def kube(cluster: Cluster) -> Iterator[KubernetesCluster]:
    """imagegate's Kubernetes client, connected with the admin kubeconfig."""
    connected = KubernetesCluster.connect(str(cluster.kubeconfig))
    try:
        yield connected
    finally:
        connected.close()


@pytest.fixture
def writer(kube: KubernetesCluster, report_crds: None) -> ReportWriter:
    """The operator's PolicyReport writer, on the admin connection."""
    return ReportWriter(kube.api_client, SELECTOR)
