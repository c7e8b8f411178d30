"""Issue 16 on a real cluster: the default two webhook replicas keep admission going while one
of them is killed, `helm upgrade` upgrades a changed CRD, and a second install next to
PolicyReport CRDs another release owns succeeds (policyReports.installCRDs auto) and leaves no
webhook configuration behind when it is uninstalled (the pre-delete hook)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kind.conftest import Release, fresh_namespace
from tests.kind.harness import RELEASE, SYSTEM, Kind
from tests.kind.test_upgrade import Load
from tests.support.paths import CHART

REPORT_CRDS = ("policyreports.wgpolicyk8s.io", "clusterpolicyreports.wgpolicyk8s.io")
WEBHOOK_KINDS = ("validatingwebhookconfiguration", "mutatingwebhookconfiguration")


def test_killing_one_of_two_webhook_pods_loses_no_admission(
    kind: Kind, release: Release, kind_images: dict[str, str], summary: list[str]
) -> None:
    """Two replicas (the default) under a loop of Pod creations; one Pod is deleted as a node
    drain or an eviction deletes it. Every admission must get imagegate's own answer."""
    assert release.replicas("webhook") == 2
    before = {p["metadata"]["name"] for p in release.wait_ready("webhook")}
    with fresh_namespace(kind, {}) as namespace:
        load = Load(kind, namespace, kind_images)
        worker = threading.Thread(target=load.run, name="admission load", daemon=True)
        worker.start()
        try:
            time.sleep(3)
            victim = sorted(before)[0]
            started = time.monotonic()
            kind.kubectl("delete", "pod", victim, "-n", SYSTEM, "--wait=false")
            kind.wait_for(
                f"{victim} to be replaced",
                lambda: len(
                    {p["metadata"]["name"] for p in release.wait_ready("webhook")} - before
                ) == 1,
                180,
            )  # fmt: skip
            replaced = time.monotonic() - started
            time.sleep(5)
        finally:
            load.stop.set()
            worker.join(timeout=60)
    summary.append(
        f"one of 2 webhook Pods deleted under load: replaced in {replaced:.0f}s, "
        f"{load.answers} admissions, {len(load.failures)} failed"
    )
    assert load.answers >= 20, f"only {load.answers} admissions"
    assert load.failures == [], "\n".join(load.failures[:10])


@pytest.fixture
def changed_chart(tmp_path: Path) -> Path:
    """A copy of the chart whose ImageRebuild CRD has one more printer column."""
    chart = tmp_path / "imagegate"
    shutil.copytree(CHART, chart)
    path = chart / "files" / "crds" / "imagerebuilds.imagegate.dev.yaml"
    crd = yaml.safe_load(path.read_text())
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    columns.append({"name": "Kind-Test", "type": "string", "jsonPath": ".spec.source"})
    path.write_text(yaml.safe_dump(crd, sort_keys=False))
    return chart


def _columns(kind: Kind) -> list[str]:
    crd = kind.get("crd", "imagerebuilds.imagegate.dev")
    return [c["name"] for c in crd["spec"]["versions"][0].get("additionalPrinterColumns", [])]


def test_helm_upgrade_upgrades_a_changed_crd(
    kind: Kind, release: Release, changed_chart: Path
) -> None:
    """Helm never upgrades crds/; the chart's CRDs are templates, so an upgrade carries a
    changed CRD into the cluster (and the next one takes the change back)."""
    assert "Kind-Test" not in _columns(kind)
    policies = {p["metadata"]["uid"] for p in kind.items("imagepolicies")}
    args = ["--namespace", SYSTEM, "--values", str(release.values)]
    args += [a for s in release.sets for a in ("--set", s)]
    kind.helm("upgrade", RELEASE, str(changed_chart), *args, "--wait", "--timeout", "5m")
    try:
        assert _columns(kind)[-2:] == ["Age", "Kind-Test"]
        crd = kind.get("crd", "imagerebuilds.imagegate.dev")
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
    finally:
        release.upgrade()
    assert "Kind-Test" not in _columns(kind)
    assert {p["metadata"]["uid"] for p in kind.items("imagepolicies")} == policies


def _opted_out_namespace(kind: Kind, name: str) -> None:
    """Namespace `name`, labelled so that no imagegate webhook checks what runs in it."""
    labels = {"imagegate.dev/ignore": "true"}
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    }
    answer = kind.apply(namespace)
    assert answer.returncode == 0, answer.stderr


SECOND = "imagegate-second"


@pytest.fixture
def second_install(kind: Kind, release: Release, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A second release in its own namespace, as a team that runs its own imagegate next to
    an existing one would: PolicyReport CRDs already there (the first release owns them), its
    own webhooks quiet (Ignore, an objectSelector nothing matches), no cluster-scoped objects
    the first one owns (policy, peering, imagegate's CRDs)."""
    for crd in REPORT_CRDS:
        annotations = kind.get("crd", crd)["metadata"]["annotations"]
        assert annotations["meta.helm.sh/release-name"] == RELEASE, crd
    values = yaml.safe_load(release.values.read_text())
    values.update(
        {
            "policyReports": {"installCRDs": "auto"},
            "crds": {"install": False},
            "policy": {"create": False},
            "operator": {"enabled": False},
            "exemptions": {"enabled": False},
            "test": {"enabled": False},
        }
    )
    values["webhook"] |= {
        "failurePolicy": "Ignore",
        "objectSelector": {"matchLabels": {"kind.imagegate.dev/never": "true"}},
    }
    path = tmp_path / "second.yaml"
    path.write_text(yaml.safe_dump(values))
    before = {crd: kind.get("crd", crd)["metadata"]["resourceVersion"] for crd in REPORT_CRDS}
    # Opted out of the first release's webhook (whose enforce policy is not about imagegate).
    _opted_out_namespace(kind, SECOND)
    kind.helm(
        "install", SECOND, str(CHART), "--namespace", SECOND, "--values", str(path),
        "--wait", "--timeout", "5m",
    )  # fmt: skip
    try:
        yield before
    finally:
        kind.helm("uninstall", SECOND, "--namespace", SECOND, "--ignore-not-found", "--wait")
        # Waited for: the next test's install cannot create anything in a terminating namespace.
        kind.kubectl("delete", "namespace", SECOND, "--ignore-not-found", "--timeout=120s")


def test_install_next_to_policyreport_crds_of_another_release_succeeds(
    kind: Kind, second_install: dict[str, str]
) -> None:
    manifest = kind.helm("get", "manifest", SECOND, "--namespace", SECOND).stdout
    kinds = [d["kind"] for d in yaml.safe_load_all(manifest) if d]
    assert "CustomResourceDefinition" not in kinds
    for crd, version in second_install.items():
        got = kind.get("crd", crd)
        assert got["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
        assert got["metadata"]["resourceVersion"] == version, f"{crd} was changed"
    webhook = f"{SECOND}-webhook"
    pods = kind.wait_selector_ready(
        SECOND, f"app.kubernetes.io/instance={SECOND},app.kubernetes.io/component=webhook", 2
    )
    assert len(pods) == 2

    def patched() -> bool:  # certificates.mode rotate: the webhook fills its caBundle
        return all(
            kind.get(k, webhook)["webhooks"][0]["clientConfig"].get("caBundle")
            for k in WEBHOOK_KINDS
        )

    kind.wait_for(f"the caBundle of {webhook}", patched, 60)


def test_uninstall_runs_the_pre_delete_hook_and_leaves_no_webhook_configuration(
    kind: Kind, second_install: dict[str, str]
) -> None:
    webhook = f"{SECOND}-webhook"
    secret = kind.get("secret", f"{webhook}-tls", SECOND)  # made by the rotating webhook
    assert "helm.sh/chart" not in (secret["metadata"].get("labels") or {})
    done = kind.helm("uninstall", SECOND, "--namespace", SECOND, "--wait")
    assert "uninstalled" in done.stdout
    for kind_name in WEBHOOK_KINDS:
        left = kind.kubectl("get", kind_name, webhook, check=False)
        assert left.returncode != 0, f"{kind_name} {webhook} outlived the release"
    gone = kind.kubectl("get", "secret", f"{webhook}-tls", "-n", SECOND, check=False)
    assert gone.returncode != 0, "the rotated TLS Secret outlived the release"
    for crd in REPORT_CRDS:
        assert kind.get("crd", crd)["metadata"]["annotations"]["meta.helm.sh/release-name"] == (
            RELEASE
        )


BOOT = "imagegate-boot"


@pytest.fixture
def boot_namespace(kind: Kind, release: Release) -> Iterator[str]:
    _opted_out_namespace(kind, BOOT)  # imagegate's own image is not under test here
    try:
        yield BOOT
    finally:
        kind.kubectl("delete", "imagepolicy", "kind-bootstrap", "--ignore-not-found")
        kind.kubectl("delete", "clusterkopfpeering", "kind-bootstrap", "--ignore-not-found")
        kind.kubectl("delete", "clusterrole,clusterrolebinding", "-l",
                     "app.kubernetes.io/instance=boot", "--ignore-not-found")  # fmt: skip
        kind.kubectl("delete", "namespace", BOOT, "--ignore-not-found", "--timeout=120s")


def test_the_bootstrap_job_applies_the_policy_and_the_peering_for_helm_to_adopt(
    kind: Kind, release: Release, boot_namespace: str
) -> None:
    """What a first install on a cluster without the CRDs runs after the install (post-install
    hook): the chart rendered as on such a cluster (no --api-versions), its hook objects applied
    as Helm would, the Job run with the real image and RBAC. The policy is about a namespace
    that does not exist, so it changes no other test's admission."""
    values = yaml.safe_load(release.values.read_text())
    rendered = subprocess.run(
        [kind.helm_bin, "template", "boot", str(CHART), "--namespace", boot_namespace,
         "--values", "-",
         "--set", "policy.name=kind-bootstrap", "--set", "operator.peeringName=kind-bootstrap",
         "--set", "policy.spec.match.namespaces={kind-no-such-namespace}",
         "--show-only", "templates/hooks/bootstrap.yaml"],
        input=yaml.safe_dump(values), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert {d["kind"] for d in docs} >= {"Job", "ConfigMap", "ClusterRole", "ServiceAccount"}
    for doc in sorted(docs, key=lambda d: d["kind"] == "Job"):  # the Job last, as its weight
        answer = kind.apply(doc, boot_namespace)
        assert answer.returncode == 0, answer.stderr
    job = next(d for d in docs if d["kind"] == "Job")["metadata"]["name"]

    def finished() -> dict[str, Any] | None:
        status = kind.get("job", job, boot_namespace).get("status") or {}
        return status if status.get("succeeded") or status.get("failed") else None

    status = kind.wait_for(
        f"Job {job}", finished, 180, lambda: kind.diagnose(boot_namespace)
    )  # fmt: skip
    logs = kind.kubectl("logs", f"job/{job}", "-n", boot_namespace, check=False).stdout
    assert status.get("succeeded") == 1, f"{status}\n{logs}\n{kind.diagnose(boot_namespace)}"
    assert "applied ImagePolicy/kind-bootstrap" in logs
    for kind_name in ("imagepolicy", "clusterkopfpeering"):
        shown = kind.kubectl(
            "get", kind_name, "kind-bootstrap", "-o", "json", "--show-managed-fields"
        )
        got = json.loads(shown.stdout)["metadata"]
        assert got["annotations"]["meta.helm.sh/release-name"] == "boot"
        assert got["annotations"]["meta.helm.sh/release-namespace"] == boot_namespace
        assert got["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        managers = {m["manager"] for m in got["managedFields"]}
        assert managers == {"helm"}, managers
    policy = kind.get("imagepolicy", "kind-bootstrap")
    assert policy["spec"]["match"]["namespaces"] == ["kind-no-such-namespace"]
