"""In-process fakes at the seams the decision path already has: no sockets, no threads.

* `FakeRegistry` stands in for the two methods `Checker` reaches a registry through
  (`platforms(reference, keyring)`, the runnable platforms of an `Index`, and
  `inspect(reference, platform, keyring)`): it answers `ImageFacts`, or raises the
  `webhook.errors` exception a real registry fault turns into. The Checker, the policy
  evaluation and every rule above it are the real ones.
* `FakeCluster` is a `ClusterReader` and `ClusterInventory` over plain dicts: namespace labels,
  ServiceAccount pull secrets, pull secrets, imagegate objects and workloads.
* `policy()` writes an ImagePolicy the way its YAML reads.

The real registry and API server are exercised by tests/integration and tests/e2e.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from tests.unit.factories import facts
from webhook.errors import (
    ClusterError,
    ImagegateError,
    ImageNotFound,
    PlatformNotFound,
    RegistryUnauthorized,
    RegistryUnavailable,
)
from webhook.k8s.cluster import PullSecret
from webhook.policy.checker import Checker
from webhook.policy.model import ImagePolicy
from webhook.registry.auth import Keyring
from webhook.registry.facts import ImageFacts, Platform, best_match, runnable_platforms
from webhook.registry.reference import Reference

if TYPE_CHECKING:
    from webhook.registry.client import RegistryClient


@dataclass(frozen=True)
class Index:
    """A multi-arch image: `entries` maps each entry's platform (`"linux/arm64/v8"`, also
    `"unknown/unknown"` for an attestation) to its image, in index order. The registry answers
    facts with the index `digest` (what a Pod pins) and the entry's platform, choosing the
    entry as the real client does."""

    entries: Mapping[str, ImageFacts | ImagegateError]
    digest: str = f"sha256:{'1' * 64}"


Answer = ImageFacts | ImagegateError | Index
REGISTRY = "localhost:5001"
APPROVED_BASE = "gcr.io/distroless/static-debian12:nonroot"  # matches gcr.io/distroless/*
BASE_NAME = "org.opencontainers.image.base.name"


def digest(char: str) -> str:
    return f"sha256:{char * 64}"


def image(digest_char: str = "d", *, base: str | None = APPROVED_BASE, **kwargs: Any) -> ImageFacts:
    """Facts of an image that passes the default policy unless `kwargs` say otherwise."""
    annotations = {BASE_NAME: base} if base else {}
    built = facts(annotations=kwargs.pop("annotations", annotations), **kwargs)
    return dataclasses.replace(built, digest=digest(digest_char))


# ---- images the admission and scanner tables share ------------------------------------------

TEAM = f"{REGISTRY}/team"
GOOD = f"{TEAM}/good:1.0"
ROOT = f"{TEAM}/root:1.0"
BIG = f"{TEAM}/big:1.0"
DOWN = f"{TEAM}/down:1.0"


def common_answers() -> dict[str, ImageFacts | ImagegateError]:
    """What the fake registry answers for GOOD, ROOT, BIG (passing, root, over budget), DOWN."""
    return {
        GOOD: image("a"),
        ROOT: image("r", user=""),
        BIG: image("b", sizes=[250_000_000]),
        DOWN: RegistryUnavailable(f"{REGISTRY}: connection refused", DOWN),
    }


def policy(name: str = "default", **spec: Any) -> ImagePolicy:
    """`policy("p", mode="audit", onError="allow", rules={...})`, camelCase as in YAML."""
    return ImagePolicy.model_validate({"metadata": {"name": name}, "spec": spec})


@dataclass(frozen=True)
class Inspection:
    """One call the Checker made to the registry."""

    reference: str
    platform: str
    keyring: Keyring | None


class FakeRegistry:
    """Answers `inspect` from a table keyed by reference; unknown references are 404s."""

    def __init__(
        self,
        answers: Mapping[str, Answer],
        delays: Mapping[str, float] | None = None,
        private: Mapping[str, str] | None = None,
    ) -> None:
        """`delays`: seconds before answering; `private`: reference → the only user it
        answers (anyone else gets RegistryUnauthorized, as from a private repository)."""
        self._answers = {str(Reference.parse(k)): v for k, v in answers.items()}
        # APPROVED_BASE, the base every `image()` claims, has the layers every `image()` starts
        # with unless a test answers for it; reading it to verify a claim is a `base_reads`
        # entry, not a `calls` one (the tables list the images inspected).
        self._implicit_base = str(Reference.parse(APPROVED_BASE))
        if self._implicit_base in self._answers:
            self._implicit_base = ""
        else:
            self._answers[self._implicit_base] = facts()
        self.base_reads: list[Inspection] = []
        self._delays = {str(Reference.parse(k)): v for k, v in (delays or {}).items()}
        self._private = {str(Reference.parse(k)): v for k, v in (private or {}).items()}
        self.calls: list[Inspection] = []
        self.listings: list[str] = []  # references whose platforms the Checker listed

    async def platforms(
        self, ref: Reference, keyring: Keyring | None = None
    ) -> tuple[Platform, ...] | None:
        """An `Index`'s runnable platforms (as `RegistryClient.platforms`); None otherwise
        (a single-platform image, or one `inspect` will answer with an error)."""
        self.listings.append(str(ref))
        answer = self._answers.get(str(ref))
        if not isinstance(answer, Index):
            return None
        return tuple(runnable_platforms(Platform.parse(p) for p in answer.entries))

    async def inspect(
        self, ref: Reference, platform: Platform, keyring: Keyring | None = None
    ) -> ImageFacts:
        call = Inspection(str(ref), str(platform), keyring)
        (self.base_reads if str(ref) == self._implicit_base else self.calls).append(call)
        delay = self._delays.get(str(ref))
        if delay:
            await asyncio.sleep(delay)
        owner = self._private.get(str(ref))
        if owner is not None:
            credential = await keyring.get(ref.registry) if keyring else None
            if credential is None or credential.username != owner:
                raise RegistryUnauthorized(f"{ref.registry}: 401 Unauthorized", str(ref))
        answer = self._answers.get(str(ref))
        if answer is None:
            raise ImageNotFound(f"{ref.familiar()}: manifest unknown", str(ref))
        if isinstance(answer, Index):
            listed = [Platform.parse(p) for p in answer.entries]
            chosen = best_match(platform, [p for p in listed if p.os != "unknown"])
            if chosen is None:
                raise PlatformNotFound(f"{ref} has no manifest for platform {platform}", str(ref))
            entry = [p for p in listed if p.os != "unknown"][chosen]
            found = answer.entries[str(entry)]
            if isinstance(found, ImagegateError):
                raise found
            return dataclasses.replace(
                found, reference=str(ref), digest=answer.digest, platform=str(entry)
            )
        if isinstance(answer, ImagegateError):
            raise answer
        return dataclasses.replace(answer, reference=str(ref))

    @property
    def inspected(self) -> list[str]:
        return [c.reference for c in self.calls]


def checker_for(registry: FakeRegistry) -> Checker:
    """The real Checker, reading images through the fake (its only registry)."""
    return Checker(cast("RegistryClient", registry))


def dockerconfigjson(host: str, username: str, password: str = "secret") -> bytes:
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps({"auths": {host: {"auth": auth}}}).encode()


@dataclass
class FakeCluster:
    """ClusterReader + ClusterInventory over dicts. `failing` names methods that raise
    ClusterError (an unreachable or forbidding API server)."""

    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    service_accounts: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    secrets: dict[tuple[str, str], bytes] = field(default_factory=dict)
    objects: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    workloads: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failing: frozenset[str] = frozenset()
    listed: list[str] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)  # every method called, in order

    def _fail(self, method: str, what: str) -> None:
        self.asked.append(method)
        if method in self.failing:
            raise ClusterError(f"cannot read {what}: 403 Forbidden")

    async def namespace_labels(self, namespace: str) -> dict[str, str]:
        self._fail("namespace_labels", f"namespace {namespace}")
        return dict(self.namespaces.get(namespace, {}))

    async def service_account_pull_secret_names(
        self, namespace: str, service_account: str
    ) -> list[str]:
        self._fail("service_account_pull_secret_names", f"serviceaccount {service_account}")
        return list(self.service_accounts.get((namespace, service_account), []))

    async def pull_secrets(self, namespace: str, names: list[str]) -> list[PullSecret]:
        self._fail("pull_secrets", f"secrets {names}")
        return [
            PullSecret(namespace, name, self.secrets[(namespace, name)])
            for name in names
            if (namespace, name) in self.secrets
        ]

    async def list_objects(self, plural: str) -> list[dict[str, Any]]:
        self._fail("list_objects", plural)
        return list(self.objects.get(plural, []))

    async def controller_of(self, namespace: str, ref: dict[str, Any]) -> dict[str, Any] | None:
        """The listed workload with the reference's uid, in `namespace` (None: no such owner)."""
        self._fail("controller_of", f"{ref.get('kind')} {ref.get('name')}")
        for items in self.workloads.values():
            for obj in items:
                meta = obj.get("metadata") or {}
                if meta.get("uid") == ref.get("uid") and meta.get("namespace") == namespace:
                    return obj
        return None

    async def list_all(
        self, api_version: str, plural: str, page_size: int = 500
    ) -> list[dict[str, Any]]:
        self._fail("list_all", plural)
        self.listed.append(plural)
        return [{"apiVersion": api_version, **obj} for obj in self.workloads.get(plural, [])]

    async def namespace_labels_all(
        self, include_terminating: bool = False
    ) -> dict[str, dict[str, str]]:
        self._fail("namespace_labels_all", "namespaces")
        return {name: dict(labels) for name, labels in self.namespaces.items()}
