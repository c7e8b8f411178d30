"""Built-in certificate rotation: the webhook issues, stores and renews its own certificates.

As Gatekeeper's cert-controller does, every replica runs a `CertRotator`. It keeps one Secret
holding a CA and a serving certificate (creating it when absent, renewing before expiry,
replacing what cannot be read), keeps `clientConfig.caBundle` of the named webhook configurations
equal to the Secret's CA bundle, and writes the serving pair to a local directory that
`CertReloader` loads into the live SSL context: nothing restarts, nothing waits for the kubelet's
volume refresh, and `helm template` renders no random CA.

Replicas never coordinate other than through the Secret: writes name the resourceVersion they
read, so of replicas starting together one creates the Secret and the others read it (one CA).
A new CA is added to the bundle next to the old one, which stays until it expires, and a replica
serves a certificate of a new CA only after the bundle holding it is in the webhook
configurations, so the API server trusts every replica throughout a rotation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from webhook.admission.tls import (
    CertFiles,
    CertMaterial,
    CertPolicy,
    certificate_summary,
    plan_certificates,
    trusted_until,
    write_atomically,
)
from webhook.errors import ClusterConflict, ClusterError, ImagegateError, UsageError
from webhook.k8s.certs import CertStore, StoredSecret, connect_api
from webhook.settings import WebhookSettings

log = logging.getLogger("imagegate.certs")

WRITE_ATTEMPTS = 5  # create/update races lost in a row before giving up until the next check
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)  # after a failed check, before the next one


class SecretStore(Protocol):
    """What the rotator needs of the cluster (`webhook.k8s.certs.CertStore`)."""

    @property
    def where(self) -> str: ...

    async def read(self) -> StoredSecret | None: ...

    async def create(self, data: Mapping[str, bytes]) -> StoredSecret: ...

    async def update(self, data: Mapping[str, bytes], resource_version: str) -> StoredSecret: ...

    async def inject_ca_bundle(self, names: Sequence[str], bundle: bytes) -> list[str]: ...

    async def wait_for_change(self, resource_version: str | None, seconds: float) -> bool: ...


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertRotator:
    """Keeps the Secret, the caBundles and the local serving files current (see module doc)."""

    def __init__(
        self,
        store: SecretStore,
        policy: CertPolicy,
        webhooks: Sequence[str],
        directory: Path,
        *,
        check_seconds: float = 60.0,
        now: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._store = store
        self._policy = policy
        self._webhooks = tuple(webhooks)
        self._check_seconds = check_seconds
        self._now = now
        self._resource_version: str | None = None
        self.files = CertFiles(directory / "tls.crt", directory / "tls.key", directory / "ca.crt")

    async def sync(self) -> None:
        """One check: settle the Secret, publish its bundle, then serve its certificate.

        Raises `ClusterError` when the API server cannot be reached or refuses; the files
        already served are then kept (unless there are none or they are no longer trusted).
        """
        material = await self._settle_secret()
        try:
            patched = await self._store.inject_ca_bundle(self._webhooks, material.ca_bundle)
        except ClusterError as err:
            if self._hold_back(material):
                raise
            self._write_files(material)  # what is served now is no longer trusted anyway
            raise type(err)(f"{err} (serving the new certificate regardless)", err.status) from None
        for name in patched:
            log.info("caBundle updated", extra={"webhookConfiguration": name})
        self._write_files(material)

    async def _settle_secret(self) -> CertMaterial:
        """The Secret's material after renewing what needs it; a lost race means read again."""
        for _ in range(WRITE_ATTEMPTS):
            stored = await self._store.read()
            plan = plan_certificates(stored.data if stored else None, self._policy, self._now())
            if not plan.changed:
                assert stored is not None
                self._resource_version = stored.resource_version
                return plan.material
            data = plan.material.secret_data()
            try:
                if stored is None:
                    written = await self._store.create(data)
                else:
                    written = await self._store.update(data, stored.resource_version)
            except ClusterConflict:
                log.info("another replica wrote %s first; reading it again", self._store.where)
                continue
            self._resource_version = written.resource_version
            log.log(
                logging.WARNING if plan.damaged else logging.INFO,
                "certificates renewed in %s: %s",
                self._store.where,
                "; ".join(plan.reasons) or "normalised",
                extra={
                    "caRotated": plan.ca_rotated,
                    "ca": certificate_summary(plan.material.ca_cert),
                    "cert": certificate_summary(plan.material.cert),
                },
            )
            return plan.material
        raise ClusterConflict(
            f"cannot settle {self._store.where}: it changed under every one of "
            f"{WRITE_ATTEMPTS} writes"
        )

    def _hold_back(self, material: CertMaterial) -> bool:
        """Keep serving the current files (the caBundle could not be published): true while
        they exist, differ, and are issued by a CA of the new bundle with time left."""
        try:
            served = self.files.cert.read_bytes()
        except OSError:
            return False
        if served == material.cert:
            return True
        until = trusted_until(served, material.ca_bundle)
        return until is not None and until > self._now() + dt.timedelta(minutes=10)

    def _usable_on_disk(self) -> bool:
        """Files of an earlier start (a restarted container) still trusted by their bundle."""
        assert self.files.ca is not None
        try:
            cert, bundle = self.files.cert.read_bytes(), self.files.ca.read_bytes()
        except OSError:
            return False
        until = trusted_until(cert, bundle)
        return until is not None and until > self._now() and self.files.key.exists()

    def _write_files(self, material: CertMaterial) -> None:
        """Key first, then certificate, each in one rename: `CertReloader` sees the new pair
        (a moment with a mismatched pair makes it retry, never serve half of one)."""
        assert self.files.ca is not None
        write_atomically(self.files.ca, material.ca_bundle)
        key_changed = write_atomically(self.files.key, material.key, mode=0o600)
        if write_atomically(self.files.cert, material.cert) or key_changed:
            log.info(
                "serving certificate written",
                extra={"cert": certificate_summary(material.cert), "dir": str(self.files.cert)},
            )

    async def first_certificate(self, max_wait: float | None = None) -> CertFiles:
        """Sync until there is a certificate to serve (`serve` listens only then). Files left by
        an earlier start that are still valid are served while the API server is unreachable."""
        deadline = None if max_wait is None else asyncio.get_running_loop().time() + max_wait
        for attempt in range(1_000_000):
            try:
                await self.sync()
                return self.files
            except ClusterError as err:
                if self._usable_on_disk():
                    log.error("cannot check the certificates yet: %s; serving those on disk", err)
                    return self.files
                delay = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                if deadline is not None and asyncio.get_running_loop().time() + delay > deadline:
                    raise
                log.error("no serving certificate yet: %s; retrying in %.0f s", err, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def run(self) -> None:
        """Re-check every `check_seconds`, and as soon as the Secret changes (a watch).

        Never returns: any failure is logged and retried, because a rotator that stopped would
        let the certificate expire weeks later, with no sign before.
        """
        failures = 0
        watch_failed = False
        while True:
            try:
                await self._store.wait_for_change(self._resource_version, self._check_seconds)
                watch_failed = False
            except Exception as err:
                # Polling until the watch works again (a restarted API server, missing RBAC).
                if not watch_failed:
                    log.warning("cannot watch %s (%s); polling", self._store.where, err)
                watch_failed = True
                await asyncio.sleep(self._check_seconds)
            try:
                await self.sync()
                failures = 0
            except Exception as err:
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                unexpected = not isinstance(err, ImagegateError)
                log.error(
                    "certificate check failed: %s; retrying in %.0f s",
                    err,
                    delay,
                    exc_info=unexpected,
                )
                await asyncio.sleep(min(delay, self._check_seconds))

    def start_background(self) -> threading.Thread:
        """`run` in a daemon thread with its own event loop: a slow or unreachable API server
        never delays admissions, and the thread ends with the process."""
        thread = threading.Thread(
            target=lambda: asyncio.run(self.run()), name="imagegate-cert-rotator", daemon=True
        )
        thread.start()
        return thread


def rotator_from_settings(hook: WebhookSettings) -> CertRotator | None:
    """The rotator `imagegate serve` runs, or None when `cert_secret` is not set."""
    if not hook.cert_secret:
        return None
    problems = []
    if not hook.namespace:
        problems.append("IMAGEGATE_NAMESPACE (the Pod's namespace) is not set")
    if not hook.cert_dns_names:
        problems.append("no DNS names (--cert-dns-name / IMAGEGATE_WEBHOOK_CERT_DNS_NAMES)")
    if not hook.cert_webhooks:
        problems.append(
            "no webhook configurations (--cert-webhook / IMAGEGATE_WEBHOOK_CERT_WEBHOOKS)"
        )
    if hook.kubernetes == "off":
        problems.append("the Kubernetes API is off (IMAGEGATE_WEBHOOK_KUBERNETES=off)")
    if problems:
        raise UsageError(f"certificate rotation ({hook.cert_secret}): {'; '.join(problems)}")
    assert hook.namespace is not None
    import tempfile

    directory = hook.cert_dir or Path(tempfile.mkdtemp(prefix="imagegate-tls-"))
    store = CertStore(connect_api(hook.kubeconfig), hook.namespace, hook.cert_secret)
    policy = CertPolicy(
        tuple(hook.cert_dns_names),
        hook.cert_ca_lifetime,
        hook.cert_lifetime,
        hook.cert_renew_before,
    )
    return CertRotator(
        store, policy, hook.cert_webhooks, directory, check_seconds=hook.cert_check_seconds
    )
