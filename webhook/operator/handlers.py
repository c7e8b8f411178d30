"""kopf handlers: thin. Each parses what kopf hands over and calls the runtime's services.

* ImageRebuild create/update/resume → `RebuildService.reconcile` (status, Events, retries).
* ImagePolicy events → a new background audit scan (read-only: no progress, no finalizer).
* Startup builds the runtime (registry client, cluster reader, scanner) into kopf's memo;
  cleanup closes it. Nothing happens at import time.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from webhook.k8s.cluster import GROUP, VERSION
from webhook.operator.peering import Seat
from webhook.operator.rebuilds import GiveUp, RetryLater
from webhook.operator.runtime import Runtime

log = logging.getLogger("imagegate.operator")
TICK_SECONDS = 5.0


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Progress and diff-base in annotations: the CRDs' structural schemas would prune a
    # `status.kopf` field, and annotations keep the status ours.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    # `imagegate operator` puts this replica's Seat (identity, priority, peering) in the memo.
    memo["runtime"] = await Runtime.start(seat=memo.get("seat") or Seat("standalone", 0))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = memo.get("runtime")
    if runtime is not None:
        await runtime.stop()


@kopf.on.resume(GROUP, VERSION, "imagerebuilds")
@kopf.on.create(GROUP, VERSION, "imagerebuilds")
@kopf.on.update(GROUP, VERSION, "imagerebuilds", field="spec")
async def reconcile_rebuild(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    namespace: str | None,
    name: str,
    retry: int,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    runtime: Runtime = memo["runtime"]
    try:
        outcome = await runtime.rebuilds.reconcile(
            namespace or "default",
            name,
            dict(spec),
            dict(status),
            int(meta.get("generation") or 0),
            retry,
        )
    except RetryLater as err:
        raise kopf.TemporaryError(str(err), delay=err.delay) from None
    except GiveUp as err:
        kopf.warn(body, reason="RebuildFailed", message=str(err))
        raise kopf.PermanentError(str(err)) from None
    if outcome is not None:
        post = kopf.warn if outcome.warning else kopf.info
        post(body, reason=outcome.reason, message=outcome.message)


# ImagePolicies are only watched: event handlers keep no progress and put no finalizer on
# them, so the operator never writes to a policy (its RBAC has no `patch` on them) and a stopped
# operator never holds up a policy's deletion.
@kopf.on.event(GROUP, VERSION, "imagepolicies")
async def policy_changed(name: str, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo["runtime"]
    log.info("ImagePolicy %s changed: scanning workloads again", name)
    runtime.request_scan()
