"""The webhook app, in process, when the registry's HTTP layer fails in ways no server can.

A real misbehaving server covers stalls, lies, redirects and garbage
(test_registry_client_faults.py). What it cannot produce on demand is a failure inside the
client's own stack: a proxy refusing, a local protocol error, a bad URL. Those are injected
here with `httpx.MockTransport`, through the seam `create_app(context=...)` offers, and every
one must end as the policy's `onError` decision: never a 5xx, never an unexplained answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.integration.reviews import container, pod_spec, review
from webhook.admission.app import create_app
from webhook.context import ProcessContext
from webhook.k8s.cluster import NoCluster
from webhook.policy.model import ImagePolicy
from webhook.policy.store import StaticPolicies
from webhook.registry.auth import Keyring
from webhook.registry.client import RegistryClient
from webhook.settings import RegistrySettings, Settings

IMAGE = "registry.example/app:1"


def _raise(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


FAULTS: dict[str, Callable[[httpx.Request], httpx.Response]] = {
    "proxy-error": _raise(httpx.ProxyError("proxy refused CONNECT")),
    "local-protocol-error": _raise(httpx.LocalProtocolError("illegal header")),
    "write-error": _raise(httpx.WriteError("broken pipe")),
    "unsupported-protocol": _raise(httpx.UnsupportedProtocol("no gopher")),
    "invalid-url": _raise(httpx.InvalidURL("bad host")),
    "too-many-redirects": _raise(httpx.TooManyRedirects("loop")),
    "decoding-error": _raise(httpx.DecodingError("bad gzip")),
    "bug-in-a-transport": _raise(RuntimeError("transport bug")),
}


def _app(handler: Callable[[httpx.Request], httpx.Response], on_error: str) -> TestClient:
    settings = Settings(registry=RegistrySettings(retries=1, backoff_seconds=0.0))
    registry = RegistryClient(settings.registry, Keyring.empty(), httpx.MockTransport(handler))
    context = ProcessContext.from_settings(settings, registry=registry)
    policy = ImagePolicy.model_validate({"spec": {"onError": on_error}})
    app = create_app(
        settings, context=context, cluster=NoCluster(), policies=StaticPolicies([policy])
    )
    return TestClient(app)


def _validate(client: TestClient) -> tuple[int, dict[str, Any]]:
    body = review("Pod", pod_spec(container("app", IMAGE)))
    answer = client.post("/validate", json=body)
    return answer.status_code, answer.json()["response"] if answer.status_code == 200 else {}


@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "bug-in-a-transport"])
@pytest.mark.parametrize("on_error", ["deny", "allow"])
def test_a_registry_fault_is_the_policys_on_error_decision(fault: str, on_error: str) -> None:
    with _app(FAULTS[fault], on_error) as client:
        status, response = _validate(client)
    assert status == 200
    assert response["allowed"] is (on_error == "allow")
    said = response["status"]["message"] if on_error == "deny" else " ".join(response["warnings"])
    assert IMAGE in said  # the user learns which image could not be inspected


def test_an_unexpected_exception_in_the_transport_still_gets_an_answer() -> None:
    """Even a bug below us is a denial with a reason (fail closed), not a 500."""
    with _app(FAULTS["bug-in-a-transport"], "deny") as client:
        status, response = _validate(client)
    assert status == 200
    assert response["allowed"] is False
