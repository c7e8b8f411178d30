"""Property: whatever the API server sends and whatever a registry serves, the webhook answers.

Hypothesis generates AdmissionReviews (well-formed envelopes around any JSON: unicode, huge and
empty values, wrong types) and image manifests and configs of any shape, and sends the reviews
through the whole app (`create_app`) to /validate and /mutate. It asserts:

* never a 5xx: with `failurePolicy: Ignore` a 500 admits anything;
* a review that parses always gets a well-formed AdmissionReview back with the request's uid;
  one that does not gets a 400 that says why;
* no answer comes from the last-resort fallback: an exception out of the decision path is a
  bug even when the fallback turns it into an onError decision.

The registry is an `httpx.MockTransport` here, on purpose: a real registry would need a push per
example (thousands per run). What it serves is what a hostile registry could serve; the
real-registry tests (tests/integration) cover the real path.

Budget: the `ci` profile (the default) runs a fixed number of examples; `make fuzz` selects the
`fuzz` profile (HYPOTHESIS_PROFILE=fuzz) for a long run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook.admission.app import create_app
from webhook.admission.models import review_from
from webhook.context import ProcessContext
from webhook.k8s.cluster import NoCluster
from webhook.policy.model import ImagePolicy
from webhook.policy.store import StaticPolicies
from webhook.registry import mediatypes as mt
from webhook.registry.auth import Keyring
from webhook.registry.client import RegistryClient
from webhook.settings import RegistrySettings, Settings

settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "fuzz",
    max_examples=20_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

HOST = "registry.fuzz"
_counter = itertools.count()

# ---- what a hostile registry serves -----------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["", "0", "\u00b2", "root", "65532:65532", "a" * 5000, "sh -c 'a & b'"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=16,
)
str_lists = st.lists(st.text(max_size=30), max_size=4) | json_values


@st.composite
def image_configs(draw: st.DrawFn) -> dict[str, Any]:
    inner = {
        "User": draw(st.text(max_size=20) | json_values),
        "Entrypoint": draw(str_lists),
        "Cmd": draw(str_lists),
        "Labels": draw(
            st.dictionaries(st.text(max_size=40), st.text(max_size=40), max_size=3) | json_values
        ),
    }
    config: dict[str, Any] = {
        "architecture": draw(st.sampled_from(["amd64", "arm64", "", "s390x"]) | json_values),
        "os": draw(st.sampled_from(["linux", "windows", ""]) | json_values),
        "config": draw(st.just(inner) | json_values),
        "rootfs": draw(
            st.fixed_dictionaries({"type": st.just("layers"), "diff_ids": str_lists}) | json_values
        ),
    }
    return config


@st.composite
def served_images(draw: st.DrawFn) -> dict[str, tuple[int, bytes, str]]:
    """Path → (status, body, content type) for one image, well-formed or not."""
    config = json.dumps(draw(image_configs())).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    layers = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "mediaType": st.just("application/vnd.oci.image.layer.v1.tar+gzip"),
                    "digest": st.just("sha256:" + "e" * 64),
                    "size": st.integers(min_value=-1, max_value=2**63) | json_values,
                }
            ),
            max_size=3,
        )
        | json_values
    )
    manifest: Any = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": layers,
        "annotations": draw(
            st.dictionaries(st.text(max_size=30), st.text(max_size=30), max_size=2) | json_values
        ),
    }
    if draw(st.booleans()):
        manifest = draw(json_values)
    body = json.dumps(manifest).encode()
    status = draw(st.sampled_from([200, 200, 200, 401, 404, 429, 500]))
    return {
        "manifest": (
            status,
            body,
            draw(st.sampled_from([mt.OCI_MANIFEST, "application/json", ""])),
        ),
        f"blobs/{config_digest}": (200, config, "application/json"),
    }


class HostileRegistry:
    """Serves the current example's image under a fresh name (no cache carries verdicts over)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[int, bytes, str]] = {}

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        for suffix, (status, body, content_type) in self.files.items():
            if (suffix == "manifest" and "/manifests/" in path) or path.endswith(suffix):
                headers = {"Content-Type": content_type} if content_type else {}
                return httpx.Response(status, content=body, headers=headers)
        return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN"}]})


REGISTRY = HostileRegistry()


# ---- what the API server sends ----------------------------------------------------------------


@st.composite
def containers(draw: st.DrawFn, image: str) -> Any:
    item: dict[str, Any] = {
        "name": draw(st.text(max_size=20) | json_values),
        "image": draw(st.just(image) | st.text(max_size=60) | json_values),
    }
    for key in ("command", "args"):
        if draw(st.booleans()):
            item[key] = draw(str_lists)
    if draw(st.booleans()):
        item["securityContext"] = draw(
            st.fixed_dictionaries(
                {"runAsUser": st.integers(min_value=-5, max_value=2**40) | json_values}
            )
            | json_values
        )
    return draw(st.just(item) | json_values)


@st.composite
def reviews(draw: st.DrawFn, image: str) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(["Pod", "Deployment", "CronJob", "Job", "ConfigMap"]) | st.text(max_size=12)
    )
    pod_spec: Any = {
        "containers": draw(st.lists(containers(image), max_size=3) | json_values),
        "initContainers": draw(st.lists(containers(image), max_size=2) | json_values),
        "ephemeralContainers": draw(st.lists(containers(image), max_size=1) | json_values),
        "securityContext": draw(json_values),
        "imagePullSecrets": draw(json_values),
        "serviceAccountName": draw(json_values),
        "nodeSelector": draw(json_values),
        "affinity": draw(json_values),
    }
    body: Any = (
        pod_spec
        if kind == "Pod"
        else {"template": {"spec": pod_spec}, "jobTemplate": draw(json_values)}
    )
    metadata = draw(
        st.fixed_dictionaries(
            {"name": st.text(max_size=20), "namespace": st.text(max_size=20)},
            optional={
                "ownerReferences": json_values,
                "annotations": json_values,
                "labels": json_values,
            },
        )
        | json_values
    )
    obj: Any = {"apiVersion": "v1", "kind": kind, "metadata": metadata, "spec": body}
    if draw(st.integers(0, 9)) == 0:
        obj = draw(json_values)
    operation = draw(st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT"]))
    request = {
        "uid": draw(st.text(min_size=1, max_size=40)),
        "kind": {"group": "", "version": "v1", "kind": kind},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "subResource": draw(st.none() | st.sampled_from(["ephemeralcontainers", "status"])),
        "name": draw(st.none() | st.text(max_size=20)),
        "namespace": draw(
            st.none() | st.sampled_from(["team-a", "kube-system", ""]) | st.text(max_size=20)
        ),
        "operation": operation,
        "object": obj,
        "oldObject": draw(st.none() | st.just(obj) | json_values)
        if operation == "UPDATE"
        else None,
        "dryRun": draw(st.booleans()),
    }
    review: Any = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": request,
    }
    if draw(st.integers(0, 19)) == 0:
        review = draw(json_values)
    return review


# ---- the property ----------------------------------------------------------------------------


class Errors:
    """Counts the app's last-resort fallbacks (`imagegate_errors{reason="internal"}`)."""

    def __init__(self, client: TestClient) -> None:
        self._client = client

    def internal(self) -> float:
        text = self._client.get("/metrics").text
        for line in text.splitlines():
            if line.startswith('imagegate_errors_total{reason="internal"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    config = Settings(registry=RegistrySettings(retries=0, negative_ttl_seconds=0))
    registry = RegistryClient(
        config.registry, Keyring.empty(), httpx.MockTransport(REGISTRY.handler)
    )
    context = ProcessContext.from_settings(config, registry=registry, result_ttl=0)
    strict = ImagePolicy.model_validate(
        {
            "metadata": {"name": "strict"},
            "spec": {"rules": {"immutableReference": {"enabled": True, "mode": "pinOnAdmission"}}},
        }
    )
    policies = StaticPolicies(
        [
            strict,
            ImagePolicy.model_validate(
                {"metadata": {"name": "audit"}, "spec": {"mode": "audit", "onError": "allow"}}
            ),
        ]
    )
    app = create_app(config, context=context, cluster=NoCluster(), policies=policies)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@given(data=st.data())
def test_every_review_gets_a_well_formed_answer_and_never_a_5xx(
    client: TestClient, data: st.DataObject
) -> None:
    image = f"{HOST}/fuzz/app{next(_counter)}:1"
    REGISTRY.files = data.draw(served_images(), label="registry")
    review = data.draw(reviews(image), label="review")
    before = Errors(client).internal()
    for endpoint in ("/validate", "/mutate"):
        answer = client.post(endpoint, content=json.dumps(review, allow_nan=False).encode())
        assert answer.status_code < 500, answer.text
        try:
            parsed = review_from(review)
        except Exception:
            assert answer.status_code == 400, answer.text
            assert answer.text  # says why
            continue
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["apiVersion"] == "admission.k8s.io/v1"
        assert body["kind"] == "AdmissionReview"
        assert body["response"]["uid"] == parsed.request.uid
        assert isinstance(body["response"]["allowed"], bool)
        if not body["response"]["allowed"]:
            assert body["response"]["status"]["message"]
    assert Errors(client).internal() == before, "an exception reached the last-resort fallback"
