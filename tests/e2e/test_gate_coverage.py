"""No way around the gate, against a real API server (the chart installed with helm, the webhook
served from the host in url mode, as in test_imagegate.py).

* Every way an image enters a Pod reaches the webhook: an ephemeral container added through the
  ``pods/ephemeralcontainers`` subresource (``kubectl debug``) is checked and pinned like any
  other container.
* Who may opt a namespace out: the chart's ValidatingAdmissionPolicy lets only the groups in
  ``exemptions.allowedGroups`` (default ``system:masters``) add, change or remove the opt-out
  label; anyone else gets 403 from the policy (with RBAC that would allow the update).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from tests.e2e.conftest import Install
from tests.support.cluster import Cluster
from tests.support.kube import fresh_namespace
from tests.support.manifests import pod
from webhook.settings import WebhookSettings

pytestmark = pytest.mark.integration

OPT_OUT_LABEL = WebhookSettings.model_fields["opt_out_label"].default
DENIED_BY_WEBHOOK = 'admission webhook "validate.imagegate.dev" denied the request'
OPT_OUT_MESSAGE = f"may add, change or remove the Namespace label {OPT_OUT_LABEL}"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

# A tenant: may create, update and label Namespaces (and their subresources) through RBAC, not
# in any group exemptions.allowedGroups names.
TENANT_USER = "e2e-tenant"
TENANT_GROUP = "e2e-tenants"
AS_TENANT = {"Impersonate-User": TENANT_USER, "Impersonate-Group": TENANT_GROUP}


@pytest.fixture
def core(cluster: Cluster) -> Iterator[Any]:
    """kubernetes' CoreV1Api on the admin kubeconfig (client certificate in system:masters);
    pass ``_headers=AS_TENANT`` to a call to make it as the tenant (impersonation)."""
    api_client = kubernetes.config.new_client_from_config(
        config_file=str(cluster.kubeconfig), persist_config=False
    )
    try:
        yield kubernetes.client.CoreV1Api(api_client)
    finally:
        api_client.close()


# ---- item 1: every way an image enters --------------------------------------------------------


def _add_ephemeral_container(core: Any, namespace: str, pod_name: str, image: str) -> Any:
    """What `kubectl debug POD --image=IMAGE` sends: a patch of the ephemeralcontainers
    subresource (operation UPDATE, the whole Pod as the object)."""
    debugger = {"name": "debugger", "image": image, "stdin": True, "tty": True}
    body = {"spec": {"ephemeralContainers": [debugger]}}
    return core.patch_namespaced_pod_ephemeralcontainers(
        pod_name, namespace, body, _content_type=STRATEGIC_MERGE_PATCH
    )


def _stored_pod(installed: Install, namespace: str, name: str) -> dict[str, Any]:
    out = installed.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout
    stored: dict[str, Any] = json.loads(out)
    return stored


def test_an_ephemeral_container_with_a_root_image_is_denied(
    installed: Install, core: Any, namespace: str, fixture_images: dict[str, str]
) -> None:
    admitted = installed.apply(pod("target", fixture_images["good"]), "-n", namespace)
    assert admitted.returncode == 0, admitted.stderr

    with pytest.raises(ApiException) as denied:
        _add_ephemeral_container(core, namespace, "target", fixture_images["root-script"])

    assert denied.value.status == 403
    message = json.loads(denied.value.body)["message"]
    assert DENIED_BY_WEBHOOK in message
    assert "ephemeral container debugger" in message
    assert "non-root-user" in message
    assert "ephemeralContainers" not in _stored_pod(installed, namespace, "target")["spec"]


def test_kubectl_debug_with_a_root_image_is_denied(
    installed: Install, namespace: str, fixture_images: dict[str, str]
) -> None:
    admitted = installed.apply(pod("target", fixture_images["good"]), "-n", namespace)
    assert admitted.returncode == 0, admitted.stderr

    debug = installed.kubectl(
        "debug", "target", "-n", namespace, "--image", fixture_images["root-script"],
        "--container", "debugger", "--profile", "general", check=False,
    )  # fmt: skip

    assert debug.returncode != 0, debug.stdout
    assert DENIED_BY_WEBHOOK in debug.stderr
    assert "non-root-user" in debug.stderr
    assert "ephemeralContainers" not in _stored_pod(installed, namespace, "target")["spec"]


def test_an_ephemeral_container_with_a_good_image_is_pinned_to_the_checked_digest(
    installed: Install, core: Any, namespace: str, fixture_images: dict[str, str]
) -> None:
    good = fixture_images["good"]
    admitted = installed.apply(pod("target", good), "-n", namespace)
    assert admitted.returncode == 0, admitted.stderr

    _add_ephemeral_container(core, namespace, "target", good)

    (debugger,) = _stored_pod(installed, namespace, "target")["spec"]["ephemeralContainers"]
    assert debugger["image"].startswith(f"{good}@sha256:")


# ---- item 9: who may opt a namespace out ------------------------------------------------------


@pytest.fixture(scope="module")
def tenant_rbac(installed: Install) -> Iterator[None]:
    """RBAC lets the tenant create, update and patch Namespaces (and their subresources), so that a
    denial can only come from the ValidatingAdmissionPolicy."""
    name = "e2e-namespace-editor"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["namespaces", "namespaces/status", "namespaces/finalize"],
                "verbs": ["get", "list", "watch", "create", "update", "patch"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": TENANT_GROUP}
        ],
    }
    manifest = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [role, binding]})
    installed.kubectl("apply", "-f", "-", stdin=manifest)
    yield
    installed.kubectl("delete", "clusterrolebinding,clusterrole", name, check=False)


@pytest.fixture
def tenant(installed: Install, tenant_rbac: None, core: Any) -> Any:
    """Admin's CoreV1Api (pass ``headers=AS_TENANT`` to act as the tenant), once the API server
    enforces the chart's policy: policies and RBAC reach it through informers, asynchronously,
    so a server-side dry run probes until the policy answers."""
    with fresh_namespace(installed.cluster, "e2e-probe") as probe:
        deadline, last = time.monotonic() + 30, "admitted"
        while time.monotonic() < deadline:
            try:
                _label(core, probe, "true", headers=AS_TENANT, dry_run="All")
            except ApiException as e:
                if e.status != 403:
                    raise
                if OPT_OUT_MESSAGE in str(e.body):
                    return core
                last = str(e.body)  # RBAC not there yet
            time.sleep(0.5)
    pytest.fail(f"the opt-out ValidatingAdmissionPolicy was not enforced within 30 s: {last}")


def _label(
    core: Any,
    namespace: str,
    value: str | None,
    *,
    headers: dict[str, str] | None = None,
    key: str = OPT_OUT_LABEL,
    dry_run: str | None = None,
) -> Any:
    """Set (or with None remove) a label of ``namespace``, by a JSON merge patch."""
    body = {"metadata": {"labels": {key: value}}}
    return core.patch_namespace(
        namespace, body, dry_run=dry_run, _content_type=MERGE_PATCH, _headers=headers
    )


def _labels(core: Any, namespace: str) -> dict[str, str]:
    return dict(core.read_namespace(namespace).metadata.labels or {})


def _assert_denied_by_the_policy(caught: pytest.ExceptionInfo[ApiException]) -> None:
    assert caught.value.status == 403
    message = json.loads(caught.value.body)["message"]
    assert "ValidatingAdmissionPolicy" in message
    assert OPT_OUT_MESSAGE in message


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param(None, "true", id="add"),
        pytest.param("false", "true", id="change"),
        pytest.param("true", None, id="remove"),
        pytest.param("true", "", id="empty"),
    ],
)
def test_a_tenant_cannot_add_change_or_remove_the_opt_out_label(
    tenant: Any, namespace: str, before: str | None, after: str | None
) -> None:
    if before is not None:
        _label(tenant, namespace, before)  # as admin

    with pytest.raises(ApiException) as caught:
        _label(tenant, namespace, after, headers=AS_TENANT)

    _assert_denied_by_the_policy(caught)
    assert _labels(tenant, namespace).get(OPT_OUT_LABEL) == before


@pytest.mark.parametrize("subresource", ["status", "finalize"])
def test_a_tenant_cannot_add_the_opt_out_label_through_a_subresource(
    tenant: Any, namespace: str, subresource: str
) -> None:
    """Both subresources write the Namespace's metadata too (tried without the policy: the
    label is stored)."""
    body = tenant.read_namespace(namespace)
    body.metadata.labels[OPT_OUT_LABEL] = "true"
    replace = getattr(tenant, f"replace_namespace_{subresource}")

    with pytest.raises(ApiException) as caught:
        replace(namespace, body, _headers=AS_TENANT)

    _assert_denied_by_the_policy(caught)
    assert OPT_OUT_LABEL not in _labels(tenant, namespace)


def test_a_tenant_cannot_create_an_opted_out_namespace(tenant: Any) -> None:
    name = f"e2e-optout-{time.monotonic_ns() % 10**8}"
    body = {"metadata": {"name": name, "labels": {OPT_OUT_LABEL: "true"}}}

    with pytest.raises(ApiException) as caught:
        tenant.create_namespace(body, _headers=AS_TENANT)

    _assert_denied_by_the_policy(caught)


def test_a_tenant_may_still_edit_other_labels(tenant: Any, namespace: str) -> None:
    _label(tenant, namespace, "true")  # opted out by an admin, kept as it is

    _label(tenant, namespace, "payments", headers=AS_TENANT, key="team")

    labels = _labels(tenant, namespace)
    assert (labels["team"], labels[OPT_OUT_LABEL]) == ("payments", "true")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(None, id="admin-certificate"),
        pytest.param(
            {"Impersonate-User": "e2e-admin", "Impersonate-Group": "system:masters"},
            id="impersonated-system-masters",
        ),
    ],
)
def test_system_masters_may_add_change_and_remove_the_opt_out_label(
    tenant: Any, namespace: str, headers: dict[str, str] | None
) -> None:
    for value in ("true", "false", None):
        _label(tenant, namespace, value, headers=headers)
        assert _labels(tenant, namespace).get(OPT_OUT_LABEL) == value
