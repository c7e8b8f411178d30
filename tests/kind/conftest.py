"""In-cluster end-to-end suite: imagegate installed with helm on a kind cluster, as users run it.

The cluster and its registry are made elsewhere (``make kind-up``); this suite only uses them:

* ``IMAGEGATE_KIND_CONTEXT`` (``kind-imagegate``): the kube context; every kubectl and helm
  call names it, through a kubeconfig holding that context alone.
* ``IMAGEGATE_KIND_REGISTRY`` (``localhost:5001``): the registry as the host pushes to it and as
  Pods name images (containerd on the node redirects it to the registry container).
* ``IMAGEGATE_KIND_REGISTRY_INTERNAL`` (``kind-registry:5000``): the registry as containers on
  the kind network reach it; the webhook and the operator read ``localhost:5001/...`` there
  (``IMAGEGATE_REGISTRY_MIRRORS``), as containerd does.

Session fixtures:

* ``kind`` — the cluster (``tests.kind.harness.Kind``); unreachable: ``missing_part``.
* ``kind_images`` — the fixture images built by the Docker engine and pushed to the registry:
  ``{name: "localhost:5001/fixtures/<name>:1"}``.
* ``imagegate_image`` — imagegate's own image (the root Dockerfile on the local base), pushed.
* ``release`` — the chart ``helm upgrade --install``-ed in ``imagegate-system`` in its normal
  Service mode (chart-generated TLS), pinned to that image's digest, ``--wait``, then
  ``helm test``. At the end of the session every Pod of the chart must be Ready with zero
  restarts and without RBAC denials in its logs.
* ``audit_policy`` — an audit-mode ImagePolicy for namespaces labelled ``AUDIT_LABEL=audit``
  (which the release's enforce policy excludes), loaded by the webhook.

Function fixtures: ``namespace`` (enforce mode) and ``audit_namespace``; both deleted after.
``summary`` (session) collects the lines of the ``kind cluster`` section printed at the end
(install and upgrade times, admissions during the rollout, the chart's Pods at the end).

Tests run in the order of ``MODULE_ORDER``: docs/kind.md's walkthrough first (it installs the
release its own way; ``release`` then upgrades it), and the tests that take the webhook down or
roll the release out last.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fixtures.images import FixtureBuildError
from tests.fixtures.own_image import BaseMissingError, OwnImage, build_own_image
from tests.kind.harness import RELEASE, SYSTEM, Kind, KubectlError, restarts
from tests.support import kube
from tests.support.manifests import image_policy, pod
from tests.support.parts import missing_part, push_fixtures
from tests.support.paths import CHART
from tests.support.summary import section
from webhook import __version__

CONTEXT = os.environ.get("IMAGEGATE_KIND_CONTEXT", "kind-imagegate")
REGISTRY = os.environ.get("IMAGEGATE_KIND_REGISTRY", "localhost:5001")
REGISTRY_INTERNAL = os.environ.get("IMAGEGATE_KIND_REGISTRY_INTERNAL", "kind-registry:5000")
IMAGE_TAG = f"{__version__}-kind"
AUDIT_LABEL = "kind.imagegate.dev/mode"
AUDIT_POLICY = "kind-audit"
MODULE_ORDER = (
    "test_docs_walkthrough",  # a user's walk from nothing (make kind-install) comes first
    "test_install",
    "test_workloads",
    "test_rebuild",
    "test_audit",
    "test_ha",
    "test_failure_policy",
    "test_upgrade",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kind: needs the kind cluster (make kind-up)")


@pytest.fixture(scope="session")
def summary(request: pytest.FixtureRequest) -> list[str]:
    """Lines printed in the `kind cluster` section at the end of the run."""
    return section(request.config, "kind cluster")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put this suite's tests in MODULE_ORDER (a stable sort), leaving other tests in place."""
    here = Path(__file__).parent
    slots = [i for i, item in enumerate(items) if item.path.parent == here]

    def rank(item: pytest.Item) -> int:
        stem = item.path.stem
        return MODULE_ORDER.index(stem) if stem in MODULE_ORDER else len(MODULE_ORDER)

    ordered = sorted((items[i] for i in slots), key=rank)
    for slot, item in zip(slots, ordered, strict=True):
        items[slot] = item
        item.add_marker(pytest.mark.kind)


# ---- the cluster ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kind(tmp_path_factory: pytest.TempPathFactory, helm: str) -> Kind:
    """The kind cluster, reachable and with its nodes Ready, and its registry answering."""
    if shutil.which("kubectl") is None:
        missing_part("no kubectl on PATH")
    view = subprocess.run(
        ["kubectl", "config", "view", "--raw", "--minify", "--context", CONTEXT],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if view.returncode != 0:
        missing_part(f"no kube context {CONTEXT} ({view.stderr.strip()}): make kind-up")
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    kubeconfig.touch(mode=0o600)  # it holds the cluster admin's client key
    kubeconfig.write_text(view.stdout)
    cluster = Kind(CONTEXT, kubeconfig, REGISTRY, REGISTRY_INTERNAL, helm)
    try:
        nodes = cluster.items("nodes")
    except (KubectlError, subprocess.TimeoutExpired) as e:
        missing_part(f"the kind cluster {CONTEXT} is not reachable: {e}")
    try:
        httpx.get(f"http://{REGISTRY}/v2/", timeout=5).raise_for_status()
    except httpx.HTTPError as e:
        missing_part(f"the kind registry {REGISTRY} does not answer ({e}): make kind-up")
    cluster.wait_for(
        "every node to be Ready",
        lambda: all(_node_ready(n) for n in cluster.items("nodes")) or None,
        120,
        lambda: cluster.kubectl("describe", "nodes", check=False).stdout,
    )
    assert nodes, f"the cluster {CONTEXT} has no nodes"
    return cluster


def _node_ready(node: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
    return conditions.get("Ready") == "True"


@pytest.fixture(scope="session")
def kind_images(docker_client: Any, kind: Kind) -> dict[str, str]:
    """Every fixture image, pushed to the kind registry: name → ``<registry>/fixtures/<name>:1``."""
    return push_fixtures(docker_client, kind.registry)


@pytest.fixture(scope="session")
def imagegate_image(docker_client: Any, kind: Kind) -> OwnImage:
    """imagegate's own image built from the root Dockerfile and pushed to the kind registry."""
    try:
        return build_own_image(docker_client, kind.registry, IMAGE_TAG)
    except BaseMissingError as e:
        missing_part(str(e))
    except FixtureBuildError as e:
        pytest.fail(str(e), pytrace=False)


# ---- the release ---------------------------------------------------------------------------


@dataclass
class Release:
    """The chart installed in ``imagegate-system``: ``values`` (a file) plus ``sets`` that
    stay (``--set`` overrides, e.g. the HA replicas once the upgrade test applied them)."""

    kind: Kind
    values: Path
    image: OwnImage
    sets: list[str] = field(default_factory=list)
    test_phase: str = ""

    @property
    def image_ref(self) -> str:
        return self.image.pinned

    def upgrade(self, *extra: str, wait: bool = True) -> None:
        """``helm upgrade --install`` with the values, the kept sets and ``extra`` args."""
        self.kind.helm(
            "upgrade", "--install", RELEASE, str(CHART), "--namespace", SYSTEM,
            "--create-namespace", "--values", str(self.values),
            *(a for s in self.sets for a in ("--set", s)), *extra,
            *(("--wait", "--timeout", "5m") if wait else ()),
        )  # fmt: skip

    def test(self) -> str:
        """``helm test``: the chart's test Pod GETs /readyz through the Service, verifying the
        certificate against the CA in the TLS Secret; it succeeds only on a 200. Its phase.

        (No ``--logs``: the chart deletes a succeeded test Pod, and Helm 3 asks for its logs
        after deleting it, helm/helm#9098.)"""
        done = self.kind.helm("test", RELEASE, "--namespace", SYSTEM, timeout=300)
        phase = re.search(r"^Phase:\s+(\w+)", done.stdout, re.MULTILINE)
        return phase.group(1) if phase else done.stdout

    @staticmethod
    def selector(component: str | None = None) -> str:
        labels = f"app.kubernetes.io/instance={RELEASE}"
        return f"{labels},app.kubernetes.io/component={component}" if component else labels

    def deployment(self, component: str) -> str:
        return f"{RELEASE}-{component}"

    def replicas(self, component: str) -> int:
        got = self.kind.get("deployment", self.deployment(component), SYSTEM)
        return int(got["spec"]["replicas"])

    def pods(self, component: str | None = None) -> list[dict[str, Any]]:
        return [
            p
            for p in self.kind.items("pods", SYSTEM, self.selector(component))
            # neither `helm test` Pods nor the hook Jobs' Pods (bootstrap, pre-delete cleanup)
            if p["metadata"].get("labels", {}).get("app.kubernetes.io/component")
            not in ("test", "hook")
        ]

    def wait_ready(self, component: str, timeout: float = 180) -> list[dict[str, Any]]:
        """Wait until the component's Deployment has all its replicas Ready (and no others)."""
        return self.kind.wait_selector_ready(
            SYSTEM, self.selector(component), self.replicas(component), timeout
        )

    def logs(self, component: str) -> dict[str, str]:
        return {
            p["metadata"]["name"]: self.kind.logs(p["metadata"]["name"], SYSTEM)
            for p in self.pods(component)
        }


def release_values(kind: Kind, image: OwnImage, images: dict[str, str]) -> dict[str, Any]:
    """The values a user on kind would set: the pushed image pinned by digest, the registry
    mirror for the webhook and the operator (as hack/make/kind.mk does), PolicyReport CRDs, and
    an enforce policy that approves the fixtures' base and leaves audit namespaces to
    ``audit_policy``."""
    mirrors = [
        {"name": "IMAGEGATE_REGISTRY_MIRRORS", "value": json.dumps({REGISTRY: REGISTRY_INTERNAL})}
    ]
    return {
        "image": {"registry": kind.registry, "repository": "imagegate", "digest": image.digest},
        "webhook": {"failurePolicy": "Fail", "extraEnv": mirrors},
        "operator": {
            "extraEnv": [*mirrors, {"name": "IMAGEGATE_OPERATOR_SCAN_SECONDS", "value": "30"}]
        },
        "policyReports": {"installCRDs": True},
        # kind's admin is in kubeadm:cluster-admins (kubeadm >= 1.29), as in enforce-values.
        "exemptions": {"allowedGroups": ["system:masters", "kubeadm:cluster-admins"]},
        "policy": {
            "spec": {
                "mode": "enforce",
                "exclude": {"namespaceSelector": {"matchLabels": {AUDIT_LABEL: "audit"}}},
                "rules": {"allowedBases": {"references": [images["base"]]}},
                # ImageRebuilds of the tests push to the kind registry.
                "remediation": {"targetRepositories": [f"{REGISTRY}/*"]},
            }
        },
    }


@pytest.fixture(scope="session")
def release(
    kind: Kind,
    imagegate_image: OwnImage,
    kind_images: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    summary: list[str],
) -> Iterator[Release]:
    """The chart installed (``--wait``) and ``helm test``-ed; checked again at the end."""
    values = tmp_path_factory.mktemp("release") / "values.yaml"
    values.write_text(yaml.safe_dump(release_values(kind, imagegate_image, kind_images)))
    installed = Release(kind, values, imagegate_image)
    adopted = adopt_chart_crds(kind, RELEASE, SYSTEM)
    if adopted:
        summary.append(f"CRDs of a 0.1 install (crds/) handed to the release: {', '.join(adopted)}")
    started = time.monotonic()
    installed.upgrade()
    # An earlier install (make kind-install, the docs walkthrough) bootstrapped the policy with
    # other values: `helm upgrade` must have applied this release's (Helm adopts without patching).
    live = kind.get("imagepolicy", "default")["spec"]
    assert live["rules"]["allowedBases"]["references"] == [kind_images["base"]], live
    installed.wait_ready("webhook")
    installed.wait_ready("operator")
    summary.append(
        f"helm upgrade --install --wait of {imagegate_image.pinned}: "
        f"{time.monotonic() - started:.0f}s"
    )
    installed.test_phase = installed.test()
    yield installed
    _every_pod_ready_without_restarts(installed)
    pods = installed.pods()
    summary.append(
        f"at the end: {len(pods)} Pods of the chart Ready, 0 restarts, no RBAC denial in logs "
        f"({', '.join(sorted(p['metadata']['name'] for p in pods))})"
    )


def adopt_chart_crds(kind: Kind, release: str, namespace: str) -> list[str]:
    """The upgrade step README.md gives for installs of chart 0.1 (whose CRDs came from
    crds/, without Helm's ownership metadata, so a release that renders them from templates/
    would be refused with "invalid ownership metadata"): hand them to the release. CRDs that
    already name a release are left alone. Returns the CRDs adopted."""
    adopted = []
    for path in sorted((CHART / "files" / "crds").glob("*.yaml")):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        got = kind.kubectl("get", "crd", name, "-o", "json", check=False)
        if got.returncode != 0:
            continue
        annotations = json.loads(got.stdout)["metadata"].get("annotations") or {}
        if "meta.helm.sh/release-name" in annotations:
            continue
        kind.kubectl("label", "crd", name, "--overwrite", "app.kubernetes.io/managed-by=Helm")
        kind.kubectl("annotate", "crd", name, "--overwrite",
                     f"meta.helm.sh/release-name={release}",
                     f"meta.helm.sh/release-namespace={namespace}")  # fmt: skip
        adopted.append(name)
    return adopted


def _every_pod_ready_without_restarts(release: Release) -> None:
    """The end of the session: the chart's Pods are Ready, never restarted, and their logs
    show no RBAC denial. A restarted container's previous logs are printed."""
    kind = release.kind
    problems: list[str] = []
    try:
        kind.wait_for(
            "the chart's terminating Pods to be gone",
            lambda: not any(p["metadata"].get("deletionTimestamp") for p in release.pods()),
            60,
            lambda: kind.diagnose(SYSTEM),
        )
    except pytest.fail.Exception as e:
        problems.append(str(e))
    for component in ("webhook", "operator"):
        try:
            release.wait_ready(component, timeout=120)
        except pytest.fail.Exception as e:
            problems.append(str(e))
    for p in release.pods():
        name = p["metadata"]["name"]
        restarted = {c: n for c, n in restarts(p).items() if n}
        if restarted:
            previous = kind.logs(name, SYSTEM, "--previous", "--tail=80")
            problems.append(f"{name} restarted {restarted}; previous logs:\n{previous}")
        logs = kind.logs(name, SYSTEM)
        denials = [line for line in logs.splitlines() if "forbidden" in line.lower()]
        if denials:
            problems.append(f"{name} was denied by RBAC:\n" + "\n".join(denials[:10]))
    if problems:
        pytest.fail("the chart's Pods at the end of the session:\n" + "\n\n".join(problems))


# ---- namespaces and policies ---------------------------------------------------------------


@contextlib.contextmanager
def fresh_namespace(kind: Kind, labels: dict[str, str]) -> Iterator[str]:
    """A namespace ``kind-<random>`` with ``labels`` (``tests.support.kube.fresh_namespace``:
    deleted without waiting afterwards), once its ServiceAccount ``default`` exists."""
    with kube.fresh_namespace(kind, "kind", labels) as name:
        # Pods are refused until the ServiceAccount controller has made `default`.
        kind.wait_for(
            f"ServiceAccount default in {name}",
            lambda: kind.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
            30,
        )
        yield name


@pytest.fixture
def namespace(kind: Kind, release: Release) -> Iterator[str]:
    """A fresh namespace under the release's enforce policy."""
    with fresh_namespace(kind, {}) as name:
        yield name


@pytest.fixture(scope="session")
def audit_policy(kind: Kind, release: Release, kind_images: dict[str, str]) -> Iterator[str]:
    """An audit-mode ImagePolicy for namespaces labelled ``AUDIT_LABEL=audit``."""
    match = {"namespaceSelector": {"matchLabels": {AUDIT_LABEL: "audit"}}}
    policy = image_policy(AUDIT_POLICY, match, kind_images["base"], onError="allow")
    answer = kind.apply(policy)
    assert answer.returncode == 0, answer.stderr
    try:
        yield AUDIT_POLICY
    finally:
        kind.kubectl("delete", "imagepolicy", AUDIT_POLICY, "--ignore-not-found", check=False)


@pytest.fixture
def audit_namespace(kind: Kind, audit_policy: str, kind_images: dict[str, str]) -> Iterator[str]:
    """A fresh namespace under the audit policy, once the webhook has loaded it."""
    with fresh_namespace(kind, {AUDIT_LABEL: "audit"}) as name:

        def audited() -> bool:
            probe = pod(f"probe-{uuid.uuid4().hex[:6]}", kind_images["zero"])
            answer = kind.create(probe, name, "--dry-run=server")
            return answer.returncode == 0 and "imagegate (audit)" in answer.stderr

        kind.wait_for(f"the webhook to apply ImagePolicy {audit_policy}", audited, 60)
        yield name
