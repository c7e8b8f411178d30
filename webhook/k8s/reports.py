"""Writing PolicyReports, ClusterPolicyReports and Events to the Kubernetes API.

The report objects themselves are built elsewhere (`webhook.report.policyreport`); this module
only stores them, as given:

* `write_all` — the background scan's full picture: every report created or replaced, and the
  imagegate-managed reports that are not in the new set deleted (so results of deleted
  workloads and namespaces disappear);
* `merge` — the webhook's batched admission records: per namespace, only the results of the
  resources named in the new report are replaced; the others are kept;
* `read_all` — every (Cluster)PolicyReport of the cluster, whoever wrote it;
* `emit_event` — a core/v1 Event on a workload, not repeated for the same workload and message
  within `event_dedupe_seconds`.

The `kubernetes` client is synchronous: every call runs in a thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final, Protocol, TypeVar, cast

from webhook.k8s.cluster import ClusterError

log = logging.getLogger(__name__)
T = TypeVar("T")

GROUP: Final = "wgpolicyk8s.io"
VERSION: Final = "v1alpha2"
POLICY_REPORT: Final = "PolicyReport"
CLUSTER_POLICY_REPORT: Final = "ClusterPolicyReport"
PLURAL: Final = "policyreports"
CLUSTER_PLURAL: Final = "clusterpolicyreports"
# The cluster summary's per-namespace counts (written by webhook.report.policyreport); `merge`
# recomputes them when it is given a ClusterPolicyReport that carries this annotation.
NAMESPACES_ANNOTATION: Final = "imagegate.dev/namespaces"
RESULTS: Final = ("pass", "fail", "warn", "error", "skip")
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

    async def write_all(self, reports: list[dict[str, Any]]) -> None:
        """Create or replace every report, then delete the managed reports not in `reports`.

        Raises `ClusterError` (after trying every report) when one could not be written; the
        stale ones are then left alone, so a failed write never loses results.
        """
        keep: set[tuple[str, str, str]] = set()
        for report in reports:
            keep.add(_identity(report))
        outcomes = await asyncio.gather(
            *(self._bounded(self._put(r)) for r in reports), return_exceptions=True
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        for failure in failures:
            if not isinstance(failure, Exception):
                raise failure
        if failures:
            raise ClusterError(
                f"{len(failures)} of {len(reports)} reports not written: "
                + "; ".join(str(f) for f in failures[:3])
            )
        stale = [obj for obj in await self._managed() if _identity(obj) not in keep]
        await asyncio.gather(*(self._bounded(self._delete(obj)) for obj in stale))

    async def merge(self, reports: list[dict[str, Any]]) -> None:
        """Merge batched records into the stored reports (see module doc).

        Per namespaced report: results whose resource (kind/name) appears in the new report
        replace the stored results of that resource, other stored results are kept, and the
        summary is recounted. A ClusterPolicyReport in `reports` is then rewritten with the
        summaries of every managed PolicyReport.
        """
        namespaced = [r for r in reports if r.get("kind") == POLICY_REPORT]
        clustered = [r for r in reports if r.get("kind") == CLUSTER_POLICY_REPORT]
        await asyncio.gather(*(self._bounded(self._merge_one(r)) for r in namespaced))
        if clustered:
            managed = [o for o in await self._managed() if o.get("kind") == POLICY_REPORT]
            for report in clustered:
                await self._put(_cluster_summary(report, managed))

    async def read_all(self) -> list[dict[str, Any]]:
        """Every PolicyReport in all namespaces, then every ClusterPolicyReport (any source)."""
        namespaced = await self._list(PLURAL, None)
        clustered = await self._list(CLUSTER_PLURAL, None)
        return [*namespaced, *clustered]

    async def _bounded(self, work: Awaitable[T]) -> T:
        async with self._limit:
            return await work

    async def _managed(self) -> list[dict[str, Any]]:
        return [
            *await self._list(PLURAL, self._selector),
            *await self._list(CLUSTER_PLURAL, self._selector),
        ]

    async def _list(self, plural: str, selector: str | None) -> list[dict[str, Any]]:
        kind = POLICY_REPORT if plural == PLURAL else CLUSTER_POLICY_REPORT

        def read() -> list[dict[str, Any]]:
            from kubernetes.client.exceptions import ApiException

            items: list[dict[str, Any]] = []
            token: str | None = None
            while True:
                kwargs: dict[str, Any] = {"limit": 100}
                if selector:
                    kwargs["label_selector"] = selector
                if token:
                    kwargs["_continue"] = token
                try:
                    page: Any = self._custom.list_cluster_custom_object(
                        GROUP, VERSION, plural, **kwargs
                    )
                except ApiException as err:
                    if err.status != 404:
                        raise
                    # The CRD is not installed: there is nothing to read (or to clean up).
                    log.warning("PolicyReport CRDs not installed", extra={"plural": plural})
                    return []
                for item in page.get("items") or []:
                    item.setdefault("apiVersion", f"{GROUP}/{VERSION}")
                    item.setdefault("kind", kind)
                    items.append(item)
                token = (page.get("metadata") or {}).get("continue") or None
                if not token:
                    return items

        return await self._call(read, f"list {plural}")

    async def _put(self, report: Mapping[str, Any]) -> None:
        """Create `report`; when it exists, replace it (with the stored resourceVersion)."""
        kind, namespace, name = _identity(report)
        body = dict(report)
        body["metadata"] = {
            k: v for k, v in dict(report.get("metadata") or {}).items() if k != "resourceVersion"
        }
        what = f"{kind} {namespace + '/' if namespace else ''}{name}"
        for _ in range(CONFLICT_RETRIES):
            status = await self._call_status(partial(self._create, kind, namespace, body), what)
            if status != 409:
                return
            stored = await self._get(kind, namespace, name)
            if stored is None:
                continue  # deleted meanwhile: create again
            body["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
            status = await self._call_status(
                partial(self._replace, kind, namespace, name, body), what
            )
            body["metadata"].pop("resourceVersion", None)
            if status != 409:
                return
        raise ClusterError(f"cannot write {what}: kept conflicting with concurrent writers")

    async def _merge_one(self, report: Mapping[str, Any]) -> None:
        _, namespace, name = _identity(report)
        what = f"{POLICY_REPORT} {namespace}/{name}"
        new_results = [r for r in report.get("results") or [] if isinstance(r, Mapping)]
        replaced = {_resource_key(r) for r in new_results}
        for _ in range(CONFLICT_RETRIES):
            stored = await self._get(POLICY_REPORT, namespace, name)
            if stored is None:
                body = dict(report)
                body["summary"] = summary_of(new_results)
                status = await self._call_status(
                    partial(self._create, POLICY_REPORT, namespace, body), what
                )
            else:
                kept = [
                    r
                    for r in stored.get("results") or []
                    if isinstance(r, Mapping) and _resource_key(r) not in replaced
                ]
                results = sorted([*kept, *new_results], key=_sort_key)
                body = dict(report)
                metadata = dict(stored.get("metadata") or {})
                metadata["labels"] = {
                    **(metadata.get("labels") or {}),
                    **((report.get("metadata") or {}).get("labels") or {}),
                }
                body["metadata"] = metadata
                body["results"] = results
                body["summary"] = summary_of(results)
                status = await self._call_status(
                    partial(self._replace, POLICY_REPORT, namespace, name, body), what
                )
            if status != 409:
                return
        raise ClusterError(f"cannot merge into {what}: kept conflicting with concurrent writers")

    async def _get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            from kubernetes.client.exceptions import ApiException

            try:
                if kind == POLICY_REPORT:
                    obj: Any = self._custom.get_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, name
                    )
                else:
                    obj = self._custom.get_cluster_custom_object(
                        GROUP, VERSION, CLUSTER_PLURAL, name
                    )
            except ApiException as err:
                if err.status == 404:
                    return None
                raise
            return dict(obj)

        return await self._call(read, f"read {kind} {namespace}/{name}")

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
            from kubernetes.client.exceptions import ApiException

            try:
                if kind == POLICY_REPORT:
                    self._custom.delete_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, name
                    )
                else:
                    self._custom.delete_cluster_custom_object(GROUP, VERSION, CLUSTER_PLURAL, name)
            except ApiException as err:
                if err.status != 404:  # already gone is what we wanted
                    raise

        await self._call(delete, f"delete {kind} {namespace}/{name}")

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
        involved = {
            "apiVersion": workload.api_version,
            "kind": workload.kind,
            "namespace": workload.namespace,
            "name": workload.name,
        }
        if workload.uid:
            involved["uid"] = workload.uid
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{workload.name}.{uuid.uuid4().hex[:16]}",
                "namespace": workload.namespace,
            },
            "involvedObject": involved,
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
        await self._call(
            lambda: self._core.create_namespaced_event(workload.namespace, cast(Any, body)),
            f"create Event on {workload.kind} {workload.namespace}/{workload.name}",
        )
        self._emitted[key] = now
        return True

    # ---- plumbing ------------------------------------------------------------------------

    async def _call(self, work: Callable[[], T], what: str) -> T:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return await asyncio.to_thread(work)
        except ApiException as err:
            raise ClusterError(f"cannot {what}: {err.status} {err.reason}{_cause(err)}") from None
        except (HTTPError, OSError) as err:
            raise ClusterError(f"cannot reach the Kubernetes API to {what}: {err}") from None

    async def _call_status(self, work: Callable[[], object], what: str) -> int:
        """Run `work`; 200 when it succeeded, 409 on a conflict; other errors raise."""
        from kubernetes.client.exceptions import ApiException

        try:
            await asyncio.to_thread(work)
        except ApiException as err:
            if err.status == 409:
                return 409
            message = f"cannot write {what}: {err.status} {err.reason}{_cause(err)}"
            raise ClusterError(message) from None
        return 200


def summary_of(results: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(RESULTS, 0)
    for result in results:
        outcome = result.get("result")
        if isinstance(outcome, str) and outcome in counts:
            counts[outcome] += 1
    return counts


def _identity(report: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = report.get("metadata") or {}
    kind = str(report.get("kind", ""))
    namespace = str(meta.get("namespace") or "") if kind == POLICY_REPORT else ""
    return kind, namespace, str(meta.get("name", ""))


def _resource_key(result: Mapping[str, Any]) -> tuple[str, str]:
    resources = result.get("resources") or [{}]
    first = resources[0] if isinstance(resources[0], Mapping) else {}
    return str(first.get("kind", "")), str(first.get("name", ""))


def _sort_key(result: Mapping[str, Any]) -> tuple[str, ...]:
    props = result.get("properties") or {}
    return (
        *_resource_key(result),
        str(props.get("container", "")),
        str(result.get("policy", "")),
    )


def _cluster_summary(report: Mapping[str, Any], namespaced: list[dict[str, Any]]) -> dict[str, Any]:
    """`report` with its summary (and per-namespace annotation) recounted from `namespaced`."""
    total = dict.fromkeys(RESULTS, 0)
    per_namespace: dict[str, dict[str, int]] = {}
    for obj in namespaced:
        summary = obj.get("summary") or {}
        ns = str((obj.get("metadata") or {}).get("namespace", ""))
        counts = {k: int(summary.get(k, 0) or 0) for k in RESULTS}
        per_namespace[ns] = {k: per_namespace.get(ns, {}).get(k, 0) + counts[k] for k in RESULTS}
        for k in RESULTS:
            total[k] += counts[k]
    body = dict(report)
    metadata = dict(report.get("metadata") or {})
    annotations = dict(metadata.get("annotations") or {})
    if NAMESPACES_ANNOTATION in annotations:
        annotations[NAMESPACES_ANNOTATION] = json.dumps(per_namespace, sort_keys=True)
        metadata["annotations"] = annotations
    body["metadata"] = metadata
    body["summary"] = total
    return body


def _cause(err: Any) -> str:
    """The API server's Status message, when the body has one."""
    try:
        message = json.loads(err.body or "{}").get("message")
    except (TypeError, ValueError, AttributeError):
        return ""
    return f": {message}" if message else ""
