"""Reading base images for `allowed-base`: the I/O, so that the rule itself stays pure.

`check_claim` verifies what an image says about its base (the `base.name` / `base.digest`
annotation or label): it reads the claimed base for the image's platform — by the claimed digest
when there is one, else by the tag — and compares its `rootfs.diff_ids` with the image's. The
rule (`webhook.policy.rules.allowed_base.check`) gets the resulting `ClaimCheck` and decides.

Every read goes through the `RegistryClient`, so a repeated check costs no I/O (manifests and
configs are cached by digest for good, tag→digest for the tag TTL) and concurrent checks of
images on the same base share one fetch; `limit` (the Checker's per-registry slots) bounds the
concurrent reads. Reads use the same keyring as the image (the pod's pull secrets merged in
front of the webhook's own credentials).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from webhook.errors import ImagegateError
from webhook.policy.limits import RegistryLimits
from webhook.policy.model import SCRATCH, AllowedBasesRule
from webhook.policy.rules.allowed_base import (
    BASE_DIGEST,
    Claim,
    ClaimCheck,
    claim_approved,
    find_claim,
    is_prefix,
)
from webhook.registry.auth import Keyring
from webhook.registry.client import RegistryClient
from webhook.registry.facts import ImageFacts, Platform
from webhook.registry.reference import Reference

__all__ = ["check_claim", "verify_claim"]


async def check_claim(
    client: RegistryClient,
    rule: AllowedBasesRule,
    facts: ImageFacts,
    platform: Platform,
    keyring: Keyring | None = None,
    limit: RegistryLimits | None = None,
) -> ClaimCheck | None:
    """The verification of the image's base claim, or None when there is nothing to verify:
    the rule is disabled, the image makes no claim, claims `scratch` (no base layers to
    compare), or claims a base the allow-list refuses as it stands (no read needed to deny)."""
    if not rule.enabled:
        return None
    claim = find_claim(facts)
    if claim is None or claim.name == SCRATCH or not claim_approved(rule, claim):
        return None
    return await verify_claim(client, claim, facts.diff_ids, platform, keyring, limit)


async def verify_claim(
    client: RegistryClient,
    claim: Claim,
    diff_ids: Sequence[str],
    platform: Platform,
    keyring: Keyring | None = None,
    limit: RegistryLimits | None = None,
) -> ClaimCheck:
    """Read the claimed base and compare its layers with `diff_ids` (the image's).

    With a digest (`base.digest`, else the digest in `base.name`): that digest decides — its
    layers start the image (verified) or they do not (contradicted: a false claim). When the
    digest cannot be read, the tag is tried: its layers starting the image verify the claim
    (the base was re-indexed or cleaned up since); otherwise the claim is unverifiable and the
    reason says what was tried. Without a digest, the tag (`latest` when none) is read: its
    layers must start the image, else the claim is unverifiable (the tag moved since the build,
    or the claim is false: nothing tells which).
    """
    try:
        named = Reference.parse(claim.name)
    except ImagegateError as err:
        return ClaimCheck.unverifiable(f"{claim.name!r} is not an image reference ({err})")
    digest = claim.digest or named.digest
    tried: list[str] = []
    if digest:
        try:
            pinned = Reference.parse(f"{named.name}@{digest}")
        except ImagegateError:
            tried.append(f"the claimed digest {digest!r} is not a valid digest")
        else:
            base = await _read(client, pinned, platform, keyring, limit)
            if isinstance(base, ImageFacts):
                if is_prefix(base.diff_ids, diff_ids):
                    return ClaimCheck.verified(str(pinned), base.digest)
                return ClaimCheck.contradicted(str(pinned), base.digest, _mismatch(base, diff_ids))
            tried.append(f"cannot read the claimed digest {pinned}: {base}")
    if named.tag is None:
        return ClaimCheck.unverifiable("; ".join(tried))
    tagged = Reference(named.registry, named.repository, named.tag)
    base = await _read(client, tagged, platform, keyring, limit)
    if not isinstance(base, ImageFacts):
        tried.append(f"cannot read {tagged}: {base}")
        return ClaimCheck.unverifiable("; ".join(tried))
    if is_prefix(base.diff_ids, diff_ids):
        note = "; ".join([*tried, f"verified by the tag instead, which names {base.digest}"])
        return ClaimCheck.verified(str(tagged), base.digest, note if tried else "")
    if digest is None:
        tried.append(
            f"{tagged} now names {base.digest}, whose layers do not start this image's "
            f"({_mismatch(base, diff_ids)}): the tag has moved since the image was built, or "
            f"the claim is false; without {BASE_DIGEST} nothing tells which"
        )
    else:
        tried.append(
            f"{tagged} now names {base.digest}, whose layers do not start this image's either "
            "(the tag has moved since the image was built)"
        )
    return ClaimCheck.unverifiable("; ".join(tried))


async def _read(
    client: RegistryClient,
    ref: Reference,
    platform: Platform,
    keyring: Keyring | None,
    limit: RegistryLimits | None,
) -> ImageFacts | ImagegateError:
    try:
        async with limit(ref.registry) if limit is not None else contextlib.nullcontext():
            return await client.inspect(ref, platform, keyring)
    except ImagegateError as err:
        return err


def _mismatch(base: ImageFacts, image: Sequence[str]) -> str:
    """Where the layers part ways, in words short enough for an admission message."""
    n = len(base.diff_ids)
    if n > len(image):
        return f"the base has {n} layers, the image only {len(image)}"
    first = next(i for i, (a, b) in enumerate(zip(base.diff_ids, image, strict=False)) if a != b)
    mine, theirs = _short(image[first]), _short(base.diff_ids[first])
    return f"layer {first + 1} of {n} differs: the image has {mine}, the base {theirs}"


def _short(diff_id: str) -> str:
    algorithm, _, hexdigits = diff_id.partition(":")
    return f"{algorithm}:{hexdigits[:12]}" if hexdigits else diff_id
