"""TLS for the webhook: serving certificates that rotate without a restart, or self-signed ones.

The API server only calls webhooks over HTTPS. In a cluster the certificate comes from a Secret
(chart-generated or cert-manager) that is rotated in place; `CertReloader` reloads the files into
the live SSL context, so new connections get the new certificate and nothing restarts.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger("imagegate.tls")


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path
    ca: Path | None = None

    def ca_bundle(self) -> str:
        """The base64 PEM a webhook configuration's `caBundle` wants."""
        source = self.ca or self.cert
        return base64.b64encode(source.read_bytes()).decode()


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


def self_signed(hosts: list[str], directory: Path, days: int = 365) -> CertFiles:
    """A new CA and a serving certificate for `hosts` (DNS names or IPs), written to `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imagegate webhook CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files = CertFiles(directory / "tls.crt", directory / "tls.key", directory / "ca.crt")
    files.ca.write_bytes(_pem(ca_cert))  # type: ignore[union-attr]
    files.cert.write_bytes(_pem(cert))
    files.key.touch(mode=0o600)
    files.key.write_bytes(_pem_key(key))
    return files


class CertReloader:
    """Polls the certificate files and loads them into the live SSL context when they change."""

    def __init__(self, context: ssl.SSLContext, files: CertFiles, interval: float) -> None:
        self._context = context
        self._files = files
        self._interval = interval
        self._seen = self._stamp()

    def _stamp(self) -> tuple[float, float]:
        return (self._files.cert.stat().st_mtime, self._files.key.stat().st_mtime)

    def reload_if_changed(self) -> bool:
        try:
            stamp = self._stamp()
            if stamp == self._seen:
                return False
            self._context.load_cert_chain(str(self._files.cert), str(self._files.key))
        except (OSError, ssl.SSLError) as err:
            # Half-written files during a rotation: keep serving the old pair, try again later.
            log.warning("cannot reload the serving certificate yet", extra={"error": str(err)})
            return False
        self._seen = stamp
        log.info("serving certificate reloaded", extra={"cert": str(self._files.cert)})
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.reload_if_changed()


# ---- Certificates the webhook issues and rotates itself (`webhook.admission.certs`) ----------
#
# The Secret holds a CA (ca.crt, ca.key), a serving pair signed by it (tls.crt, tls.key) and the
# bundle the webhook configurations trust (ca-bundle.crt: the current CA, then older CAs that
# have not expired, so replicas still serving a certificate of the old CA stay trusted).
# `plan_certificates` is the one decision: given what the Secret holds and the clock, keep it or
# say what to write and why. It is pure (no I/O), so every replica decides the same.

CA_CERT, CA_KEY, TLS_CERT, TLS_KEY = "ca.crt", "ca.key", "tls.crt", "tls.key"
CA_BUNDLE = "ca-bundle.crt"
SECRET_KEYS = (CA_CERT, CA_KEY, TLS_CERT, TLS_KEY, CA_BUNDLE)
CA_COMMON_NAME = "imagegate webhook CA"
MAX_BUNDLE_CAS = 4  # the current CA and up to three older ones still valid
BACKDATE = dt.timedelta(minutes=5)  # clock skew between replicas and the API server


@dataclass(frozen=True)
class CertPolicy:
    """What the rotator issues: names of the Service, lifetimes and when to renew."""

    dns_names: tuple[str, ...]
    ca_lifetime: dt.timedelta = dt.timedelta(days=365)
    cert_lifetime: dt.timedelta = dt.timedelta(days=90)
    renew_before: dt.timedelta | None = None  # None: when a third of its lifetime remains

    def renewal_margin(self, lifetime: dt.timedelta) -> dt.timedelta:
        """How long before expiry a certificate of this (configured) lifetime is renewed. The
        configured lifetime, not the certificate's own span: that includes the backdating."""
        return self.renew_before if self.renew_before is not None else lifetime / 3


@dataclass(frozen=True)
class CertMaterial:
    """PEM bytes as stored in the Secret."""

    ca_cert: bytes
    ca_key: bytes
    cert: bytes
    key: bytes
    ca_bundle: bytes

    def secret_data(self) -> dict[str, bytes]:
        return {
            CA_CERT: self.ca_cert,
            CA_KEY: self.ca_key,
            TLS_CERT: self.cert,
            TLS_KEY: self.key,
            CA_BUNDLE: self.ca_bundle,
        }


@dataclass(frozen=True)
class CertPlan:
    """The material to hold, whether it differs from the Secret, and why (for the log)."""

    material: CertMaterial
    changed: bool
    ca_rotated: bool
    reasons: tuple[str, ...]
    damaged: bool = False  # the Secret held unreadable or mismatched material (logged louder)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _certs(pem: bytes | None) -> list[x509.Certificate]:
    if not pem:
        return []
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        return []


def _private_key(pem: bytes | None) -> ec.EllipticCurvePrivateKey | None:
    if not pem:
        return None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _same_public_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def _dns_names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {name.lower() for name in san.get_values_for_type(x509.DNSName)}


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class _Damaged(str):
    """A problem that means the Secret was damaged or tampered with, not merely due."""


def _ca_problem(
    cert: x509.Certificate | None,
    key: ec.EllipticCurvePrivateKey | None,
    policy: CertPolicy,
    now: dt.datetime,
) -> str | None:
    """Why the stored CA cannot stay (None: it can)."""
    if cert is None:
        return _Damaged("no readable CA certificate (ca.crt)")
    if key is None:
        return _Damaged("no readable ECDSA CA key (ca.key)")
    if not _is_ca(cert) or not _issued_by(cert, cert):
        return _Damaged("ca.crt is not a self-signed CA certificate")
    if not _same_public_key(cert, key):
        return _Damaged("ca.key does not match ca.crt")
    if cert.not_valid_before_utc > now:
        return f"the CA is not valid before {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}"
    if cert.not_valid_after_utc - now <= policy.renewal_margin(policy.ca_lifetime):
        return f"the CA expires {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    return None


def _cert_problem(
    cert: x509.Certificate | None,
    key: ec.EllipticCurvePrivateKey | None,
    ca: x509.Certificate,
    policy: CertPolicy,
    now: dt.datetime,
) -> str | None:
    """Why the stored serving certificate cannot stay (None: it can)."""
    if cert is None:
        return _Damaged("no readable serving certificate (tls.crt)")
    if key is None:
        return _Damaged("no readable ECDSA serving key (tls.key)")
    if not _same_public_key(cert, key):
        return _Damaged("tls.key does not match tls.crt")
    if _is_ca(cert) or not _issued_by(cert, ca):
        return _Damaged("the serving certificate is not issued by the current CA")
    missing = sorted({name.lower() for name in policy.dns_names} - _dns_names(cert))
    if missing:
        return f"the serving certificate lacks DNS names {', '.join(missing)}"
    if cert.not_valid_before_utc > now:
        return "the serving certificate is not valid yet"
    if cert.not_valid_after_utc - now <= policy.renewal_margin(policy.cert_lifetime):
        return f"the serving certificate expires {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    return None


def _new_ca(
    policy: CertPolicy, now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
        # Each CA has its own subject, so old and new CAs in one bundle are told apart.
        x509.NameAttribute(NameOID.SERIAL_NUMBER, f"{x509.random_serial_number():x}"),
    ])  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + policy.ca_lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_serving(
    policy: CertPolicy, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A serving certificate for the policy's names; it never outlives its CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(now + policy.cert_lifetime, ca.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, policy.dns_names[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - BACKDATE, ca.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in policy.dns_names]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def plan_certificates(
    data: Mapping[str, bytes] | None, policy: CertPolicy, now: dt.datetime
) -> CertPlan:
    """What the Secret should hold at `now`, given what it holds (`data`, None when absent).

    The CA is kept while it is a valid self-signed CA with its key and more than the renewal
    margin left; the serving certificate while it is issued by that CA for every wanted DNS name
    with its key and more than its margin left. Anything unreadable (a tampered Secret) is
    replaced. A replaced CA that has not expired stays in the bundle until it does.
    """
    if not policy.dns_names:
        raise ValueError("certificate rotation needs at least one DNS name")
    reasons: list[str] = []
    data = data or {}
    stored_cas = _certs(data.get(CA_CERT))
    ca = stored_cas[0] if stored_cas else None
    ca_key = _private_key(data.get(CA_KEY))
    older: list[x509.Certificate] = []
    problem = _ca_problem(ca, ca_key, policy, now) if data else "the Secret is new"
    damaged = isinstance(problem, _Damaged)
    ca_rotated = problem is not None
    if problem is not None:
        reasons.append(f"new CA: {problem}")
        if ca is not None and _is_ca(ca):
            older.append(ca)
        ca, ca_key = _new_ca(policy, now)
    assert ca is not None
    assert ca_key is not None

    cert = next(iter(_certs(data.get(TLS_CERT))), None)
    key = _private_key(data.get(TLS_KEY))
    problem = _cert_problem(cert, key, ca, policy, now)
    damaged = damaged or (isinstance(problem, _Damaged) and not ca_rotated)
    if problem is not None:
        if not ca_rotated:
            reasons.append(f"new serving certificate: {problem}")
        cert, key = _new_serving(policy, ca, ca_key, now)
    assert cert is not None
    assert key is not None

    bundle = [ca]
    seen = {ca.fingerprint(hashes.SHA256())}
    for old in [*older, *_certs(data.get(CA_BUNDLE))]:
        fingerprint = old.fingerprint(hashes.SHA256())
        if fingerprint in seen or not _is_ca(old) or old.not_valid_after_utc <= now:
            continue
        seen.add(fingerprint)
        bundle.append(old)
    bundle_pem = b"".join(_pem(c) for c in bundle[:MAX_BUNDLE_CAS])
    if bundle_pem != data.get(CA_BUNDLE) and not ca_rotated:
        reasons.append("CA bundle updated (expired or unreadable CAs dropped)")
    # Always re-encoded: every replica then writes the same bytes for the same keys.
    material = CertMaterial(_pem(ca), _pem_key(ca_key), _pem(cert), _pem_key(key), bundle_pem)
    changed = any(data.get(k) != v for k, v in material.secret_data().items())
    return CertPlan(material, changed, ca_rotated, tuple(reasons), damaged)


def certificate_summary(pem: bytes) -> str:
    """Serial and expiry of the first certificate in `pem`, for logs."""
    certs = _certs(pem)
    if not certs:
        return "(unreadable)"
    c = certs[0]
    return f"serial {c.serial_number:x}, expires {c.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"


def write_atomically(path: Path, content: bytes, mode: int = 0o644) -> bool:
    """Replace `path` with `content` in one rename (readers never see half a file); False when
    it already holds exactly that."""
    try:
        if path.read_bytes() == content:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    os.replace(temporary, path)
    return True


def trusted_until(cert_pem: bytes, bundle_pem: bytes) -> dt.datetime | None:
    """When the certificate `cert_pem` expires if a CA of `bundle_pem` issued it, else None
    (a client trusting only that bundle would refuse it)."""
    cert = next(iter(_certs(cert_pem)), None)
    if cert is None:
        return None
    if not any(_is_ca(ca) and _issued_by(cert, ca) for ca in _certs(bundle_pem)):
        return None
    return cert.not_valid_after_utc
