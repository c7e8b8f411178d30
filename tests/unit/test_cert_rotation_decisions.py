"""The certificate decisions of the built-in rotator (`plan_certificates`), with a fixed clock.

Each case starts from what a Secret holds at some moment and says what the rotator must keep,
replace, and why. Real keys and certificates throughout; only the clock is chosen.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from webhook.admission.tls import (
    CA_BUNDLE,
    CA_CERT,
    CA_KEY,
    MAX_BUNDLE_CAS,
    TLS_CERT,
    TLS_KEY,
    CertPlan,
    CertPolicy,
    plan_certificates,
    trusted_until,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
NAMES = ("imagegate.imagegate-system.svc", "imagegate.imagegate-system.svc.cluster.local")
POLICY = CertPolicy(NAMES, ca_lifetime=365 * DAY, cert_lifetime=90 * DAY)

Data = dict[str, bytes]


def _initial() -> Data:
    return plan_certificates(None, POLICY, T0).material.secret_data()


def _cert(pem: bytes, index: int = 0) -> x509.Certificate:
    return x509.load_pem_x509_certificates(pem)[index]


def _bundle(plan: CertPlan) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(plan.material.ca_bundle)


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:
        return False
    return True


def _other_ca_pair() -> tuple[bytes, bytes]:
    """A CA and a serving pair of a different rotation (another cluster's Secret)."""
    other = plan_certificates(None, POLICY, T0).material
    return other.cert, other.key


@dataclass(frozen=True)
class Case:
    id: str
    data: Callable[[], Data | None]
    at: dt.datetime
    new_ca: bool
    new_cert: bool
    reason: str  # a fragment of the logged reason ("" when nothing changes)
    policy: CertPolicy = POLICY
    damaged: bool = False  # unreadable or mismatched material: logged as a warning


def _with(**changes: bytes) -> Callable[[], Data]:
    def make() -> Data:
        data = _initial()
        data.update({k.replace("_", "."): v for k, v in changes.items()})
        return data

    return make


def _rsa_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _ec_key() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _swapped_serving() -> Data:
    data = _initial()
    data[TLS_CERT], data[TLS_KEY] = _other_ca_pair()
    return data


def _serving_as_ca() -> Data:
    data = _initial()
    data[CA_CERT], data[CA_KEY] = data[TLS_CERT], data[TLS_KEY]
    return data


BAD_PEM = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"

CASES = [
    Case(
        "absent Secret: CA and serving certificate",
        lambda: None,
        T0,
        True,
        True,
        "the Secret is new",
    ),
    Case("fresh material is kept", _initial, T0, False, False, ""),
    Case(
        "serving certificate with more than a third left is kept",
        _initial,
        T0 + 59 * DAY,
        False,
        False,
        "",
    ),
    Case(
        "serving certificate in its last third is renewed",
        _initial,
        T0 + 61 * DAY,
        False,
        True,
        "serving certificate expires",
    ),
    Case(
        "expired serving certificate is renewed",
        _initial,
        T0 + 91 * DAY,
        False,
        True,
        "serving certificate expires",
    ),
    Case("CA in its last third is rotated", _initial, T0 + 250 * DAY, True, True, "the CA expires"),
    Case(
        "garbage tls.crt is replaced",
        _with(tls_crt=BAD_PEM),
        T0,
        False,
        True,
        "no readable serving certificate",
        damaged=True,
    ),
    Case(
        "garbage tls.key is replaced",
        _with(tls_key=b"not a key"),
        T0,
        False,
        True,
        "no readable ECDSA serving key",
        damaged=True,
    ),
    Case(
        "garbage ca.crt means a new CA",
        _with(ca_crt=b"\x00garbage"),
        T0,
        True,
        True,
        "no readable CA certificate",
        damaged=True,
    ),
    Case(
        "CA key of another CA means a new CA",
        _with(ca_key=_ec_key()),
        T0,
        True,
        True,
        "ca.key does not match",
        damaged=True,
    ),
    Case(
        "RSA CA key is not accepted",
        _with(ca_key=_rsa_key()),
        T0,
        True,
        True,
        "no readable ECDSA CA key",
        damaged=True,
    ),
    Case(
        "serving key of another certificate is replaced",
        _with(tls_key=_ec_key()),
        T0,
        False,
        True,
        "tls.key does not match",
        damaged=True,
    ),
    Case(
        "serving pair of another CA is replaced",
        _swapped_serving,
        T0,
        False,
        True,
        "not issued by the current CA",
        damaged=True,
    ),
    Case(
        "a serving certificate posing as the CA is refused",
        _serving_as_ca,
        T0,
        True,
        True,
        "not a self-signed CA",
        damaged=True,
    ),
    Case(
        "a new DNS name means a new serving certificate",
        _initial,
        T0,
        False,
        True,
        "lacks DNS names extra.example",
        replace(POLICY, dns_names=(*NAMES, "extra.example")),
    ),
    Case(
        "fewer DNS names keep the certificate (replicas of an older release)",
        _initial,
        T0,
        False,
        False,
        "",
        replace(POLICY, dns_names=NAMES[:1]),
    ),
    Case(
        "renew_before: kept while more remains",
        _initial,
        T0 + 79 * DAY,
        False,
        False,
        "",
        replace(POLICY, renew_before=10 * DAY),
    ),
    Case(
        "renew_before: renewed when less remains",
        _initial,
        T0 + 81 * DAY,
        False,
        True,
        "serving certificate expires",
        replace(POLICY, renew_before=10 * DAY),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan(case: Case) -> None:
    before = case.data()
    plan = plan_certificates(before, case.policy, case.at)
    after = plan.material
    ca, cert = _cert(after.ca_cert), _cert(after.cert)

    assert plan.changed == (case.new_ca or case.new_cert)
    assert plan.ca_rotated == case.new_ca
    assert (before is None or after.ca_cert != before.get(CA_CERT)) == case.new_ca
    assert (before is None or after.cert != before.get(TLS_CERT)) == case.new_cert
    assert case.reason in " ".join(plan.reasons)
    assert plan.damaged == case.damaged
    if not plan.changed:
        assert plan.reasons == ()
    # Whatever happened, the result is a coherent set: a P-256 CA, its key, a serving
    # certificate it issued for every wanted name, its key, and the CA first in the bundle.
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert _issued_by(cert, ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(case.policy.dns_names) <= set(sans.get_values_for_type(x509.DNSName))
    assert _bundle(plan)[0] == ca
    assert cert.not_valid_after_utc > case.at


def test_new_material_has_the_configured_lifetimes() -> None:
    plan = plan_certificates(None, POLICY, T0)
    ca, cert = _cert(plan.material.ca_cert), _cert(plan.material.cert)
    assert ca.not_valid_after_utc == T0 + 365 * DAY
    assert cert.not_valid_after_utc == T0 + 90 * DAY
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]


def test_ca_rotation_keeps_the_old_ca_in_the_bundle_until_it_expires() -> None:
    old = _initial()
    old_ca = _cert(old[CA_CERT])
    rotated = plan_certificates(old, POLICY, T0 + 250 * DAY)
    bundle = _bundle(rotated)
    assert [c.fingerprint(hashes.SHA256()) for c in bundle[1:]] == [
        old_ca.fingerprint(hashes.SHA256())
    ]
    # A replica still serving the old certificate stays trusted by the new bundle.
    assert trusted_until(old[TLS_CERT], rotated.material.ca_bundle) == T0 + 90 * DAY
    # Later checks keep the bundle as it is while the old CA is valid ...
    later = plan_certificates(rotated.material.secret_data(), POLICY, T0 + 300 * DAY)
    assert not later.changed
    # ... and drop the old CA once it has expired.
    expired = plan_certificates(rotated.material.secret_data(), POLICY, T0 + 366 * DAY)
    assert expired.changed
    assert not expired.ca_rotated
    assert _bundle(expired) == [_cert(rotated.material.ca_cert)]
    assert "CA bundle updated" in " ".join(expired.reasons)


def test_serving_certificate_never_outlives_its_ca() -> None:
    policy = replace(POLICY, renew_before=10 * DAY)
    data = _initial()
    at = T0 + 340 * DAY  # CA has 25 days left (more than renew_before): kept
    data[TLS_CERT], data[TLS_KEY] = b"", b""
    plan = plan_certificates(data, policy, at)
    assert not plan.ca_rotated
    assert _cert(plan.material.cert).not_valid_after_utc == T0 + 365 * DAY


def test_bundle_is_bounded() -> None:
    data = _initial()
    at = T0
    for _ in range(MAX_BUNDLE_CAS + 2):
        data[CA_CERT] = b"garbage"  # each check makes a new CA; the valid ones pile up
        plan = plan_certificates(data, POLICY, at)
        data = plan.material.secret_data()
    assert len(_bundle(plan)) == MAX_BUNDLE_CAS


def test_replicas_agree_on_stored_bytes() -> None:
    """Two replicas deciding on the same Secret at the same time write nothing."""
    data = _initial()
    first = plan_certificates(data, POLICY, T0 + DAY)
    second = plan_certificates(data, POLICY, T0 + DAY)
    assert not first.changed
    assert first.material == second.material


def test_trusted_until_refuses_a_certificate_of_another_ca() -> None:
    data = _initial()
    cert, _ = _other_ca_pair()
    assert trusted_until(cert, data[CA_BUNDLE]) is None
    assert trusted_until(b"garbage", data[CA_BUNDLE]) is None
    assert trusted_until(data[TLS_CERT], data[CA_BUNDLE]) == T0 + 90 * DAY


def test_no_dns_names_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one DNS name"):
        plan_certificates(None, replace(POLICY, dns_names=()), T0)


def test_ca_rotation_keeps_the_old_ca_even_without_a_stored_bundle() -> None:
    """A Secret from elsewhere (cert-manager, a hand-made one) has ca.crt but no ca-bundle.crt:
    replicas serving its certificate must stay trusted through the rotation too."""
    old = _initial()
    del old[CA_BUNDLE]
    rotated = plan_certificates(old, POLICY, T0 + 250 * DAY)
    assert rotated.ca_rotated
    assert [c.fingerprint(hashes.SHA256()) for c in _bundle(rotated)] == [
        _cert(rotated.material.ca_cert).fingerprint(hashes.SHA256()),
        _cert(old[CA_CERT]).fingerprint(hashes.SHA256()),
    ]
