"""`imagegate serve --cert-secret`: refused with the reason when rotation cannot work."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from webhook.cli import app

ROTATE = ["serve", "--cert-secret", "imagegate-tls", "--cert-webhook", "imagegate"]
CASES = [
    pytest.param(
        [*ROTATE, "--cert-dns-name", "imagegate.ns.svc"], {},
        "IMAGEGATE_NAMESPACE (the Pod's namespace) is not set", id="no namespace",
    ),
    pytest.param(
        ROTATE, {"IMAGEGATE_NAMESPACE": "ns"},
        "no DNS names (--cert-dns-name / IMAGEGATE_WEBHOOK_CERT_DNS_NAMES)", id="no DNS names",
    ),
    pytest.param(
        ["serve", "--cert-secret", "s", "--cert-dns-name", "a"], {"IMAGEGATE_NAMESPACE": "ns"},
        "no webhook configurations", id="no webhook configurations",
    ),
    pytest.param(
        [*ROTATE, "--cert-dns-name", "a"],
        {"IMAGEGATE_NAMESPACE": "ns", "IMAGEGATE_WEBHOOK_KUBERNETES": "off"},
        "the Kubernetes API is off", id="kubernetes off",
    ),
    pytest.param(
        [*ROTATE, "--cert-dns-name", "a", "--self-signed"], {"IMAGEGATE_NAMESPACE": "ns"},
        "use either --cert-secret or --tls-cert/--tls-key/--self-signed", id="two TLS sources",
    ),
    pytest.param(
        ["serve", "--self-signed"],
        {"IMAGEGATE_NAMESPACE": "ns", "IMAGEGATE_WEBHOOK_CERT_SECRET": "s"},
        "use either --cert-secret", id="secret from the environment and --self-signed",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("args", "env", "message"), CASES)
def test_serve_refuses_rotation_it_cannot_do(
    args: list[str], env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("IMAGEGATE_NAMESPACE", "IMAGEGATE_WEBHOOK_CERT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200", **env})
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
