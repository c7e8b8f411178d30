"""In-process fakes at the seams the decision path already has: no sockets, no threads.

* `FakeRegistry` stands in for the one method `Checker` reaches a registry through
  (`inspect(reference, platform, keyring)`): it answers `ImageFacts`, or raises the
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
    RegistryUnauthorized,
    RegistryUnavailable,
)
from webhook.k8s.cluster import PullSecret
from webhook.policy.checker import Checker
from webhook.policy.model import ImagePolicy
from webhook.registry.auth import Keyring
from webhook.registry.facts import ImageFacts, Platform
from webhook.registry.reference import Reference

if TYPE_CHECKING:
    from webhook.registry.client import RegistryClient

Answer = ImageFacts | ImagegateError
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
        self._delays = {str(Reference.parse(k)): v for k, v in (delays or {}).items()}
        self._private = {str(Reference.parse(k)): v for k, v in (private or {}).items()}
        self.calls: list[Inspection] = []

    async def inspect(
        self, ref: Reference, platform: Platform, keyring: Keyring | None = None
    ) -> ImageFacts:
        self.calls.append(Inspection(str(ref), str(platform), keyring))
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
        if isinstance(answer, ImagegateError):
            raise answer
        return dataclasses.replace(answer, reference=str(ref))

    @property
    def inspected(self) -> list[str]:
        return [c.reference for c in self.calls]


def checker_for(registry: FakeRegistry) -> Checker:
    """The real Checker, reading images through the fake (its only registry call)."""
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
