"""The ImagePolicy resource (`imagegate.dev/v1alpha1`) as pydantic models.

The same model validates policy files, becomes the CRD schema (`imagegate schema`) and is what
every rule reads. Field names are camelCase in YAML, snake_case in Python. Defaults here *are*
the default policy: `policies/default.yaml` spells them out and a test keeps both equal.
"""

from __future__ import annotations

import fnmatch
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic.alias_generators import to_camel

from webhook.errors import ImagegateError
from webhook.registry.facts import Platform
from webhook.registry.reference import Reference, normalize_host

API_VERSION: Final = "imagegate.dev/v1alpha1"
KIND: Final = "ImagePolicy"
SCRATCH = "scratch"

RULE_IDS = (
    "non-root-user",
    "allowed-base",
    "size-budget",
    "single-entrypoint",
    "immutable-reference",
    "allowed-registry",
    "layer-efficiency",
)


class Severity(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


class Mode(StrEnum):
    """What a violation does at admission. Order matters: later is stricter."""

    audit = "audit"
    warn = "warn"
    enforce = "enforce"


class OnError(StrEnum):
    """What to do when an image cannot be inspected (registry down, timeout, broken config)."""

    deny = "deny"
    allow = "allow"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class LabelSelectorRequirement(_Model):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        if self.operator == "In":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values


class LabelSelector(_Model):
    """A Kubernetes label selector; an empty selector matches everything."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            e.matches(labels) for e in self.match_expressions
        )


class ResourceFilter(_Model):
    """Which namespaces and images a policy is about. Names and images are globs (`*`, `?`)."""

    namespaces: list[str] = Field(default_factory=list)
    namespace_selector: LabelSelector | None = None
    images: list[str] = Field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.namespaces and self.namespace_selector is None and not self.images

    def namespace_matches(self, namespace: str | None, labels: dict[str, str]) -> bool | None:
        """True/False when this filter says something about the namespace, None when silent."""
        if not self.namespaces and self.namespace_selector is None:
            return None
        if namespace is None:
            return False
        by_label = self.namespace_selector is None or self.namespace_selector.matches(labels)
        return self.names_match(namespace) and by_label

    def names_match(self, namespace: str | None) -> bool:
        """Whether the namespace names (globs), when any are given, allow `namespace`."""
        return not self.namespaces or (
            namespace is not None
            and any(fnmatch.fnmatchcase(namespace, p) for p in self.namespaces)
        )

    def image_matches(self, image: str) -> bool | None:
        if not self.images:
            return None
        candidates = {image}
        try:
            ref = Reference.parse(image)
            candidates |= {str(ref), ref.familiar(), ref.name}
        except ImagegateError:
            pass
        return any(fnmatch.fnmatchcase(c, p) for c in candidates for p in self.images)


class _Rule(_Model):
    enabled: bool = Field(default=True, description="Evaluate this rule at all.")
    severity: Severity = Field(default=Severity.medium, description="Severity of a violation.")


class NonRootUserRule(_Rule):
    """`non-root-user`: the effective user must not be uid 0."""

    severity: Severity = Severity.high
    require_numeric_user: bool = Field(
        default=True,
        description=(
            "Refuse named users (`USER nobody`): the kubelet's runAsNonRoot cannot verify them."
        ),
    )


DEFAULT_BASES = (
    "gcr.io/distroless/*",
    "cgr.dev/chainguard/*",
    "docker.io/library/python:*-slim*",
    "docker.io/library/debian:*-slim",
    "docker.io/library/alpine:*",
    "docker.io/library/busybox:*",
    "registry.access.redhat.com/ubi9/ubi-minimal*",
)


class AllowedBasesRule(_Rule):
    """`allowed-base`: the image must be built on one of these base images."""

    references: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BASES),
        description=(
            "Approved bases. A reference without tag allows every tag; a reference with a digest "
            "allows only that digest; a fully qualified glob (`gcr.io/distroless/*`) matches "
            "by name only. Concrete references are also resolved to detect bases by layers."
        ),
    )
    allow_scratch: bool = Field(
        default=False, description="Accept images whose evidence says they are `FROM scratch`."
    )
    unknown_base: Literal["deny", "allow"] = Field(
        default="deny",
        description="What to do when no evidence tells which base an image was built on.",
    )
    unverified_claims: Literal["deny", "warn", "allow"] = Field(
        default="deny",
        description=(
            "What to do when the base an image claims (the base.name/base.digest annotation or "
            "label) cannot be verified against that base's layers: it cannot be read "
            "(unreachable, not found, no credentials) or its tag now names other layers. deny: "
            "a violation; warn and allow: admitted, reported as unverified with the reason. A "
            "claim its base's layers contradict is a violation whatever this says."
        ),
    )

    @field_validator("references")
    @classmethod
    def _references_parse(cls, values: list[str]) -> list[str]:
        for value in values:
            if value == SCRATCH:
                continue
            if is_glob(value):
                if not _has_registry_host(value):
                    raise ValueError(
                        f"glob {value!r} must be fully qualified (registry/repository), "
                        "for example docker.io/library/python:*-slim"
                    )
                continue
            try:
                Reference.parse(value)
            except ImagegateError as err:
                raise ValueError(str(err)) from None
        return values


ByteSizeField = Annotated[
    ByteSize,
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\s*\d*\.?\d+\s*[a-zA-Z]*\s*$"},
            ],
            "description": "Bytes, or a size with a unit: 200MB, 1.5GiB.",
        }
    ),
]


class SizeBudgetRule(_Rule):
    """`size-budget`: the compressed size a node pulls, summed over the platform's layers."""

    max_compressed_size: ByteSizeField = Field(
        default=ByteSize(200_000_000), description="Largest allowed compressed image size."
    )


DEFAULT_SUPERVISORS = (
    "supervisord",
    "s6-svscan",
    "/init",
    "runsvdir",
    "runit",
    "systemd",
    "/sbin/init",
    "honcho",
    "foreman",
    "circusd",
    "pm2",
)
DEFAULT_INIT_SHIMS = ("tini", "tini-static", "dumb-init", "catatonit", "docker-init")


class SingleEntrypointRule(_Rule):
    """`single-entrypoint`: one process per container, started in exec form."""

    allow_shell_form: bool = Field(
        default=False,
        description=(
            'Accept `sh -c "cmd"` with a single command (chains and `&` are refused anyway).'
        ),
    )
    supervisors: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SUPERVISORS),
        description=(
            "Programs that run several processes; a name matches the basename, "
            "a path the full path."
        ),
    )
    init_shims: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INIT_SHIMS),
        description="Tiny inits that run one child and forward signals; the child is checked.",
    )


class ImmutableReferenceRule(_Rule):
    """`immutable-reference`: what was checked is what runs."""

    severity: Severity = Severity.high
    mode: Literal["requireDigest", "pinOnAdmission"] = Field(
        default="pinOnAdmission",
        description=(
            "requireDigest: tag-only references are violations. pinOnAdmission: tags are "
            "accepted and the webhook rewrites them to the digest it checked."
        ),
    )
    forbid_latest: bool = Field(
        default=True, description="`latest` (or no tag) is a violation unless pinned by digest."
    )


class DeepInspection(StrEnum):
    """When admission reads the layers (`webhook.layers`): they say what the config cannot
    (wasted bytes, cache files, who a named USER is), but a cold image costs a download, so
    it is off by default; the operator's scan and `check --layers` always read them."""

    cached_only = "cachedOnly"  # only layers already indexed (the first admission stays fast)
    always = "always"
    never = "never"


class LayerEfficiencyRule(_Rule):
    """`layer-efficiency`: Dive CI's thresholds, plus no package caches left in the image.

    Evaluated only when the layers were read (`deepInspection`, `imagegate check --layers`, the
    operator's scan). Dive's own defaults (no `.dive-ci`): efficiency 0.9, user waste 0.1.
    """

    lowest_efficiency: float = Field(
        default=0.9, ge=0, le=1, description="Fail below this Dive efficiency score (0..1)."
    )
    highest_wasted_bytes: ByteSizeField | None = Field(
        default=None, description="Fail at or above this many wasted bytes (default: off)."
    )
    highest_user_wasted_percent: float | None = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Fail at or above this ratio (0..1) of wasted bytes to the non-base layers.",
    )
    forbid_cache_files: bool = Field(
        default=True, description="Fail when package-manager caches are left in the image."
    )


class Rules(_Model):
    non_root_user: NonRootUserRule = Field(default_factory=NonRootUserRule)
    allowed_bases: AllowedBasesRule = Field(default_factory=AllowedBasesRule)
    size_budget: SizeBudgetRule = Field(default_factory=SizeBudgetRule)
    single_entrypoint: SingleEntrypointRule = Field(default_factory=SingleEntrypointRule)
    immutable_reference: ImmutableReferenceRule = Field(default_factory=ImmutableReferenceRule)
    layer_efficiency: LayerEfficiencyRule = Field(default_factory=LayerEfficiencyRule)


class Remediation(_Model):
    """What the operator does about violations it sees in audit mode."""

    auto: bool = Field(
        default=False,
        description="Create an ImageRebuild for every non-compliant image seen in audit mode.",
    )
    drop_setuid: bool = Field(
        default=True,
        description=(
            "With the nonRootUser fix, remove setuid/setgid bits (dropSetuid); off: they are "
            "listed in the rebuild's status instead."
        ),
    )
    target_repository: str | None = Field(
        default=None,
        description=(
            "Repository replacements are pushed to (registry/name); default: the source's own "
            "repository, under a new unique tag (tags are never overwritten)."
        ),
    )
    target_repositories: list[str] = Field(
        default_factory=list,
        description=(
            "Other repositories an ImageRebuild under this policy may push to (registry/name, "
            "`*` globs such as `registry.example/rebuilt/*`). The source's own repository and "
            "targetRepository are always allowed; any other target ends the rebuild Failed, so "
            "whoever may create an ImageRebuild cannot make the operator push elsewhere."
        ),
    )

    def allows_target(self, source: str, target: str) -> bool:
        """Whether a rebuild of `source` may push to the repository `target`."""
        try:
            own = Reference.parse(source).name
            wanted = Reference.parse(target).name
        except ImagegateError:
            return False
        if wanted == own or (self.target_repository and wanted == self.target_repository):
            return True
        return any(fnmatch.fnmatchcase(wanted, pattern) for pattern in self.target_repositories)


class Registries(_Model):
    """`allowed-registry`: where images may come from, decided before any request is made."""

    allowed: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        default_factory=list,
        description=(
            "Registry hosts (host[:port], `*` globs such as `*.corp.example`; Docker Hub is "
            "`docker.io`) images may come from. Empty: any registry. An image from another "
            "registry is a violation found without asking that registry anything."
        ),
    )
    severity: Severity = Field(default=Severity.high, description="Severity of a violation.")

    def allows(self, registry: str) -> bool:
        if not self.allowed:
            return True
        host = normalize_host(registry).lower()
        return any(fnmatch.fnmatchcase(host, normalize_host(p).lower()) for p in self.allowed)


_PLATFORM_PATTERN: Final = r"^[a-z0-9_.-]+/[a-z0-9_.-]+(/[a-z0-9_.-]+)?$"


class PolicySpec(_Model):
    mode: Mode = Field(default=Mode.enforce, description="enforce denies, warn and audit admit.")
    on_error: OnError = Field(
        default=OnError.deny, description="Decision when an image cannot be inspected."
    )
    match: ResourceFilter = Field(
        default_factory=ResourceFilter, description="Empty: every namespace and image."
    )
    exclude: ResourceFilter = Field(default_factory=ResourceFilter)
    platform: str | None = Field(
        default=None,
        description=(
            "Deprecated: one node platform (os/arch[/variant]), the same as `platforms: [it]`."
        ),
    )
    platforms: list[Annotated[str, Field(pattern=_PLATFORM_PATTERN)]] = Field(
        default_factory=list,
        description=(
            "The platforms (linux/arch[/variant]) of the cluster's nodes: of a multi-arch image, "
            "the entry each of them would pull (chosen as containerd does) is checked. Empty: "
            "every Linux platform of the image that can run where the Pod may be scheduled."
        ),
    )
    deep_inspection: DeepInspection = Field(
        default=DeepInspection.never,
        description=(
            "When admission reads the layers: never (default), cachedOnly (only layers already "
            "indexed, so an admission never waits for a download; the webhook indexes the "
            "layers of the images it checks in the background), or always. `imagegate check "
            "--layers` and the operator's scan read them whatever this says."
        ),
    )
    rules: Rules = Field(default_factory=Rules)
    registries: Registries = Field(default_factory=Registries)
    remediation: Remediation = Field(default_factory=Remediation)

    @field_validator("platform")
    @classmethod
    def _platform_parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                Platform.parse(value)
            except ImagegateError as err:
                raise ValueError(str(err)) from None
        return value

    @field_validator("platforms")
    @classmethod
    def _platforms_parse(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if value and info.data.get("platform") is not None:
            raise ValueError("set `platforms` only: `platform` is its deprecated one-value form")
        for text in value:
            try:
                parsed = Platform.parse(text)
            except ImagegateError as err:
                raise ValueError(str(err)) from None
            if not parsed.runnable:
                raise ValueError(f"{text}: imagegate checks the images of Linux nodes (linux/…)")
        return value

    @property
    def node_platforms(self) -> tuple[Platform, ...]:
        """`platforms` (or the deprecated `platform`) parsed; empty: any Linux node."""
        texts = self.platforms or ([self.platform] if self.platform else [])
        return tuple(Platform.parse(t) for t in texts)


class ObjectMeta(BaseModel):
    """The part of Kubernetes metadata a policy needs; the API server adds more, kept as-is."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ImagePolicy(_Model):
    """A cluster-scoped ImagePolicy."""

    api_version: Literal["imagegate.dev/v1alpha1"] = API_VERSION
    kind: Literal["ImagePolicy"] = KIND
    metadata: ObjectMeta = Field(default_factory=lambda: ObjectMeta(name="default"))
    spec: PolicySpec = Field(default_factory=PolicySpec)

    @property
    def name(self) -> str:
        return self.metadata.name

    def applies_to(
        self,
        image: str,
        namespace: str | None = None,
        namespace_labels: dict[str, str] | None = None,
    ) -> bool:
        """Match and exclude, Kyverno-style: every part of `match` that is set must hold,
        and the policy is skipped when every part of `exclude` that is set holds."""
        labels = namespace_labels or {}
        match, exclude = self.spec.match, self.spec.exclude
        if namespace is not None and match.namespace_matches(namespace, labels) is False:
            return False
        if match.image_matches(image) is False:
            return False
        if exclude.empty:
            return True
        verdicts = [
            v
            for v in (
                exclude.namespace_matches(namespace, labels) if namespace is not None else None,
                exclude.image_matches(image),
            )
            if v is not None
        ]
        return not (verdicts and all(verdicts))

    @property
    def selects_namespaces_by_label(self) -> bool:
        """Whether deciding if this policy applies needs the namespace's labels."""
        spec = self.spec
        return spec.match.namespace_selector is not None or (
            spec.exclude.namespace_selector is not None
        )

    def may_apply(self, image: str, namespace: str | None) -> bool:
        """Whether this policy can apply while the namespace's labels are unknown: every filter
        that needs no labels must hold, and an exclude that needs them excludes nothing."""
        match, exclude = self.spec.match, self.spec.exclude
        if match.image_matches(image) is False:
            return False
        if not match.names_match(namespace):
            return False
        if exclude.empty or exclude.namespace_selector is not None:
            return True
        return self.applies_to(image, namespace, {})

    def with_overrides(
        self, allow_bases: list[str] | None = None, max_size: int | None = None
    ) -> ImagePolicy:
        """A copy with the `check` command's --allow-base and --max-size applied."""
        data: dict[str, Any] = self.model_dump(by_alias=True)
        rules = data["spec"]["rules"]
        if allow_bases:
            rules["allowedBases"]["references"] = [
                *rules["allowedBases"]["references"],
                *allow_bases,
            ]
            rules["allowedBases"]["enabled"] = True
        if max_size is not None:
            rules["sizeBudget"]["maxCompressedSize"] = max_size
            rules["sizeBudget"]["enabled"] = True
        return ImagePolicy.model_validate(data)


def is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _has_registry_host(text: str) -> bool:
    first, sep, _ = text.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")
