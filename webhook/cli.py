"""The `imagegate` command line (Typer). Commands parse flags, call a service, print."""

from __future__ import annotations

import asyncio
import io
import json
import tempfile
from collections.abc import Iterator
from contextlib import aclosing, contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from pydantic import ByteSize, TypeAdapter, ValidationError
from rich.console import Console
from rich.text import Text

from webhook import __version__
from webhook.admission.tls import CertFiles
from webhook.admission.tls import self_signed as generate_self_signed
from webhook.context import ProcessContext
from webhook.crds import crds_yaml, write_crds
from webhook.errors import ImagegateError, Unfixable, UsageError
from webhook.policy.checker import CheckResult
from webhook.policy.loader import load_policies
from webhook.policy.model import ImagePolicy
from webhook.rebuild.engine import RebuildResult
from webhook.registry.facts import Platform
from webhook.report.check_output import render_table, to_json
from webhook.settings import Settings, WebhookSettings

app = typer.Typer(
    name="imagegate",
    help="Gate container images: non-root, approved base, size budget, single entrypoint, pinned.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
stdout = Console()
stderr = Console(stderr=True)


InsecureRegistries = Annotated[
    list[str] | None,
    typer.Option("--insecure-registry", help="Speak plain HTTP to this registry (repeatable)."),
]


def _settings(insecure_registries: list[str] | None = None) -> Settings:
    """Settings from the environment, plus registries named with --insecure-registry."""
    settings = Settings()
    settings.registry.insecure_registries.extend(insecure_registries or ())
    return settings


@contextmanager
def _exit_on_error() -> Iterator[None]:
    """Print an ImagegateError as a one-line `error:` and exit with the documented code.

    2 for usage, registry and rebuild errors; 1 for an image a rebuild cannot fix.
    """
    try:
        yield
    except Unfixable as err:
        stderr.print(Text.assemble(("cannot fix: ", "bold red"), str(err)), highlight=False)
        raise typer.Exit(1) from None
    except ImagegateError as err:
        stderr.print(Text.assemble(("error: ", "bold red"), str(err)), highlight=False)
        raise typer.Exit(2) from None


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
        typer.Option(
            help="Check only this os/arch or os/arch/variant of an index (default: every runnable "
            "platform the policies allow)."
        ),
    ] = None,
    allow_base: Annotated[
        list[str] | None, typer.Option("--allow-base", help="Approve this base image (repeatable).")
    ] = None,
    max_size: Annotated[
        str | None, typer.Option(help="Size budget, for example 200MB or 1.5GiB.")
    ] = None,
    insecure_registry: InsecureRegistries = None,
    layers: Annotated[
        bool,
        typer.Option(
            "--layers",
            help="Read the layers too (download once, cached by digest): wasted bytes as Dive "
            "counts them, cache files, setuid files, named users resolved.",
        ),
    ] = False,
) -> None:
    """Check images against policies.

    Exit 0: all pass; 1: a violation; 2: usage or inspection error.
    """
    with _exit_on_error():
        settings = _settings(insecure_registry)
        # a command that ends at once gains nothing from background reads
        deep = "always" if layers else settings.layers.deep
        settings.layers = settings.layers.model_copy(update={"warm": False, "deep": deep})
        policies = load_policies(policy) if policy else [ImagePolicy()]
        budget = _parse_size(max_size) if max_size else None
        policies = [p.with_overrides(allow_base, budget) for p in policies]
        wanted = platform or settings.platform
        chosen = Platform.parse(wanted) if wanted else None
        results = asyncio.run(_check(settings, refs, policies, chosen))
    if output is CheckOutput.json:
        print(to_json(results))
    else:
        render_table(results, stdout)
    verdicts = {r.verdict for r in results}
    raise typer.Exit(2 if "error" in verdicts else 1 if "fail" in verdicts else 0)


async def _check(
    settings: Settings, refs: list[str], policies: list[ImagePolicy], platform: Platform | None
) -> list[CheckResult]:
    local = ProcessContext.from_settings(settings, local_images=True)
    async with aclosing(local) as context:
        return await context.checker.check_all(refs, policies, platform)


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
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Plain-HTTP port serving only /metrics (0: off; default 8081, "
            "IMAGEGATE_WEBHOOK_METRICS_PORT).",
        ),
    ] = None,
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
        Path | None,
        typer.Option(help="Where --self-signed or --cert-secret writes ca.crt, tls.crt, tls.key."),
    ] = None,
    cert_secret: Annotated[
        str | None,
        typer.Option(
            help="Issue and rotate the certificates in this Secret of the webhook's namespace "
            "(IMAGEGATE_NAMESPACE), keeping the caBundle of --cert-webhook current."
        ),
    ] = None,
    cert_webhook: Annotated[
        list[str] | None,
        typer.Option(
            "--cert-webhook",
            help="Validating/MutatingWebhookConfiguration whose caBundle to keep (repeatable).",
        ),
    ] = None,
    cert_dns_name: Annotated[
        list[str] | None,
        typer.Option("--cert-dns-name", help="DNS name of the webhook Service (repeatable)."),
    ] = None,
    replacements: Annotated[
        Path | None, typer.Option(help="YAML file of sourceDigest → replacement pairs.")
    ] = None,
    insecure_registry: InsecureRegistries = None,
    log_format: Annotated[str, typer.Option(help="json or text.")] = "json",
) -> None:
    """Run the admission webhook (HTTPS): /validate, /mutate, /healthz, /readyz, /metrics."""
    # Imported here so that `imagegate check` does not pay for FastAPI and uvicorn.
    from webhook import logs
    from webhook.admission.app import create_app
    from webhook.admission.server import run
    from webhook.registry.tls import registry_ssl_context

    logs.configure(json_format=log_format == "json")
    with _exit_on_error():
        settings = _settings(insecure_registry)
        hook = settings.webhook
        hook.policy, hook.policies_from_cluster, hook.replacements = (
            policy or hook.policy,
            policies_from_cluster or hook.policies_from_cluster,
            replacements or hook.replacements,
        )
        hook.metrics_port = hook.metrics_port if metrics_port is None else metrics_port
        if hook.metrics_port == port:
            raise UsageError(f"--metrics-port {port}: the metrics port must differ from --port")
        if hook.policy is not None:
            load_policies(hook.policy)  # refuse to start on an invalid policy, with the reason
        registry_ssl_context(settings.registry.ca_file)  # a bad CA bundle: one line, not a trace
        if (cert_secret or hook.cert_secret) and (tls_cert or tls_key or self_signed):
            raise UsageError("use either --cert-secret or --tls-cert/--tls-key/--self-signed")
        certs = _rotated_certs(hook, cert_secret, cert_webhook, cert_dns_name, cert_dir)
        certs = certs or _serving_certs(tls_cert, tls_key, self_signed, san, cert_dir)
        if certs is None:
            stderr.print("warning: serving plain HTTP; the API server only calls HTTPS webhooks")
        app_ = create_app(settings)
    if self_signed and certs is not None:
        print(f"caBundle: {certs.ca_bundle()}", flush=True)
    run(
        app_, host, port, certs, hook.cert_reload_seconds, hook.shutdown_delay_seconds,
        head_timeout=hook.header_timeout_seconds, keep_alive=hook.keep_alive_seconds,
        metrics_port=hook.metrics_port, metrics=app_.metrics_text,
    )  # fmt: skip


def _rotated_certs(
    hook: WebhookSettings,
    secret: str | None,
    webhooks: list[str] | None,
    dns_names: list[str] | None,
    cert_dir: Path | None,
) -> CertFiles | None:
    """With --cert-secret (or IMAGEGATE_WEBHOOK_CERT_SECRET): wait for the first certificate,
    then keep rotating it in the background (`webhook.admission.certs`)."""
    from webhook.admission.certs import rotator_from_settings

    hook.cert_secret = secret or hook.cert_secret
    hook.cert_webhooks = webhooks or hook.cert_webhooks
    hook.cert_dns_names = dns_names or hook.cert_dns_names
    hook.cert_dir = cert_dir or hook.cert_dir
    rotator = rotator_from_settings(hook)
    if rotator is None:
        return None
    files = asyncio.run(rotator.first_certificate())
    rotator.start_background()
    return files


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


class ReportOutput(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"
    html = "html"


@app.command()
def rebuild(
    ref: Annotated[str, typer.Argument(help="Image to rebuild (tag or digest reference).")],
    to: Annotated[str, typer.Option("--to", help="Repository to push the replacement to.")],
    policy: Annotated[
        Path | None, typer.Option(help="ImagePolicy file or directory (default: built-in).")
    ] = None,
    user: Annotated[str, typer.Option(help="Numeric USER to set (UID[:GID]).")] = "65532:65532",
    squash: Annotated[
        bool | None, typer.Option("--squash/--no-squash", help="Squash layers above the base.")
    ] = None,
    rebase_onto: Annotated[str | None, typer.Option(help="Approved base to rebase onto.")] = None,
    platform: Annotated[
        list[str] | None,
        typer.Option(
            help="Rebuild only this os/arch or os/arch/variant of an index (repeatable or comma "
            "list); the replacement is an index of just those."
        ),
    ] = None,
    fix: Annotated[
        list[str] | None,
        typer.Option(
            "--fix",
            help="Apply only this fix (repeatable or comma list): nonRootUser, "
            "singleEntrypoint, sizeBudget, allowedBase (default: what the policy needs).",
        ),
    ] = None,
    allow_base: Annotated[
        list[str] | None, typer.Option("--allow-base", help="Approve this base image (repeatable).")
    ] = None,
    insecure_registry: InsecureRegistries = None,
    output: Annotated[CheckOutput, typer.Option(help="Output format.")] = CheckOutput.table,
) -> None:
    """Rebuild an image into a compliant, immutable replacement; print its reference.

    Every fix that can be made is made and pushed; what still fails is reported with why.

    Exit 0: it passes; 1: partially fixed, or nothing could be fixed; 2: usage or other error.
    """
    from webhook.rebuild.engine import rebuild as run_rebuild
    from webhook.rebuild.fixes import normalize_fixes

    with _exit_on_error():
        settings = _settings(insecure_registry)
        # The checks before and after a rebuild read every layer (the rebuild reads them
        # anyway): what they find must not depend on what an earlier run left in the cache.
        deep = "always" if settings.layers.deep == "policy" else settings.layers.deep
        settings.layers = settings.layers.model_copy(update={"warm": False, "deep": deep})
        policies = load_policies(policy) if policy else [ImagePolicy()]
        policies = [p.with_overrides(allow_base, None) for p in policies]
        platforms = [Platform.parse(p) for p in _comma_list(platform)] or None
        fixes = normalize_fixes(_comma_list(fix)) if fix else None

        async def go() -> RebuildResult:
            async with aclosing(ProcessContext.from_settings(settings, result_ttl=0)) as context:
                with tempfile.TemporaryDirectory(prefix="imagegate-rebuild-") as work:
                    return await run_rebuild(
                        context.registry, context.checker, ref, to, policies, fixes=fixes,
                        user=user, squash=squash, rebase_onto=rebase_onto, platforms=platforms,
                        workdir=Path(work),
                    )  # fmt: skip

        result = asyncio.run(go())
    if output is CheckOutput.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(result.replacement)
        _print_rebuild(result)
    raise typer.Exit(0 if result.succeeded else 1)


def _comma_list(values: list[str] | None) -> list[str]:
    """Repeated options, each possibly a comma list, as one list (`a,b --x c` → a, b, c)."""
    return [v.strip() for value in values or () for v in value.split(",") if v.strip()]


def _print_rebuild(result: RebuildResult) -> None:
    """The rebuild's summary on stderr (stdout holds only the replacement reference)."""
    phase = result.phase.value
    stderr.print(
        f"{phase}: fixes {', '.join(result.fixes) or 'none'}; tag {result.replacement_tag}; "
        f"{result.bytes_saved:,} bytes saved",
        highlight=False,
    )
    if result.dropped_platforms:
        stderr.print(f"  dropped platforms: {', '.join(result.dropped_platforms)}", highlight=False)
    for still in result.still_failing:
        stderr.print(
            f"  still fails {still.rule}: {still.message}\n    why: {still.reason}",
            highlight=False,
        )
    if result.reason and not result.still_failing:
        stderr.print(f"  {result.reason}", highlight=False)


@app.command()
def operator(
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces/--namespaced", "-A", help="Watch every namespace.")
    ] = True,
    namespace: Annotated[
        list[str] | None, typer.Option("--namespace", "-n", help="Watch only these (repeatable).")
    ] = None,
    peering: Annotated[
        str | None, typer.Option(help="kopf peering object shared by the replicas.")
    ] = None,
    standalone: Annotated[bool, typer.Option(help="No peering: the only replica.")] = False,
    priority: Annotated[
        int | None,
        typer.Option(
            help="Peering priority; the highest active replica works, the others wait "
            "(default: random, so two replicas never have the same)."
        ),
    ] = None,
    liveness: Annotated[
        str | None, typer.Option(help="Liveness endpoint, e.g. http://0.0.0.0:8080/healthz.")
    ] = None,
    log_format: Annotated[str, typer.Option(help="json or text.")] = "json",
) -> None:
    """Run the kopf operator: ImageRebuilds, background audit, PolicyReports, replacements."""
    import getpass
    import random
    import socket
    import uuid

    import kopf

    import webhook.operator.handlers  # noqa: F401 - registers the handlers with kopf
    from webhook import logs
    from webhook.operator.peering import Seat

    logs.configure(json_format=log_format == "json")
    chosen = priority if priority is not None else random.randint(1, 2**31 - 1)
    stderr.print(f"operator peering priority {chosen}", highlight=False)
    # kopf's own format (user@host/...), so `kubectl get clusterkopfpeering` reads the same
    identity = f"{getpass.getuser()}@{socket.gethostname()}/{uuid.uuid4().hex[:12]}"
    solo = standalone or peering is None  # no peering named: the only replica
    # a namespaced operator's KopfPeering lives in (each of) its namespaces
    seat = Seat(identity, chosen, None if solo else peering, namespace[0] if namespace else None)
    kopf.run(
        clusterwide=all_namespaces and not namespace,
        namespaces=namespace or (),
        peering_name=peering,
        standalone=solo or None,
        identity=cast(Any, identity),  # kopf's Identity is a NewType of str
        memo=kopf.Memo(seat=seat),
        priority=chosen,
        liveness_endpoint=liveness,
    )


@app.command()
def report(
    output: Annotated[ReportOutput, typer.Option(help="Output format.")] = ReportOutput.table,
    out: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="`imagegate check --output json`, or `kubectl get policyreports -A -o json`",
        ),
    ] = None,
    from_cluster: Annotated[
        bool, typer.Option(help="Read the cluster's PolicyReports (the default).")
    ] = False,
    scan: Annotated[
        bool, typer.Option(help="Scan the cluster's workloads now instead of reading reports.")
    ] = False,
    kubeconfig: Annotated[
        str | None, typer.Option(help="Kubeconfig (default: KUBECONFIG).")
    ] = None,
) -> None:
    """Report compliance: from a file, the cluster's PolicyReports, or a live scan."""
    from webhook.report.output import render
    from webhook.report.render import render_table
    from webhook.report.sources import report_from_cluster, report_from_entries, report_from_file

    now = datetime.now(UTC)
    with _exit_on_error():
        if sum((from_file is not None, from_cluster, scan)) > 1:
            raise UsageError("choose one of --from FILE, --from-cluster, --scan")
        if from_file is not None:
            data = report_from_file(from_file, now)
        elif scan:
            data = report_from_entries(asyncio.run(_scan(Settings(), kubeconfig)), now)
        else:
            data = report_from_cluster(asyncio.run(_read_reports(kubeconfig)), now)
        if output is ReportOutput.table and out is None:
            render_table(data, stdout)
            return
        text = render(data, output.value) if output is not ReportOutput.table else _table_text(data)
    if out is None:
        print(text, end="" if text.endswith("\n") else "\n")
    else:
        out.write_text(text, encoding="utf-8")
        stderr.print(f"wrote {out}", highlight=False)


def _table_text(data: Any) -> str:
    from webhook.report.render import render_table

    console = Console(record=True, width=120, file=io.StringIO())
    render_table(data, console)
    return console.export_text()


async def _read_reports(kubeconfig: str | None) -> list[dict[str, Any]]:
    from webhook.k8s.cluster import KubernetesCluster
    from webhook.report.recorder import report_writer

    cluster = KubernetesCluster.connect(kubeconfig)
    try:
        return await report_writer(cluster).read_all()
    finally:
        cluster.close()


async def _scan(settings: Settings, kubeconfig: str | None) -> list[Any]:
    from webhook.k8s.cluster import KubernetesCluster
    from webhook.operator.scan import Scanner
    from webhook.policy.store import ClusterPolicies

    cluster = KubernetesCluster.connect(kubeconfig)
    try:
        policies = ClusterPolicies(cluster, settings.webhook.policy_refresh_seconds)
        await policies.refresh()
        async with aclosing(ProcessContext.from_settings(settings)) as context:
            scanner = Scanner(context.checker, cluster, None, context.tenant_keyring)
            outcome = await scanner.scan(policies.policies)
            return list(outcome.entries)
    finally:
        cluster.close()


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


# ---- the chart's Helm hooks (webhook.k8s.cleanup) -------------------------------------------


@app.command("uninstall-cleanup")
def uninstall_cleanup(
    webhooks: Annotated[
        str, typer.Option(help="Comma-separated Validating/MutatingWebhookConfiguration names.")
    ],
    secret: Annotated[
        str | None,
        typer.Option(help="Also delete this Secret of IMAGEGATE_NAMESPACE (rotated TLS)."),
    ] = None,
    deployment: Annotated[
        str | None,
        typer.Option(
            help="Before deleting --secret, scale this Deployment of IMAGEGATE_NAMESPACE (the "
            "webhook, whose rotator would recreate the Secret) to 0 and wait for its Pods."
        ),
    ] = None,
    kubeconfig: Annotated[
        str | None, typer.Option(help="Default: in-cluster, then ~/.kube.")
    ] = None,
) -> None:
    """Delete the webhook configurations (the chart's pre-delete hook), so that an uninstall
    never leaves fail-closed webhooks behind the Pods that served them."""
    from webhook.k8s.certs import connect_api
    from webhook.k8s.cleanup import delete_secret, delete_webhook_configurations, scale_to_zero

    names = [n.strip() for n in webhooks.split(",") if n.strip()]
    with _exit_on_error():
        if not names:
            raise UsageError("--webhooks names no webhook configuration")
        namespace = Settings().webhook.namespace or ""
        if (secret or deployment) and not namespace:
            raise UsageError("--secret and --deployment need IMAGEGATE_NAMESPACE")
        api = connect_api(kubeconfig)
        try:
            for deleted in asyncio.run(delete_webhook_configurations(api, names)):
                print(f"deleted {deleted}")
            if deployment:
                waited = asyncio.run(scale_to_zero(api, namespace, deployment, 90.0))
                print(f"scaled Deployment {namespace}/{deployment} to 0 ({waited} Pods gone)")
            if secret and asyncio.run(delete_secret(api, namespace, secret)):
                print(f"deleted Secret {namespace}/{secret}")
        finally:
            api.close()


@app.command("install-objects")
def install_objects(
    file: Annotated[Path, typer.Option(help="YAML documents to apply (ImagePolicy, peering).")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for their CRDs.")] = 90.0,
    kubeconfig: Annotated[
        str | None, typer.Option(help="Default: in-cluster, then ~/.kube.")
    ] = None,
) -> None:
    """Server-side apply the chart's own custom resources once their CRDs are served (the
    chart's post-install hook: `helm install` cannot create them with their CRDs)."""
    import yaml

    from webhook.k8s.certs import connect_api
    from webhook.k8s.cleanup import apply_cluster_objects

    with _exit_on_error():
        try:
            documents = [d for d in yaml.safe_load_all(file.read_text()) if d]
        except (OSError, yaml.YAMLError) as err:
            raise UsageError(f"{file}: {err}") from None
        api = connect_api(kubeconfig)
        try:
            for done in asyncio.run(apply_cluster_objects(api, documents, timeout)):
                print(f"applied {done.kind}/{done.name} (attempts: {done.attempts})")
        finally:
            api.close()


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
