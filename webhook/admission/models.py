"""`admission.k8s.io/v1` AdmissionReview, as the API server sends and expects it.

Only the envelope is typed; `object`/`oldObject` stay plain dicts because they can be any of
the workload kinds, and parsing whole Pod specs into models on every request costs time for
nothing (we read a handful of fields).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class GroupVersionKind(_Model):
    group: str = ""
    version: str
    kind: str


class GroupVersionResource(_Model):
    group: str = ""
    version: str
    resource: str


class AdmissionRequest(_Model):
    uid: str = Field(min_length=1)
    kind: GroupVersionKind
    resource: GroupVersionResource
    sub_resource: str | None = None
    name: str | None = None
    namespace: str | None = None
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    user_info: dict[str, Any] = Field(default_factory=dict)
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = None
    dry_run: bool = False
    options: dict[str, Any] | None = None


class AdmissionReview(_Model):
    api_version: Literal["admission.k8s.io/v1"]
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


class Status(_Model):
    code: int
    message: str
    reason: str | None = None


class AdmissionResponse(_Model):
    uid: str
    allowed: bool
    status: Status | None = None
    warnings: list[str] | None = None
    patch_type: Literal["JSONPatch"] | None = None
    patch: str | None = None
    audit_annotations: dict[str, str] | None = None


def review_json(response: AdmissionResponse) -> dict[str, Any]:
    """The AdmissionReview the API server expects back (nulls left out)."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response.model_dump(by_alias=True, exclude_none=True),
    }
