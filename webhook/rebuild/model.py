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

Fix = Literal["nonRootUser", "dropSetuid", "singleEntrypoint", "sizeBudget", "allowedBase"]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Phase(StrEnum):
    # PartiallyFixed: the fixes that could be made were pushed, but the replacement still fails
    # a rule (status.stillFailing), so the webhook never swaps it in. Unfixable: no fix could be
    # made and nothing was pushed.
    pending = "Pending"
    running = "Running"
    succeeded = "Succeeded"
    partially_fixed = "PartiallyFixed"
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
        description=(
            "The only fixes to apply; omitted: whatever the policy needs for this image. Those "
            "that cannot be made are reported in status.stillFailing, the others still are."
        ),
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
        default=None,
        description=(
            "Platforms (os/arch[/variant]) to rebuild; the replacement of a multi-arch source is "
            "an index of just these (default: all). One the source lacks is an error."
        ),
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


class StillFailing(_Model):
    """A rule the replacement still fails, and why imagegate did not fix it."""

    rule: str
    message: str
    reason: str


class ImageRebuildStatus(_Model):
    phase: Phase = Field(
        default=Phase.pending,
        description=(
            "PartiallyFixed: the fixes that could be made were pushed, the replacement still "
            "fails the rules in stillFailing and is never swapped in. Unfixable: no fix could "
            "be made, nothing was pushed."
        ),
    )
    source_digest: str | None = None
    replacement: str | None = Field(default=None, description="repo@sha256:… of the result.")
    replacement_tag: str | None = None
    before: RuleVerdicts | None = None
    after: RuleVerdicts | None = None
    bytes_saved: int | None = None
    fixes: list[Fix] | None = Field(default=None, description="The fixes applied.")
    still_failing: list[StillFailing] | None = Field(
        default=None, description="Rules the replacement still fails, each with the reason."
    )
    dropped_platforms: list[str] | None = Field(
        default=None, description="Platforms of the source left out of the replacement."
    )
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
