"""`admission.k8s.io/v1` AdmissionReview, as the API server sends and expects it.

Only the envelope is typed; `object`/`oldObject` stay plain dicts because they can be any of
the workload kinds, and parsing whole Pod specs into models on every request costs time for
nothing (we read a handful of fields).

Every review is parsed and its envelope validated in one pass by msgspec: on the 3 kB
realistic Pod review that is 6.3 µs, where pydantic's JSON mode took 14.7 and orjson then
pydantic 9.1 (`json.loads` alone takes 12.5). What goes out is built by imagegate itself, so
the response types are plain slotted dataclasses (0.3 µs to build; a pydantic model 0.9).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec


class GroupVersionKind(msgspec.Struct, frozen=True, rename="camel"):
    version: str
    kind: str
    group: str = ""


class GroupVersionResource(msgspec.Struct, frozen=True, rename="camel"):
    version: str
    resource: str
    group: str = ""


class AdmissionRequest(msgspec.Struct, frozen=True, rename="camel"):
    """Unknown fields (requestKind, requestResource…) are ignored, as the API adds them."""

    uid: Annotated[str, msgspec.Meta(min_length=1)]
    kind: GroupVersionKind
    resource: GroupVersionResource
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    sub_resource: str | None = None
    name: str | None = None
    namespace: str | None = None
    user_info: dict[str, Any] = {}
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = None
    dry_run: bool = False
    options: dict[str, Any] | None = None


class AdmissionReview(msgspec.Struct, frozen=True, rename="camel"):
    api_version: Literal["admission.k8s.io/v1"]
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


_decode = msgspec.json.Decoder(AdmissionReview).decode


class ReviewError(ValueError):
    """Why a body is not an admission.k8s.io/v1 AdmissionReview (for the 400 answer)."""


def parse_review(body: bytes) -> AdmissionReview:
    """The review in `body`, or `ReviewError` saying what is wrong with it and where."""
    try:
        return _decode(body)
    except msgspec.ValidationError as err:  # JSON, but not a review: "… - at `$.request.uid`"
        raise ReviewError(str(err)) from None
    except msgspec.DecodeError as err:
        raise ReviewError(f"the body is not JSON ({err})") from None
    except RecursionError:  # msgspec recurses per nesting level; a tenant controls the depth
        raise ReviewError("the body is not JSON this webhook reads (nested too deeply)") from None


def review_from(document: Any) -> AdmissionReview:
    """A review from already-decoded JSON (tests, benchmarks); `ReviewError` as `parse_review`."""
    try:
        return msgspec.convert(document, AdmissionReview)
    except msgspec.ValidationError as err:
        raise ReviewError(str(err)) from None


@dataclass(slots=True)
class Status:
    code: int
    message: str
    reason: str | None = None


@dataclass(slots=True)
class AdmissionResponse:
    uid: str
    allowed: bool
    status: Status | None = None
    warnings: list[str] | None = None
    patch_type: Literal["JSONPatch"] | None = None
    patch: str | None = None
    audit_annotations: dict[str, str] | None = None


def review_json(response: AdmissionResponse) -> dict[str, Any]:
    """The AdmissionReview the API server expects back (nulls left out)."""
    out: dict[str, Any] = {"uid": response.uid, "allowed": response.allowed}
    status = response.status
    if status is not None:
        out["status"] = {"code": status.code, "message": status.message}
        if status.reason is not None:
            out["status"]["reason"] = status.reason
    optional = (
        ("warnings", response.warnings),
        ("patchType", response.patch_type),
        ("patch", response.patch),
        ("auditAnnotations", response.audit_annotations),
    )
    out.update((key, value) for key, value in optional if value is not None)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": out}
