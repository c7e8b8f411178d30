"""The `imagegate` command line (Typer). Commands parse flags, call a service, print."""

from __future__ import annotations

import asyncio
import json
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ByteSize, TypeAdapter, ValidationError
from rich.console import Console
from rich.text import Text

from webhook import __version__
from webhook.admission.tls import CertFiles
from webhook.admission.tls import self_signed as generate_self_signed
from webhook.crds import crds_yaml, write_crds
from webhook.errors import ImagegateError, UsageError
from webhook.policy.checker import Checker, CheckResult
from webhook.policy.loader import load_policies
from webhook.policy.model import ImagePolicy
from webhook.registry.auth import Keyring
from webhook.registry.client import RegistryClient
from webhook.registry.facts import Platform
from webhook.report.check_output import render_table, to_json
from webhook.settings import Settings

app = typer.Typer(
    name="imagegate",
    help="Gate container images: non-root, approved base, size budget, single entrypoint, pinned.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
stdout = Console()
stderr = Console(stderr=True)


class CheckOutput(StrEnum):
    table = "table"
    json = "json"


@app.command()
def check(
    refs: Annotated[list[str], typer.Argument(help="Image references, or docker-daemon:NAME.")],
    policy: Annotated[
        Path | None, typer.Option(help="ImagePolicy file or directory (default: built-in default).")
    ] = None,
    output: Annotated[CheckOutput, typer.Option(help="Output format.")] = CheckOutput.table,
    platform: Annotated[
        str | None,
        typer.Option(help="os/arch[/variant] to check (default: policy's, else this machine's)."),
    ] = None,
    allow_base: Annotated[
        list[str] | None, typer.Option("--allow-base", help="Approve this base image (repeatable).")
    ] = None,
    max_size: Annotated[
        str | None, typer.Option(help="Size budget, for example 200MB or 1.5GiB.")
    ] = None,
    insecure_registry: Annotated[
        list[str] | None,
        typer.Option("--insecure-registry", help="Speak plain HTTP to this registry (repeatable)."),
    ] = None,
) -> None:
    """Check images against policies.

    Exit 0: all pass; 1: a violation; 2: usage or inspection error.
    """
    try:
        settings = Settings()
        if insecure_registry:
            settings.registry.insecure_registries.extend(insecure_registry)
        policies = load_policies(policy) if policy else [ImagePolicy()]
        budget = _parse_size(max_size) if max_size else None
        policies = [p.with_overrides(allow_base, budget) for p in policies]
        wanted = platform or settings.platform
        chosen = Platform.parse(wanted) if wanted else None
        results = asyncio.run(_check(settings, refs, policies, chosen))
    except ImagegateError as err:
        stderr.print(Text.assemble(("error: ", "bold red"), str(err)), highlight=False)
        raise typer.Exit(2) from None
    if output is CheckOutput.json:
        print(to_json(results))
    else:
        render_table(results, stdout)
    verdicts = {r.verdict for r in results}
    raise typer.Exit(2 if "error" in verdicts else 1 if "fail" in verdicts else 0)


async def _check(
    settings: Settings, refs: list[str], policies: list[ImagePolicy], platform: Platform | None
) -> list[CheckResult]:
    keyring = Keyring.from_docker_config(settings.registry.docker_config)
    async with RegistryClient(settings.registry, keyring) as client:
        checker = Checker(client, settings.check_concurrency, settings.registry.tag_ttl_seconds)
        return await checker.check_all(refs, policies, platform)


def _parse_size(text: str) -> int:
    try:
        return int(TypeAdapter(ByteSize).validate_python(text))
    except ValidationError:
        raise UsageError(
            f"invalid --max-size {text!r}: use a size such as 200MB or 1.5GiB"
        ) from None


@app.command()
def serve(
    policy: Annotated[
        Path | None, typer.Option(help="ImagePolicy file or directory (default: built-in default).")
    ] = None,
    policies_from_cluster: Annotated[
        bool, typer.Option(help="Read ImagePolicy objects from the cluster instead.")
    ] = False,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="HTTPS port.")] = 8443,
    tls_cert: Annotated[Path | None, typer.Option(help="Serving certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Its private key (PEM).")] = None,
    self_signed: Annotated[
        bool, typer.Option(help="Generate a CA and a serving certificate; print the caBundle.")
    ] = False,
    san: Annotated[
        list[str] | None,
        typer.Option("--san", help="DNS name or IP for --self-signed (repeatable)."),
    ] = None,
    cert_dir: Annotated[
        Path | None, typer.Option(help="Where --self-signed writes ca.crt, tls.crt, tls.key.")
    ] = None,
    replacements: Annotated[
        Path | None, typer.Option(help="YAML file of sourceDigest → replacement pairs.")
    ] = None,
    insecure_registry: Annotated[
        list[str] | None,
        typer.Option("--insecure-registry", help="Speak plain HTTP to this registry (repeatable)."),
    ] = None,
    log_format: Annotated[str, typer.Option(help="json or text.")] = "json",
) -> None:
    """Run the admission webhook (HTTPS): /validate, /mutate, /healthz, /readyz, /metrics."""
    # Imported here so that `imagegate check` does not pay for FastAPI and uvicorn.
    from webhook import logs
    from webhook.admission.app import create_app
    from webhook.admission.server import run

    logs.configure(json_format=log_format == "json")
    try:
        settings = Settings()
        if insecure_registry:
            settings.registry.insecure_registries.extend(insecure_registry)
        hook = settings.webhook
        hook.policy, hook.policies_from_cluster, hook.replacements = (
            policy or hook.policy,
            policies_from_cluster or hook.policies_from_cluster,
            replacements or hook.replacements,
        )
        if hook.policy is not None:
            load_policies(hook.policy)  # refuse to start on an invalid policy, with the reason
        certs = _serving_certs(tls_cert, tls_key, self_signed, san, cert_dir)
        if certs is None:
            stderr.print("warning: serving plain HTTP; the API server only calls HTTPS webhooks")
        app_ = create_app(settings)
    except ImagegateError as err:
        stderr.print(Text.assemble(("error: ", "bold red"), str(err)), highlight=False)
        raise typer.Exit(2) from None
    if self_signed and certs is not None:
        print(f"caBundle: {certs.ca_bundle()}", flush=True)
    run(app_, host, port, certs, settings.webhook.cert_reload_seconds)


def _serving_certs(
    cert: Path | None,
    key: Path | None,
    self_signed: bool,
    san: list[str] | None,
    cert_dir: Path | None,
) -> CertFiles | None:
    if self_signed:
        if cert or key:
            raise UsageError("use either --self-signed or --tls-cert/--tls-key, not both")
        directory = cert_dir or Path(tempfile.mkdtemp(prefix="imagegate-tls-"))
        return generate_self_signed(san or ["localhost", "127.0.0.1"], directory)
    if bool(cert) != bool(key):
        raise UsageError("--tls-cert and --tls-key go together")
    if cert and key:
        for path in (cert, key):
            if not path.is_file():
                raise UsageError(f"{path}: no such file")
        return CertFiles(cert, key)
    return None


@app.command()
def crds(
    out: Annotated[
        Path | None, typer.Option(help="Write one file per CRD into this directory instead.")
    ] = None,
) -> None:
    """Print the CustomResourceDefinitions generated from the models (ImagePolicy, ImageRebuild)."""
    if out is None:
        print(crds_yaml(), end="")
        return
    for path in write_crds(out):
        print(path)


@app.command()
def schema() -> None:
    """Print the ImagePolicy JSON schema (the CRD's openAPIV3Schema is generated from it)."""
    print(json.dumps(ImagePolicy.model_json_schema(by_alias=True), indent=2))


@app.command()
def version() -> None:
    """Print the imagegate version."""
    print(__version__)


def main() -> None:
    app()
