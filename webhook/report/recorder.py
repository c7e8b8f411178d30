"""Recording admission decisions as PolicyReports, batched.

The webhook answers in milliseconds and must not write to the API server on every review:
entries collect here and every few seconds each workload's PolicyReport is replaced by its
latest results (the latest result per workload container wins).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from webhook.k8s.cluster import KubernetesCluster
from webhook.k8s.poll import Poller
from webhook.k8s.reports import ReportWriter
from webhook.report.policyreport import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    ReportEntry,
    build_policy_reports,
    merge_report,
)

log = logging.getLogger("imagegate.reports")


def report_writer(cluster: KubernetesCluster) -> ReportWriter:
    """The PolicyReport writer, owning the reports labelled as imagegate's."""
    return ReportWriter(cluster.api_client, f"{MANAGED_BY_LABEL}={MANAGED_BY}")


class ReportRecorder:
    def __init__(self, writer: ReportWriter, interval: float = 5.0) -> None:
        self._writer = writer
        self._pending: dict[tuple[str, ...], ReportEntry] = {}
        self._poller = Poller(self.flush, interval, "admission records")

    def add(self, entries: list[ReportEntry]) -> None:
        for entry in entries:
            w = entry.workload
            self._pending[(w.namespace, w.kind, w.name, entry.container)] = entry

    async def flush(self) -> None:
        if not self._pending:
            return
        entries, self._pending = list(self._pending.values()), {}
        reports: list[dict[str, Any]] = build_policy_reports(entries, dt.datetime.now(dt.UTC))
        await self._writer.merge(reports, merge_report)
        log.info("recorded %d admission results in PolicyReports", len(entries))

    def start(self) -> None:
        self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()
        await self.flush()
