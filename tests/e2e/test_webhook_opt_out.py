"""The webhook's own opt-out check, with namespace labels read from a real API server.

The chart's webhook configurations already skip opted-out namespaces (a ``namespaceSelector``),
so a request the API server sends never tests the webhook's own check: the defence for a
webhook registered without that selector. Here AdmissionReviews go straight to
``imagegate serve`` (Kubernetes access ``required``, admin kubeconfig), which reads each
namespace's labels from the control plane of ``tests/e2e/conftest.py``: the branch that
``tests/integration/test_webhook.py`` (Kubernetes access off: no labels) never reaches. One
enforce policy without ``match`` applies everywhere, so a pod admitted unchecked was admitted
by the opt-out label alone. The in-process route (a stand-in cluster reader) is a row of
``tests/unit/test_admission_service_table.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.reviews import container, pod_spec, review
from tests.support.cluster import Cluster
from tests.support.kube import fresh_namespace
from tests.support.webhook import WebhookServer, start_catch_all_webhook
from webhook.settings import WebhookSettings

pytestmark = pytest.mark.integration

OPT_OUT_LABEL = WebhookSettings.model_fields["opt_out_label"].default


@pytest.fixture(scope="module")
def webhook(
    cluster: Cluster, fixture_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebhookServer]:
    server = start_catch_all_webhook(
        tmp_path_factory.mktemp("webhook-opt-out"),
        fixture_images["base"],
        {"KUBECONFIG": str(cluster.kubeconfig), "IMAGEGATE_WEBHOOK_KUBERNETES": "required"},
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def answer(server: WebhookServer, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    with server.client() as http:
        response = http.post(endpoint, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["response"]
    assert result["uid"] == body["request"]["uid"]
    return result


@pytest.mark.parametrize(
    ("labels", "checked"),
    [
        pytest.param({OPT_OUT_LABEL: "true"}, False, id="opted-out"),
        pytest.param({OPT_OUT_LABEL: "false"}, True, id="label-says-false"),
        pytest.param({"team": "legacy"}, True, id="other-labels"),
    ],
)
def test_a_namespace_labelled_out_is_neither_checked_nor_rewritten(
    cluster: Cluster,
    webhook: WebhookServer,
    fixture_images: dict[str, str],
    labels: dict[str, str],
    checked: bool,
) -> None:
    spec = pod_spec(container("app", fixture_images["zero"]))  # USER 0:0
    with fresh_namespace(cluster, "e2e-optout", labels) as namespace:
        validated = answer(webhook, "/validate", review("Pod", spec, namespace=namespace))
        mutated = answer(webhook, "/mutate", review("Pod", spec, namespace=namespace))
    # the labels were read (a failed read is logged, and leaves the namespace checked)
    assert "namespace labels unavailable" not in webhook.logs()
    if not checked:
        assert validated == {"uid": validated["uid"], "allowed": True}
        assert mutated == {"uid": mutated["uid"], "allowed": True}
        return
    assert validated["allowed"] is False
    message = validated["status"]["message"]
    assert f"imagegate denied Pod {namespace}/web" in message
    assert "non-root-user" in message
    assert mutated["allowed"] is True
    assert "patch" in mutated  # pinned to the digest it checked
