"""pod_template() and covered_by_owner(): the fields `make mutate` found no test reading.

`runAsNonRoot` (container over pod), the legacy `serviceAccount` field, ill-typed securityContext
values read as "not set", and the owner checks that must answer False (not raise) for objects
without a pod spec or metadata.
"""

from __future__ import annotations

from typing import Any

import pytest

from webhook.policy.outcome import ContainerContext
from webhook.policy.workloads import covered_by_owner, pod_template

IMAGE = "localhost:5001/team/app:1"


def pod(spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"namespace": "team-a", **meta}, "spec": spec}


def context(spec: dict[str, Any]) -> ContainerContext:
    template = pod_template("Pod", pod(spec))
    assert template is not None
    [container] = template.containers
    return container.context


@pytest.mark.parametrize(
    ("container", "pod_level", "wanted"),
    [
        pytest.param(True, False, True, id="container-true-over-pod-false"),
        pytest.param(False, True, False, id="container-false-over-pod-true"),
        pytest.param(None, True, True, id="pod-true-when-container-unset"),
        pytest.param(None, False, False, id="pod-false-when-container-unset"),
        pytest.param(None, None, None, id="neither"),
        pytest.param("true", None, None, id="a-string-is-not-a-bool"),
        pytest.param(None, 1, None, id="an-int-is-not-a-bool"),
    ],
)
def test_run_as_non_root_is_the_containers_else_the_pods(
    container: object, pod_level: object, wanted: bool | None
) -> None:
    security = {} if container is None else {"runAsNonRoot": container}
    pod_security = {} if pod_level is None else {"runAsNonRoot": pod_level}
    spec = {
        "securityContext": pod_security,
        "containers": [{"name": "app", "image": IMAGE, "securityContext": security}],
    }
    assert context(spec).run_as_non_root is wanted


@pytest.mark.parametrize(
    "value", ["1000", True, 1.5, None], ids=["string", "bool", "float", "none"]
)
def test_a_run_as_user_that_is_not_an_int_is_not_set(value: object) -> None:
    spec = {
        "securityContext": {"runAsUser": value},
        "containers": [{"name": "app", "image": IMAGE, "securityContext": {"runAsUser": value}}],
    }
    found = context(spec)
    assert (found.run_as_user, found.pod_run_as_user) == (None, None)


@pytest.mark.parametrize(
    ("accounts", "wanted"),
    [
        pytest.param({"serviceAccountName": "builder"}, "builder", id="name"),
        pytest.param({"serviceAccount": "legacy"}, "legacy", id="deprecated-field"),
        pytest.param({"serviceAccountName": "new", "serviceAccount": "old"}, "new", id="both"),
        pytest.param({}, "default", id="neither"),
    ],
)
def test_the_service_account_falls_back_to_the_deprecated_field_then_default(
    accounts: dict[str, str], wanted: str
) -> None:
    template = pod_template("Pod", pod({"containers": [{"image": IMAGE}], **accounts}))
    assert template is not None
    assert (template.kind, template.service_account) == ("Pod", wanted)


def replica_set(spec: dict[str, Any] | None, namespace: str | None = "team-a") -> dict[str, Any]:
    meta = {"namespace": namespace} if namespace is not None else {}
    body: dict[str, Any] = {"kind": "ReplicaSet", "metadata": meta}
    if spec is not None:
        body["spec"] = {"template": {"spec": spec}}
    return body


def test_an_owner_of_a_kind_that_owns_nothing_does_not_cover() -> None:
    deployment = {"kind": "Deployment", "metadata": {"namespace": "team-a"}}
    assert not covered_by_owner(deployment, replica_set({"containers": [{"image": IMAGE}]}))


def test_an_owner_without_a_pod_spec_does_not_cover() -> None:
    mine = pod({"containers": [{"image": IMAGE}]})
    assert not covered_by_owner(mine, replica_set(None))


def test_objects_without_metadata_are_compared_as_namespace_less() -> None:
    mine = {"kind": "Pod", "spec": {"containers": [{"image": IMAGE}]}}
    assert covered_by_owner(mine, replica_set({"containers": [{"image": IMAGE}]}, None))
    assert not covered_by_owner(mine, replica_set({"containers": [{"image": IMAGE}]}))


def test_a_pinned_image_is_matched_by_what_is_before_its_first_at() -> None:
    owner = replica_set({"containers": [{"image": IMAGE}]})
    assert covered_by_owner(pod({"containers": [{"image": f"{IMAGE}@sha256:{'a' * 64}"}]}), owner)
    odd = replica_set({"containers": [{"image": f"{IMAGE}@x"}]})
    assert not covered_by_owner(pod({"containers": [{"image": f"{IMAGE}@x@y"}]}), odd)
