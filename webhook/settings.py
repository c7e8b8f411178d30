"""All configuration in one place: environment (`IMAGEGATE_*`) and CLI flags end up here.

No other module reads `os.environ`; they receive a `Settings` (or the part they need).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class RegistrySettings(BaseSettings):
    """How imagegate talks to registries."""

    model_config = SettingsConfigDict(
        env_prefix="IMAGEGATE_REGISTRY_", extra="forbid", populate_by_name=True
    )

    insecure_registries: list[str] = Field(
        default_factory=list,
        description="Registries spoken to over plain HTTP besides loopback ones (host[:port]).",
    )
    mirrors: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Registry host → host[:port] to connect to instead, as containerd's hosts.toml "
            'does: {"localhost:5001": "kind-registry:5000"} lets a webhook in a kind cluster '
            "read images that nodes pull from the local registry. Plain HTTP when the original "
            "registry is loopback or insecure."
        ),
    )
    redirect_networks: list[str] = Field(
        default_factory=list,
        description=(
            "Private, loopback or link-local ranges (CIDRs) a registry may redirect to on another "
            "host. Empty: such redirects are refused, so a hostile registry cannot point the "
            "webhook at an internal service (169.254.169.254, the API server, a sidecar)."
        ),
    )
    tenant_credential_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Registries for which the webhook's own docker config credentials are also used to "
            "inspect tenants' images (after their pull secrets). Empty: tenants' images are "
            "read with their pull secrets only, so the webhook's credentials never open a "
            "private image for a tenant who has no access to it."
        ),
    )
    docker_config: Path | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "IMAGEGATE_REGISTRY_DOCKER_CONFIG", "DOCKER_CONFIG", "docker_config"
        ),
        description="Docker config.json (or the directory holding it); default ~/.docker.",
    )
    timeout_seconds: float = Field(default=10.0, gt=0, description="Per-request timeout.")
    retries: int = Field(default=3, ge=0, description="Retries on 429/5xx and connection errors.")
    backoff_seconds: float = Field(default=0.2, ge=0, description="First retry delay; doubles.")
    max_retry_after_seconds: float = Field(
        default=5.0, ge=0, description="Longest Retry-After we are willing to honour."
    )
    max_manifest_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    max_config_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    cache_bytes: int = Field(default=64 * 1024 * 1024, gt=0, description="Digest cache size.")
    tag_ttl_seconds: float = Field(
        default=30.0, ge=0, description="How long tag→digest is trusted."
    )
    negative_ttl_seconds: float = Field(
        default=5.0, ge=0, description="How long failures are cached."
    )
    keepalive_seconds: float = Field(
        default=90.0,
        ge=0,
        description=(
            "How long an idle registry connection is kept for the next request. httpx's 5 s "
            "default made every cold admission after a pause open (and on HTTPS, handshake) "
            "new connections."
        ),
    )
    http2: bool = Field(
        default=True,
        description=(
            "Offer HTTP/2 to HTTPS registries (ALPN decides): parallel fetches share one "
            "connection. Plain-HTTP registries always speak HTTP/1.1."
        ),
    )
    ca_file: Path | None = Field(
        default=None,
        description=(
            "A PEM file, or a directory of PEM files (a mounted ConfigMap or Secret), of CA "
            "certificates trusted for registries in addition to the system and certifi roots."
        ),
    )


class WebhookSettings(BaseSettings):
    """How `imagegate serve` admits objects."""

    model_config = SettingsConfigDict(env_prefix="IMAGEGATE_WEBHOOK_", extra="forbid")

    request_budget_seconds: float = Field(
        default=8.0,
        gt=0,
        description="Time one admission may take; keep it below the webhook timeoutSeconds (10).",
    )
    max_body_bytes: int = Field(
        default=3 * 1024 * 1024, gt=0, description="Larger AdmissionReview bodies are refused."
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, description="A request's head must arrive within this; else closed."
    )
    body_timeout_seconds: float = Field(
        default=10.0, gt=0, description="A request's body must arrive within this; else 408."
    )
    # Longer than the API server's own idle timeout (Go's IdleConnTimeout, 90 s), so the client
    # closes an idle connection first: a server closing it can race a request the API server
    # just wrote on it, which fails with EOF (not retried: a POST) and, with failurePolicy
    # Fail, refuses the admission.
    keep_alive_seconds: float = Field(
        default=120.0, gt=0, description="Idle keep-alive connections are closed after this."
    )
    metrics_port: int = Field(
        default=8081,
        ge=0,
        le=65535,
        description=(
            "Plain-HTTP port serving only /metrics (for Prometheus), beside the HTTPS admission "
            "port, which keeps /metrics too; 0: off."
        ),
    )
    max_containers: int = Field(
        default=100, gt=0, description="Objects with more containers (all lists) are denied."
    )
    max_pull_secrets: int = Field(
        default=32, gt=0, description="Pods naming more imagePullSecrets are denied."
    )
    max_images: int = Field(
        default=50, gt=0, description="Objects with more distinct images are denied."
    )
    exempt_namespaces: list[str] = Field(
        default_factory=lambda: ["kube-system"],
        description="Namespaces never checked (the webhook's own is added at start).",
    )
    opt_out_label: str = Field(
        default="imagegate.dev/ignore",
        description='Namespaces labelled with this key set to "true" are not checked.',
    )
    namespace: str | None = Field(
        default=None,
        validation_alias=AliasChoices("IMAGEGATE_NAMESPACE", "namespace"),
        description="The webhook's own namespace (from the downward API); exempt too.",
    )
    policy_refresh_seconds: float = Field(
        default=5.0, gt=0, description="How often ImagePolicies are re-read from the cluster."
    )

    @property
    def skipped_namespaces(self) -> frozenset[str]:
        """Namespaces neither admitted nor scanned: the exempt ones and imagegate's own."""
        return frozenset([*self.exempt_namespaces, *([self.namespace] if self.namespace else [])])

    policy: Path | None = Field(
        default=None, description="ImagePolicy file or directory (default: built-in default)."
    )
    policies_from_cluster: bool = Field(
        default=False, description="Read ImagePolicy objects from the cluster instead of files."
    )
    replacements: Path | None = Field(
        default=None, description="File of sourceDigest → replacement pairs to swap in."
    )
    kubernetes: Literal["auto", "required", "off"] = Field(
        default="auto",
        description="auto: use the Kubernetes API when one is configured; off: never.",
    )
    kubeconfig: str | None = Field(
        default=None, description="Kubeconfig path; default in-cluster config, then KUBECONFIG."
    )
    log_denies: bool = Field(
        default=False,
        description=(
            "Also write the audit record (a JSON log line) for denied requests; admitted ones "
            "with problems always get one. Off by default, as Gatekeeper's --log-denies: a "
            "denial is already in the client's answer, the API server's audit log and metrics."
        ),
    )
    record_reports: bool = Field(
        default=True,
        description="Record admitted workloads' results in PolicyReports (needs the CRDs).",
    )
    report_flush_seconds: float = Field(
        default=5.0, gt=0, description="How often batched admission results are written."
    )
    cert_reload_seconds: float = Field(
        default=5.0, gt=0, description="How often the TLS files are checked for rotation."
    )
    # Built-in certificate rotation (webhook.admission.certs), as Gatekeeper's cert-controller.
    cert_secret: str | None = Field(
        default=None,
        description=(
            "Secret (in the webhook's namespace) where the webhook keeps its own CA and serving "
            "certificate, creating and renewing them; unset: certificates come from files."
        ),
    )
    cert_webhooks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Validating/MutatingWebhookConfigurations (comma-separated names) whose every "
            "webhook's clientConfig.caBundle the rotator keeps current."
        ),
    )
    cert_dns_names: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="DNS names of the webhook Service (comma-separated): svc, svc.ns, svc.ns.svc.",
    )
    cert_dir: Path | None = Field(
        default=None, description="Where the rotator writes tls.crt, tls.key, ca.crt (local)."
    )
    cert_ca_lifetime: timedelta = Field(
        default=timedelta(days=365), description="Lifetime of a CA the rotator makes (P365D)."
    )
    cert_lifetime: timedelta = Field(
        default=timedelta(days=90), description="Lifetime of a serving certificate (P90D)."
    )
    cert_renew_before: timedelta | None = Field(
        default=None,
        description="Renew this long before expiry; default: when a third of the lifetime is left.",
    )
    cert_check_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often the Secret and caBundles are re-checked (besides a Secret watch).",
    )

    @field_validator("cert_webhooks", "cert_dns_names", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _cert_lifetimes(self) -> WebhookSettings:
        if self.cert_lifetime > self.cert_ca_lifetime:
            raise ValueError("cert_lifetime must not exceed cert_ca_lifetime")
        if self.cert_renew_before is not None and self.cert_renew_before >= self.cert_lifetime:
            raise ValueError("cert_renew_before must be shorter than cert_lifetime")
        return self

    shutdown_delay_seconds: float = Field(
        default=0.0,
        ge=0,
        description=(
            "After SIGTERM, keep serving this long before shutting down: in a cluster, requests "
            "are still routed to a terminating Pod until kube-proxy and the API server learn "
            "that its endpoint is gone (the chart sets 5). A second signal, or SIGINT, stops at "
            "once."
        ),
    )


class OperatorSettings(BaseSettings):
    """How `imagegate operator` scans and rebuilds."""

    model_config = SettingsConfigDict(env_prefix="IMAGEGATE_OPERATOR_", extra="forbid")

    scan_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Background audit scan period (also run on policy changes).",
    )
    workdir: Path | None = Field(
        default=None, description="Where rebuilds stage layers (default: the system temp dir)."
    )


class LayerSettings(BaseSettings):
    """Deep inspection: reading image layers (`webhook.layers`)."""

    model_config = SettingsConfigDict(env_prefix="IMAGEGATE_LAYERS_", extra="forbid")

    cache_dir: Path | None = Field(
        default=None,
        description="Where layer indexes are kept (default: imagegate-layers in the temp dir).",
    )
    max_disk_bytes: int = Field(
        default=2 * 1024**3, gt=0, description="Disk budget of the layer index cache."
    )
    max_layer_bytes: int = Field(
        default=4 * 1024**3,
        gt=0,
        description="Largest layer read, compressed and uncompressed (larger: an error).",
    )
    download_concurrency: int = Field(
        default=2, gt=0, description="Layers downloaded at once (each up to max_layer_bytes)."
    )
    warm: bool = Field(
        default=True,
        description=(
            "Read the layers of images checked without them in the background, so that "
            "`deepInspection: cachedOnly` finds them next time."
        ),
    )
    deep: Literal["policy", "always", "never"] = Field(
        default="policy",
        description=(
            "When layers are read: as each policy's deepInspection says, or always (the "
            "operator's scan, `imagegate check --layers`), or never."
        ),
    )

    @property
    def directory(self) -> Path:
        import tempfile

        return self.cache_dir or Path(tempfile.gettempdir()) / "imagegate-layers"


class Settings(BaseSettings):
    """Top-level settings for every imagegate command."""

    model_config = SettingsConfigDict(
        env_prefix="IMAGEGATE_", env_nested_delimiter="__", extra="forbid"
    )

    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    operator: OperatorSettings = Field(default_factory=OperatorSettings)
    layers: LayerSettings = Field(default_factory=LayerSettings)
    platform: str | None = Field(
        default=None,
        description=(
            "Only this platform of an index is checked (os/arch[/variant]); default: every "
            "runnable platform the policies allow."
        ),
    )
    check_concurrency: int = Field(
        default=16, gt=0, description="Images inspected at once, per registry."
    )
