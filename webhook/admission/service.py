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
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any, Generic, NamedTuple, TypeVar, cast

from webhook.admission.decision import Decision, Finding, decide
from webhook.admission.models import AdmissionRequest, AdmissionResponse, Status
from webhook.errors import ImagegateError
from webhook.k8s.cluster import ClusterReader
from webhook.policy.checker import Checker, CheckResult
from webhook.policy.credentials import pull_keyring
from webhook.policy.model import ImagePolicy, OnError
from webhook.policy.platforms import ANYWHERE, Placement, placement_of
from webhook.policy.store import PolicyStore
from webhook.policy.workloads import (
    POD_SPEC_PATHS,
    Container,
    PodTemplate,
    changed,
    covered_by_owner,
    pod_template,
)
from webhook.rebuild.replacements import Replacements
from webhook.registry.auth import Keyring
from webhook.registry.reference import Reference
from webhook.report.policyreport import ReportEntry, WorkloadRef
from webhook.report.recorder import ReportRecorder
from webhook.settings import WebhookSettings

log = logging.getLogger("imagegate.admission")
MUTATIONS_ANNOTATION = "imagegate.dev/mutations"
T = TypeVar("T")


class Scope(NamedTuple):
    """What one review is about, once exemptions are ruled out.

    Immutable like a frozen dataclass, at a tenth of the cost to build (one per review: a
    frozen dataclass sets each of its fields through `object.__setattr__`).
    """

    subject: str
    namespace: str | None
    labels: dict[str, str]
    template: PodTemplate
    containers: list[Container]
    policies: list[ImagePolicy]
    # Policies that select namespaces by label when the labels could not be read: they are
    # decided by their onError, never silently skipped or applied (with the reason).
    unknown_labels: Sequence[ImagePolicy] = ()
    labels_error: str = ""
    # Where the Pod may be scheduled (os/arch): which platforms of an index can run.
    placement: Placement = ANYWHERE
    # When the answer is due (loop time): one budget from the request's arrival, covering the
    # Kubernetes lookups as well as the registry.
    deadline: float = float("inf")
    # Why the object is refused before any check (over a cap), or "".
    refusal: str = ""

    def remaining(self) -> float:
        return max(self.deadline - asyncio.get_running_loop().time(), 0.0)

    @property
    def credentials(self) -> tuple[str, str, tuple[str, ...]]:
        """Who pulls: what the keyring is made of (namespace, ServiceAccount, pull secret
        names), known without I/O, so the warm path can key cached verdicts by it."""
        template = self.template
        return (self.namespace or "", template.service_account, tuple(template.pull_secret_names))


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
        *,
        count_error: Callable[[str], None] | None = None,
    ) -> None:
        self._checker = checker
        self._policies = policies
        self._cluster = cluster
        self._replacements = replacements
        self._settings = settings
        self._base_keyring = base_keyring
        self._recorder = recorder
        self._exempt = settings.skipped_namespaces
        self._count_error = count_error or (lambda reason: None)

    async def validate(self, request: AdmissionRequest) -> Decision:
        """The validating answer; never raises, so the webhook never answers a 5xx (which,
        with `failurePolicy: Ignore`, would admit anything)."""
        try:
            return await self._validate(request)
        except Exception as err:
            return Decision(self._fallback(request, err))

    async def mutate(self, request: AdmissionRequest) -> AdmissionResponse:
        """The mutating answer (a JSONPatch or nothing); on an unexpected error, nothing:
        the validating webhook still decides."""
        try:
            return await self._mutate(request)
        except Exception as err:
            return self._fallback(request, err, mutating=True)

    def _fallback(
        self, request: AdmissionRequest, err: Exception, *, mutating: bool = False
    ) -> AdmissionResponse:
        """An answer for a request whose evaluation failed outside any one container: the
        policies' onError decides (deny unless every policy allows), with the reason."""
        log.exception("admission failed unexpectedly", extra={"error": repr(err)})
        self._count_error("internal")
        reason = f"imagegate could not evaluate this object ({type(err).__name__}: {err})"
        policies = self._policies.policies
        if mutating or (policies and all(p.spec.on_error is OnError.allow for p in policies)):
            warnings = None if mutating else [f"{reason}; admitted by onError: allow"[:256]]
            return AdmissionResponse(uid=request.uid, allowed=True, warnings=warnings)
        status = Status(code=403, reason="Forbidden", message=f"{reason}; denied by onError: deny")
        return AdmissionResponse(uid=request.uid, allowed=False, status=status)

    async def _validate(self, request: AdmissionRequest) -> Decision:
        scope = await self._scope(request)
        if scope is None:
            return Decision(AdmissionResponse(uid=request.uid, allowed=True))
        if scope.refusal:
            status = Status(code=403, reason="Forbidden", message=scope.refusal)
            return Decision(AdmissionResponse(uid=request.uid, allowed=False, status=status))
        findings = await self._check(scope, request)
        by_name = {p.name: p for p in (*scope.policies, *scope.unknown_labels)}
        decision = decide(request.uid, scope.subject, findings, by_name)
        allowed = decision.response.allowed
        if self._recorder is not None and allowed and not request.dry_run:
            await self._record(request, findings, by_name)
        if decision.problems and not request.dry_run and (allowed or self._settings.log_denies):
            log.info(
                "admission audit record",
                extra={
                    "subject": scope.subject,
                    "allowed": allowed,
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

    async def _record(
        self, request: AdmissionRequest, findings: list[Finding], policies: dict[str, ImagePolicy]
    ) -> None:
        """Admitted workloads go into PolicyReports (a Pod its controller made is the
        controller's, as in the background scan)."""
        obj = request.object or {}
        meta = _metadata(obj)
        if await self._owner_accounts_for(request, obj, findings):
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

    async def _owner_accounts_for(
        self, request: AdmissionRequest, obj: dict[str, Any], findings: list[Finding]
    ) -> bool:
        """Whether the object's controller reports what it runs. A passing object needs no
        report of its own; for the rest the ownerReference is a claim, checked like the
        scan checks it (the owner exists with that uid, makes such objects, holds the images)."""
        refs = _metadata(obj).get("ownerReferences")
        ref = next(
            (
                r
                for r in (refs if isinstance(refs, list) else [])
                if isinstance(r, dict) and r.get("controller") is True
            ),
            None,
        )
        if ref is None:
            return False
        if all(f.result.verdict == "pass" for f in findings):
            return True
        try:
            owner = await self._cluster.controller_of(request.namespace or "", ref)
        except ImagegateError as err:
            log.warning(
                "controller unavailable; recording the object itself", extra={"error": str(err)}
            )
            return False
        return owner is not None and covered_by_owner({**obj, "kind": request.kind.kind}, owner)

    async def _mutate(self, request: AdmissionRequest) -> AdmissionResponse:
        scope = await self._scope(request)
        if scope is None or scope.refusal:  # validate denies what is refused
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
        deadline = asyncio.get_running_loop().time() + self._settings.request_budget_seconds
        if request.operation not in ("CREATE", "UPDATE") or request.object is None:
            return None
        template = pod_template(request.kind.kind, request.object)
        if template is None:
            return None
        old = pod_template(request.kind.kind, request.old_object) if request.old_object else None
        containers = (
            changed(template, old) if request.operation == "UPDATE" else template.containers
        )
        placement = _placement(request.kind.kind, request.object)
        if old is not None and placement != _placement(request.kind.kind, request.old_object):
            containers = template.containers  # other nodes may run other platforms of an index
        if not containers:
            return None
        namespace = request.namespace or None
        labels: dict[str, str] = {}
        labels_error = ""
        if namespace is not None:
            if namespace in self._exempt:
                return None
            try:
                labels = await _within(deadline, self._cluster.namespace_labels(namespace))
            except (ImagegateError, TimeoutError) as err:
                why = str(err) or "not read within the admission budget"
                log.warning("namespace labels unavailable", extra={"error": why})
                labels_error = f"the labels of namespace {namespace} could not be read ({why})"
            if labels.get(self._settings.opt_out_label) == "true":
                return None
        policies = self._policies.policies
        known, unknown = list(policies), []
        if labels_error:
            unknown = [p for p in policies if p.selects_namespaces_by_label]
            known = [p for p in policies if p not in unknown]
        meta = _metadata(request.object)
        name = request.name or meta.get("name") or f"{meta.get('generateName', '')}*"
        subject = f"{request.kind.kind} {namespace + '/' if namespace else ''}{name}"
        return Scope(
            subject, namespace, labels, template, containers, known, unknown, labels_error,
            placement, deadline, self._over_caps(template),
        )  # fmt: skip

    def _over_caps(self, template: PodTemplate) -> str:
        """Why an object is too big to check within one admission, or "" (then it is not)."""
        hook = self._settings
        counts = (
            (len(template.containers), hook.max_containers, "containers"),
            (len(template.pull_secret_names), hook.max_pull_secrets, "imagePullSecrets"),
            (len({c.image for c in template.containers}), hook.max_images, "distinct images"),
        )
        for count, cap, what in counts:
            if count > cap:
                return (
                    f"imagegate refuses this object: it has {count} {what}, over the limit of "
                    f"{cap} one admission checks (IMAGEGATE_WEBHOOK_MAX_* on the webhook)"
                )
        return ""

    async def _check(self, scope: Scope, request: AdmissionRequest) -> list[Finding]:
        """Check every container's image within the time budget; late ones become errors."""
        unknown = self._unknown_label_findings(scope)
        known = [self._cached(scope, c) for c in scope.containers]
        if all(k is not None for k in known):  # the warm path: no lookups, no tasks
            cached = [Finding(c, k) for c, k in zip(scope.containers, known, strict=True) if k]
            return cached + unknown
        budget = self._settings.request_budget_seconds
        try:
            async with asyncio.timeout_at(scope.deadline):
                keyring = await self._keyring(scope)
        except TimeoutError:
            reason = f"the pod's pull secrets were not read within the {budget:g} s budget"
            return [self._error(scope, c, reason) for c in scope.containers] + unknown
        except ImagegateError as err:  # a malformed pull secret: the kubelet cannot pull either
            reason = f"cannot use the pod's pull secrets: {err}"
            return [self._error(scope, c, reason) for c in scope.containers] + unknown

        async def one(container: Container) -> Finding:
            try:
                result = await self._checker.check(
                    container.image,
                    scope.policies,
                    container=container.context,
                    keyring=keyring,
                    namespace=scope.namespace,
                    namespace_labels=scope.labels,
                    placement=scope.placement,
                    credentials=scope.credentials,
                )
            except Exception as err:  # a bug for one image is that image's onError decision
                log.exception(
                    "checking an image failed unexpectedly", extra={"image": container.image}
                )
                self._count_error("internal")
                return self._error(
                    scope, container, f"internal error ({type(err).__name__}: {err})"
                )
            return Finding(container, result)

        # One check per (image, what runs): ten replicas of a sidecar in one template cost one.
        shared: dict[tuple[str, object], asyncio.Future[Finding]] = {}
        for c in scope.containers:
            if (c.image, c.context) not in shared:
                shared[(c.image, c.context)] = asyncio.ensure_future(one(c))
        tasks = [shared[(c.image, c.context)] for c in scope.containers]
        done, pending = await asyncio.wait(set(tasks), timeout=scope.remaining())
        for task in pending:
            task.cancel()
        findings: list[Finding] = []
        for container, task in zip(scope.containers, tasks, strict=True):
            if task in done:
                findings.append(Finding(container, task.result().result))
                continue
            message = (
                f"not inspected within the {budget:g} s admission budget "
                "(the registry is slow or unreachable)"
            )
            findings.append(self._error(scope, container, message))
        return findings + unknown

    def _error(self, scope: Scope, container: Container, message: str) -> Finding:
        """An error result for `container`, decided by the onError of the policies that apply."""
        applicable = [
            p.name
            for p in scope.policies
            if p.applies_to(container.image, scope.namespace, scope.labels)
        ]
        return Finding(
            container, CheckResult(container.image, "error", policies=applicable, error=message)
        )

    def _unknown_label_findings(self, scope: Scope) -> list[Finding]:
        """Error findings for the policies that select namespaces by labels we could not read."""
        findings: list[Finding] = []
        if not scope.unknown_labels:  # the labels were read (or not needed)
            return findings
        for container in scope.containers:
            names = [
                p.name
                for p in scope.unknown_labels
                if p.may_apply(container.image, scope.namespace)
            ]
            if names:
                message = f"{scope.labels_error}, and the policy selects namespaces by label"
                result = CheckResult(container.image, "error", policies=names, error=message)
                findings.append(Finding(container, result))
        return findings

    def _cached(self, scope: Scope, container: Container) -> CheckResult | None:
        return self._checker.cached(
            container.image,
            scope.policies,
            container=container.context,
            namespace=scope.namespace,
            namespace_labels=scope.labels,
            placement=scope.placement,
            credentials=scope.credentials,
        )

    async def _keyring(self, scope: Scope) -> Keyring:
        if scope.namespace is None:
            return self._base_keyring
        return await pull_keyring(
            self._cluster, scope.namespace, scope.template, self._base_keyring
        )


def _placement(kind: str, obj: dict[str, Any] | None) -> Placement:
    """`placement_of`, with the common case first: a pod spec that names no node selector and
    no affinity may run anywhere, and is `ANYWHERE` itself (which the verdict cache's key
    recognises by identity)."""
    spec: Any = obj
    for key in POD_SPEC_PATHS.get(kind, ()):
        spec = spec.get(key) if isinstance(spec, dict) else None
    if isinstance(spec, dict) and "nodeSelector" not in spec and "affinity" not in spec:
        return ANYWHERE
    return placement_of(kind, obj)


async def _within(deadline: float, lookup: Coroutine[Any, Any, T]) -> T:
    """`lookup`'s result, or TimeoutError when it is not in by `deadline` (loop time).

    The lookup is started at once, in this task: a cached answer (the warm path: namespace
    labels are read once per `cache_seconds`) comes back without suspending, and then no
    timer is armed at all (`asyncio.timeout_at` costs more than the cached read). One that
    suspends finishes under `asyncio.timeout_at(deadline)`, as before.
    """
    try:
        first = lookup.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    async with asyncio.timeout_at(deadline):
        return await Resumed(lookup, first)


class Resumed(Generic[T]):
    """Awaits the rest of a coroutine whose first step already ran (and yielded `first`):
    what a Task does with a coroutine, for one already started (see `_within`)."""

    def __init__(self, coroutine: Coroutine[Any, Any, T], first: Any) -> None:
        self._coroutine = coroutine
        self._first = first

    def __await__(self) -> Generator[Any, Any, T]:
        coroutine, step = self._coroutine, self._first
        while True:
            try:
                sent = yield step
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as err:  # a cancellation (the deadline) goes to the lookup
                try:
                    step = coroutine.throw(err)
                except StopIteration as done:
                    return cast(T, done.value)
            else:
                try:
                    step = coroutine.send(sent)
                except StopIteration as done:
                    return cast(T, done.value)


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """The object's metadata; a review can carry anything there, and a surprise is no 500."""
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _annotation_patch(obj: dict[str, Any], changes: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Record what was changed on the object itself, so `kubectl get -o yaml` explains it."""
    value = json.dumps(changes, separators=(",", ":"))
    if not _metadata(obj).get("annotations"):
        return [
            {"op": "add", "path": "/metadata/annotations", "value": {MUTATIONS_ANNOTATION: value}}
        ]
    key = MUTATIONS_ANNOTATION.replace("~", "~0").replace("/", "~1")
    return [{"op": "add", "path": f"/metadata/annotations/{key}", "value": value}]
