"""The admission service: what `/validate` and `/mutate` do, independent of HTTP.

validate: find the containers of the object, check their images (within the time budget,
with the pod's pull secrets), and let `decision.decide` answer. mutate: pin tag references to
the digest that was checked and swap in compliant replacements, as a JSONPatch.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import dataclass
from typing import Any

from webhook.admission.decision import Decision, Finding, decide
from webhook.admission.models import AdmissionRequest, AdmissionResponse
from webhook.errors import ImagegateError
from webhook.k8s.cluster import ClusterReader
from webhook.policy.checker import Checker, CheckResult
from webhook.policy.credentials import pull_keyring
from webhook.policy.model import ImagePolicy
from webhook.policy.store import PolicyStore
from webhook.policy.workloads import Container, PodTemplate, changed, pod_template
from webhook.rebuild.replacements import Replacements
from webhook.registry.auth import Keyring
from webhook.registry.reference import Reference
from webhook.report.policyreport import ReportEntry, WorkloadRef
from webhook.report.recorder import ReportRecorder
from webhook.settings import WebhookSettings

log = logging.getLogger("imagegate.admission")
MUTATIONS_ANNOTATION = "imagegate.dev/mutations"


@dataclass(frozen=True)
class Scope:
    """What one review is about, once exemptions are ruled out."""

    subject: str
    namespace: str | None
    labels: dict[str, str]
    template: PodTemplate
    containers: list[Container]
    policies: list[ImagePolicy]


class AdmissionService:
    def __init__(
        self,
        checker: Checker,
        policies: PolicyStore,
        cluster: ClusterReader,
        replacements: Replacements,
        settings: WebhookSettings,
        base_keyring: Keyring,
        recorder: ReportRecorder | None = None,
    ) -> None:
        self._checker = checker
        self._policies = policies
        self._cluster = cluster
        self._replacements = replacements
        self._settings = settings
        self._base_keyring = base_keyring
        self._recorder = recorder
        self._exempt = settings.skipped_namespaces

    async def validate(self, request: AdmissionRequest) -> Decision:
        scope = await self._scope(request)
        if scope is None:
            return Decision(AdmissionResponse(uid=request.uid, allowed=True))
        findings = await self._check(scope, request)
        by_name = {p.name: p for p in scope.policies}
        decision = decide(request.uid, scope.subject, findings, by_name)
        if self._recorder is not None and decision.response.allowed and not request.dry_run:
            self._record(request, findings, by_name)
        if decision.problems and not request.dry_run:
            log.info(
                "admission audit record",
                extra={
                    "subject": scope.subject,
                    "allowed": decision.response.allowed,
                    "problems": [
                        {
                            "container": p.container.name,
                            "image": p.image,
                            "rule": p.rule,
                            "mode": str(p.mode),
                            "policy": p.policy,
                            "message": p.message,
                        }
                        for p in decision.problems
                    ],
                },
            )
        return decision

    def _record(
        self, request: AdmissionRequest, findings: list[Finding], policies: dict[str, ImagePolicy]
    ) -> None:
        """Admitted workloads go into PolicyReports (a Pod with a controller is its owner's)."""
        obj = request.object or {}
        meta = obj.get("metadata") or {}
        if any(ref.get("controller") for ref in meta.get("ownerReferences") or []):
            return
        workload = WorkloadRef(
            api_version=str(obj.get("apiVersion", "")),
            kind=request.kind.kind,
            namespace=request.namespace or "",
            name=str(request.name or meta.get("name") or meta.get("generateName", "")),
            uid=str(meta.get("uid") or ""),
        )
        assert self._recorder is not None
        self._recorder.add(
            [ReportEntry.create(workload, f.container.name, f.result, policies) for f in findings]
        )

    async def mutate(self, request: AdmissionRequest) -> AdmissionResponse:
        scope = await self._scope(request)
        if scope is None:
            return AdmissionResponse(uid=request.uid, allowed=True)
        findings = await self._check(scope, request)
        pinning = {
            p.name
            for p in scope.policies
            if p.spec.rules.immutable_reference.enabled
            and p.spec.rules.immutable_reference.mode == "pinOnAdmission"
        }
        patch: list[dict[str, Any]] = []
        changes: list[dict[str, str]] = []
        for finding in findings:
            container, result = finding.container, finding.result
            pins = bool(pinning.intersection(result.policies))  # only policies that applied
            new_image, why = self._new_image(container.image, result, pins, scope.namespace)
            if new_image is None:
                continue
            patch.append({"op": "replace", "path": container.image_pointer, "value": new_image})
            changes.append(
                {"container": container.name, "from": container.image, "to": new_image, "why": why}
            )
        if not patch:
            return AdmissionResponse(uid=request.uid, allowed=True)
        patch.extend(_annotation_patch(request.object or {}, changes))
        encoded = base64.b64encode(json.dumps(patch).encode()).decode()
        return AdmissionResponse(
            uid=request.uid, allowed=True, patch_type="JSONPatch", patch=encoded
        )

    def _new_image(
        self, image: str, result: CheckResult, pinning: bool, namespace: str | None
    ) -> tuple[str | None, str]:
        """The reference to run instead: a compliant replacement for an image that fails,
        else the checked digest pinned to a tag reference, else nothing."""
        if result.verdict == "fail":
            replacement = self._replacements.lookup(result.digest, namespace)
            if replacement is not None and replacement != image:
                return replacement, "replacement"
        if pinning and result.digest and not Reference.parse(image).pinned:
            return f"{image}@{result.digest}", "pinned"  # keeps the tag the user wrote
        return None, ""

    async def _scope(self, request: AdmissionRequest) -> Scope | None:
        """None when the object is not ours to check (kind, operation, exempt namespace)."""
        if request.operation not in ("CREATE", "UPDATE") or request.object is None:
            return None
        template = pod_template(request.kind.kind, request.object)
        if template is None:
            return None
        old = pod_template(request.kind.kind, request.old_object) if request.old_object else None
        containers = (
            changed(template, old) if request.operation == "UPDATE" else template.containers
        )
        if not containers:
            return None
        namespace = request.namespace or None
        labels: dict[str, str] = {}
        if namespace is not None:
            if namespace in self._exempt:
                return None
            try:
                labels = await self._cluster.namespace_labels(namespace)
            except ImagegateError as err:
                log.warning("namespace labels unavailable", extra={"error": str(err)})
            if labels.get(self._settings.opt_out_label) == "true":
                return None
        name = (
            request.name
            or (request.object.get("metadata") or {}).get("name")
            or ((request.object.get("metadata") or {}).get("generateName", "") + "*")
        )
        subject = f"{request.kind.kind} {namespace + '/' if namespace else ''}{name}"
        return Scope(subject, namespace, labels, template, containers, self._policies.policies)

    async def _check(self, scope: Scope, request: AdmissionRequest) -> list[Finding]:
        """Check every container's image within the time budget; late ones become errors."""
        known = [self._cached(scope, c) for c in scope.containers]
        if all(k is not None for k in known):  # the warm path: no lookups, no tasks
            return [Finding(c, k) for c, k in zip(scope.containers, known, strict=True) if k]
        keyring = await self._keyring(scope)
        budget = self._settings.request_budget_seconds

        async def one(container: Container) -> Finding:
            result = await self._checker.check(
                container.image,
                scope.policies,
                container=container.context,
                keyring=keyring,
                namespace=scope.namespace,
                namespace_labels=scope.labels,
            )
            return Finding(container, result)

        tasks = [asyncio.ensure_future(one(c)) for c in scope.containers]
        done, pending = await asyncio.wait(tasks, timeout=budget)
        for task in pending:
            task.cancel()
        findings: list[Finding] = []
        for container, task in zip(scope.containers, tasks, strict=True):
            if task in done:
                findings.append(task.result())
                continue
            applicable = [
                p.name
                for p in scope.policies
                if p.applies_to(container.image, scope.namespace, scope.labels)
            ]
            message = (
                f"not inspected within the {budget:g} s admission budget "
                "(the registry is slow or unreachable)"
            )
            findings.append(
                Finding(
                    container,
                    CheckResult(container.image, "error", policies=applicable, error=message),
                )
            )
        return findings

    def _cached(self, scope: Scope, container: Container) -> CheckResult | None:
        return self._checker.cached(
            container.image,
            scope.policies,
            container=container.context,
            namespace=scope.namespace,
            namespace_labels=scope.labels,
        )

    async def _keyring(self, scope: Scope) -> Keyring:
        if scope.namespace is None:
            return self._base_keyring
        return await pull_keyring(
            self._cluster, scope.namespace, scope.template, self._base_keyring
        )


def _annotation_patch(obj: dict[str, Any], changes: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Record what was changed on the object itself, so `kubectl get -o yaml` explains it."""
    value = json.dumps(changes, separators=(",", ":"))
    if not (obj.get("metadata") or {}).get("annotations"):
        return [
            {"op": "add", "path": "/metadata/annotations", "value": {MUTATIONS_ANNOTATION: value}}
        ]
    key = MUTATIONS_ANNOTATION.replace("~", "~0").replace("/", "~1")
    return [{"op": "add", "path": f"/metadata/annotations/{key}", "value": value}]
