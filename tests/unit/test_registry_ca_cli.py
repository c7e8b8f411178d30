"""`imagegate serve` with a bad IMAGEGATE_REGISTRY_CA_FILE stops before listening, with one
line naming the path (not uvicorn's "Application startup failed" traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from webhook.cli import app


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), ("not a certificate\n", "holds no PEM certificate")],
    ids=["missing", "not-pem"],
)
def test_serve_refuses_a_bad_registry_ca_bundle(
    tmp_path: Path, content: str | None, message: str
) -> None:
    bundle = tmp_path / "ca.pem"
    if content is not None:
        bundle.write_text(content)
    result = CliRunner().invoke(
        app,
        ["serve", "--self-signed", "--cert-dir", str(tmp_path / "tls"), "--metrics-port", "0"],
        env={"COLUMNS": "300", "IMAGEGATE_REGISTRY_CA_FILE": str(bundle)},
    )
    output = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert f"registry CA bundle {bundle}" in output
    assert message in output
    assert "Traceback" not in output
