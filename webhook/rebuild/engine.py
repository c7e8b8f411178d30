"""The rebuild engine: a non-compliant image in, a compliant immutable replacement out.

Daemonless: it works on registry objects. Config-only fixes (user, entrypoint, base
annotations) touch no layer at all, every layer is mounted across repositories. A squash
downloads only the layers above the base, to files under `workdir`, verified against their
digests, and uploads one new layer from a file. A rebase swaps the old base's layers (a
verified prefix) for the new base's.

Deterministic: the same source digest, fixes and options give the same result digest
(reproducible layer tars, JSON written in a fixed order, no wall-clock time anywhere: history
entries carry the source config's `created`). That makes a second rebuild a no-op.

The result is re-checked with the same `Checker` the webhook uses; a rebuild that still fails a
rule is reported as such (`outcome="unfixable"` with the reason), never hidden.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from webhook import __version__
from webhook.errors import ImagegateError, RebuildError, Unfixable, UsageError
from webhook.policy.checker import Checker, CheckResult, known_bases
from webhook.policy.model import ImagePolicy, SingleEntrypointRule
from webhook.policy.rules.allowed_base import BASE_NAME, identify_base
from webhook.rebuild import fixes as fx
from webhook.rebuild import layers as ly
from webhook.rebuild.draft import BaseImage, DraftLayer, ImageDraft
from webhook.rebuild.model import Phase
from webhook.rebuild.push import (
    BlobSource,
    canonical_json,
    push_blobs,
    push_manifest,
    replacement_tag,
    tag_once,
)
from webhook.registry import mediatypes as mt
from webhook.registry.auth import Keyring
from webhook.registry.blobs import BlobStore
from webhook.registry.client import Manifest, RegistryClient
from webhook.registry.facts import ImageFacts, Platform
from webhook.registry.reference import Reference

SOURCE_DIGEST = "dev.imagegate.source.digest"
FIXES = "dev.imagegate.fixes"
VERSION = "dev.imagegate.version"

Outcome = Literal["succeeded", "failed", "unfixable"]


@dataclass(frozen=True)
class PlatformRebuild:
    """What happened to one platform manifest of the source."""

    platform: str
    source_manifest: str
    manifest: str
    size: int
    fixes: list[str]
    base: str | None
    base_evidence: str | None
    squashed_layers: int = 0
    dropped_paths: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    blobs: dict[str, str] = field(default_factory=dict)
    body: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class RebuildResult:
    """The outcome of `rebuild`: where the replacement is and whether it now passes."""

    source: str
    source_digest: str
    replacement: str  # registry/repo@sha256:…
    replacement_tag: str  # registry/repo:<tag>-imagegate-<12 hex>
    before: CheckResult
    after: CheckResult
    bytes_saved: int
    fixes: list[str]
    outcome: Outcome
    reason: str = ""
    tag_created: bool = True
    platforms: list[PlatformRebuild] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.outcome == "succeeded"

    @property
    def phase(self) -> Phase:
        return {
            "succeeded": Phase.succeeded,
            "failed": Phase.failed,
            "unfixable": Phase.unfixable,
        }[self.outcome]

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "sourceDigest": self.source_digest,
            "replacement": self.replacement,
            "replacementTag": self.replacement_tag,
            "outcome": self.outcome,
            "reason": self.reason,
            "fixes": self.fixes,
            "bytesSaved": self.bytes_saved,
            "before": self.before.to_json(),
            "after": self.after.to_json(),
            "platforms": [
                {
                    "platform": p.platform,
                    "sourceManifest": p.source_manifest,
                    "manifest": p.manifest,
                    "fixes": p.fixes,
                    "base": p.base,
                    "baseEvidence": p.base_evidence,
                    "squashedLayers": p.squashed_layers,
                    "droppedPaths": p.dropped_paths,
                    "bytesBefore": p.bytes_before,
                    "bytesAfter": p.bytes_after,
                }
                for p in self.platforms
            ],
        }


@dataclass
class _Job:
    client: RegistryClient
    blobs: BlobStore
    keyring: Keyring  # pushes, approved bases: the operator's own
    source_keyring: Keyring  # the source image: whoever asked for the rebuild
    source: Reference
    source_digest: str
    target: Reference
    policies: list[ImagePolicy]
    fixes: list[str]
    user: str
    rebase_onto: Reference | None
    workdir: Path
    entrypoint_rule: SingleEntrypointRule


async def rebuild(
    client: RegistryClient,
    checker: Checker,
    source: str,
    target_repo: str,
    policies: list[ImagePolicy],
    *,
    fixes: list[str] | None = None,
    user: str = fx.DEFAULT_USER,
    squash: bool | None = None,
    rebase_onto: str | None = None,
    platform: Platform | None = None,
    keyring: Keyring | None = None,
    source_keyring: Keyring | None = None,
    workdir: Path,
) -> RebuildResult:
    """Rebuild `source` into `target_repo` with `fixes` (None: what `policies` say it needs).

    `squash` True/False forces the size fix on/off; `rebase_onto` (an approved base) adds the
    base fix. `platform` is the platform the before/after checks look at; every platform of
    a multi-arch source is rebuilt. Raises `Unfixable` (nothing pushed) when a needed fix cannot
    be made, `RebuildError` for a tag conflict or unreadable layers, `RegistryError`s for
    registry trouble (worth retrying).

    `keyring` pushes and reads approved bases (default: the client's); `source_keyring` reads
    the source (default: `keyring`). The operator passes the namespace's pull secrets as
    `source_keyring`, so its own credentials never read an image for someone who cannot.
    """
    kr = keyring if keyring is not None else client.keyring
    skr = source_keyring if source_keyring is not None else kr
    user = fx.parse_user(user)
    src = Reference.parse(source)
    target = _target_reference(target_repo)
    new_base = Reference.parse(rebase_onto) if rebase_onto else None

    top = await client.get_manifest(src, skr)
    pinned_source = f"{src.name}@{top.digest}"
    before = await checker.check(pinned_source, policies, platform, keyring=skr)
    if before.verdict == "error":
        raise RebuildError(f"cannot check {source} before rebuilding it: {before.error}")
    chosen = _choose_fixes(before, fixes, squash, new_base is not None)

    job = _Job(
        client=client,
        # Cross-repository mounts read the source with the pushing credentials: only when
        # they are the source's readers too.
        blobs=BlobStore(client, kr, read_as={src.name: skr} if skr is not kr else None),
        keyring=kr,
        source_keyring=skr,
        source=src,
        source_digest=top.digest,
        target=target,
        policies=policies,
        fixes=chosen,
        user=user,
        rebase_onto=new_base,
        workdir=workdir / top.digest.replace(":", "-"),
        entrypoint_rule=_entrypoint_rule(policies),
    )
    job.workdir.mkdir(parents=True, exist_ok=True)
    try:
        if top.is_index:
            body, media_type, platforms = await _rebuild_index(job, top)
        else:
            done = await _rebuild_manifest(job, top, None)
            platforms = [done]
            body, media_type = done.body, mt.OCI_MANIFEST
        digest = await push_manifest(job.blobs, target, body, media_type)
        tag = replacement_tag(src, top.digest)
        created = await tag_once(job.blobs, target, tag, body, media_type)
    finally:
        shutil.rmtree(job.workdir, ignore_errors=True)

    replacement = f"{target.name}@{digest}"
    after = await checker.check(replacement, policies, platform, keyring=kr)
    applied = [f for f in fx.ALL_FIXES if any(f in p.fixes for p in platforms)]
    saved = sum(p.bytes_before - p.bytes_after for p in platforms)
    outcome: Outcome
    if after.verdict == "pass":
        outcome, reason = "succeeded", ""
    elif after.verdict == "error":
        outcome, reason = "failed", f"cannot check the replacement: {after.error}"
    else:
        outcome = "unfixable"
        reason = "the rebuilt image still fails: " + "; ".join(
            f"{v.rule}: {v.message}" for v in after.violations
        )
    return RebuildResult(
        source=source,
        source_digest=top.digest,
        replacement=replacement,
        replacement_tag=f"{target.name}:{tag}",
        before=before,
        after=after,
        bytes_saved=saved,
        fixes=applied,
        outcome=outcome,
        reason=reason,
        tag_created=created,
        platforms=platforms,
    )


# ---- choosing -------------------------------------------------------------------------------


def _target_reference(target_repo: str) -> Reference:
    text = target_repo.strip()
    last = text.rsplit("/", 1)[-1]
    if "@" in text or ":" in last:
        raise UsageError(
            f"target {target_repo!r} must be a repository (registry/name) without tag or "
            "digest: imagegate chooses the new tag itself and never overwrites one"
        )
    ref = Reference.parse(text)
    return Reference(ref.registry, ref.repository)


def _choose_fixes(
    before: CheckResult, fixes: list[str] | None, squash: bool | None, rebase: bool
) -> list[str]:
    if fixes is not None:
        chosen = set(fx.normalize_fixes(fixes))
    else:
        chosen = {fx.RULE_FIXES[v.rule] for v in before.violations if v.rule in fx.RULE_FIXES}
        base_problem = next((v for v in before.violations if v.rule == "allowed-base"), None)
        if base_problem is not None and not rebase:
            raise Unfixable(
                f"{base_problem.message}. imagegate can rebase the image when told which "
                "approved base to use (rebase onto REF)"
            )
    if squash is True:
        chosen.add(fx.SIZE_BUDGET)
    elif squash is False:
        chosen.discard(fx.SIZE_BUDGET)
    if rebase:
        chosen.add(fx.ALLOWED_BASE)
    return [f for f in fx.ALL_FIXES if f in chosen]


def _entrypoint_rule(policies: list[ImagePolicy]) -> SingleEntrypointRule:
    for policy in policies:
        if policy.spec.rules.single_entrypoint.enabled:
            return policy.spec.rules.single_entrypoint
    return SingleEntrypointRule()


# ---- one platform ---------------------------------------------------------------------------


async def _rebuild_index(job: _Job, top: Manifest) -> tuple[bytes, str, list[PlatformRebuild]]:
    entries: list[dict[str, Any]] = []
    platforms: list[PlatformRebuild] = []
    for entry in top.data.get("manifests") or []:
        plat = entry.get("platform") or {}
        os_, arch = str(plat.get("os") or ""), str(plat.get("architecture") or "")
        if not os_ or not arch or os_ == "unknown":
            continue  # attestations and other artifacts describe the old manifests: dropped
        child = await job.client.get_manifest(
            job.source.with_digest(entry["digest"]), job.source_keyring
        )
        if child.is_index:
            raise RebuildError(f"{job.source} nests an index in an index; not rebuilt")
        variant = plat.get("variant") or None
        done = await _rebuild_manifest(job, child, Platform(os_, arch, variant))
        platforms.append(done)
        descriptor: dict[str, Any] = {
            "mediaType": mt.OCI_MANIFEST,
            "digest": done.manifest,
            "size": done.size,
            "platform": plat,
        }
        if isinstance(entry.get("annotations"), dict):
            descriptor["annotations"] = entry["annotations"]
        entries.append(descriptor)
    if not entries:
        raise RebuildError(f"index {top.digest} of {job.source} lists no platform image")
    annotations = dict(top.data.get("annotations") or {})
    annotations.update(_provenance(job, [f for p in platforms for f in p.fixes]))
    bases = {p.base for p in platforms}
    if fx.ALLOWED_BASE in job.fixes and len(bases) == 1 and platforms[0].base:
        annotations[BASE_NAME] = platforms[0].base
    index: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": entries,
        "annotations": annotations,
    }
    return canonical_json(index), mt.OCI_INDEX, platforms


async def _rebuild_manifest(
    job: _Job, manifest: Manifest, platform: Platform | None
) -> PlatformRebuild:
    """One platform image: read it into a draft, apply the chosen fixes in order, push it."""
    ref = job.source.with_digest(manifest.digest)
    config_digest = str(manifest.data["config"]["digest"])
    config = await job.client.get_config(ref, config_digest, job.source_keyring)
    plat = platform or _config_platform(config)
    facts = await job.client.inspect(ref, plat, job.source_keyring)
    base = await _identify_base(job, facts, plat)
    draft = ImageDraft.from_image(str(job.source), ref, manifest.data, config, base)
    bytes_before = draft.size
    if fx.NON_ROOT_USER in job.fixes:
        fx.set_user(draft, job.user)
    if fx.SINGLE_ENTRYPOINT in job.fixes:
        fx.exec_form_entrypoint(draft, facts, job.entrypoint_rule)
    if fx.ALLOWED_BASE in job.fixes:
        await _fix_base(job, draft, plat)
    if fx.SIZE_BUDGET in job.fixes:
        await _fix_size(job, draft, manifest.digest)
    return await _publish(job, manifest.digest, plat, draft, bytes_before)


async def _fix_base(job: _Job, draft: ImageDraft, plat: Platform) -> None:
    """`allowedBase`: rebase onto `job.rebase_onto` when given, then record the base."""
    if job.rebase_onto is not None:
        fx.rebase_point(draft, str(job.rebase_onto))  # Unfixable before reading the new base
        new = await job.client.resolve(job.rebase_onto, plat, job.keyring)
        ref = job.rebase_onto.with_digest(new.manifest.digest)
        config_digest = str(new.manifest.data["config"]["digest"])
        config = await job.client.get_config(ref, config_digest, job.keyring)
        onto = ImageDraft.from_image(str(job.rebase_onto), ref, new.manifest.data, config)
        fx.rebase(draft, onto, new.digest)
    fx.record_base(draft)


async def _fix_size(job: _Job, draft: ImageDraft, manifest_digest: str) -> None:
    """`sizeBudget`: squash the layers above the base, when there are any."""
    upper = draft.layers[draft.base_layers :]
    if upper:
        fx.squash(draft, await _squash(job, manifest_digest, upper))


async def _publish(
    job: _Job, source_manifest: str, plat: Platform, draft: ImageDraft, bytes_before: int
) -> PlatformRebuild:
    """Render the draft, push its blobs (layers mounted, files uploaded) and its manifest."""
    rendered = draft.render(_provenance(job, draft.applied))
    config_path = job.workdir / f"config-{rendered.config_digest.split(':', 1)[1]}.json"
    config_path.write_bytes(rendered.config)
    sources = [layer.source for layer in draft.layers]
    sources.append(BlobSource(rendered.config_digest, file=config_path))
    done = await push_blobs(job.blobs, job.target, sources, job.workdir)
    digest = await push_manifest(job.blobs, job.target, rendered.manifest, mt.OCI_MANIFEST)
    for source in sources:  # the big files are pushed: free the disk early
        if source.file is not None:
            source.file.unlink(missing_ok=True)
    base = draft.base
    return PlatformRebuild(
        platform=str(plat),
        source_manifest=source_manifest,
        manifest=digest,
        size=len(rendered.manifest),
        fixes=draft.applied,
        base=base.name if base else None,
        base_evidence=base.evidence if base else None,
        squashed_layers=draft.squashed_layers,
        dropped_paths=draft.dropped_paths,
        bytes_before=bytes_before,
        bytes_after=draft.size,
        blobs=done,
        body=rendered.manifest,
    )


def _provenance(job: _Job, applied: list[str]) -> dict[str, str]:
    ordered = [f for f in fx.ALL_FIXES if f in applied]
    return {
        SOURCE_DIGEST: job.source_digest,
        FIXES: ",".join(ordered),
        VERSION: __version__,
    }


def _config_platform(config: dict[str, Any]) -> Platform:
    os_, arch = config.get("os"), config.get("architecture")
    if isinstance(os_, str) and isinstance(arch, str) and os_ and arch:
        variant = config.get("variant")
        return Platform(os_, arch, variant if isinstance(variant, str) and variant else None)
    return Platform.host()


async def _identify_base(job: _Job, facts: ImageFacts, plat: Platform) -> BaseImage | None:
    """The base and how many of the image's layers are its own (verified as a prefix)."""
    known = await known_bases(job.client, job.policies, plat, job.keyring)
    fact = identify_base(facts, known)
    if fact is None:
        return None
    if fact.evidence == "diff_ids":
        match = next(k for k in known if k.reference == fact.name)
        return BaseImage(fact.name, fact.digest, fact.evidence, len(match.diff_ids))
    count: int | None = None
    try:
        ref = Reference.parse(fact.name)
        if fact.digest:
            ref = ref.with_digest(fact.digest)
        base_facts = await job.client.inspect(ref, plat, job.keyring)
        n = len(base_facts.diff_ids)
        if n and facts.diff_ids[:n] == base_facts.diff_ids:
            count = n
    except ImagegateError:
        count = None
    return BaseImage(fact.name, fact.digest, fact.evidence, count)


async def _squash(job: _Job, manifest_digest: str, upper: list[DraftLayer]) -> ly.SquashResult:
    """Download the layers to squash (verified), decompress them (verified), squash them."""
    work = job.workdir / f"squash-{manifest_digest.split(':', 1)[1][:16]}"
    work.mkdir(parents=True, exist_ok=True)
    tars: list[Path] = []
    try:
        for index, layer in enumerate(upper):
            repository = layer.source.repository
            if repository is None:  # pragma: no cover - only registry layers get here
                raise RebuildError(f"layer {layer.digest} has no repository to read it from")
            blob = work / f"{index:04d}.blob"
            tar = work / f"{index:04d}.tar"
            await job.blobs.download(repository, layer.digest, blob)
            await asyncio.to_thread(ly.decompress, blob, tar, layer.diff_id)
            blob.unlink()
            tars.append(tar)
        out = job.workdir / f"squashed-{manifest_digest.split(':', 1)[1][:16]}.tar.gz"
        return await asyncio.to_thread(ly.squash, tars, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
