"""The e2e control plane is a real Kubernetes API server: it stores CRDs and custom objects,
enforces RBAC for ServiceAccount tokens, calls admission webhooks in ``url`` mode and
serves server-side dry runs. Every later e2e proof (chart, webhook, operator) relies on these."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.cluster import Cluster
from webhook.admission.tls import self_signed

CRD_GROUP = "e2e.imagegate.dev"


def _eventually(check: Callable[[], bool], timeout: float = 15.0, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _token(kubeconfig: Path) -> str:
    config = yaml.safe_load(kubeconfig.read_text())
    return str(config["users"][0]["user"]["token"])


def test_api_server_answers_readyz_and_version(cluster: Cluster) -> None:
    ready, detail = cluster.readyz()
    assert ready, detail

    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert version["major"] == "1"
    assert int(version["minor"].rstrip("+")) >= 30, version
    assert version["gitVersion"].startswith("v1."), version

    namespaces = cluster.kubectl("get", "namespaces", "-o", "name").stdout.split()
    assert "namespace/default" in namespaces
    assert "namespace/kube-system" in namespaces


def test_admin_kubeconfig_is_a_system_masters_client_certificate(cluster: Cluster) -> None:
    review = json.loads(cluster.kubectl("auth", "whoami", "-o", "json").stdout)
    user = review["status"]["userInfo"]
    assert user["username"] == "imagegate-admin"
    assert "system:masters" in user["groups"]


def test_crd_becomes_established_and_stores_custom_objects(cluster: Cluster) -> None:
    plural = f"widgets{uuid.uuid4().hex[:6]}"
    kind = "Widget" + plural[7:]
    image = "localhost:5001/app@sha256:" + "a" * 64
    crd: dict[str, Any] = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{CRD_GROUP}"},
        "spec": {
            "group": CRD_GROUP,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": plural[:-1], "kind": kind},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"image": {"type": "string"}},
                                    "required": ["image"],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(crd))
    cluster.kubectl(
        "wait", "--for=condition=Established", f"crd/{plural}.{CRD_GROUP}", "--timeout=30s"
    )

    obj: dict[str, Any] = {
        "apiVersion": f"{CRD_GROUP}/v1",
        "kind": kind,
        "metadata": {"name": "w1", "namespace": "default"},
        "spec": {"image": image},
    }
    # Discovery of a brand-new group can lag a moment behind Established.
    assert _eventually(
        lambda: (
            cluster.kubectl("apply", "-f", "-", input=json.dumps(obj), check=False).returncode == 0
        )
    ), "custom object not accepted"
    stored = json.loads(
        cluster.kubectl("get", f"{plural}.{CRD_GROUP}", "w1", "-n", "default", "-o", "json").stdout
    )
    assert stored["spec"]["image"] == image
    assert stored["metadata"]["uid"]

    bad = {**obj, "metadata": {"name": "w2", "namespace": "default"}, "spec": {}}
    refused = cluster.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert refused.returncode != 0
    assert "spec.image: Required value" in refused.stderr


def test_rbac_refuses_an_unbound_service_account_and_allows_it_once_bound(
    cluster: Cluster, namespace: str
) -> None:
    kubeconfig = cluster.serviceaccount_kubeconfig(namespace, "reader")
    whoami = json.loads(
        cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig).stdout
    )
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:reader"

    url = f"{cluster.server}/api/v1/namespaces/{namespace}/configmaps"
    headers = {"Authorization": f"Bearer {_token(kubeconfig)}"}
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cluster.ca_path))) as client:
        refused = client.get(url, headers=headers)
        assert refused.status_code == 403, refused.text
        assert refused.json()["reason"] == "Forbidden"
        denied = cluster.kubectl("get", "configmaps", kubeconfig=kubeconfig, check=False)
        assert denied.returncode != 0
        assert "Forbidden" in denied.stderr

        cluster.kubectl(
            "create",
            "role",
            "cm-reader",
            "-n",
            namespace,
            "--verb=get,list",
            "--resource=configmaps",
        )
        cluster.kubectl(
            "create",
            "rolebinding",
            "cm-reader",
            "-n",
            namespace,
            "--role=cm-reader",
            f"--serviceaccount={namespace}:reader",
        )
        assert _eventually(lambda: client.get(url, headers=headers).status_code == 200)
        # Only what the Role grants: writing and other namespaces stay forbidden.
        created = client.post(
            url,
            headers=headers,
            json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
        )
        assert created.status_code == 403
        elsewhere = client.get(
            f"{cluster.server}/api/v1/namespaces/default/configmaps", headers=headers
        )
        assert elsewhere.status_code == 403


def test_pods_are_stored_without_a_kubelet_or_default_service_account(
    cluster: Cluster, namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "localhost:5001/fixtures/good:1"}]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    stored = json.loads(cluster.kubectl("get", "pod", "p", "-n", namespace, "-o", "json").stdout)
    assert stored["spec"]["containers"][0]["image"] == "localhost:5001/fixtures/good:1"
    assert stored["status"]["phase"] == "Pending"  # nothing schedules or runs it


def test_server_side_dry_run_validates_without_storing(cluster: Cluster, namespace: str) -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "dry", "namespace": namespace},
        "data": {"k": "v"},
    }
    out = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(cm))
    assert "(server dry run)" in out.stdout
    missing = cluster.kubectl("get", "configmap", "dry", "-n", namespace, check=False)
    assert missing.returncode != 0
    assert "NotFound" in missing.stderr

    invalid = {**cm, "metadata": {"name": "Not_A_Valid_Name", "namespace": namespace}}
    refused = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(invalid), check=False
    )
    assert refused.returncode != 0
    assert "Invalid value" in refused.stderr


# --------------------------------------------------------------------------------------------
# A validating webhook in `url` mode, served by the test on 127.0.0.1 over TLS.


@dataclass
class _WebhookServer:
    url: str
    ca_bundle: str
    reviews: list[dict[str, Any]] = field(default_factory=list)


def _serve_webhook(tmp_path: Path, deny_prefix: str) -> Iterator[_WebhookServer]:
    certs = self_signed(["127.0.0.1"], tmp_path / "tls")
    reviews: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            reviews.append(body)
            request = body["request"]
            name = request["name"] or request["object"]["metadata"].get("name", "")
            allowed = not name.startswith(deny_prefix)
            response: dict[str, Any] = {"uid": request["uid"], "allowed": allowed}
            if not allowed:
                response["status"] = {
                    "code": 403,
                    "message": f"e2e webhook denies {name}: names starting {deny_prefix!r}",
                }
            payload = json.dumps(
                {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "response": response,
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certs.cert), str(certs.key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield _WebhookServer(
            url=f"https://127.0.0.1:{server.server_address[1]}/validate",
            ca_bundle=certs.ca_bundle(),
            reviews=reviews,
        )
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def webhook_server(tmp_path: Path) -> Iterator[_WebhookServer]:
    yield from _serve_webhook(tmp_path, deny_prefix="forbidden-")


def test_validating_webhook_in_url_mode_is_called_and_its_denial_reaches_the_client(
    cluster: Cluster, namespace: str, webhook_server: _WebhookServer
) -> None:
    config_name = f"e2e-deny-{namespace}"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": config_name},
        "webhooks": [
            {
                "name": "deny.e2e.imagegate.dev",
                "clientConfig": {"url": webhook_server.url, "caBundle": webhook_server.ca_bundle},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["configmaps"],
                    }
                ],
                # Only this test's namespace: other tests never meet this webhook.
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }
        ],
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(config))
    try:
        # The API server picks up webhook configurations through an informer: wait for a call.
        attempt = iter(range(1000))
        assert _eventually(
            lambda: (
                cluster.kubectl(
                    "create", "configmap", f"probe-{next(attempt)}", "-n", namespace, check=False
                ).returncode
                == 0
                and bool(webhook_server.reviews)
            )
        ), "the API server never called the webhook"

        calls_before = len(webhook_server.reviews)
        denied = cluster.kubectl(
            "create", "configmap", "forbidden-one", "-n", namespace, check=False
        )
        assert denied.returncode != 0
        assert 'admission webhook "deny.e2e.imagegate.dev" denied the request' in denied.stderr
        assert "e2e webhook denies forbidden-one" in denied.stderr
        assert len(webhook_server.reviews) == calls_before + 1
        review = webhook_server.reviews[-1]
        assert review["kind"] == "AdmissionReview"
        assert review["request"]["operation"] == "CREATE"
        assert review["request"]["namespace"] == namespace
        assert review["request"]["userInfo"]["username"] == "imagegate-admin"
        assert review["request"]["dryRun"] is False
        gone = cluster.kubectl("get", "configmap", "forbidden-one", "-n", namespace, check=False)
        assert "NotFound" in gone.stderr

        # Server-side dry run goes through the webhook too, flagged dryRun.
        dry = cluster.kubectl(
            "create", "configmap", "forbidden-dry", "-n", namespace, "--dry-run=server", check=False
        )
        assert "e2e webhook denies forbidden-dry" in dry.stderr
        assert webhook_server.reviews[-1]["request"]["dryRun"] is True
    finally:
        cluster.kubectl("delete", "validatingwebhookconfiguration", config_name, check=False)
