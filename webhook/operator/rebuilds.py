"""Reconciling one ImageRebuild: run the engine, write the status, say what happened.

Idempotent: a rebuild whose status already records a result for the current generation is
not run again, and the engine itself produces the same digest for the same source and fixes
and never moves a tag. Registry trouble is temporary (retried with backoff by kopf); an image
that cannot be fixed is permanent, and so is a partial fix (`PartiallyFixed`: the fixes that
could be made are pushed, the rules still failing are in `status.stillFailing`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webhook.errors import (
    ClusterConflict,
    ClusterError,
    ImagegateError,
    RebuildError,
    RegistryError,
    Unfixable,
)
from webhook.k8s.cluster import ClusterReader
from webhook.k8s.objects import ImagegateObjects
from webhook.policy.checker import Checker, CheckResult
from webhook.policy.credentials import pull_keyring
from webhook.policy.model import ImagePolicy
from webhook.policy.workloads import PodTemplate
from webhook.rebuild.engine import RebuildResult, rebuild
from webhook.rebuild.model import ImageRebuildSpec, Phase
from webhook.registry.auth import Keyring
from webhook.registry.client import RegistryClient
from webhook.registry.facts import Platform

log = logging.getLogger("imagegate.operator")
PLURAL = "imagerebuilds"
DONE = {Phase.succeeded.value, Phase.partially_fixed.value, Phase.unfixable.value}
CLAIM_SECONDS = 600.0
IDENTITY = f"{socket.gethostname()}/{os.getpid()}"


class RetryLater(Exception):
    """Registry or API trouble: kopf retries the handler after `delay` seconds."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class GiveUp(Exception):
    """The rebuild cannot succeed as specified: kopf stops retrying."""


@dataclass(frozen=True)
class Outcome:
    """What to tell the user (as an Event) once the status is written."""

    reason: str
    message: str
    warning: bool = False


class RebuildService:
    def __init__(
        self,
        client: RegistryClient,
        checker: Checker,
        objects: ImagegateObjects,
        policies: Any,
        workdir: Path | None = None,
        *,
        cluster: ClusterReader | None = None,
        tenant_keyring: Keyring | None = None,
    ) -> None:
        """With `cluster`, the source is read with the ImageRebuild namespace's pull secrets
        (its default ServiceAccount's and `spec.imagePullSecrets`) and `tenant_keyring` only,
        so whoever may create an ImageRebuild cannot have the operator read, with its own
        credentials, an image they cannot."""
        self._client = client
        self._checker = checker
        self._objects = objects
        self._policies = policies
        self._workdir = workdir
        self._cluster = cluster
        self._tenant_keyring = tenant_keyring or Keyring.empty()

    async def reconcile(
        self,
        namespace: str,
        name: str,
        spec: dict[str, Any],
        status: dict[str, Any],
        generation: int,
        retry: int,
    ) -> Outcome | None:
        """Run the rebuild unless it is already done for this generation."""
        if _done(status, generation):
            return None
        try:
            wanted = ImageRebuildSpec.model_validate(spec)
        except ValueError as err:
            await self._write(namespace, name, generation, Phase.failed, f"invalid spec: {err}")
            raise GiveUp(f"invalid spec: {err}") from None
        try:
            policies = self._chosen_policies(wanted)
            _check_target(wanted, policies)
        except GiveUp as err:
            await self._write(namespace, name, generation, Phase.failed, str(err))
            raise
        if not await self._claim(namespace, name, generation, wanted.source):
            return None
        log.info("rebuilding %s for ImageRebuild %s/%s", wanted.source, namespace, name)
        try:
            platforms = [Platform.parse(p) for p in wanted.platforms or ()]
            source_keyring = await self._source_keyring(namespace, wanted)
            with tempfile.TemporaryDirectory(
                prefix="imagegate-rebuild-", dir=self._workdir
            ) as work:
                result = await rebuild(
                    self._client,
                    self._checker,
                    wanted.source,
                    wanted.target_repository,
                    policies,
                    fixes=list(wanted.fixes) if wanted.fixes else None,
                    user=wanted.user or "65532:65532",
                    rebase_onto=wanted.rebase_onto,
                    platforms=platforms or None,
                    source_keyring=source_keyring,
                    workdir=Path(work),
                )
        except Unfixable as err:
            await self._write(namespace, name, generation, Phase.unfixable, str(err))
            raise GiveUp(str(err)) from None
        except RegistryError as err:
            message = f"registry trouble, will retry: {err}"
            await self._write(namespace, name, generation, Phase.pending, message)
            raise RetryLater(message, delay=min(300.0, 10.0 * 2**retry)) from None
        except (RebuildError, ImagegateError) as err:
            await self._write(namespace, name, generation, Phase.failed, str(err))
            raise GiveUp(str(err)) from None
        await self._objects.patch_status(PLURAL, namespace, name, _status(result, generation))
        if result.succeeded:
            saved = f", {result.bytes_saved:,} bytes saved" if result.bytes_saved else ""
            return Outcome("Rebuilt", f"{wanted.source} → {result.replacement}{saved}")
        reason = "PartiallyFixed" if result.phase is Phase.partially_fixed else "StillFailing"
        return Outcome(reason, f"{result.replacement}: {result.reason}", warning=True)

    async def _source_keyring(self, namespace: str, spec: ImageRebuildSpec) -> Keyring | None:
        """What the source is read with: the namespace's pull secrets (None without a cluster:
        the CLI, which reads with its user's own docker config)."""
        if self._cluster is None:
            return None
        names = list(spec.image_pull_secrets or [])
        template = PodTemplate("ImageRebuild", [], "default", names)
        return await pull_keyring(self._cluster, namespace, template, self._tenant_keyring)

    async def _claim(self, namespace: str, name: str, generation: int, source: str) -> bool:
        """Atomically mark the rebuild as ours, so two replicas never run it twice.

        kopf peering lets one replica work at a time, but during a hand-over both may hold the
        same event. The claim is a status patch conditional on the resourceVersion just read:
        the loser gets 409 and looks again later. A claim older than CLAIM_SECONDS is a dead
        replica's and is taken over.
        """
        try:
            current = await self._objects.get(PLURAL, namespace, name)
        except ClusterError as err:
            raise RetryLater(str(err), delay=5.0) from None
        status = current.get("status") or {}
        if _done(status, generation):
            return False
        holder, since = status.get("runningBy"), status.get("runningSince")
        if status.get("phase") == Phase.running.value and holder and holder != IDENTITY:
            age = time.time() - _epoch(since)
            if age < CLAIM_SECONDS:
                raise RetryLater(f"being rebuilt by {holder}", delay=15.0)
        claim = {
            "phase": Phase.running.value,
            "message": f"rebuilding {source}",
            "observedGeneration": generation,
            "runningBy": IDENTITY,
            "runningSince": _now(),
            "conditions": [_condition(Phase.running, f"rebuilding {source}", generation)],
        }
        version = str((current.get("metadata") or {}).get("resourceVersion", ""))
        try:
            await self._objects.patch_status(PLURAL, namespace, name, claim, version or None)
        except ClusterConflict:
            raise RetryLater("changed while claiming it; looking again", delay=2.0) from None
        return True

    def _chosen_policies(self, spec: ImageRebuildSpec) -> list[ImagePolicy]:
        if not self._policies.ready:
            raise RetryLater("the ImagePolicies are not loaded yet", delay=5.0)
        policies: list[ImagePolicy] = list(self._policies.policies)
        if spec.policy:
            chosen = [p for p in policies if p.name == spec.policy]
            if not chosen:
                raise GiveUp(f"ImagePolicy {spec.policy!r} does not exist")
            return chosen
        return policies or [ImagePolicy()]

    async def _write(
        self, namespace: str, name: str, generation: int, phase: Phase, message: str
    ) -> None:
        status = {
            "phase": phase.value,
            "message": message,
            "observedGeneration": generation,
            "conditions": [_condition(phase, message, generation)],
            "runningBy": None,  # the claim ends with the attempt
            "runningSince": None,
        }
        await self._objects.patch_status(PLURAL, namespace, name, status)


def _check_target(spec: ImageRebuildSpec, policies: list[ImagePolicy]) -> None:
    """The operator pushes with its own credentials: only where a policy says it may."""
    if any(p.spec.remediation.allows_target(spec.source, spec.target_repository) for p in policies):
        return
    names = ", ".join(p.name for p in policies)
    raise GiveUp(
        f"targetRepository {spec.target_repository} is not allowed: rebuilds push only to the "
        f"source's own repository or to a repository the policy allows "
        f"(remediation.targetRepository or remediation.targetRepositories of {names})"
    )


def _done(status: dict[str, Any], generation: int) -> bool:
    return status.get("phase") in DONE and status.get("observedGeneration") == generation


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(stamp: Any) -> float:
    try:
        return (
            dt.datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ")
            .replace(tzinfo=dt.UTC)
            .timestamp()
        )
    except ValueError:
        return 0.0


def _status(result: RebuildResult, generation: int) -> dict[str, Any]:
    phase = result.phase
    message = result.reason or f"replacement {result.replacement} passes the policy"
    return {
        "phase": phase.value,
        "sourceDigest": result.source_digest,
        "replacement": result.replacement,
        "replacementTag": result.replacement_tag,
        "before": _verdicts(result.before),
        "after": _verdicts(result.after),
        "bytesSaved": result.bytes_saved,
        "fixes": result.fixes,
        "stillFailing": [s.model_dump(by_alias=True) for s in result.still_failing],
        "droppedPlatforms": result.dropped_platforms,
        "message": message,
        "observedGeneration": generation,
        "conditions": [_condition(phase, message, generation)],
        "runningBy": None,
        "runningSince": None,
    }


def _verdicts(result: CheckResult) -> dict[str, Any]:
    return {"verdict": result.verdict, "failedRules": sorted({v.rule for v in result.violations})}


def _condition(phase: Phase, message: str, generation: int) -> dict[str, Any]:
    ready = {Phase.succeeded: "True", Phase.running: "Unknown", Phase.pending: "Unknown"}
    return {
        "type": "Ready",
        "status": ready.get(phase, "False"),
        "reason": phase.value,
        "message": message[:1000],
        "lastTransitionTime": _now(),
        "observedGeneration": generation,
    }
