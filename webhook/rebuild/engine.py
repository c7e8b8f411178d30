"""The rebuild engine: a non-compliant image in, a compliant immutable replacement out.

Daemonless: it works on registry objects. Config-only fixes (user, entrypoint, base
annotations) touch no layer at all, every layer is mounted across repositories. A squash
downloads only the layers above the base, to files under `workdir`, verified against their
digests, and uploads one new layer from a file. A rebase swaps the old base's layers (a
verified prefix) for the new base's.

Deterministic: the same source digest, fixes and options give the same result digest
(reproducible layer tars, JSON written in a fixed order, no wall-clock time anywhere: history
entries carry the source config's `created`). That makes a second rebuild a no-op.

Fix what can be fixed, report the rest: each chosen fix is tried on each platform; one that
cannot be made (an unknown base, a shell chain) is left out with its reason and the others are
still made and pushed. Only when the source fails and no fix at all could be made is nothing
pushed (`Unfixable`). The result is re-checked with the same `Checker` the webhook uses; one
that still fails a rule is `outcome="partial"` (phase `PartiallyFixed`), every rule it fails
listed with why it was not fixed (`still_failing`), never hidden.

Everything is built (configs, manifests, squashed layers, in `workdir`) before anything is
pushed, so the replacement's digest is known first: the new tag is checked against it before
a blob moves, and a conflict leaves nothing behind.

Provenance: one history entry per fix (`imagegate: {"fix": …}`), the manifests' annotations
(`dev.imagegate.source.digest`, `.fixes`, `.version`) and the config label
`dev.imagegate.source.digest`, each naming the manifest's own source (an index's: the source
index; a platform manifest's: the source platform manifest).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from webhook import __version__
from webhook.errors import ImagegateError, PlatformNotFound, RebuildError, Unfixable, UsageError
from webhook.layers.analysis import MergedImage
from webhook.policy.checker import Checker, CheckResult, known_bases
from webhook.policy.model import ImagePolicy, SingleEntrypointRule
from webhook.policy.outcome import Violation
from webhook.policy.platforms import ANYWHERE, Placement, Term, Values
from webhook.policy.rules.allowed_base import BASE_DIGEST, BASE_NAME, identify_base
from webhook.rebuild import fixes as fx
from webhook.rebuild import layers as ly
from webhook.rebuild import ownership as ow
from webhook.rebuild.draft import BaseImage, DraftLayer, ImageDraft, Rendered
from webhook.rebuild.model import Phase, StillFailing
from webhook.rebuild.push import (
    BlobSource,
    canonical_json,
    check_tag,
    push_blobs,
    push_manifest,
    replacement_tag,
    sha256,
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

Outcome = Literal["succeeded", "partial", "failed"]

# Fixes in the order they are made: the base before the squash (a squash keeps the base's
# layers, so it must see the new ones).
# The user after the base and the entrypoint (they need the final tree and Entrypoint);
# before the squash, which then absorbs their layers.
APPLY_ORDER = (
    fx.SINGLE_ENTRYPOINT, fx.ALLOWED_BASE, fx.NON_ROOT_USER, fx.DROP_SETUID, fx.SIZE_BUDGET,
)  # fmt: skip
LISTED_CHANGES = 100  # paths named in the status; the rest are counted


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
    base_digest: str | None = None
    unfixed: dict[str, str] = field(default_factory=dict)  # fix → why it could not be made
    user: str | None = None  # the USER the replacement runs as, when nonRootUser ran
    changed_paths: list[dict[str, Any]] = field(default_factory=list)  # first LISTED_CHANGES
    changed_count: int = 0
    setuid_kept: list[dict[str, Any]] = field(default_factory=list)  # dropSetuid off


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
    dropped_platforms: list[str] = field(default_factory=list)  # of the source, left out
    still_failing: list[StillFailing] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.outcome == "succeeded"

    @property
    def phase(self) -> Phase:
        return {
            "succeeded": Phase.succeeded,
            "partial": Phase.partially_fixed,
            "failed": Phase.failed,
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
            "stillFailing": [s.model_dump(by_alias=True) for s in self.still_failing],
            "droppedPlatforms": self.dropped_platforms,
            "before": self.before.to_json(),
            "after": self.after.to_json(),
            "platforms": [
                {
                    "platform": p.platform,
                    "sourceManifest": p.source_manifest,
                    "manifest": p.manifest,
                    "fixes": p.fixes,
                    "unfixed": p.unfixed,
                    "base": p.base,
                    "baseDigest": p.base_digest,
                    "baseEvidence": p.base_evidence,
                    "squashedLayers": p.squashed_layers,
                    "droppedPaths": p.dropped_paths,
                    "bytesBefore": p.bytes_before,
                    "bytesAfter": p.bytes_after,
                    "user": p.user,
                    "changedPaths": p.changed_paths,
                    "changedCount": p.changed_count,
                    "setuidKept": p.setuid_kept,
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
    platforms: Sequence[Platform] | None = None,
    keyring: Keyring | None = None,
    source_keyring: Keyring | None = None,
    workdir: Path,
) -> RebuildResult:
    """Rebuild `source` into `target_repo` with `fixes` (None: what `policies` say it needs).

    `squash` True/False forces the size fix on/off; `rebase_onto` (an approved base) adds the
    base fix. `platforms` (None: all) are the platforms of a multi-arch source to rebuild, the
    replacement an index of just those; one the source lacks raises `PlatformNotFound`.

    A fix that cannot be made is reported (`still_failing`) and the others are made anyway.
    Raises `Unfixable` (nothing pushed) when the source fails and no fix could be made,
    `RebuildError` for a tag conflict (nothing pushed) or unreadable layers, `RegistryError`s
    for registry trouble (worth retrying).

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
    wanted = list(platforms or [])

    top = await client.get_manifest(src, skr)
    chosen_entries, dropped = await _select_platforms(client, src, top, wanted, skr)
    scope, placement = _check_scope(wanted)
    before = await checker.check(
        f"{src.name}@{top.digest}", policies, scope, keyring=skr, placement=placement
    )
    if before.verdict == "error":
        raise RebuildError(f"cannot check {source} before rebuilding it: {before.error}")
    drop = all(p.spec.remediation.drop_setuid for p in policies)
    chosen, not_tried = _choose_fixes(before, fixes, squash, new_base is not None, drop)

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
        if chosen_entries is None:
            built = [await _rebuild_manifest(job, top, None)]
            body, media_type = built[0].rendered.manifest, mt.OCI_MANIFEST
        else:
            built = await _rebuild_platforms(job, chosen_entries)
            body, media_type = _index(top, chosen_entries, built), mt.OCI_INDEX
        unfixed = {**not_tried, **_unfixed(built, chosen_entries is not None)}
        _require_a_fix(before, built, chosen, unfixed)
        tag = replacement_tag(src, top.digest)
        await check_tag(job.blobs, target, tag, body, media_type)  # before any blob moves
        done = [await _publish(job, b) for b in built]
        digest = await push_manifest(job.blobs, target, body, media_type)
        created = await tag_once(job.blobs, target, tag, body, media_type)
    finally:
        shutil.rmtree(job.workdir, ignore_errors=True)

    replacement = f"{target.name}@{digest}"
    after = await checker.check(replacement, policies, scope, keyring=kr, placement=placement)
    applied = [f for f in fx.ALL_FIXES if any(f in p.fixes for p in done)]
    saved = sum(p.bytes_before - p.bytes_after for p in done)
    outcome, reason, still = _outcome(after, chosen, applied, unfixed)
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
        platforms=done,
        dropped_platforms=dropped,
        still_failing=still,
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
    before: CheckResult,
    fixes: list[str] | None,
    squash: bool | None,
    rebase: bool,
    drop_setuid: bool = True,
) -> tuple[list[str], dict[str, str]]:
    """The fixes to try, and, for a fix the source needs that will not be tried, why.
    `drop_setuid` (the policies' `remediation.dropSetuid`) comes with a user switch."""
    not_tried: dict[str, str] = {}
    if fixes is not None:
        chosen = set(fx.normalize_fixes(fixes))
    else:
        chosen = {fx.RULE_FIXES[v.rule] for v in before.violations if v.rule in fx.RULE_FIXES}
        if fx.ALLOWED_BASE in chosen and not rebase:
            chosen.discard(fx.ALLOWED_BASE)
            not_tried[fx.ALLOWED_BASE] = (
                "imagegate can rebase the image onto an approved base when told which one "
                "(--rebase-onto REF, spec.rebaseOnto)"
            )
        if fx.NON_ROOT_USER in chosen and drop_setuid:
            chosen.add(fx.DROP_SETUID)
    if squash is True:
        chosen.add(fx.SIZE_BUDGET)
    elif squash is False:
        chosen.discard(fx.SIZE_BUDGET)
    if rebase:
        chosen.add(fx.ALLOWED_BASE)
    return [f for f in fx.ALL_FIXES if f in chosen], not_tried


def _entrypoint_rule(policies: list[ImagePolicy]) -> SingleEntrypointRule:
    for policy in policies:
        if policy.spec.rules.single_entrypoint.enabled:
            return policy.spec.rules.single_entrypoint
    return SingleEntrypointRule()


# ---- platforms ------------------------------------------------------------------------------

_Entry = tuple[dict[str, Any], Platform]  # an index entry (descriptor) and its platform


async def _select_platforms(
    client: RegistryClient,
    source: Reference,
    top: Manifest,
    wanted: list[Platform],
    keyring: Keyring,
) -> tuple[list[_Entry] | None, list[str]]:
    """The index entries to rebuild (None: `top` is one image) and the platforms left out.

    Entries without a real platform (attestations: `unknown/unknown`) describe the old
    manifests and are always dropped, unreported. Every `wanted` platform must be in the
    source: asking for one it lacks is an error naming those it has.
    """
    if not top.is_index:
        if wanted:
            ref = source.with_digest(top.digest)
            config = await client.get_config(ref, str(top.data["config"]["digest"]), keyring)
            _require_platforms(source, wanted, [_config_platform(config)])
        return None, []
    entries: list[_Entry] = []
    for entry in top.data.get("manifests") or []:
        plat = entry.get("platform") or {}
        os_, arch = str(plat.get("os") or ""), str(plat.get("architecture") or "")
        if os_ and arch and os_ != "unknown":
            entries.append((dict(entry), Platform(os_, arch, plat.get("variant") or None)))
    if not entries:
        raise RebuildError(f"index {top.digest} of {source} lists no platform image")
    if not wanted:
        return entries, []
    _require_platforms(source, wanted, [p for _, p in entries])
    keep = [any(w.matches(p.os, p.architecture, p.variant) for w in wanted) for _, p in entries]
    kept = [entry for entry, k in zip(entries, keep, strict=True) if k]
    return kept, [str(p) for (_, p), k in zip(entries, keep, strict=True) if not k]


def _require_platforms(source: Reference, wanted: list[Platform], has: list[Platform]) -> None:
    missing = [
        w for w in wanted if not any(w.matches(h.os, h.architecture, h.variant) for h in has)
    ]
    if missing:
        raise PlatformNotFound(
            f"{source} has no {', '.join(map(str, missing))} image; it has "
            f"{', '.join(map(str, has))}",
            str(source),
        )


def _check_scope(wanted: list[Platform]) -> tuple[Platform | None, Placement]:
    """How the before and after checks look at the chosen platforms: the one platform, or
    nodes of the chosen os/arch pairs (every platform when none were chosen)."""
    if len(wanted) == 1:
        return wanted[0], ANYWHERE
    terms = [
        Term(Values(frozenset({n.os})), Values(frozenset({n.architecture})))
        for n in (w.normalized() for w in wanted)
    ]
    return None, Placement.of(terms) if terms else ANYWHERE


# ---- one platform ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Built:
    """One platform image, fixed and rendered but not pushed yet."""

    platform: Platform
    source_manifest: str
    draft: ImageDraft
    rendered: Rendered
    bytes_before: int
    unfixed: dict[str, str]
    files: _FileStatus


async def _rebuild_platforms(job: _Job, entries: list[_Entry]) -> list[_Built]:
    built: list[_Built] = []
    for entry, plat in entries:
        child = await job.client.get_manifest(
            job.source.with_digest(entry["digest"]), job.source_keyring
        )
        if child.is_index:
            raise RebuildError(f"{job.source} nests an index in an index; not rebuilt")
        built.append(await _rebuild_manifest(job, child, plat))
    return built


def _index(top: Manifest, entries: list[_Entry], built: list[_Built]) -> bytes:
    """The replacement index: the rebuilt platform manifests, in the source's order, with the
    source's annotations, the provenance and the base when all platforms agree on it."""
    descriptors: list[dict[str, Any]] = []
    for (entry, _), b in zip(entries, built, strict=True):
        descriptor: dict[str, Any] = {
            "mediaType": mt.OCI_MANIFEST,
            "digest": sha256(b.rendered.manifest),
            "size": len(b.rendered.manifest),
            "platform": entry["platform"],
        }
        if isinstance(entry.get("annotations"), dict):
            descriptor["annotations"] = entry["annotations"]
        descriptors.append(descriptor)
    annotations = dict(top.data.get("annotations") or {})
    annotations.update(_provenance(top.digest, [f for b in built for f in b.draft.applied]))
    names = {b.draft.base.name if b.draft.base else None for b in built}
    digests = {b.draft.base.digest if b.draft.base else None for b in built}
    if len(names) == 1 and (name := names.pop()) is not None:
        if annotations.get(BASE_NAME) != name:
            annotations.pop(BASE_DIGEST, None)  # it was the digest of another base
        annotations[BASE_NAME] = name
        if len(digests) == 1 and (base_digest := digests.pop()) is not None:
            annotations[BASE_DIGEST] = base_digest
    index: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": descriptors,
        "annotations": annotations,
    }
    return canonical_json(index)


async def _rebuild_manifest(job: _Job, manifest: Manifest, platform: Platform | None) -> _Built:
    """One platform image: read it into a draft, apply the chosen fixes, render it."""
    ref = job.source.with_digest(manifest.digest)
    config_digest = str(manifest.data["config"]["digest"])
    config = await job.client.get_config(ref, config_digest, job.source_keyring)
    plat = platform or _config_platform(config)
    facts = await job.client.inspect(ref, plat, job.source_keyring)
    base = await _identify_base(job, facts, plat)
    draft = ImageDraft.from_image(str(job.source), ref, manifest.data, config, base)
    bytes_before = draft.size
    unfixed: dict[str, str] = {}
    files = _Files(job, draft, manifest.digest)
    for fix in APPLY_ORDER:
        if fix not in job.fixes:
            continue
        try:
            if fix == fx.NON_ROOT_USER:
                await files.switch_user()
            elif fix == fx.DROP_SETUID:
                await files.drop_setuid()
            elif fix == fx.SINGLE_ENTRYPOINT:
                fx.exec_form_entrypoint(draft, facts, job.entrypoint_rule)
            elif fix == fx.ALLOWED_BASE:
                await _fix_base(job, draft, plat)
            elif fix == fx.SIZE_BUDGET:
                await _fix_size(job, draft, manifest.digest)
        except Unfixable as err:  # the draft is left as it was: the other fixes still apply
            unfixed[fix] = str(err)
    if fx.NON_ROOT_USER in job.fixes and fx.DROP_SETUID not in job.fixes:
        await files.report_setuid()
    files.close()
    draft.labels()[SOURCE_DIGEST] = manifest.digest
    rendered = draft.render(_provenance(manifest.digest, draft.applied))
    return _Built(plat, manifest.digest, draft, rendered, bytes_before, unfixed, files.status)


@dataclass
class _FileStatus:
    """What the file fixes did, for `PlatformRebuild`."""

    user: str | None = None
    changed: list[dict[str, Any]] = field(default_factory=list)
    changed_count: int = 0
    setuid_kept: list[dict[str, Any]] = field(default_factory=list)


class _Files:
    """The fixes that change files (`nonRootUser`, `dropSetuid`): they read the image's final
    tree once (every layer downloaded and indexed, `webhook.rebuild.ownership`) and add a
    small layer each, recorded in the history and in the status."""

    def __init__(self, job: _Job, draft: ImageDraft, manifest_digest: str) -> None:
        self._job = job
        self._draft = draft
        self._tag = manifest_digest.split(":", 1)[1][:16]
        self._work = job.workdir / f"tree-{self._tag}"
        self._blobs: list[Path] = []
        self._merged: MergedImage | None = None
        self._chowned: list[str] = []
        self.status = _FileStatus()

    async def _tree(self) -> MergedImage:
        if self._merged is None:
            self._work.mkdir(parents=True, exist_ok=True)
            for index, layer in enumerate(self._draft.layers):
                if layer.source.file is not None:
                    self._blobs.append(layer.source.file)
                    continue
                if layer.source.repository is None:  # pragma: no cover - construction error
                    raise RebuildError(f"layer {layer.digest} has no blob to read")
                blob = self._work / f"{index:04d}.blob"
                await self._job.blobs.download(layer.source.repository, layer.digest, blob)
                self._blobs.append(blob)
            self._merged = await asyncio.to_thread(
                ow.merged_image, self._blobs, self._draft.layers, spill_dir=self._work
            )
        return self._merged

    async def switch_user(self) -> None:
        """The image's own non-root user kept, or root switched to the requested user with
        one layer giving it what it could not use (as `COPY --chown` would)."""
        merged = await self._tree()
        plan = ow.plan_user_switch(merged, self._draft.inner, self._job.user)
        if plan.changes:
            written = await asyncio.to_thread(
                ow.write_ownership_layer, list(plan.changes), self._blobs, self._job.workdir,
                merged=merged, name=f"ownership-{self._tag}",
            )  # fmt: skip
            history = ow.ownership_history(self._draft.created, plan.choice, written)
            self._draft.layers.append(ow.as_draft_layer(written, history))
            self._draft.mark(fx.NON_ROOT_USER)
        else:
            self._draft.note(
                fx.NON_ROOT_USER, {"user": plan.choice.user, "from": plan.choice.source}
            )
        self._draft.inner["User"] = plan.choice.user
        self._chowned = [c.path for c in plan.changes]
        self._list(plan.changes)
        self.status.user = plan.choice.user

    async def drop_setuid(self) -> None:
        merged = await self._tree()
        changes = ow.drop_setuid_changes(merged, skip=self._chowned)  # a chown cleared those
        if not changes:
            return
        written = await asyncio.to_thread(
            ow.write_ownership_layer, changes, self._blobs, self._job.workdir,
            merged=merged, name=f"setuid-{self._tag}",
        )  # fmt: skip
        history = ow.setuid_history(self._draft.created, written)
        self._draft.layers.append(ow.as_draft_layer(written, history))
        self._draft.mark(fx.DROP_SETUID)
        self._list(changes)

    async def report_setuid(self) -> None:
        """dropSetuid is off: the setuid/setgid files are listed, never kept without a word."""
        if self._merged is not None:
            self.status.setuid_kept = ow.setuid_report(self._merged)[:LISTED_CHANGES]

    def _list(self, changes: Sequence[ow.Change]) -> None:
        room = LISTED_CHANGES - len(self.status.changed)
        self.status.changed.extend(c.to_json() for c in changes[: max(room, 0)])
        self.status.changed_count += len(changes)

    def close(self) -> None:
        """The downloaded blobs are not needed any more (the written layers live elsewhere)."""
        shutil.rmtree(self._work, ignore_errors=True)


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
    """`sizeBudget`: squash the layers above the base; Unfixable when every layer is the base's
    (a squash would change nothing, and saying so beats a silent no-op)."""
    upper = draft.layers[draft.base_layers :]
    if not upper:
        raise Unfixable(
            f"every layer of {draft.name} is its base's: there is nothing above the base to "
            "squash (rebase it onto a smaller approved base)"
        )
    fx.squash(draft, await _squash(job, manifest_digest, upper))


async def _publish(job: _Job, built: _Built) -> PlatformRebuild:
    """Push a built image's blobs (layers mounted, files uploaded) and its manifest."""
    draft, rendered = built.draft, built.rendered
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
        platform=str(built.platform),
        source_manifest=built.source_manifest,
        manifest=digest,
        size=len(rendered.manifest),
        fixes=draft.applied,
        base=base.name if base else None,
        base_evidence=base.evidence if base else None,
        squashed_layers=draft.squashed_layers,
        dropped_paths=draft.dropped_paths,
        bytes_before=built.bytes_before,
        bytes_after=draft.size,
        blobs=done,
        body=rendered.manifest,
        base_digest=base.digest if base else None,
        unfixed=built.unfixed,
        user=built.files.user,
        changed_paths=built.files.changed,
        changed_count=built.files.changed_count,
        setuid_kept=built.files.setuid_kept,
    )


# ---- what could not be fixed ----------------------------------------------------------------


def _unfixed(built: list[_Built], index: bool) -> dict[str, str]:
    """Fix → why it could not be made; for an index each reason names its platforms."""
    out: dict[str, str] = {}
    for fix in fx.ALL_FIXES:
        by_reason: dict[str, list[str]] = {}
        for b in built:
            if fix in b.unfixed:
                by_reason.setdefault(b.unfixed[fix], []).append(str(b.platform))
        if by_reason:
            out[fix] = "; ".join(
                f"{', '.join(plats)}: {why}" if index else why for why, plats in by_reason.items()
            )
    return out


def _why(rule: str, tried: list[str], made: list[str], unfixed: dict[str, str]) -> str:
    """Why `rule` still fails after the rebuild (`made`: the fixes applied somewhere)."""
    fix = fx.RULE_FIXES.get(rule)
    if fix is None:
        return "imagegate has no fix for this rule"
    if fix in unfixed:
        return unfixed[fix]
    if fix not in tried:
        return f"the {fix} fix was not asked for (fixes: {', '.join(tried) or 'none'})"
    if fix in made:
        return f"the {fix} fix was made, and the rule still fails"
    return f"the {fix} fix changed nothing"


def _outcome(
    after: CheckResult, tried: list[str], made: list[str], unfixed: dict[str, str]
) -> tuple[Outcome, str, list[StillFailing]]:
    """The outcome, its reason and, when the replacement still fails, each rule with why."""
    if after.verdict == "pass":
        return "succeeded", "", []
    if after.verdict == "error":
        return "failed", f"cannot check the replacement: {after.error}", []
    still = [
        StillFailing(rule=v.rule, message=v.message, reason=_why(v.rule, tried, made, unfixed))
        for v in _distinct(after.violations)
    ]
    reason = "the rebuilt image still fails: " + "; ".join(
        f"{s.rule}: {s.message} ({s.reason})" for s in still
    )
    return "partial", reason, still


def _distinct(violations: list[Violation]) -> list[Violation]:
    """One violation per (rule, message): several policies may report the same."""
    seen: dict[tuple[str, str], Violation] = {}
    for v in violations:
        seen.setdefault((v.rule, v.message), v)
    return list(seen.values())


def _require_a_fix(
    before: CheckResult, built: list[_Built], tried: list[str], unfixed: dict[str, str]
) -> None:
    """Unfixable, before anything is pushed, when the source fails and no fix was made: a
    copy with only provenance added would fail just the same."""
    if before.verdict != "fail" or any(b.draft.applied for b in built):
        return
    reasons = {f"{v.rule}: {_why(v.rule, tried, [], unfixed)}" for v in before.violations}
    raise Unfixable("; ".join(sorted(reasons)))


def _provenance(source_digest: str, applied: list[str]) -> dict[str, str]:
    ordered = [f for f in fx.ALL_FIXES if f in applied]
    return {
        SOURCE_DIGEST: source_digest,
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
            tar = work / f"{index:04d}.tar"
            if layer.source.file is not None:  # a layer this rebuild wrote (ownership, setuid)
                await asyncio.to_thread(ly.decompress, layer.source.file, tar, layer.diff_id)
                tars.append(tar)
                continue
            repository = layer.source.repository
            if repository is None:  # pragma: no cover - construction error
                raise RebuildError(f"layer {layer.digest} has no repository to read it from")
            blob = work / f"{index:04d}.blob"
            await job.blobs.download(repository, layer.digest, blob)
            await asyncio.to_thread(ly.decompress, blob, tar, layer.diff_id)
            blob.unlink()
            tars.append(tar)
        out = job.workdir / f"squashed-{manifest_digest.split(':', 1)[1][:16]}.tar.gz"
        return await asyncio.to_thread(ly.squash, tars, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
