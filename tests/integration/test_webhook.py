"""`imagegate serve` as the API server sees it: a real HTTPS server, real images, real registry."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import signal
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import pytest

from tests.fixtures.images import push_unique
from tests.integration.reviews import (
    BUILDERS,
    container,
    pod_spec,
    realistic_pod_review,
    review,
)
from tests.support.registry import RegistryProcess, await_requests
from tests.support.webhook import WebhookServer, start_catch_all_webhook, start_webhook
from webhook.admission.tls import self_signed

pytestmark = pytest.mark.integration

POLICY = """\
apiVersion: imagegate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: {name}}}
spec:
  mode: {mode}
  onError: {on_error}
  match: {{namespaces: [{namespaces}]}}
  rules:
    allowedBases: {{references: ['{base}']}}
    sizeBudget: {{maxCompressedSize: 2MB}}
"""


def policy(name: str, mode: str, namespaces: str, base: str, on_error: str = "deny") -> str:
    return POLICY.format(name=name, mode=mode, namespaces=namespaces, base=base, on_error=on_error)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, fixture_images: dict[str, str]
) -> Iterator[WebhookServer]:
    """Three namespaces, three modes; `shared` gets an audit and an enforce policy."""
    directory = tmp_path_factory.mktemp("webhook")
    policies = directory / "policies"
    policies.mkdir()
    base = fixture_images["base"]
    (policies / "enforce.yaml").write_text(policy("enforce", "enforce", "prod, shared", base))
    (policies / "warn.yaml").write_text(policy("warn", "warn", "staging", base))
    (policies / "audit.yaml").write_text(policy("audit", "audit", "dev, shared", base))
    (policies / "nopin.yaml").write_text(
        policy("nopin", "enforce", "nopin", base) + "    immutableReference: {enabled: false}\n"
    )
    replacements = directory / "replacements.yaml"
    replacements.write_text("replacements: []\n")
    webhook = start_webhook(
        directory,
        ["--policy", str(policies), "--replacements", str(replacements)],
        env={"IMAGEGATE_WEBHOOK_CERT_RELOAD_SECONDS": "0.3", "IMAGEGATE_NAMESPACE": "imagegate"},
    )
    yield webhook
    webhook.stop()


# Exempt from every policy: the configured list, and the webhook's own namespace.
EXEMPT = ("kube-system", "team-legacy")
OWN_NAMESPACE = "imagegate"


@pytest.fixture(scope="module")
def catch_all(
    tmp_path_factory: pytest.TempPathFactory, fixture_images: dict[str, str]
) -> Iterator[WebhookServer]:
    """One enforce policy for every namespace (`start_catch_all_webhook`) and exemptions: what
    it admits unchecked was admitted by an exemption, not for want of a policy."""
    webhook = start_catch_all_webhook(
        tmp_path_factory.mktemp("webhook-catch-all"),
        fixture_images["base"],
        {
            "IMAGEGATE_WEBHOOK_EXEMPT_NAMESPACES": json.dumps(EXEMPT),
            "IMAGEGATE_NAMESPACE": OWN_NAMESPACE,
        },
    )
    yield webhook
    webhook.stop()


def post(server: WebhookServer, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    with server.client() as http:
        answer = http.post(endpoint, json=body)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    assert data["apiVersion"] == "admission.k8s.io/v1"
    assert data["kind"] == "AdmissionReview"
    response: dict[str, Any] = data["response"]
    assert response["uid"] == body["request"]["uid"]
    return response


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_every_workload_kind_with_a_root_image_is_denied(
    server: WebhookServer, fixture_images: dict[str, str], kind: str
) -> None:
    spec = pod_spec(container("app", fixture_images["root-script"]))
    response = post(server, "/validate", review(kind, spec))
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    message = response["status"]["message"]
    assert f"imagegate denied {kind} prod/web" in message
    assert "container app" in message
    assert "non-root-user" in message
    assert "USER 65532:65532" in message


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_every_workload_kind_with_good_images_is_allowed(
    server: WebhookServer, fixture_images: dict[str, str], kind: str
) -> None:
    spec = pod_spec(
        container("app", fixture_images["good"]), container("tini", fixture_images["tini"])
    )
    response = post(server, "/validate", review(kind, spec))
    assert response == {"uid": response["uid"], "allowed": True}


def test_a_realistic_controller_made_pod_is_answered(
    server: WebhookServer, fixture_images: dict[str, str]
) -> None:
    body = realistic_pod_review(fixture_images["good"], namespace="prod")
    assert post(server, "/validate", body) == {"uid": body["request"]["uid"], "allowed": True}
    bad = realistic_pod_review(fixture_images["zero"], namespace="prod")
    answer = post(server, "/validate", bad)
    assert answer["allowed"] is False
    assert "imagegate denied Pod prod/web-7d9c5b8f6d-*" in answer["status"]["message"]


def test_message_lists_every_violation_of_every_container(
    server: WebhookServer, fixture_images: dict[str, str]
) -> None:
    spec = pod_spec(
        container("app", fixture_images["zero"]),
        container("big", fixture_images["big"]),
        initContainers=[container("setup", fixture_images["shell-chain"])],
    )
    message = post(server, "/validate", review("Pod", spec))["status"]["message"]
    header, *lines = message.splitlines()
    assert header == "imagegate denied Pod prod/web: 3 problem(s)"
    found = {re.match(r"- (.+?) \(.+?\): ([\w-]+): .+", line).groups() for line in lines}  # type: ignore[union-attr]
    assert found == {
        ("init container setup", "single-entrypoint"),
        ("container app", "non-root-user"),
        ("container big", "size-budget"),
    }


@pytest.mark.parametrize(("namespace", "mode"), [("staging", "warn"), ("dev", "audit")])
def test_warn_and_audit_admit_with_warnings(
    server: WebhookServer, fixture_images: dict[str, str], namespace: str, mode: str
) -> None:
    spec = pod_spec(container("app", fixture_images["named-user"]))
    response = post(server, "/validate", review("Deployment", spec, namespace=namespace))
    assert response["allowed"] is True
    [warning] = response["warnings"]
    assert warning.startswith(f"imagegate ({mode}): container app: non-root-user:")
    assert len(warning) <= 256


def test_audit_writes_an_audit_record_unless_dry_run(
    server: WebhookServer, fixture_images: dict[str, str]
) -> None:
    spec = pod_spec(container("app", fixture_images["zero"]))
    real, dry = str(uuid.uuid4()), str(uuid.uuid4())
    post(server, "/validate", review("Pod", spec, namespace="dev", uid=real))
    post(server, "/validate", review("Pod", spec, namespace="dev", uid=dry, dry_run=True))
    time.sleep(0.2)
    records = [
        json.loads(line)
        for line in server.logs().splitlines()
        if line.startswith("{") and "admission audit record" in line
    ]
    uids = {r.get("uid") for r in records}
    assert real in uids
    assert dry not in uids


def test_strictest_mode_wins_per_violation(
    server: WebhookServer, fixture_images: dict[str, str]
) -> None:
    spec = pod_spec(container("app", fixture_images["root-script"]))
    response = post(server, "/validate", review("Pod", spec, namespace="shared"))
    assert response["allowed"] is False, "the enforce policy outranks the audit one"
    assert "warnings" not in response


def test_a_namespace_no_policy_matches_is_not_checked(
    server: WebhookServer, fixture_images: dict[str, str]
) -> None:
    spec = pod_spec(container("app", fixture_images["zero"]))
    body = review("Pod", spec, namespace="no-policy-here")
    assert post(server, "/validate", body) == {"uid": body["request"]["uid"], "allowed": True}
    assert post(server, "/validate", review("Pod", spec))["allowed"] is False  # prod: checked


@pytest.mark.parametrize("namespace", [*EXEMPT, OWN_NAMESPACE])
def test_exempt_namespaces_are_not_checked_even_by_a_policy_for_every_namespace(
    catch_all: WebhookServer, fixture_images: dict[str, str], namespace: str
) -> None:
    spec = pod_spec(container("app", fixture_images["zero"]))
    # The same pod anywhere else is denied, and pinned by the mutating webhook ...
    checked = post(catch_all, "/validate", review("Pod", spec, namespace="anywhere"))
    assert checked["allowed"] is False
    assert "imagegate denied Pod anywhere/web" in checked["status"]["message"]
    assert "non-root-user" in checked["status"]["message"]
    assert "patch" in post(catch_all, "/mutate", review("Pod", spec, namespace="anywhere"))
    # ... and in an exempt namespace it is neither checked, warned about nor rewritten.
    for endpoint in ("/validate", "/mutate"):
        body = review("Pod", spec, namespace=namespace)
        answer = post(catch_all, endpoint, body)
        assert answer == {"uid": body["request"]["uid"], "allowed": True}, endpoint


def test_update_evaluates_only_changed_images(
    server: WebhookServer, fixture_images: dict[str, str]
) -> None:
    root, good = fixture_images["zero"], fixture_images["good"]
    old = pod_spec(container("legacy", root))
    unchanged = pod_spec(container("legacy", root), container("new", good))
    response = post(
        server, "/validate", review("Deployment", unchanged, operation="UPDATE", old_spec=old)
    )
    assert response["allowed"] is True
    changed = pod_spec(container("legacy", fixture_images["named-user"]))
    response = post(
        server, "/validate", review("Deployment", changed, operation="UPDATE", old_spec=old)
    )
    assert response["allowed"] is False


def test_update_of_command_or_user_is_evaluated_again(
    server: WebhookServer, fixture_images: dict[str, str]
) -> None:
    old = pod_spec(container("app", fixture_images["good"]))
    for new in (
        container("app", fixture_images["good"], securityContext={"runAsUser": 0}),
        container("app", fixture_images["good"], command=["/bin/sh", "-c", "a & b"]),
    ):
        body = review("Deployment", pod_spec(new), operation="UPDATE", old_spec=old)
        assert post(server, "/validate", body)["allowed"] is False
    scaled = review("Deployment", old, operation="UPDATE", old_spec=old)
    assert post(server, "/validate", scaled)["allowed"] is True


def test_only_policies_that_apply_decide_pinning(
    server: WebhookServer, fixture_images: dict[str, str]
) -> None:
    body = review("Pod", pod_spec(container("app", fixture_images["good"])), namespace="nopin")
    assert post(server, "/mutate", body) == {"uid": body["request"]["uid"], "allowed": True}


def test_pod_security_context_can_fix_a_root_image(
    server: WebhookServer, fixture_images: dict[str, str]
) -> None:
    spec = pod_spec(
        container("app", fixture_images["root-script"]),
        securityContext={"runAsUser": 10001, "runAsNonRoot": True},
    )
    assert post(server, "/validate", review("Pod", spec))["allowed"] is True


@pytest.mark.parametrize("kind", ["Pod", "Deployment", "CronJob"])
def test_mutate_pins_tags_to_the_checked_digest(
    server: WebhookServer, fixture_images: dict[str, str], kind: str
) -> None:
    good = fixture_images["good"]
    body = review(kind, pod_spec(container("app", good)))
    response = post(server, "/mutate", body)
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    patched = jsonpatch.apply_patch(body["request"]["object"], patch)
    spec = patched["spec"] if kind == "Pod" else (
        patched["spec"]["template"]["spec"] if kind != "CronJob"
        else patched["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    )  # fmt: skip
    image = spec["containers"][0]["image"]
    assert image.startswith(f"{good}@sha256:")
    checked = post(
        server,
        "/validate",
        review(kind, spec if kind == "Pod" else pod_spec(container("app", image))),
    )
    assert checked["allowed"] is True
    record = json.loads(patched["metadata"]["annotations"]["imagegate.dev/mutations"])
    assert record == [{"container": "app", "from": good, "to": image, "why": "pinned"}]
    assert "kubectl.kubernetes.io/last-applied-configuration" in patched["metadata"]["annotations"]


def test_mutate_leaves_pinned_references_alone(
    server: WebhookServer, fixture_images: dict[str, str]
) -> None:
    body = review("Pod", pod_spec(container("app", fixture_images["good"])))
    pinned = jsonpatch.apply_patch(
        body["request"]["object"],
        json.loads(base64.b64decode(post(server, "/mutate", body)["patch"])),
    )
    again = review("Pod", pinned["spec"])
    assert post(server, "/mutate", again) == {"uid": again["request"]["uid"], "allowed": True}


def test_mutate_swaps_in_a_replacement(
    tmp_path: Path, fixture_images: dict[str, str], registry: RegistryProcess
) -> None:
    with httpx.Client() as http:

        def digest(ref: str) -> str:
            repo, tag = ref.split("/", 1)[1].rsplit(":", 1)
            answer = http.head(
                f"{registry.url}/v2/{repo}/manifests/{tag}",
                headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
            )
            return answer.headers["Docker-Content-Digest"]

        root, good = digest(fixture_images["root-script"]), digest(fixture_images["good"])
    replacement = f"{fixture_images['good'].rsplit(':', 1)[0]}@{good}"
    (tmp_path / "replacements.yaml").write_text(
        f"replacements:\n  - sourceDigest: {root}\n    replacement: {replacement}\n"
        f"  - sourceDigest: {good}\n    replacement: {replacement}\n"
    )
    base = fixture_images["base"]
    (tmp_path / "policy.yaml").write_text(policy("swap", "enforce", "prod", base))
    webhook = start_webhook(
        tmp_path,
        [
            "--policy",
            str(tmp_path / "policy.yaml"),
            "--replacements",
            str(tmp_path / "replacements.yaml"),
        ],
    )
    try:
        body = review("Deployment", pod_spec(container("app", fixture_images["root-script"])))
        patch = json.loads(base64.b64decode(post(webhook, "/mutate", body)["patch"]))
        patched = jsonpatch.apply_patch(body["request"]["object"], patch)
        assert patched["spec"]["template"]["spec"]["containers"][0]["image"] == replacement
        after = post(
            webhook, "/validate", review("Deployment", patched["spec"]["template"]["spec"])
        )
        assert after["allowed"] is True
        passing = review("Deployment", pod_spec(container("app", fixture_images["good"])))
        patch = json.loads(base64.b64decode(post(webhook, "/mutate", passing)["patch"]))
        assert [op["value"] for op in patch if op["path"].endswith("/image")] == [
            f"{fixture_images['good']}@{good}"
        ], "an image that passes is pinned, never swapped"
    finally:
        webhook.stop()


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        pytest.param(b"", 400, "empty request body", id="empty"),
        pytest.param(
            b"not json at all", 400, "not an admission.k8s.io/v1 AdmissionReview", id="garbage"
        ),
        pytest.param(b"[1,2,3]", 400, "AdmissionReview", id="json-array"),
        pytest.param(
            b'{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}',
            400,
            "apiVersion",
            id="v1beta1",
        ),
        pytest.param(
            json.dumps({**review("Pod", {}), "request": {}}).encode(),
            400,
            "missing required field `uid` - at `$.request`",
            id="no-uid",
        ),
        pytest.param(b"{" + b" " * (4 * 1024 * 1024) + b"}", 413, "over the", id="too-large"),
    ],
)
def test_malformed_reviews_get_a_clear_4xx(
    server: WebhookServer, body: bytes, status: int, says: str
) -> None:
    with server.client() as http:
        answer = http.post("/validate", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status
    assert says in answer.text


def test_200_concurrent_reviews_are_all_answered(
    server: WebhookServer, fixture_images: dict[str, str]
) -> None:
    bodies = [
        review("Pod", pod_spec(container("app", fixture_images[name])))
        for name in ("good", "zero", "tini", "big") * 50
    ]

    async def send() -> list[httpx.Response]:
        async with server.async_client(limits=httpx.Limits(max_connections=64)) as http:
            return list(await asyncio.gather(*(http.post("/validate", json=b) for b in bodies)))

    answers = asyncio.run(send())
    assert [a.status_code for a in answers] == [200] * 200
    assert [a.json()["response"]["uid"] for a in answers] == [b["request"]["uid"] for b in bodies]
    verdicts = [a.json()["response"]["allowed"] for a in answers]
    assert verdicts == [True, False, True, False] * 50


def test_100_concurrent_admissions_of_one_uncached_image_fetch_each_blob_once(
    server: WebhookServer, docker_client: Any, registry: RegistryProcess
) -> None:
    repo_path = f"fixtures/admit-{uuid.uuid4().hex[:8]}"
    image = f"{registry.host}/{repo_path}:1"
    push_unique(docker_client, "good", image.rsplit(":", 1)[0], "1")
    since = registry.log_offset()
    bodies = [review("Pod", pod_spec(container("app", image))) for _ in range(100)]

    async def send() -> list[httpx.Response]:
        async with server.async_client() as http:
            return list(await asyncio.gather(*(http.post("/validate", json=b) for b in bodies)))

    assert all(a.status_code == 200 for a in asyncio.run(send()))
    manifests = await_requests(
        registry.log_path, "GET", f"/v2/{repo_path}/manifests/", 1, status=200, since=since
    )
    blobs = await_requests(
        registry.log_path, "GET", f"/v2/{repo_path}/blobs/", 1, status=200, since=since
    )
    assert (manifests, blobs) == (1, 1)


def test_health_readiness_and_metrics(server: WebhookServer) -> None:
    with server.client() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz").json()
        metrics = http.get("/metrics").text
    assert ready["status"] == "ready"
    assert set(ready["policies"]) == {"enforce", "warn", "audit", "nopin"}
    assert 'imagegate_admission_requests_total{endpoint="validate",verdict="denied"}' in metrics
    assert 'imagegate_violations_total{mode="enforce",rule="non-root-user"}' in metrics
    assert "imagegate_admission_duration_seconds_bucket" in metrics
    assert 'imagegate_registry_fetches_total{kind="manifest"}' in metrics
    assert "imagegate_registry_cache_hits_total" in metrics
    assert 'imagegate_errors_total{reason="bad-review"}' in metrics


def test_serving_certificate_rotates_without_restart(server: WebhookServer, tmp_path: Path) -> None:
    rotated = self_signed(["127.0.0.1"], tmp_path / "new")
    tls = server.ca.parent
    shutil.copy(rotated.key, tls / "tls.key.new")
    shutil.copy(rotated.cert, tls / "tls.crt.new")
    (tls / "tls.crt.new").replace(tls / "tls.crt")
    (tls / "tls.key.new").replace(tls / "tls.key")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            trust = ssl.create_default_context(cafile=str(rotated.ca))
            with httpx.Client(verify=trust) as http:
                assert http.get(f"{server.url}/healthz").status_code == 200
                break
        except httpx.ConnectError:
            time.sleep(0.2)
    else:
        pytest.fail("the server never presented the rotated certificate")
    assert rotated.ca is not None
    server.ca.write_bytes(rotated.ca.read_bytes())  # later tests verify against the new CA


class StallingRegistry:
    """A TCP server that accepts connections and never answers: a hung registry."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.mark.parametrize(("on_error", "allowed"), [("deny", False), ("allow", True)])
def test_a_stalled_registry_triggers_on_error_within_the_budget(
    tmp_path: Path, on_error: str, allowed: bool
) -> None:
    stalled = StallingRegistry()
    (tmp_path / "policy.yaml").write_text(
        policy("stall", "enforce", "prod", "scratch", on_error)
        + "---\n"
        + policy("elsewhere", "enforce", "other", "scratch", "deny")  # must not decide here
    )
    webhook = start_webhook(
        tmp_path,
        ["--policy", str(tmp_path / "policy.yaml")],
        env={"IMAGEGATE_WEBHOOK_REQUEST_BUDGET_SECONDS": "1.5"},
    )
    try:
        body = review("Pod", pod_spec(container("app", f"{stalled.host}/app:1")))
        started = time.monotonic()
        response = post(webhook, "/validate", body)
        elapsed = time.monotonic() - started
    finally:
        webhook.stop()
        stalled.close()
    assert elapsed < 3.0, f"answered after {elapsed:.1f}s, budget 1.5s"
    assert response["allowed"] is allowed
    text = response["status"]["message"] if not allowed else response["warnings"][0]
    assert f"onError: {on_error}" in text
    assert "1.5 s admission budget" in text


def test_after_sigterm_the_webhook_serves_for_the_shutdown_delay_then_exits(
    tmp_path: Path,
) -> None:
    """A Pod being replaced still receives requests for a moment after SIGTERM (kube-proxy and
    the API server learn late that its endpoint is gone): it keeps answering, then stops."""
    webhook = start_webhook(tmp_path, [], env={"IMAGEGATE_WEBHOOK_SHUTDOWN_DELAY_SECONDS": "2"})
    try:
        signalled = time.monotonic()
        webhook.process.terminate()
        time.sleep(1)
        with webhook.client() as http:
            assert http.get("/healthz").status_code == 200, "still serving within the delay"
        assert webhook.process.wait(15) == 0
        assert 2 <= time.monotonic() - signalled < 10
        assert "serving 2.0 s more before shutting down" in webhook.logs()
    finally:
        webhook.stop()


def test_a_second_signal_stops_a_draining_webhook_at_once(tmp_path: Path) -> None:
    webhook = start_webhook(tmp_path, [], env={"IMAGEGATE_WEBHOOK_SHUTDOWN_DELAY_SECONDS": "30"})
    try:
        webhook.process.terminate()
        time.sleep(0.5)
        signalled = time.monotonic()
        webhook.process.send_signal(signal.SIGINT)
        webhook.process.wait(10)
        assert time.monotonic() - signalled < 5
    finally:
        webhook.stop()
