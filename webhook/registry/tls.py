"""Which CAs registry certificates are verified against.

A private registry's certificate is usually signed by the company's own CA. In a cluster that
CA arrives as a mounted ConfigMap or Secret (the chart's `registryCA` value mounts it at
/etc/imagegate/registry-ca and sets IMAGEGATE_REGISTRY_CA_FILE), so `ca_file` may be one PEM
file or a directory of them. It is trusted *in addition* to the roots httpx trusts anyway
(certifi's) and the system's, so adding a private CA never breaks a public registry. A bundle
that is missing or holds no certificate is a startup error naming the path: a webhook that
silently ignored it would deny every image of that registry with a TLS error instead.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi

from webhook.errors import UsageError

_PEM_MARKER = "-----BEGIN CERTIFICATE-----"


def registry_ssl_context(ca_file: Path | None) -> ssl.SSLContext | bool:
    """`True` (httpx's default roots) without a bundle, else a context adding its CAs."""
    if ca_file is None:
        return True
    context = ssl.create_default_context()  # the system roots
    context.load_verify_locations(cafile=certifi.where())  # what httpx trusts by default
    for path in bundle_files(ca_file):
        _load(context, path, ca_file)
    return context


def bundle_files(ca_file: Path) -> list[Path]:
    """The PEM files of `ca_file`: itself, or the visible regular files of a directory (a
    ConfigMap mount's `..data` and timestamped directories are hidden, and left out)."""
    try:
        if ca_file.is_dir():
            files = sorted(
                p for p in ca_file.iterdir() if not p.name.startswith(".") and p.is_file()
            )
            if not files:
                raise UsageError(
                    f"registry CA bundle {ca_file} (IMAGEGATE_REGISTRY_CA_FILE) is an empty "
                    "directory: mount a ConfigMap or Secret holding PEM certificates there"
                )
            return files
        if not ca_file.exists():
            raise UsageError(
                f"registry CA bundle {ca_file} (IMAGEGATE_REGISTRY_CA_FILE) does not exist"
            )
    except OSError as exc:
        raise UsageError(
            f"cannot read registry CA bundle {ca_file} (IMAGEGATE_REGISTRY_CA_FILE): "
            f"{exc.strerror or exc}"
        ) from None
    return [ca_file]


def _load(context: ssl.SSLContext, path: Path, named: Path) -> None:
    where = f"registry CA bundle {path}" + (f" (in {named})" if path != named else "")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"cannot read {where}: {detail}") from None
    if _PEM_MARKER not in text:
        raise UsageError(f"{where} holds no PEM certificate ({_PEM_MARKER} not found)")
    try:
        context.load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError) as exc:
        raise UsageError(f"{where} is not a valid PEM certificate bundle: {exc}") from None
