"""The inspection core as a service: image reference + policies → a verdict with facts.

The CLI, the webhook and the operator all call `Checker`; it owns no state besides the
registry client (whose caches make repeated checks cheap).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from webhook.caches import BoundedCache, approx_size
from webhook.errors import ImagegateError
from webhook.layers.analysis import is_numeric_user
from webhook.layers.inspect import LayerFindings, LayerInspector
from webhook.policy.bases import check_claim
from webhook.policy.evaluate import evaluate
from webhook.policy.limits import RegistryLimits
from webhook.policy.model import DeepInspection, ImagePolicy, Mode
from webhook.policy.outcome import ContainerContext, Violation
from webhook.policy.platforms import ANYWHERE, Placement, wanted_platforms
from webhook.policy.rules.allowed_base import KnownBase, concrete_references, identify_base
from webhook.registry.auth import Keyring
from webhook.registry.client import RegistryClient
from webhook.registry.facts import ImageFacts, Platform
from webhook.registry.inspect import DAEMON_PREFIX, inspect_image
from webhook.registry.reference import Reference

Verdict = Literal["pass", "fail", "error"]


@dataclass(frozen=True)
class CheckResult:
    """One image's verdict, in the JSON shape of DESIGN §3.

    For a multi-arch index, `platforms` holds the verdict of each platform that was checked
    (index order); `platform` and `facts` are then those of the first failing platform, else
    of the first one, and each violation message starts with the platforms it was found on.
    """

    image: str
    verdict: Verdict
    digest: str | None = None
    platform: str | None = None
    violations: list[Violation] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    policies: list[str] = field(default_factory=list)
    error: str | None = None
    platforms: list[CheckResult] = field(default_factory=list)
    # Rests on a read that failed (a platform or a claimed base that could not be read): right
    # now, but not reused from the verdict cache, so an outage does not outlive itself.
    transient: bool = field(default=False, compare=False, repr=False)

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
        if self.platforms:
            out["platforms"] = [p.platform_json() for p in self.platforms]
        return out

    def platform_json(self) -> dict[str, Any]:
        """One entry of `platforms`: this platform's verdict, violations and facts."""
        return {k: v for k, v in self.to_json().items() if k not in ("image", "digest", "policies")}


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
        **(
            {"manifestDigest": facts.manifest_digest}
            if facts.manifest_digest and facts.manifest_digest != facts.digest
            else {}
        ),
        **{k: _bounded(v) for k, v in derived.items() if k not in ("base", "user")},
    }


def _bounded(value: Any) -> Any:
    """Derived facts quote the Pod (its argv), which a tenant may make megabytes long; a
    verdict is cached and reported, so each string keeps 1,024 characters, each list 256."""
    if isinstance(value, str):
        return value if len(value) <= 1024 else value[:1023] + "…"
    if isinstance(value, list | tuple):
        return [_bounded(v) for v in value[:256]]
    if isinstance(value, dict):
        return {k: _bounded(v) for k, v in value.items()}
    return value


# Image, policies, platform, placement, container context, and who asked (the credentials'
# identity): a verdict read with one tenant's pull secret is never handed to another.
# The container context is its exact text (`_digest`), and the cache only ever holds the sha256
# of the whole key (`_result_key`): a Pod's command can be megabytes, and a cache key holds its
# strings for as long as the entry lives.
ResultKey = tuple[str, tuple[int, ...], Platform | None, Placement, str, Hashable]

# Byte budget of the verdict cache (`webhook.caches.BoundedCache`).
RESULTS_BYTES = 32 * 1024 * 1024


def _result_key(key: ResultKey) -> str:
    """The verdict cache's key for `key`: a sha256 of its repr, which shows every part
    (strings, ids, default dataclass reprs), so different keys never share a hash.

    Read on every warm admission, so kept cheap: the parts are builtin values whose repr is C
    code, except the placement, whose dataclass repr alone cost more than the hash; the one of
    almost every Pod (no os/arch constraint) is written as "" (no other placement's repr is).
    """
    image, ids, platform, placement, context, who = key
    where = "" if placement is ANYWHERE or placement == ANYWHERE else repr(placement)
    text = repr((image, ids, platform, where, context, who))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _result_size(value: tuple[tuple[ImagePolicy, ...], CheckResult]) -> int:
    """A cached verdict's own size: the policies it holds are shared, so only pointers."""
    return approx_size(value[1]) + 8 * len(value[0])


DAEMON_REFUSED = (
    f"{DAEMON_PREFIX} references name an image in a local Docker engine, which only "
    "`imagegate check` reads; in a cluster the kubelet would pull "
    f"docker.io/library/{DAEMON_PREFIX.rstrip(':')}:… instead: use a registry reference"
)


class Checker:
    """Checks images against policies, inspecting each image (and approved base) once.

    Verdicts are cached for `result_ttl` seconds (the tag→digest TTL: within it the same tag
    names the same content anyway), keyed by image, the policy objects, platform and container
    context. This is what keeps a warm admission close to the cost of parsing the review.
    """

    def __init__(
        self,
        client: RegistryClient,
        concurrency: int = 16,
        result_ttl: float = 30.0,
        *,
        local_images: bool = False,
        layers: LayerInspector | None = None,
        deep: Literal["policy", "always", "never"] = "policy",
    ) -> None:
        """`local_images` lets `docker-daemon:` references read this machine's Docker engine:
        right for `imagegate check`, wrong in the cluster, where the kubelet would pull
        docker.io/library/docker-daemon instead of what was checked. `layers` reads image
        layers when the policies' `deepInspection` (or `deep`, when not "policy") allows."""
        self._client = client
        self._local_images = local_images
        self._layers = layers
        self._deep = deep
        self._limits = RegistryLimits(concurrency)
        # Values hold the policies too, so their ids in the key cannot be reused while cached.
        # Keys are `_result_key`s (hashed: a placement or pull secret names can be long).
        self._results: BoundedCache[str, tuple[tuple[ImagePolicy, ...], CheckResult]] = (
            BoundedCache(RESULTS_BYTES, ttl=result_ttl, sizeof=_result_size)
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
        placement: Placement = ANYWHERE,
        credentials: Hashable = None,
    ) -> CheckResult:
        """`platform` checks just that platform of an index (`imagegate check --platform`);
        without it every platform that can run is checked: those `placement` (where the Pod
        may be scheduled) and the policies' `platforms` allow (`webhook.policy.platforms`).

        `credentials` names who asks (the webhook: the Pod's namespace, ServiceAccount and
        pull secret names); a cached verdict is only handed back to the same identity. By
        default it is the keyring's fingerprint for the image's registry.
        """
        who = credentials if credentials is not None else _fingerprint(image, keyring)
        applicable, known = self._lookup(
            image, policies, platform, placement, container, namespace, namespace_labels, who
        )
        if known is not None:
            return known
        refused = registry_violations(image, applicable)
        enforcing = {p.name for p in applicable if p.spec.mode is Mode.enforce}
        if any(v.policy in enforcing for v in refused):
            # A denial whatever else is found: the registry is not asked anything (SSRF).
            names = [p.name for p in applicable]
            return CheckResult(image, "fail", policies=names, violations=refused)
        result = await self._check_platforms(
            image, applicable, platform, placement, container, keyring
        )
        if refused and result.verdict != "error":
            result = dataclasses.replace(
                result, verdict="fail", violations=refused + result.violations
            )
        if result.verdict != "error" and not result.transient:  # errors: a shorter cache below
            key: ResultKey = (
                image, tuple(map(id, applicable)), platform, placement, _digest(container), who
            )  # fmt: skip
            self._results[_result_key(key)] = (tuple(applicable), result)
        return result

    def cached(
        self,
        image: str,
        policies: Iterable[ImagePolicy],
        *,
        container: ContainerContext | None = None,
        namespace: str | None = None,
        namespace_labels: dict[str, str] | None = None,
        placement: Placement = ANYWHERE,
        credentials: Hashable = None,
    ) -> CheckResult | None:
        """The verdict when it is known without any I/O (the webhook's fast path), else None."""
        who = credentials if credentials is not None else _fingerprint(image, None)
        return self._lookup(
            image, policies, None, placement, container, namespace, namespace_labels, who
        )[1]

    def _lookup(
        self,
        image: str,
        policies: Iterable[ImagePolicy],
        platform: Platform | None,
        placement: Placement,
        container: ContainerContext | None,
        namespace: str | None,
        namespace_labels: dict[str, str] | None,
        credentials: Hashable,
    ) -> tuple[list[ImagePolicy], CheckResult | None]:
        applicable = [p for p in policies if p.applies_to(image, namespace, namespace_labels)]
        if not applicable:
            return applicable, CheckResult(image, "pass")
        key: ResultKey = (
            image, tuple(map(id, applicable)), platform, placement, _digest(container), credentials
        )  # fmt: skip
        cached = self._results.get(_result_key(key))
        return applicable, cached[1] if cached is not None else None

    async def _check_platforms(
        self,
        image: str,
        applicable: list[ImagePolicy],
        platform: Platform | None,
        placement: Placement,
        container: ContainerContext | None,
        keyring: Keyring | None,
    ) -> CheckResult:
        """Check each platform that can run (each with the policies that want it) and combine.

        A single-platform manifest, a `docker-daemon:` image and an explicit `platform` are
        one check, as before. For an index, a policy left with no platform to check is an
        error (decided by onError): nothing that was checked could run there.
        """
        single = platform or _policy_platform(applicable) or Platform.host()
        if platform is not None or image.startswith(DAEMON_PREFIX):
            return await self._check(image, applicable, single, container, keyring)
        names = [p.name for p in applicable]
        try:
            async with self._limits.of_image(image):
                listed = await self._client.platforms(Reference.parse(image), keyring)
        except ImagegateError as err:
            return CheckResult(image, "error", policies=names, error=str(err))
        if listed is None:  # a single-platform manifest: its one platform, whatever it is
            return await self._check(image, applicable, single, container, keyring)
        wanted = [wanted_platforms(listed, placement, p.spec.node_platforms) for p in applicable]
        for policy, found in zip(applicable, wanted, strict=True):
            if not found:
                error = _nowhere(listed, placement, policy)
                return CheckResult(image, "error", policies=names, error=error)
        checked = [p for p in listed if any(p in found for found in wanted)]
        results = await asyncio.gather(
            *(
                self._check(
                    image,
                    [pol for pol, found in zip(applicable, wanted, strict=True) if p in found],
                    p,
                    container,
                    keyring,
                )
                for p in checked
            )
        )
        return _combine(image, names, checked, results)

    async def _check(
        self,
        image: str,
        applicable: list[ImagePolicy],
        chosen: Platform,
        container: ContainerContext | None,
        keyring: Keyring | None,
    ) -> CheckResult:
        names = [p.name for p in applicable]
        if image.startswith(DAEMON_PREFIX) and not self._local_images:
            return CheckResult(
                image, "error", platform=str(chosen), policies=names, error=DAEMON_REFUSED
            )
        try:
            async with self._limits.of_image(image):
                facts = await inspect_image(image, chosen, self._client, keyring)
            reference = None if image.startswith(DAEMON_PREFIX) else Reference.parse(image)
        except ImagegateError as err:
            return CheckResult(image, "error", platform=str(chosen), policies=names, error=str(err))
        try:
            findings = await self._read_layers(image, facts, applicable, chosen, keyring)
        except ImagegateError as err:
            return CheckResult(
                image, "error", digest=facts.digest, platform=facts.platform, policies=names,
                error=f"cannot read the layers: {err}",
            )  # fmt: skip
        violations: list[Violation] = []
        derived: dict[str, Any] = {}
        transient = False
        for policy in applicable:
            known = await known_bases(self._client, [policy], chosen, keyring, self._limits)
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
            claim = await check_claim(
                self._client, policy.spec.rules.allowed_bases, facts, chosen, keyring, self._limits
            )
            transient = transient or (claim is not None and claim.status == "unverifiable")
            layers = findings if self._deep_mode(policy) is not None else None
            outcome = evaluate(policy, facts, reference, known, container, claim, layers)
            if outcome.error:
                return CheckResult(
                    image, "error", digest=facts.digest, platform=facts.platform,
                    policies=names, error=outcome.error,
                )  # fmt: skip
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
            transient=transient,
        )

    def _deep_mode(self, policy: ImagePolicy) -> bool | None:
        """Whether `policy` reads layers: None not at all, False only indexed ones, True
        downloading what is missing."""
        if self._layers is None or self._deep == "never":
            return None
        if self._deep == "always":
            return True
        mode = policy.spec.deep_inspection
        return None if mode is DeepInspection.never else mode is DeepInspection.always

    async def _read_layers(
        self,
        image: str,
        facts: ImageFacts,
        applicable: list[ImagePolicy],
        platform: Platform,
        keyring: Keyring | None,
    ) -> LayerFindings | None:
        """The layers' findings when a policy wants them and may read them (once per image)."""
        if self._layers is None or image.startswith(DAEMON_PREFIX):
            return None
        wanting = [
            mode
            for p in applicable
            if (mode := self._deep_mode(p)) is not None and _uses_layers(p, facts)
        ]
        if not wanting:
            return None
        known = await known_bases(self._client, applicable, platform, keyring, self._limits)
        async with self._limits.of_image(image):
            return await self._layers.inspect(
                image, facts, keyring, download=any(wanting),
                base_layers=_base_layers(facts, known), readable_under=_entry_dirs(facts),
            )  # fmt: skip

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
    limit: RegistryLimits | None = None,
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
    limit: RegistryLimits | None,
) -> KnownBase:
    try:
        async with limit.of_image(ref) if limit is not None else contextlib.nullcontext():
            base = await inspect_image(ref, platform, client, keyring)
    except ImagegateError as err:
        return KnownBase(ref, error=str(err))
    return KnownBase(ref, base.digest, tuple(base.diff_ids))


def _digest(container: ContainerContext | None) -> str:
    """The container context as exact text, for `_result_key` (which hashes the whole key, so
    a megabyte command still makes a 64-character key): every field's value in order, as a
    plain tuple's repr (C code; a new field is never left out)."""
    if container is None:
        return "None"
    return repr(tuple(container))


def _fingerprint(image: str, keyring: Keyring | None) -> str:
    """The keyring's identity for the image's registry ("" without one, or for a bad name)."""
    if keyring is None:
        return ""
    try:
        return keyring.fingerprint(Reference.parse(image).registry)
    except ImagegateError:
        return ""


def _policy_platform(policies: list[ImagePolicy]) -> Platform | None:
    """The platform a single-platform check asks for: the first listed by a policy."""
    for policy in policies:
        if policy.spec.node_platforms:
            return policy.spec.node_platforms[0]
    return None


def _combine(
    image: str, names: list[str], checked: Sequence[Platform], results: Sequence[CheckResult]
) -> CheckResult:
    """One verdict from the verdicts of an index's platforms (in index order).

    A violation found anywhere fails the image; identical violations of several platforms are
    reported once, their message prefixed with the platforms (`linux/arm64: …`), except
    `immutable-reference`, which is about the reference, not a platform's image. Without
    violations, a platform that could not be read makes it an error (onError decides).
    """
    found: dict[Violation, list[str]] = {}
    for plat, result in zip(checked, results, strict=True):
        for violation in result.violations:
            found.setdefault(violation, []).append(str(plat))
    violations = [
        v
        if v.rule == "immutable-reference"
        else dataclasses.replace(v, message=f"{', '.join(plats)}: {v.message}")
        for v, plats in found.items()
    ]
    per_platform = list(results)
    if not violations:
        for plat, result in zip(checked, results, strict=True):
            if result.verdict == "error":
                return CheckResult(
                    image, "error", digest=result.digest, platform=str(plat), policies=names,
                    error=f"{plat}: {result.error}", platforms=per_platform,
                )  # fmt: skip
    shown = next((r for r in results if r.verdict == "fail"), results[0])
    return CheckResult(
        image=image,
        verdict="fail" if violations else "pass",
        digest=shown.digest,
        platform=shown.platform,
        violations=violations,
        facts=shown.facts,
        policies=names,
        platforms=per_platform,
        transient=any(r.transient or r.verdict == "error" for r in results),
    )


def _nowhere(listed: Sequence[Platform], placement: Placement, policy: ImagePolicy) -> str:
    """Why no platform of an index is left to check for `policy`."""
    has = ", ".join(map(str, listed)) if listed else "no Linux platform"
    text = (
        "no platform of the image can run where the Pod may be scheduled: "
        f"the index has {has}; the Pod may run on {placement}"
    )
    nodes = policy.spec.node_platforms
    if nodes:
        text += f"; policy {policy.name} checks the node platforms {', '.join(map(str, nodes))}"
    return text


def registry_violations(image: str, policies: Iterable[ImagePolicy]) -> list[Violation]:
    """`allowed-registry` violations of `image`, one per policy whose list leaves it out."""
    if image.startswith(DAEMON_PREFIX):
        return []  # a local image: no registry is asked
    try:
        registry = Reference.parse(image).registry
    except ImagegateError:
        return []  # the check itself reports the bad reference
    return [
        Violation(
            "allowed-registry",
            f"registry {registry} is not one this policy allows "
            f"({', '.join(p.spec.registries.allowed)}): push the image to one of them",
            p.spec.registries.severity,
            policy=p.name,
        )
        for p in policies
        if not p.spec.registries.allows(registry)
    ]


def _uses_layers(policy: ImagePolicy, facts: ImageFacts) -> bool:
    """Whether reading the layers can change `policy`'s verdict on `facts`."""
    rules = policy.spec.rules
    named = not is_numeric_user(facts.user.strip())
    return rules.layer_efficiency.enabled or (rules.non_root_user.enabled and named)


def _base_layers(facts: ImageFacts, known: list[KnownBase]) -> int:
    """How many bottom layers are an approved base's (its diff_ids are a prefix of the
    image's), for Dive's user-wasted ratio; 1 when no base is known, as Dive assumes."""
    best = 1
    for base in known:
        n = len(base.diff_ids)
        if n and tuple(facts.diff_ids[:n]) == base.diff_ids and n < len(facts.diff_ids):
            best = max(best, n)
    return best


def _entry_dirs(facts: ImageFacts) -> tuple[str, ...]:
    """The entrypoint's directory: files there that only root can read break a user switch."""
    argv = facts.entrypoint or facts.cmd or []
    if argv and argv[0].startswith("/") and "/" in argv[0][1:]:
        return (argv[0].rsplit("/", 1)[0],)
    return ()
