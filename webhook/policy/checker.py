"""The inspection core as a service: image reference + policies → a verdict with facts.

The CLI, the webhook and the operator all call `Checker`; it owns no state besides the
registry client (whose caches make repeated checks cheap).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from cachetools import TTLCache

from webhook.errors import ImagegateError
from webhook.policy.evaluate import evaluate
from webhook.policy.model import ImagePolicy
from webhook.policy.outcome import ContainerContext, Violation
from webhook.policy.rules.allowed_base import KnownBase, concrete_references, identify_base
from webhook.registry.auth import Keyring
from webhook.registry.client import RegistryClient
from webhook.registry.facts import ImageFacts, Platform
from webhook.registry.inspect import DAEMON_PREFIX, inspect_image
from webhook.registry.reference import Reference

Verdict = Literal["pass", "fail", "error"]


@dataclass(frozen=True)
class CheckResult:
    """One image's verdict, in the JSON shape of DESIGN §3."""

    image: str
    verdict: Verdict
    digest: str | None = None
    platform: str | None = None
    violations: list[Violation] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    policies: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "image": self.image,
            "digest": self.digest,
            "platform": self.platform,
            "verdict": self.verdict,
            "violations": [v.to_json() for v in self.violations],
            "facts": self.facts,
            "policies": self.policies,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


def facts_json(facts: ImageFacts, derived: dict[str, Any]) -> dict[str, Any]:
    """The `facts` object of DESIGN §3, plus what the rules derived (effective user, argv…)."""
    return {
        "user": facts.user,
        "entrypoint": facts.entrypoint,
        "cmd": facts.cmd,
        "base": derived.get("base"),
        "compressedSize": facts.compressed_size,
        "layers": [
            {"diffId": diff_id, "size": size}
            for diff_id, size in zip(facts.diff_ids, facts.layer_sizes, strict=False)
        ],
        "source": facts.source,
        "labels": facts.labels,
        **{k: v for k, v in derived.items() if k not in ("base", "user")},
    }


ResultKey = tuple[str, tuple[int, ...], Platform, ContainerContext | None]


class Checker:
    """Checks images against policies, inspecting each image (and approved base) once.

    Verdicts are cached for `result_ttl` seconds (the tag→digest TTL: within it the same tag
    names the same content anyway), keyed by image, the policy objects, platform and container
    context. This is what keeps a warm admission close to the cost of parsing the review.
    """

    def __init__(
        self, client: RegistryClient, concurrency: int = 16, result_ttl: float = 30.0
    ) -> None:
        self._client = client
        self._limit = asyncio.Semaphore(concurrency)
        # Values hold the policies too, so their ids in the key cannot be reused while cached.
        self._results: TTLCache[ResultKey, tuple[tuple[ImagePolicy, ...], CheckResult]] = TTLCache(
            maxsize=65536, ttl=result_ttl
        )

    async def check(
        self,
        image: str,
        policies: Iterable[ImagePolicy],
        platform: Platform | None = None,
        *,
        container: ContainerContext | None = None,
        keyring: Keyring | None = None,
        namespace: str | None = None,
        namespace_labels: dict[str, str] | None = None,
    ) -> CheckResult:
        applicable, chosen, known = self._lookup(
            image, policies, platform, container, namespace, namespace_labels
        )
        if known is not None:
            return known
        result = await self._check(image, applicable, chosen, container, keyring)
        if result.verdict != "error":  # errors have their own, shorter negative cache
            key: ResultKey = (image, tuple(map(id, applicable)), chosen, container)
            self._results[key] = (tuple(applicable), result)
        return result

    def cached(
        self,
        image: str,
        policies: Iterable[ImagePolicy],
        *,
        container: ContainerContext | None = None,
        namespace: str | None = None,
        namespace_labels: dict[str, str] | None = None,
    ) -> CheckResult | None:
        """The verdict when it is known without any I/O (the webhook's fast path), else None."""
        return self._lookup(image, policies, None, container, namespace, namespace_labels)[2]

    def _lookup(
        self,
        image: str,
        policies: Iterable[ImagePolicy],
        platform: Platform | None,
        container: ContainerContext | None,
        namespace: str | None,
        namespace_labels: dict[str, str] | None,
    ) -> tuple[list[ImagePolicy], Platform, CheckResult | None]:
        applicable = [p for p in policies if p.applies_to(image, namespace, namespace_labels)]
        chosen = platform or _policy_platform(applicable) or Platform.host()
        if not applicable:
            return applicable, chosen, CheckResult(image, "pass")
        cached = self._results.get((image, tuple(map(id, applicable)), chosen, container))
        return applicable, chosen, cached[1] if cached is not None else None

    async def _check(
        self,
        image: str,
        applicable: list[ImagePolicy],
        chosen: Platform,
        container: ContainerContext | None,
        keyring: Keyring | None,
    ) -> CheckResult:
        names = [p.name for p in applicable]
        try:
            async with self._limit:
                facts = await inspect_image(image, chosen, self._client, keyring)
            reference = None if image.startswith(DAEMON_PREFIX) else Reference.parse(image)
        except ImagegateError as err:
            return CheckResult(image, "error", platform=str(chosen), policies=names, error=str(err))
        violations: list[Violation] = []
        derived: dict[str, Any] = {}
        for policy in applicable:
            known = await known_bases(self._client, [policy], chosen, keyring, self._limit)
            unreadable = [k for k in known if k.error]
            if unreadable and identify_base(facts, known) is None:
                # Not a verdict: the base may well be approved. An error goes through onError
                # and is not cached, so a registry hiccup or missing credentials do not turn
                # into a cached `allowed-base` failure.
                reasons = "; ".join(f"{k.reference}: {k.error}" for k in unreadable)
                return CheckResult(
                    image, "error", digest=facts.digest, platform=facts.platform,
                    policies=names, error=f"cannot read the approved base images ({reasons})",
                )  # fmt: skip
            outcome = evaluate(policy, facts, reference, known, container)
            violations.extend(outcome.violations)
            derived = outcome.facts | derived
        return CheckResult(
            image=image,
            verdict="fail" if violations else "pass",
            digest=facts.digest,
            platform=facts.platform,
            violations=violations,
            facts=facts_json(facts, derived),
            policies=names,
        )

    async def check_all(
        self, images: list[str], policies: list[ImagePolicy], platform: Platform | None = None
    ) -> list[CheckResult]:
        """Check several images concurrently; results keep the order of `images`."""
        return list(await asyncio.gather(*(self.check(i, policies, platform) for i in images)))


async def known_bases(
    client: RegistryClient,
    policies: Iterable[ImagePolicy],
    platform: Platform,
    keyring: Keyring | None = None,
    limit: asyncio.Semaphore | None = None,
) -> list[KnownBase]:
    """The approved bases named by the enabled `allowedBases` rules of `policies` (each once, in
    order), read for `platform`; one that cannot be read carries its error instead.

    The Checker asks for one policy at a time, the rebuild engine for all of them at once.
    `limit` bounds the concurrent reads.
    """
    refs: list[str] = []
    for policy in policies:
        rule = policy.spec.rules.allowed_bases
        if rule.enabled:
            refs.extend(r for r in concrete_references(rule) if r not in refs)
    reads = (_known_base(client, r, platform, keyring, limit) for r in refs)
    return list(await asyncio.gather(*reads))


async def _known_base(
    client: RegistryClient,
    ref: str,
    platform: Platform,
    keyring: Keyring | None,
    limit: asyncio.Semaphore | None,
) -> KnownBase:
    try:
        async with limit if limit is not None else contextlib.nullcontext():
            base = await inspect_image(ref, platform, client, keyring)
    except ImagegateError as err:
        return KnownBase(ref, error=str(err))
    return KnownBase(ref, base.digest, tuple(base.diff_ids))


def _policy_platform(policies: list[ImagePolicy]) -> Platform | None:
    for policy in policies:
        if policy.spec.platform:
            return Platform.parse(policy.spec.platform)
    return None
