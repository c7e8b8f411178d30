"""Writing PolicyReports and Events to the Kubernetes API.

The report objects themselves are built elsewhere (`webhook.report.policyreport`: one
PolicyReport per workload); this module only stores them, as given:

* `write_all` — the background scan's full picture: every report created or replaced, and the
  imagegate-managed reports that are not in the new set deleted (so reports of deleted
  workloads and namespaces disappear even where no garbage collector follows their
  ownerReferences, and the per-namespace reports and cluster summary of earlier versions go);
* `merge` — the webhook's batched admission records: each report is combined with the stored
  one (by a function the caller gives: what merging means is report vocabulary,
  `webhook.report.policyreport.merge_report`); it never deletes;
* `read_all` — every (Cluster)PolicyReport of the cluster, whoever wrote it;
* `emit_event` — a core/v1 Event on a workload, not repeated for the same workload and message
  within `event_dedupe_seconds`.

The `kubernetes` client is synchronous: every call runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final, Protocol, TypeVar, cast

from webhook.errors import ClusterConflict, ClusterError, ClusterForbidden, ClusterNotFound
from webhook.k8s.calls import call

log = logging.getLogger(__name__)
T = TypeVar("T")
# combine(stored or None, new) -> the body to store
Combine = Callable[[Mapping[str, Any] | None, Mapping[str, Any]], dict[str, Any]]

GROUP: Final = "wgpolicyk8s.io"
VERSION: Final = "v1alpha2"
POLICY_REPORT: Final = "PolicyReport"
CLUSTER_POLICY_REPORT: Final = "ClusterPolicyReport"
PLURAL: Final = "policyreports"
CLUSTER_PLURAL: Final = "clusterpolicyreports"
COMPONENT: Final = "imagegate"
EVENT_DEDUPE_SECONDS: Final = 600.0
CONFLICT_RETRIES: Final = 5
WRITE_CONCURRENCY: Final = 8


class ObjectRef(Protocol):
    """The workload an Event is about (`webhook.report.policyreport.WorkloadRef` is one)."""

    @property
    def api_version(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def uid(self) -> str: ...
    def to_json(self) -> dict[str, str]:
        """The workload as an ObjectReference (the Event's `involvedObject`)."""
        ...


class ReportWriter:
    """Stores PolicyReports and Events; `managed_by_selector` selects the reports it owns
    (e.g. `app.kubernetes.io/managed-by=imagegate`, the label the report builder sets)."""

    def __init__(
        self,
        api_client: Any,
        managed_by_selector: str,
        *,
        event_dedupe_seconds: float = EVENT_DEDUPE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from kubernetes import client as k8s

        self._custom = k8s.CustomObjectsApi(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self._selector = managed_by_selector
        self._dedupe_seconds = event_dedupe_seconds
        self._clock = clock
        self._emitted: dict[tuple[str, ...], float] = {}
        self._limit = asyncio.Semaphore(WRITE_CONCURRENCY)
        self._instance = socket.gethostname()

    # ---- reports -------------------------------------------------------------------------

    async def write_all(
        self, reports: list[dict[str, Any]], *, keep_created_since: datetime | None = None
    ) -> None:
        """Create or replace every report, then delete the managed reports not in `reports`.

        Reports created at or after `keep_created_since` (the scan's start) are not deleted:
        the admission recorder wrote them for workloads the scan could not have seen yet.
        Raises `ClusterError` (after trying every report) when one could not be written; the
        stale ones are then left alone, so a failed write never loses results.
        """
        keep: set[tuple[str, str, str]] = set()
        for report in reports:
            keep.add(_identity(report))
        outcomes = await asyncio.gather(
            *(self._bounded(self._put(r)) for r in reports), return_exceptions=True
        )
        _raise_failures(outcomes, len(reports))
        stale = [
            obj
            for obj in await self._managed()
            if _identity(obj) not in keep and not _created_since(obj, keep_created_since)
        ]
        await asyncio.gather(*(self._bounded(self._delete(obj)) for obj in stale))

    async def merge(self, reports: list[dict[str, Any]], combine: Combine) -> None:
        """Store each report of `reports` as `combine(stored, new)` (`stored` is None when
        there is none yet), read again and combined again when a concurrent writer got in
        between. Raises `ClusterError` (after trying every report) when one was not stored."""
        outcomes = await asyncio.gather(
            *(self._bounded(self._update(r, combine)) for r in reports), return_exceptions=True
        )
        _raise_failures(outcomes, len(reports))

    async def read_all(self) -> list[dict[str, Any]]:
        """Every PolicyReport in all namespaces, then every ClusterPolicyReport (any source)."""
        namespaced = await self._list(PLURAL, None)
        clustered = await self._list(CLUSTER_PLURAL, None)
        return [*namespaced, *clustered]

    async def _bounded(self, work: Awaitable[T]) -> T:
        async with self._limit:
            return await work

    async def _managed(self) -> list[dict[str, Any]]:
        """Every report this writer owns. ClusterPolicyReports are only the summary earlier
        versions wrote: without the rights to list them there is nothing to clean up."""
        try:
            clustered = await self._list(CLUSTER_PLURAL, self._selector)
        except ClusterForbidden:
            clustered = []
        return [*await self._list(PLURAL, self._selector), *clustered]

    async def _list(self, plural: str, selector: str | None) -> list[dict[str, Any]]:
        kind = POLICY_REPORT if plural == PLURAL else CLUSTER_POLICY_REPORT

        def read() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            token: str | None = None
            while True:
                kwargs: dict[str, Any] = {"limit": 100}
                if selector:
                    kwargs["label_selector"] = selector
                if token:
                    kwargs["_continue"] = token
                page: Any = self._custom.list_cluster_custom_object(
                    GROUP, VERSION, plural, **kwargs
                )
                for item in page.get("items") or []:
                    item.setdefault("apiVersion", f"{GROUP}/{VERSION}")
                    item.setdefault("kind", kind)
                    items.append(item)
                token = (page.get("metadata") or {}).get("continue") or None
                if not token:
                    return items

        try:
            return await call(read, f"list {plural}")
        except ClusterNotFound:
            # The CRD is not installed: there is nothing to read (or to clean up).
            log.warning("PolicyReport CRDs not installed", extra={"plural": plural})
            return []

    async def _put(self, report: Mapping[str, Any]) -> None:
        """Create `report`, or replace the stored one with it."""
        await self._update(report, _replacement)

    async def _update(self, report: Mapping[str, Any], combine: Combine) -> None:
        """Store `combine(stored, report)`: created when there is no stored report, else
        replaced at the stored resourceVersion (so a concurrent write is never lost: on a
        conflict the stored report is read and combined again)."""
        kind, namespace, name = _identity(report)
        what = f"{kind} {namespace + '/' if namespace else ''}{name}"
        for _ in range(CONFLICT_RETRIES):
            stored = await self._get(kind, namespace, name)
            body = combine(stored, report)
            if stored is None:
                write = partial(self._create, kind, namespace, body)
            else:
                version = (stored.get("metadata") or {}).get("resourceVersion")
                body["metadata"] = {**(body.get("metadata") or {}), "resourceVersion": version}
                write = partial(self._replace, kind, namespace, name, body)
            try:
                await call(write, f"write {what}")
                return
            except ClusterConflict:
                pass  # created or changed meanwhile: combine with what is stored now
        raise ClusterConflict(f"cannot write {what}: kept conflicting with concurrent writers")

    async def _get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any]:
            if kind == POLICY_REPORT:
                obj: Any = self._custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name
                )
            else:
                obj = self._custom.get_cluster_custom_object(GROUP, VERSION, CLUSTER_PLURAL, name)
            return dict(obj)

        try:
            return await call(read, f"read {kind} {namespace}/{name}")
        except ClusterNotFound:
            return None

    def _create(self, kind: str, namespace: str, body: dict[str, Any]) -> None:
        if kind == POLICY_REPORT:
            self._custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        else:
            self._custom.create_cluster_custom_object(GROUP, VERSION, CLUSTER_PLURAL, body)

    def _replace(self, kind: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        if kind == POLICY_REPORT:
            self._custom.replace_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, body
            )
        else:
            self._custom.replace_cluster_custom_object(GROUP, VERSION, CLUSTER_PLURAL, name, body)

    async def _delete(self, obj: Mapping[str, Any]) -> None:
        kind, namespace, name = _identity(obj)

        def delete() -> None:
            if kind == POLICY_REPORT:
                self._custom.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name
                )
            else:
                self._custom.delete_cluster_custom_object(GROUP, VERSION, CLUSTER_PLURAL, name)

        with contextlib.suppress(ClusterNotFound):  # already gone is what we wanted
            await call(delete, f"delete {kind} {namespace}/{name}")

    # ---- events --------------------------------------------------------------------------

    async def emit_event(
        self, workload: ObjectRef, reason: str, message: str, type: str = "Warning"
    ) -> bool:
        """A core/v1 Event on `workload`; False when the same one was emitted recently."""
        key = (workload.kind, workload.namespace, workload.name, workload.uid, reason, message)
        now = self._clock()
        last = self._emitted.get(key)
        if last is not None and now - last < self._dedupe_seconds:
            return False
        self._emitted = {k: t for k, t in self._emitted.items() if now - t < self._dedupe_seconds}
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{workload.name}.{uuid.uuid4().hex[:16]}",
                "namespace": workload.namespace,
            },
            "involvedObject": workload.to_json(),
            "reason": reason,
            "message": message[:1024],
            "type": type,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
        }
        await call(
            lambda: self._core.create_namespaced_event(workload.namespace, cast(Any, body)),
            f"create Event on {workload.kind} {workload.namespace}/{workload.name}",
        )
        self._emitted[key] = now
        return True


def _raise_failures(outcomes: list[Any], total: int) -> None:
    """One `ClusterError` for the writes that failed (anything but an Exception as it is)."""
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    for failure in failures:
        if not isinstance(failure, Exception):
            raise failure
    if failures:
        raise ClusterError(
            f"{len(failures)} of {total} reports not written: "
            + "; ".join(str(f) for f in failures[:3])
        )


def _created_since(obj: Mapping[str, Any], moment: datetime | None) -> bool:
    """Whether `obj` was created at or after `moment`; False when either is unknown. The API
    server records whole seconds: a report created in the second `moment` falls in counts as
    older (a scan's own earlier reports are never kept by mistake; a report the recorder
    wrote within that second waits for the next admission or scan)."""
    created = (obj.get("metadata") or {}).get("creationTimestamp")
    if moment is None or not isinstance(created, str):
        return False
    try:
        when = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when >= moment


def _replacement(stored: Mapping[str, Any] | None, report: Mapping[str, Any]) -> dict[str, Any]:
    """`report` as given (what was stored is replaced)."""
    body = dict(report)
    body["metadata"] = {
        k: v for k, v in dict(report.get("metadata") or {}).items() if k != "resourceVersion"
    }
    return body


def _identity(report: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = report.get("metadata") or {}
    kind = str(report.get("kind", ""))
    namespace = str(meta.get("namespace") or "") if kind == POLICY_REPORT else ""
    return kind, namespace, str(meta.get("name", ""))
