"""Everything the operator's handlers use, built once at kopf startup and closed at cleanup.

It also runs the background audit: a scan of every workload every `scan_seconds`, and as soon
as an ImagePolicy changes; its results become PolicyReports and Events, and, for policies with
`remediation.auto`, ImageRebuilds of the images that fail in audit mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from webhook.context import ProcessContext
from webhook.errors import ImagegateError
from webhook.k8s.cluster import GROUP, VERSION, KubernetesCluster
from webhook.k8s.objects import ImagegateObjects
from webhook.operator.peering import Seat
from webhook.operator.rebuilds import PLURAL, RebuildService
from webhook.operator.scan import Scanner, ScanOutcome
from webhook.policy.credentials import pull_secret_names
from webhook.policy.model import ImagePolicy, Mode
from webhook.policy.store import ClusterPolicies
from webhook.policy.workloads import PodTemplate
from webhook.registry.reference import Reference
from webhook.report.policyreport import ReportEntry
from webhook.report.recorder import report_writer
from webhook.settings import Settings

log = logging.getLogger("imagegate.operator")


@dataclass
class Runtime:
    settings: Settings
    cluster: KubernetesCluster
    context: ProcessContext
    policies: ClusterPolicies
    objects: ImagegateObjects
    scanner: Scanner
    rebuilds: RebuildService
    scan_wanted: asyncio.Event
    seat: Seat
    task: asyncio.Task[None] | None = None
    last_scan: float = 0.0

    @classmethod
    async def start(cls, settings: Settings | None = None, seat: Seat | None = None) -> Runtime:
        settings = settings or Settings()
        if settings.layers.deep == "policy":  # the background scan has the time to read layers
            settings.layers = settings.layers.model_copy(update={"deep": "always"})
        cluster = KubernetesCluster.connect(settings.webhook.kubeconfig)
        context = ProcessContext.from_settings(settings)
        policies = ClusterPolicies(cluster, settings.webhook.policy_refresh_seconds)
        objects = ImagegateObjects(cluster.api_client)
        writer = report_writer(cluster)
        hook = settings.webhook
        scanner = Scanner(
            context.checker, cluster, writer, context.tenant_keyring,
            exempt_namespaces=hook.skipped_namespaces, opt_out_label=hook.opt_out_label,
        )  # fmt: skip
        rebuilds = RebuildService(
            context.registry, context.checker, objects, policies, settings.operator.workdir,
            cluster=cluster, tenant_keyring=context.tenant_keyring,
        )  # fmt: skip
        runtime = cls(
            settings, cluster, context, policies, objects, scanner, rebuilds, asyncio.Event(),
            seat or Seat("standalone", 0),
        )  # fmt: skip
        with contextlib.suppress(ImagegateError):  # logged; the poller keeps trying
            await policies.refresh()  # rebuilds must see the policies before their first event
        policies.start()
        runtime.task = asyncio.create_task(runtime._audit_loop(), name="imagegate audit")
        return runtime

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.policies.stop()
        await self.context.aclose()
        self.cluster.close()

    def request_scan(self) -> None:
        self.scan_wanted.set()

    async def _audit_loop(self) -> None:
        """Scan when asked (a policy changed) or when `scan_seconds` have passed, while this
        replica is the working one."""
        period = self.settings.operator.scan_seconds
        while True:
            wait = max(0.0, self.last_scan + period - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.scan_wanted.wait(), timeout=wait)
            self.scan_wanted.clear()
            self.last_scan = time.monotonic()
            if not await self.seat.working(self.cluster):
                log.debug("a standby replica: no background audit")
                continue
            try:
                await self.audit_once()
            except ImagegateError as err:
                log.error("background audit failed", extra={"error": str(err)})
            except Exception:  # a bug must not end the audits of a healthy-looking operator
                log.exception("background audit crashed; it runs again at the next period")

    async def audit_once(self) -> None:
        """Scan, record PolicyReports and Events, and request automatic rebuilds."""
        await self.policies.refresh()
        policies = self.policies.policies
        outcome = await self.scanner.scan(policies)
        await self.scanner.record(outcome)
        await self._remediate(outcome, {p.name: p for p in policies})

    async def _remediate(self, outcome: ScanOutcome, policies: dict[str, ImagePolicy]) -> None:
        """ImageRebuilds for images failing an audit-mode policy with `remediation.auto`."""
        for entry in outcome.entries:
            result = entry.result
            if result.verdict != "fail" or not result.digest:
                continue
            for name in sorted({v.policy for v in result.violations}):
                policy = policies.get(name)
                if policy is None or policy.spec.mode is not Mode.audit:
                    continue
                if not policy.spec.remediation.auto:
                    continue
                template = outcome.templates.get(entry.workload)
                await self._request_rebuild(entry, policy, result.digest, template)

    async def _request_rebuild(
        self, entry: ReportEntry, policy: ImagePolicy, digest: str, template: PodTemplate | None
    ) -> None:
        """An ImageRebuild of `digest` that reads its source with the workload's pull secrets
        (its own and its ServiceAccount's, named in `spec.imagePullSecrets`): the operator's own
        credentials never read a tenant's image."""
        source = Reference.parse(entry.result.image)
        target = policy.spec.remediation.target_repository or source.name
        name = f"auto-{hashlib.sha256(f'{digest}|{target}'.encode()).hexdigest()[:16]}"
        body: dict[str, Any] = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ImageRebuild",
            "metadata": {
                "name": name,
                "labels": {"app.kubernetes.io/managed-by": "imagegate"},
                "annotations": {
                    "imagegate.dev/requested-for": f"{entry.workload.kind}/{entry.workload.name}"
                },
            },
            "spec": {
                "source": f"{source.name}{':' + source.tag if source.tag else ''}@{digest}",
                "targetRepository": target,
                "policy": policy.name,
            },
        }
        if template is not None:
            names = await pull_secret_names(self.cluster, entry.workload.namespace, template)
            if names:
                body["spec"]["imagePullSecrets"] = names
        if await self.objects.create_if_absent(PLURAL, entry.workload.namespace, body):
            log.info("requested ImageRebuild %s/%s for %s", entry.workload.namespace, name, source)
