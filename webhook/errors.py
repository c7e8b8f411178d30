"""Every exception imagegate raises, each knowing what it means to a user.

`exit_code` is the CLI exit code (2: usage or inspection error, DESIGN §3). `http_status`
is the status the webhook answers with when the error reaches a route. Messages always name
the thing that was wrong (file, reference, registry) and why.
"""

from __future__ import annotations


class ImagegateError(Exception):
    """Base class: a problem we can explain to the user."""

    exit_code: int = 2
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(ImagegateError):
    """The user asked for something that cannot work (bad flag value, bad platform)."""

    http_status = 400


class PolicyError(ImagegateError):
    """A policy document is invalid: the message names the file, the path and the problem."""

    http_status = 400


class InvalidReference(ImagegateError):
    """An image reference does not parse the way Docker parses it."""

    http_status = 400


class InspectionError(ImagegateError):
    """An image could not be inspected. `reference` names the image concerned."""

    http_status = 502

    def __init__(self, message: str, reference: str = "") -> None:
        super().__init__(message)
        self.reference = reference


class RegistryError(InspectionError):
    """The registry answered, but not with what we need."""


class RegistryUnavailable(RegistryError):
    """Connection refused, DNS or TLS failure, timeout: the registry could not be reached."""

    http_status = 504


class RegistryUnauthorized(RegistryError):
    """401 after trying every credential we have."""


class RegistryForbidden(RegistryError):
    """403: the credentials are valid but may not read this repository."""


class ImageNotFound(RegistryError):
    """404 for the manifest or a blob."""


class RegistryRateLimited(RegistryError):
    """429 or 5xx still returned after every retry."""


class UnsupportedMediaType(RegistryError):
    """A manifest or config media type we do not understand."""


class InvalidImageData(RegistryError):
    """A manifest or config that is not valid JSON, has the wrong shape, or is too large."""


class DigestMismatch(RegistryError):
    """The bytes a registry sent do not hash to the digest they were asked for: a lying registry."""


class PlatformNotFound(InspectionError):
    """A multi-arch index has no manifest for the requested platform."""


class DaemonError(InspectionError):
    """The local Docker engine could not be asked about a `docker-daemon:` image."""


class RebuildError(ImagegateError):
    """A rebuild could not be completed (a tag conflict, a layer we cannot read, …).

    Registry trouble during a rebuild raises the `RegistryError` family instead, so callers can
    retry those; a `RebuildError` is about the image or the request and will not heal by itself.
    """

    http_status = 422


class Unfixable(RebuildError):
    """The image cannot be made compliant automatically; the message says why and what to do."""


class ClusterError(ImagegateError):
    """The Kubernetes API did not do what was asked. `status` is the HTTP status, when it answered.

    Raised only by `webhook.k8s` (`webhook.k8s.calls.call` picks the subclass), so nothing above
    the adapter sees the kubernetes client's exceptions.
    """

    http_status = 502

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ClusterUnavailable(ClusterError):
    """The API server could not be reached, timed out, throttled (429) or failed (5xx)."""

    http_status = 504


class ClusterForbidden(ClusterError):
    """401 or 403: the credentials are not accepted, or RBAC does not allow the request."""


class ClusterNotFound(ClusterError):
    """404: the object, its namespace or its resource type (a CRD not installed) does not exist."""


class ClusterConflict(ClusterError):
    """409: the object exists already, or changed since it was read (a resourceVersion
    precondition): one way to signal both, so callers decide what a conflict means to them."""


class ClusterInvalid(ClusterError):
    """400 or 422: the API server rejected the object or the request as invalid."""
