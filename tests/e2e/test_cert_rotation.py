"""Built-in certificate rotation against a real kube-apiserver + etcd.

The rotators run as a ServiceAccount holding exactly the RBAC the chart grants (`_grant`), so
these tests also prove that RBAC is enough. Webhook configurations here point nowhere that
matters: failurePolicy Ignore and an objectSelector nothing matches, so they never gate objects.
Time is moved with an injected clock (in-process rotators) or short lifetimes (`imagegate serve`).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import os
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.support.cluster import Cluster
from tests.support.processes import free_port, spawn
from tests.support.summary import section
from webhook.admission.certs import CertRotator
from webhook.admission.tls import CA_BUNDLE, CA_CERT, TLS_CERT, CertPolicy, trusted_until
from webhook.errors import ClusterForbidden, ClusterNotFound
from webhook.k8s.certs import CertStore, connect_api

pytestmark = pytest.mark.integration

SECRET = "imagegate-webhook-tls"
SA = "imagegate-webhook"
DAY = dt.timedelta(days=1)
DNS = ("localhost", "imagegate-webhook.imagegate-system.svc")
POLICY = CertPolicy(DNS, ca_lifetime=365 * DAY, cert_lifetime=90 * DAY)


@dataclass
class Setup:
    cluster: Cluster
    namespace: str
    webhooks: str  # the name of both the Validating and the Mutating configuration
    kubeconfig: Path  # the webhook ServiceAccount's, with the chart's RBAC only
    directory: Path

    def rotator(
        self, name: str, now: Callable[[], dt.datetime] | None = None, check: float = 300
    ) -> CertRotator:
        store = CertStore(connect_api(str(self.kubeconfig)), self.namespace, SECRET)
        extra = {"now": now} if now is not None else {}
        return CertRotator(
            store, POLICY, [self.webhooks], self.directory / name, check_seconds=check, **extra
        )

    def secret(self) -> dict[str, bytes]:
        out = self.cluster.kubectl("get", "secret", SECRET, "-n", self.namespace, "-o", "json")
        data = json.loads(out.stdout)
        return {k: base64.b64decode(v) for k, v in data["data"].items()} | {
            "_type": data["type"].encode(),
            "_rv": data["metadata"]["resourceVersion"].encode(),
        }

    def bundles(self) -> list[bytes]:
        """The caBundle of every webhook of both configurations (decoded)."""
        out = self.cluster.kubectl(
            "get",
            f"validatingwebhookconfiguration/{self.webhooks}",
            f"mutatingwebhookconfiguration/{self.webhooks}",
            "-o",
            "json",
        )
        return [
            base64.b64decode(hook["clientConfig"].get("caBundle", ""))
            for item in json.loads(out.stdout)["items"]
            for hook in item["webhooks"]
        ]


RULE = {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}


def _webhook_configurations(name: str) -> list[dict[str, object]]:
    def hooks(path: str) -> list[dict[str, object]]:
        return [
            {
                "name": f"{kind}.{name}.imagegate.dev",
                "clientConfig": {"url": f"https://localhost:1/{path}"},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ],
                "failurePolicy": "Ignore",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "objectSelector": {"matchLabels": {"e2e.imagegate.dev/never": "true"}},
            }
            for kind in ("first", "second")
        ]

    return [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
         "metadata": {"name": name}, "webhooks": hooks(path)}
        for kind, path in (("ValidatingWebhookConfiguration", "validate"),
                           ("MutatingWebhookConfiguration", "mutate"))
    ]  # fmt: skip


def _grant(namespace: str, webhooks: str) -> list[dict[str, object]]:
    """The RBAC the rotator needs, as the chart renders it (reported to the chart owner)."""
    binding_subject = [{"kind": "ServiceAccount", "name": SA, "namespace": namespace}]
    role = f"{webhooks}-certs"
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": role, "namespace": namespace},
         "rules": [
             {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
             {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [SECRET],
              "verbs": ["get", "update", "list", "watch"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": role, "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
         "subjects": binding_subject},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": role},
         "rules": [{"apiGroups": ["admissionregistration.k8s.io"],
                    "resources": ["validatingwebhookconfigurations",
                                  "mutatingwebhookconfigurations"],
                    "resourceNames": [webhooks], "verbs": ["get", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": role},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
         "subjects": binding_subject},
    ]  # fmt: skip


@pytest.fixture
def setup(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Setup]:
    webhooks = f"certs-{namespace}"
    documents = [*_webhook_configurations(webhooks), *_grant(namespace, webhooks)]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))
    kubeconfig = cluster.serviceaccount_kubeconfig(namespace, SA)
    try:
        yield Setup(cluster, namespace, webhooks, kubeconfig, tmp_path)
    finally:
        cluster.kubectl(
            "delete", f"validatingwebhookconfiguration/{webhooks}",
            f"mutatingwebhookconfiguration/{webhooks}", f"clusterrole/{webhooks}-certs",
            f"clusterrolebinding/{webhooks}-certs", "--wait=false", check=False,
        )  # fmt: skip


def _certs(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def _fingerprints(pem: bytes) -> list[bytes]:
    return [c.fingerprint(hashes.SHA256()) for c in _certs(pem)]


class Clock:
    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


async def test_first_start_creates_the_secret_and_patches_every_webhook(setup: Setup) -> None:
    rotator = setup.rotator("a")
    await rotator.sync()

    secret = setup.secret()
    assert secret["_type"] == b"kubernetes.io/tls"
    assert {"ca.crt", "ca.key", "tls.crt", "tls.key", "ca-bundle.crt"} <= set(secret)
    ca = _certs(secret[CA_CERT])[0]
    served = _certs(rotator.files.cert.read_bytes())[0]
    served.verify_directly_issued_by(ca)
    assert rotator.files.cert.read_bytes() == secret[TLS_CERT]
    assert rotator.files.key.stat().st_mode & 0o777 == 0o600
    bundles = setup.bundles()
    assert len(bundles) == 4, "two webhooks in each of the two configurations"
    assert set(bundles) == {secret[CA_BUNDLE]}
    assert _fingerprints(secret[CA_BUNDLE]) == [ca.fingerprint(hashes.SHA256())]

    await rotator.sync()  # nothing to do: no write
    assert setup.secret()["_rv"] == secret["_rv"]


@pytest.mark.parametrize("round_", range(3), ids=lambda n: f"round {n}")
async def test_three_rotators_starting_together_end_with_one_ca(setup: Setup, round_: int) -> None:
    rotators = [setup.rotator(name) for name in ("a", "b", "c")]
    await asyncio.gather(*(r.sync() for r in rotators))

    secret = setup.secret()
    served = {r.files.cert.read_bytes() for r in rotators}
    assert served == {secret[TLS_CERT]}, "every replica serves the certificate in the Secret"
    assert set(setup.bundles()) == {secret[CA_BUNDLE]}
    assert len(_certs(secret[CA_BUNDLE])) == 1, "one CA, not one per replica"


async def test_near_expiry_renews_the_serving_certificate_under_the_same_ca(setup: Setup) -> None:
    clock = Clock()
    rotator = setup.rotator("a", now=clock)
    await rotator.sync()
    before = setup.secret()

    clock.offset = 50 * DAY  # 40 of 90 days left: kept
    await rotator.sync()
    assert setup.secret()["_rv"] == before["_rv"]

    clock.offset = 61 * DAY  # 29 of 90 days left: less than a third
    await rotator.sync()
    after = setup.secret()
    assert after[TLS_CERT] != before[TLS_CERT]
    assert after[CA_CERT] == before[CA_CERT]
    assert rotator.files.cert.read_bytes() == after[TLS_CERT]
    renewed = _certs(after[TLS_CERT])[0]
    assert renewed.not_valid_after_utc > _certs(before[TLS_CERT])[0].not_valid_after_utc


async def test_ca_rotation_keeps_the_old_ca_in_the_bundle_until_it_expires(setup: Setup) -> None:
    clock = Clock()
    first, second = setup.rotator("a", now=clock), setup.rotator("b", now=clock)
    await first.sync()
    await second.sync()
    old = setup.secret()

    clock.offset = 250 * DAY  # the CA has less than a third of its year left
    await first.sync()
    rotated = setup.secret()
    assert rotated[CA_CERT] != old[CA_CERT]
    assert _fingerprints(rotated[CA_BUNDLE]) == [
        *_fingerprints(rotated[CA_CERT]),
        *_fingerprints(old[CA_CERT]),
    ]
    assert set(setup.bundles()) == {rotated[CA_BUNDLE]}
    # The replica that has not looked yet still serves the old certificate: still trusted.
    assert second.files.cert.read_bytes() == old[TLS_CERT]
    assert trusted_until(old[TLS_CERT], setup.bundles()[0]) is not None

    clock.offset = 366 * DAY  # the old CA has expired: dropped from the bundle
    await second.sync()
    final = setup.secret()
    assert _fingerprints(final[CA_BUNDLE]) == _fingerprints(rotated[CA_CERT])
    assert set(setup.bundles()) == {final[CA_BUNDLE]}


async def test_tampered_secret_is_replaced_at_once_with_a_clear_log(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    rotator = setup.rotator("a", check=300)  # only the watch can explain a quick repair
    await rotator.sync()
    garbage = base64.b64encode(b"-----BEGIN CERTIFICATE-----\ngarbage\n").decode()
    caplog.set_level(logging.INFO, logger="imagegate.certs")
    task = asyncio.create_task(rotator.run())
    try:
        await asyncio.sleep(0.5)  # the watch is open
        patch = {"data": {"ca.crt": garbage, "tls.crt": garbage}}
        setup.cluster.kubectl(
            "patch", "secret", SECRET, "-n", setup.namespace, "-p", json.dumps(patch)
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            secret = setup.secret()
            if secret[CA_CERT] != base64.b64decode(garbage):
                break
            await asyncio.sleep(0.2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # The watch blocks in a worker thread until an event or its timeout (300 s); one more
        # change ends it now, so the event loop can close.
        setup.cluster.kubectl(
            "annotate", "secret", SECRET, "-n", setup.namespace, "e2e.imagegate.dev/done=1"
        )
    ca = _certs(secret[CA_CERT])[0]
    _certs(secret[TLS_CERT])[0].verify_directly_issued_by(ca)
    assert set(setup.bundles()) == {secret[CA_BUNDLE]}
    assert rotator.files.cert.read_bytes() == secret[TLS_CERT]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"certificates renewed in Secret {setup.namespace}/{SECRET}: new CA: no readable CA "
        "certificate (ca.crt)" in m
        for m in messages
    ), messages


async def test_a_webhook_configuration_not_granted_or_missing_is_a_clear_error(
    setup: Setup,
) -> None:
    limited = CertStore(connect_api(str(setup.kubeconfig)), setup.namespace, SECRET)
    rotator = CertRotator(limited, POLICY, ["other-webhook"], setup.directory / "x")
    with pytest.raises(ClusterForbidden, match=r"needs get and patch on validatingwebhook"):
        await rotator.sync()
    # Nothing was served yet, so the certificate is written regardless (serve can start).
    assert rotator.files.cert.read_bytes() == setup.secret()[TLS_CERT]

    admin = CertStore(connect_api(str(setup.cluster.kubeconfig)), setup.namespace, SECRET)
    rotator = CertRotator(admin, POLICY, ["no-such-webhook"], setup.directory / "y")
    with pytest.raises(ClusterNotFound, match="no ValidatingWebhookConfiguration or Mutating"):
        await rotator.sync()


# ---- a real `imagegate serve`, rotating while a client trusts only the caBundle -------------


def _handshake(port: int, bundle: bytes) -> bytes:
    """The certificate `imagegate serve` presents to a client trusting only `bundle` (an
    `ssl.SSLError` when it does not verify), after a GET /healthz answered 200."""
    context = ssl.create_default_context(cadata=bundle.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = tls.recv(100)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_serve_rotates_its_certificate_without_a_restart(
    setup: Setup, request: pytest.FixtureRequest
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "IMAGEGATE_NAMESPACE": setup.namespace,
        "IMAGEGATE_WEBHOOK_KUBECONFIG": str(setup.kubeconfig),
        "IMAGEGATE_WEBHOOK_RECORD_REPORTS": "false",
        "IMAGEGATE_WEBHOOK_CERT_SECRET": SECRET,
        "IMAGEGATE_WEBHOOK_CERT_DNS_NAMES": ",".join(DNS),
        # A CA of 40 s and certificates of 20 s: a serving renewal every ~13 s, a CA rotation
        # after ~27 s. Checked every second; the files reloaded twice a second.
        "IMAGEGATE_WEBHOOK_CERT_CA_LIFETIME": "PT40S",
        "IMAGEGATE_WEBHOOK_CERT_LIFETIME": "PT20S",
        "IMAGEGATE_WEBHOOK_CERT_CHECK_SECONDS": "1",
        "IMAGEGATE_WEBHOOK_CERT_RELOAD_SECONDS": "0.5",
        "IMAGEGATE_WEBHOOK_CERT_DIR": str(setup.directory / "serve-tls"),
    }
    argv = [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--cert-webhook", setup.webhooks]  # fmt: skip
    proc = spawn("imagegate serve", argv, setup.directory / "serve.log", env=env)
    try:
        served: list[bytes] = []
        cas: set[bytes] = set()
        retried = handshakes = 0
        deadline = time.monotonic() + 45
        started = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.alive(), proc.logs()
            bundle = setup.bundles()[0]
            if not bundle:  # not patched yet
                assert time.monotonic() < started, f"no caBundle:\n{proc.log_tail()}"
                time.sleep(0.2)
                continue
            try:
                der = _handshake(port, bundle)
            except (ConnectionRefusedError, TimeoutError):
                assert time.monotonic() < started, f"serve never listened:\n{proc.log_tail()}"
                time.sleep(0.2)
                continue
            except ssl.SSLCertVerificationError:
                # The rotation happened between reading the bundle and connecting: the API
                # server would retry with the bundle it has by then; so does this client.
                retried += 1
                der = _handshake(port, setup.bundles()[0])
            handshakes += 1
            if not served or served[-1] != der:
                served.append(der)
            cas.add(setup.secret()[CA_CERT])
            time.sleep(0.3)
        assert proc.alive(), "serve never restarted: the same process throughout"
        logs = proc.logs()
    finally:
        proc.stop()
    section(request.config, "certificate rotation").append(
        f"imagegate serve, one process for 45 s: {handshakes} handshakes trusting only the "
        f"caBundle, {len(served)} serving certificates, {len(cas)} CAs, {retried} retried"
    )
    assert len(served) >= 3, f"served certificates: {len(served)}\n{logs[-3000:]}"
    assert len(cas) >= 2, f"the CA rotated at least once\n{logs[-3000:]}"
    assert retried <= 2, f"{retried} handshakes needed a fresh bundle"
    assert "certificates renewed" in logs
    assert "serving certificate reloaded" in logs


async def test_a_replica_that_cannot_publish_a_new_ca_keeps_serving_the_trusted_certificate(
    setup: Setup,
) -> None:
    """A new CA is served only once the caBundle holding it is published: until then the
    replica keeps its certificate of the old CA, which the published bundle still trusts."""
    clock = Clock()
    replica = setup.rotator("a", now=clock)
    await replica.sync()
    old_ca = setup.secret()[CA_CERT]
    clock.offset = 240 * DAY  # a serving certificate valid until day 330; the CA until 365
    await replica.sync()
    served = replica.files.cert.read_bytes()
    store = CertStore(connect_api(str(setup.kubeconfig)), setup.namespace, SECRET)
    blocked = CertRotator(
        store, POLICY, [setup.webhooks, "not-granted"], setup.directory / "a", now=clock
    )

    clock.offset = 250 * DAY  # the CA is due: rotated, but "not-granted" cannot be patched
    with pytest.raises(ClusterForbidden):
        await blocked.sync()
    secret = setup.secret()
    assert secret[CA_CERT] != old_ca, "the CA was rotated in the Secret"
    assert _fingerprints(setup.bundles()[0])[1:] == _fingerprints(old_ca)
    assert blocked.files.cert.read_bytes() == served, "held back: the bundle is not out yet"
    assert trusted_until(served, setup.bundles()[0]) is not None

    await replica.sync()  # the bundle is out everywhere it must be: the new CA is served
    assert replica.files.cert.read_bytes() == secret[TLS_CERT]


def _unreachable_kubeconfig(setup: Setup) -> Path:
    """The webhook's kubeconfig with the API server moved to a port nothing listens on."""
    config = yaml.safe_load(setup.kubeconfig.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    path = setup.directory / "unreachable.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def _serve_env(setup: Setup, kubeconfig: Path, directory: Path) -> dict[str, str]:
    return {
        **os.environ,
        "IMAGEGATE_NAMESPACE": setup.namespace,
        "IMAGEGATE_WEBHOOK_KUBECONFIG": str(kubeconfig),
        "IMAGEGATE_WEBHOOK_RECORD_REPORTS": "false",
        "IMAGEGATE_WEBHOOK_CERT_SECRET": SECRET,
        "IMAGEGATE_WEBHOOK_CERT_WEBHOOKS": setup.webhooks,
        "IMAGEGATE_WEBHOOK_CERT_DNS_NAMES": ",".join(DNS),
        "IMAGEGATE_WEBHOOK_CERT_DIR": str(directory),
        "IMAGEGATE_WEBHOOK_METRICS_PORT": "0",
    }


async def test_serve_without_the_api_server_waits_or_serves_the_certificate_on_disk(
    setup: Setup,
) -> None:
    unreachable = _unreachable_kubeconfig(setup)
    port = free_port()
    argv = [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port)]

    # No certificate anywhere: it does not listen (not Ready), says why, and keeps trying.
    empty = setup.directory / "empty"
    env = _serve_env(setup, unreachable, empty)
    proc = spawn("imagegate serve", argv, setup.directory / "wait.log", env=env)
    try:
        await asyncio.sleep(4)
        assert proc.alive(), proc.logs()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert "no serving certificate yet: cannot read Secret" in proc.logs()
        assert "the Kubernetes API is unreachable" in proc.logs()
    finally:
        proc.stop()

    # The certificate of an earlier start (an emptyDir survives a container restart): served.
    earlier = setup.rotator("earlier")
    await earlier.sync()
    env = _serve_env(setup, unreachable, earlier.files.cert.parent)
    proc = spawn("imagegate serve", argv, setup.directory / "disk.log", env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                der = _handshake(port, setup.bundles()[0])
                break
            except (ConnectionRefusedError, TimeoutError):
                assert proc.alive(), proc.logs()
                assert time.monotonic() < deadline, proc.logs()
                await asyncio.sleep(0.2)
        served = x509.load_pem_x509_certificate(earlier.files.cert.read_bytes())
        assert der == served.public_bytes(serialization.Encoding.DER)
        assert "serving those on disk" in proc.logs()
    finally:
        proc.stop()
