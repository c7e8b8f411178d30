"""The ImageRebuild resource (`imagegate.dev/v1alpha1`, namespaced) as pydantic models.

`spec` says what to rebuild and where to push it; `status` is written by the operator. The CRD
schema is generated from these models (`imagegate crds`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from webhook.policy.model import ObjectMeta

API_VERSION: Final = "imagegate.dev/v1alpha1"
KIND: Final = "ImageRebuild"

Fix = Literal["nonRootUser", "singleEntrypoint", "sizeBudget", "allowedBase"]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Phase(StrEnum):
    pending = "Pending"
    running = "Running"
    succeeded = "Succeeded"
    failed = "Failed"
    unfixable = "Unfixable"


class ImageRebuildSpec(_Model):
    source: str = Field(description="Image reference to rebuild (tag or digest).", min_length=1)
    target_repository: str = Field(
        description="Repository the replacement is pushed to (registry/name, no tag).",
        min_length=1,
    )
    fixes: list[Fix] | None = Field(
        default=None,
        description="Fixes to apply; omitted: whatever the policy needs for this image.",
    )
    policy: str | None = Field(
        default=None, description="ImagePolicy whose rules decide the fixes (default: all)."
    )
    user: str | None = Field(
        default=None, description="Numeric USER for the nonRootUser fix (default 65532:65532)."
    )
    rebase_onto: str | None = Field(
        default=None, description="Approved base to rebase onto for the allowedBase fix."
    )
    platforms: list[str] | None = Field(
        default=None, description="Platforms to rebuild for a multi-arch source (default: all)."
    )
    image_pull_secrets: list[str] | None = Field(
        default=None,
        description=(
            "Secrets of this namespace to read the source with, besides those of its default "
            "ServiceAccount (the operator's own credentials never read the source)."
        ),
    )


class Condition(_Model):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class RuleVerdicts(_Model):
    verdict: Literal["pass", "fail", "error"]
    failed_rules: list[str] = Field(default_factory=list)


class ImageRebuildStatus(_Model):
    phase: Phase = Phase.pending
    source_digest: str | None = None
    replacement: str | None = Field(default=None, description="repo@sha256:… of the result.")
    replacement_tag: str | None = None
    before: RuleVerdicts | None = None
    after: RuleVerdicts | None = None
    bytes_saved: int | None = None
    message: str = ""
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    running_by: str | None = Field(
        default=None, description="Operator replica rebuilding it now (a claim, see runningSince)."
    )
    running_since: str | None = Field(
        default=None, description="When that replica claimed it; stale claims are taken over."
    )


class ImageRebuild(_Model):
    api_version: Literal["imagegate.dev/v1alpha1"] = API_VERSION
    kind: Literal["ImageRebuild"] = KIND
    metadata: ObjectMeta
    spec: ImageRebuildSpec
    status: ImageRebuildStatus | None = None
