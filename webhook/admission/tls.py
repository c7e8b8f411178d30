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
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
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
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
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
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))  # type: ignore[union-attr]
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.touch(mode=0o600)
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
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
