"""The background audit: every running workload checked against the ImagePolicies.

`Scanner.scan` lists the workloads (each once, at its top-level owner: a Deployment, not its
ReplicaSets and Pods), checks every container image with the credentials the kubelet would pull
it with, and returns the results as `ReportEntry`s. `Scanner.record` stores them: one
PolicyReport per workload, owned by it (replacing the previous scan's, and deleting the reports
of workloads that are gone, except those the admission recorder wrote since the scan started),
and a Warning Event on each workload with violations.

Scale: a check is the same for every container with the same image, applicable policies,
container context (command, args, users) and credentials, so each distinct one runs once per
scan; the Checker's verdict cache and the registry client's digest caches and single flights
make every distinct image cost at most one manifest and one config fetch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from webhook.errors import ImagegateError
from webhook.k8s.cluster import ClusterReader
from webhook.k8s.reports import ReportWriter
from webhook.k8s.workloads import ClusterInventory, Workload, list_workloads
from webhook.policy.checker import Checker, CheckResult
from webhook.policy.credentials import pull_keyring
from webhook.policy.model import ImagePolicy
from webhook.policy.outcome import ContainerContext
from webhook.policy.platforms import Placement, placement_of
from webhook.policy.workloads import Container, PodTemplate, covered_by_owner, pod_template
from webhook.registry.auth import Keyring
from webhook.registry.facts import Platform
from webhook.report.policyreport import ReportEntry, WorkloadRef, build_policy_reports

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

VIOLATION_REASON = "ImagePolicyViolation"
DEFAULT_EXEMPT = ("kube-system",)
DEFAULT_OPT_OUT_LABEL = "imagegate.dev/ignore"
EVENT_CONCURRENCY = 8


class ScanCluster(ClusterReader, ClusterInventory, Protocol):
    """What the scan reads: workloads and namespaces, plus pull secrets (KubernetesCluster)."""


@dataclass(frozen=True)
class ScanOutcome:
    """One scan: an entry per checked workload container, and what it took."""

    entries: list[ReportEntry]
    workloads: int
    images: int
    duration: float
    errors: list[str] = field(default_factory=list)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    checks: int = 0
    # what each workload's pods pull with: an automatic ImageRebuild reads its source with these
    templates: dict[WorkloadRef, PodTemplate] = field(default_factory=dict)

    def violations_by_workload(self) -> dict[WorkloadRef, list[str]]:
        """The violated rules of each workload with violations (in order, with repeats)."""
        found: dict[WorkloadRef, list[str]] = {}
        for entry in self.entries:
            if entry.result.verdict == "fail" and entry.result.violations:
                found.setdefault(entry.workload, []).extend(v.rule for v in entry.result.violations)
        return found


CheckKey = tuple[str, tuple[int, ...], ContainerContext, int, Placement]
KeyringKey = tuple[str, tuple[str, ...], str]


class Scanner:
    """Scans the cluster's workloads; see the module doc. One per operator, reused."""

    def __init__(
        self,
        checker: Checker,
        cluster: ScanCluster,
        writer: ReportWriter | None,
        base_keyring: Keyring,
        concurrency: int = 32,
        *,
        platform: Platform | None = None,
        exempt_namespaces: Iterable[str] = DEFAULT_EXEMPT,
        opt_out_label: str | None = DEFAULT_OPT_OUT_LABEL,
    ) -> None:
        self._checker = checker
        self._cluster = cluster
        self._writer = writer
        self._base_keyring = base_keyring
        self._concurrency = concurrency
        self._platform = platform
        self._exempt = frozenset(exempt_namespaces)
        self._opt_out_label = opt_out_label

    async def scan(self, policies: Sequence[ImagePolicy]) -> ScanOutcome:
        """Check every container of every workload. Raises `ClusterError` when the workloads
        cannot be listed (a partial inventory must not replace the reports)."""
        started_at = datetime.now(UTC)
        start = time.perf_counter()
        policies = list(policies)
        workloads, namespaces = await asyncio.gather(
            list_workloads(self._cluster, covered_by_owner), self._cluster.namespace_labels_all()
        )
        run = _ScanRun(self, policies, namespaces)
        scanned = [w for w in workloads if run.in_scope(w)]
        per_workload = await asyncio.gather(*(run.workload(w) for w in scanned))
        by_name = {p.name: p for p in policies}
        entries: list[ReportEntry] = []
        errors: list[str] = list(run.errors)
        images: set[str] = set()
        templates: dict[WorkloadRef, PodTemplate] = {}
        for workload, found in zip(scanned, per_workload, strict=True):
            ref = WorkloadRef(
                workload.api_version, workload.kind, workload.namespace, workload.name, workload.uid
            )
            template = pod_template(workload.kind, workload.obj)
            if template is not None:
                templates[ref] = template
            for container, result in found:
                images.add(container.image)
                if result.verdict == "error":
                    errors.append(f"{workload.label} {container.label}: {result.error}")
                entries.append(ReportEntry.create(ref, container.name, result, by_name, started_at))
        outcome = ScanOutcome(
            entries=entries,
            workloads=len(scanned),
            images=len(images),
            duration=time.perf_counter() - start,
            errors=errors,
            started_at=started_at,
            checks=len(run.checks),
            templates=templates,
        )
        log.info(
            "scan done",
            extra={
                "workloads": outcome.workloads,
                "images": outcome.images,
                "checks": outcome.checks,
                "errors": len(errors),
                "seconds": round(outcome.duration, 3),
            },
        )
        return outcome

    async def record(self, outcome: ScanOutcome) -> None:
        """Replace the PolicyReports with the scan's, and warn on workloads with violations.

        Events are best effort (a failure is logged); a report write failure raises
        `ClusterError`.
        """
        if self._writer is None:
            return
        writer = self._writer
        await writer.write_all(
            build_policy_reports(outcome.entries, outcome.started_at),
            keep_created_since=outcome.started_at,
        )
        limit = asyncio.Semaphore(EVENT_CONCURRENCY)

        async def warn(workload: WorkloadRef, rules: list[str]) -> None:
            message = violation_message(rules)
            async with limit:
                try:
                    await writer.emit_event(workload, VIOLATION_REASON, message)
                except ImagegateError as err:
                    log.warning(
                        "cannot emit event",
                        extra={"workload": workload.label, "error": str(err)},
                    )

        found = outcome.violations_by_workload()
        await asyncio.gather(*(warn(w, rules) for w, rules in found.items()))


def violation_message(rules: list[str]) -> str:
    """`imagegate: 3 violations: non-root-user, size-budget` (rules once, in order)."""
    distinct = list(dict.fromkeys(rules))
    noun = "violation" if len(rules) == 1 else "violations"
    return f"imagegate: {len(rules)} {noun}: {', '.join(distinct)}"


class _ScanRun:
    """The state of one scan: its keyrings and checks, each made once and shared."""

    def __init__(
        self, scanner: Scanner, policies: list[ImagePolicy], namespaces: dict[str, dict[str, str]]
    ) -> None:
        self.scanner = scanner
        self.policies = policies
        self.namespaces = namespaces
        self.keyrings: dict[KeyringKey, asyncio.Task[Keyring]] = {}
        self.checks: dict[CheckKey, asyncio.Task[CheckResult]] = {}
        self.errors: list[str] = []
        self.limit = asyncio.Semaphore(scanner._concurrency)

    def in_scope(self, workload: Workload) -> bool:
        """Not in an exempt, opted-out, terminating or vanished namespace."""
        labels = self.namespaces.get(workload.namespace)
        if labels is None or workload.namespace in self.scanner._exempt:
            return False
        opt_out = self.scanner._opt_out_label
        return not (opt_out and labels.get(opt_out) == "true")

    async def workload(self, workload: Workload) -> list[tuple[Container, CheckResult]]:
        template = pod_template(workload.kind, workload.obj)
        if template is None or not template.containers:
            return []
        keyring = await self.keyring(workload.namespace, template)
        labels = self.namespaces.get(workload.namespace, {})
        placement = placement_of(workload.kind, workload.obj)
        tasks = [
            self.check(c, workload.namespace, labels, keyring, placement)
            for c in template.containers
        ]
        results = await asyncio.gather(*tasks)
        return list(zip(template.containers, results, strict=True))

    def keyring(self, namespace: str, template: PodTemplate) -> Awaitable[Keyring]:
        key = (namespace, tuple(template.pull_secret_names), template.service_account)
        return _once(
            self.keyrings,
            key,
            lambda: pull_keyring(
                self.scanner._cluster, namespace, template, self.scanner._base_keyring
            ),
        )

    def check(
        self,
        container: Container,
        namespace: str,
        labels: dict[str, str],
        keyring: Keyring,
        placement: Placement,
    ) -> Awaitable[CheckResult]:
        image = container.image
        applicable = [p for p in self.policies if p.applies_to(image, namespace, labels)]
        # Keyrings live in self.keyrings for the whole scan, so their ids are not reused.
        key = (image, tuple(map(id, applicable)), container.context, id(keyring), placement)

        async def run() -> CheckResult:
            async with self.limit:
                return await self.scanner._checker.check(
                    image,
                    applicable,
                    self.scanner._platform,
                    container=container.context,
                    keyring=keyring,
                    namespace=namespace,
                    namespace_labels=labels,
                    placement=placement,
                )

        return _once(self.checks, key, run)


def _once(
    tasks: dict[K, asyncio.Task[V]], key: K, factory: Callable[[], Awaitable[V]]
) -> asyncio.Task[V]:
    """The task for `key`, started on first use (every later caller shares its result)."""
    task = tasks.get(key)
    if task is None:

        async def wrapped() -> V:
            return await factory()

        task = asyncio.ensure_future(wrapped())
        tasks[key] = task
    return task
