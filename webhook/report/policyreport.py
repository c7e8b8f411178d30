"""Check results as PolicyReports (`wgpolicyk8s.io/v1alpha2`), and back.

The format Kyverno, Kubewarden and Policy Reporter read. Pure functions, no I/O: the cluster
writer (operator, webhook) decides when to write; this module decides what.

Layout (as Kyverno's per-resource reports, so Policy Reporter and `kubectl get polr` show who
each report is about):

* one namespaced `PolicyReport` per workload: the top owner the background scan and the
  admission recorder attribute results to (a Deployment, StatefulSet, DaemonSet, Job, CronJob,
  or a bare Pod). It carries `scope` (the workload as an ObjectReference) and, when the uid is
  known, an ownerReference to the workload, so the garbage collector removes it with the
  workload. Its name is `imagegate-<kind>-<name>` (`report_name`: hashed when that is not a
  valid name or too long); it is labelled `app.kubernetes.io/managed-by: imagegate`;
* in it one result per (container, policy, rule): every enabled rule of every policy that
  applied to the container's image gets a result, so pass counts mean something;
* every result has a stable `properties.resultID`, and its message names the container and the
  image: Policy Reporter keys results by a hash of resource, policy, rule, result, category and
  message, and drops all but one of equal keys;
* a report never grows past `MAX_REPORT_BYTES` (etcd refuses objects over 1.5 MiB): problems
  are kept first, and what had to be left out is counted in the `imagegate.dev/omitted-results`
  annotation;
* there is no cluster summary: `imagegate report` adds the reports up (a ClusterPolicyReport
  with counts but no results would count everything twice for anything that sums reports);
* a batch of admission records replaces the results of its workloads' reports (`merge_report`),
  keeping what others wrote in the stored metadata.

Result mapping (Kyverno's convention: the result says whether the resource complies, the
policy's mode says what admission did about it):

* a violation is `fail` in every mode (enforce, warn, audit), as Kyverno reports `fail` for
  both Enforce and Audit policies; the mode is in `properties.mode`;
* an enabled rule without a violation is `pass`;
* an image that could not be inspected is one `error` result per applied policy, with rule
  `inspection` and the reason as message (`properties.onError` says what admission did);
* `warn` and `skip` are never produced, but are read back and counted when present;
* containers that no policy applies to get no result (as Kyverno does not report resources
  that no policy matches).

Severities map one to one (imagegate `low|medium|high|critical` are wgpolicy severities too).
Every property value is a string, as the CRD requires.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeVar, get_args

from webhook.policy.checker import CheckResult
from webhook.policy.model import RULE_IDS, ImagePolicy, Mode, OnError, Severity
from webhook.policy.outcome import Violation

API_GROUP: Final = "wgpolicyk8s.io"
API_VERSION: Final = "wgpolicyk8s.io/v1alpha2"
POLICY_REPORT: Final = "PolicyReport"
CLUSTER_POLICY_REPORT: Final = "ClusterPolicyReport"
SOURCE: Final = "imagegate"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "imagegate"
REPORT_NAME_PREFIX: Final = "imagegate-"
WORKLOAD_KIND_LABEL: Final = "imagegate.dev/workload-kind"
WORKLOAD_NAME_LABEL: Final = "imagegate.dev/workload-name"
WORKLOAD_UID_LABEL: Final = "imagegate.dev/workload-uid"
OMITTED_ANNOTATION: Final = "imagegate.dev/omitted-results"
RESULT_ID: Final = "resultID"  # the property Policy Reporter takes as the result's id
NAME_LIMIT: Final = 253  # a DNS subdomain: the longest object name
LABEL_LIMIT: Final = 63  # the longest label value
HASH_CHARS: Final = 10
# What a report's results may take, as compact JSON: well under etcd's 1.5 MiB request limit,
# leaving room for metadata, managedFields and the API server's own encoding.
MAX_REPORT_BYTES: Final = 1_000_000
INSPECTION_RULE: Final = "inspection"
DAEMON_PREFIX: Final = "docker-daemon:"

Result = Literal["pass", "fail", "warn", "error", "skip"]
RESULTS: Final[tuple[Result, ...]] = get_args(Result)
SEVERITIES: Final = ("critical", "high", "medium", "low", "info")

# wgpolicy `category`: what kind of hygiene a rule is about.
CATEGORIES: Final[Mapping[str, str]] = {
    "non-root-user": "Security",
    "allowed-base": "Supply Chain",
    "size-budget": "Efficiency",
    "single-entrypoint": "Reliability",
    "immutable-reference": "Supply Chain",
    "allowed-registry": "Supply Chain",
    "layer-efficiency": "Efficiency",
    INSPECTION_RULE: "Inspection",
}

# The rules' default severities (webhook.policy.model), for pass results when only a mode is known.
DEFAULT_SEVERITIES: Final[Mapping[str, Severity]] = {
    "non-root-user": Severity.high,
    "allowed-base": Severity.medium,
    "size-budget": Severity.medium,
    "single-entrypoint": Severity.medium,
    "immutable-reference": Severity.high,
}


@dataclass(frozen=True)
class WorkloadRef:
    """The workload a container belongs to (a Pod, or the controller that owns its template)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str = ""

    def to_json(self) -> dict[str, str]:
        """A Kubernetes ObjectReference (uid only when known)."""
        ref = {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
        }
        if self.uid:
            ref["uid"] = self.uid
        return ref

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class PolicyInfo:
    """What a report needs to know about one applied policy: its mode, onError, enabled rules."""

    mode: Mode = Mode.enforce
    on_error: OnError = OnError.deny
    rules: Mapping[str, Severity] = field(default_factory=lambda: dict(DEFAULT_SEVERITIES))

    @classmethod
    def of(cls, policy: ImagePolicy) -> PolicyInfo:
        r = policy.spec.rules
        configured = {
            "non-root-user": r.non_root_user,
            "allowed-base": r.allowed_bases,
            "size-budget": r.size_budget,
            "single-entrypoint": r.single_entrypoint,
            "immutable-reference": r.immutable_reference,
            "layer-efficiency": r.layer_efficiency,
        }
        rules = {rule: c.severity for rule, c in configured.items() if c.enabled}
        if policy.spec.registries.allowed:  # only a policy with a list checks registries
            rules["allowed-registry"] = policy.spec.registries.severity
        return cls(mode=policy.spec.mode, on_error=policy.spec.on_error, rules=rules)


@dataclass(frozen=True)
class ReportEntry:
    """One workload container's check result, with what is known of the policies applied.

    `policies` maps a policy name to its `PolicyInfo`, or to just its `Mode` (then every rule
    counts as enabled with its default severity). Policies named in `result.policies` but absent
    here are taken as `enforce` with every rule enabled. `checked_at` defaults to the `now` of
    the build.
    """

    workload: WorkloadRef
    container: str
    result: CheckResult
    policies: Mapping[str, PolicyInfo | Mode] = field(default_factory=dict)
    checked_at: datetime | None = None

    @classmethod
    def create(
        cls,
        workload: WorkloadRef,
        container: str,
        result: CheckResult,
        policies: Mapping[str, ImagePolicy],
        checked_at: datetime | None = None,
    ) -> ReportEntry:
        """An entry from the ImagePolicy objects themselves (what the webhook/operator hold)."""
        infos = {n: PolicyInfo.of(policies[n]) for n in result.policies if n in policies}
        return cls(workload, container, result, infos, checked_at)

    def info(self, policy: str) -> PolicyInfo:
        known = self.policies.get(policy)
        if isinstance(known, PolicyInfo):
            return known
        return PolicyInfo(mode=known) if known is not None else PolicyInfo()


_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


def report_name(workload: WorkloadRef) -> str:
    """`imagegate-<kind>-<name>`: the same for a workload on every write, from any writer.

    Names the API server gave are valid subdomains; when the result would not be one or would
    be too long it is cut and ends in a hash of the kind and name instead. A plain name is
    always shorter than `NAME_LIMIT` and the hashed one of a name too long is exactly that
    long, so no workload can pick a name that takes another's report (only names the API
    server never gives, such as a bare generateName, get shorter hashed names).
    """
    plain = f"{REPORT_NAME_PREFIX}{workload.kind.lower()}-{workload.name}"
    if len(plain) < NAME_LIMIT and _SUBDOMAIN.fullmatch(plain):
        return plain
    return _hashed(plain, NAME_LIMIT, f"{workload.kind}/{workload.name}")


def label_value(text: str) -> str:
    """`text` as a label value: itself when valid, else cut and ending in a hash of it."""
    if len(text) <= LABEL_LIMIT and _LABEL_VALUE.fullmatch(text):
        return text
    return _hashed(text, LABEL_LIMIT, text)


def _hashed(text: str, limit: int, seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).hexdigest()[:HASH_CHARS]
    # only [a-z0-9-], starting with a letter or digit: valid as a name and as a label value
    head = re.sub(r"[^a-z0-9-]", "-", text.lower()).lstrip("-")[: limit - HASH_CHARS - 1]
    return f"{head}-{digest}" if head else digest


def result_id(
    workload: WorkloadRef, container: str, image: str, policy: str, rule: str, result: str
) -> str:
    """`properties.resultID`: the same result gets the same id on every scan and admission
    (no timestamp, no message: a result whose wording changes is still the same result), so
    Policy Reporter neither drops it as a duplicate nor notifies it again as new."""
    parts = (
        workload.namespace, workload.kind, workload.name, workload.uid,
        container, image, policy, rule, result,
    )  # fmt: skip
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def where(container: str, image: str) -> str:
    """The suffix that makes every message of a report unique: each container is in the
    report once, and Policy Reporter's id hashes the message, not the properties."""
    return f" (container {container}, image {image})"


def plain_message(result: Mapping[str, Any]) -> str:
    """A result's message without the container suffix `results_of` added (the check's own
    words, the same for every container that runs the image)."""
    message = str(result.get("message", ""))
    props = result.get("properties")
    if not isinstance(props, Mapping):
        return message
    suffix = where(str(props.get("container", "")), str(props.get("image", "")))
    return message.removesuffix(suffix)


def timestamp(moment: datetime) -> dict[str, int]:
    """A `metav1.Timestamp` ({seconds, nanos}); naive datetimes are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = int(moment.timestamp())
    return {"seconds": seconds, "nanos": moment.microsecond * 1000}


def results_of(entry: ReportEntry, now: datetime) -> list[dict[str, Any]]:
    """The PolicyReport results of one workload container (see the module doc for the mapping)."""
    r = entry.result
    when = timestamp(entry.checked_at or now)
    resource = [entry.workload.to_json()]
    suffix = where(entry.container, r.image)
    out: list[dict[str, Any]] = []
    for policy in dict.fromkeys(r.policies):
        info = entry.info(policy)
        if r.verdict == "error":
            props = _properties(entry, info) | {"onError": str(info.on_error)}
            message = f"cannot be inspected (onError: {info.on_error}): {r.error or 'unknown'}"
            message += suffix
            out.append(
                _result(policy, INSPECTION_RULE, "error", "high", message, when, resource, props)
            )
            continue
        violated = {v.rule: v for v in r.violations if v.policy in ("", policy)}
        rules = list(info.rules)
        rules += [rule for rule in violated if rule not in info.rules]
        for rule in sorted(rules, key=_rule_order):
            if rule == "immutable-reference" and r.image.startswith(DAEMON_PREFIX):
                continue  # a local image has no reference to pin (webhook.policy.evaluate)
            if rule == "layer-efficiency" and "layerAnalysis" not in r.facts:
                continue  # the layers were not read: nothing was decided
            v = violated.get(rule)
            props = _properties(entry, info)
            if v is None:
                severity = str(info.rules.get(rule, DEFAULT_SEVERITIES.get(rule, "medium")))
                message = f"{rule}: {PASS_MESSAGES.get(rule, 'the rule passes')}{suffix}"
                out.append(_result(policy, rule, "pass", severity, message, when, resource, props))
            else:
                message = v.message + suffix
                out.append(
                    _result(policy, rule, "fail", str(v.severity), message, when, resource, props)
                )
    for res in out:
        res["properties"][RESULT_ID] = result_id(
            entry.workload, entry.container, r.image, res["policy"], res["rule"], res["result"]
        )
    return out


PASS_MESSAGES: Final = {
    "non-root-user": "the container runs as a non-root numeric user",
    "allowed-base": "the image is built on an approved base",
    "size-budget": "the image fits the size budget",
    "single-entrypoint": "one process, started in exec form",
    "immutable-reference": "the reference is pinned to the digest that was checked",
    "allowed-registry": "the image comes from an allowed registry",
    "layer-efficiency": "the layers waste little and ship no cache files",
}


def _rule_order(rule: str) -> tuple[int, str]:
    return (RULE_IDS.index(rule) if rule in RULE_IDS else len(RULE_IDS), rule)


def _result(
    policy: str,
    rule: str,
    result: Result,
    severity: str,
    message: str,
    when: dict[str, int],
    resources: list[dict[str, str]],
    properties: dict[str, str],
) -> dict[str, Any]:
    return {
        "policy": policy,
        "rule": rule,
        "result": result,
        "severity": severity if severity in SEVERITIES else "medium",
        "message": message,
        "timestamp": dict(when),
        "source": SOURCE,
        "category": CATEGORIES.get(rule, "Image Hygiene"),
        "scored": True,
        "resources": [dict(r) for r in resources],
        "properties": properties,
    }


def _properties(entry: ReportEntry, info: PolicyInfo) -> dict[str, str]:
    r = entry.result
    facts = r.facts
    props: dict[str, Any] = {
        "container": entry.container,
        "image": r.image,
        "digest": r.digest,
        "platform": r.platform,
        "mode": str(info.mode),
        "compressedSize": facts.get("compressedSize"),
        "sizeBudget": facts.get("sizeBudget"),
        "effectiveUser": facts.get("effectiveUser"),
    }
    props |= _layer_properties(facts)
    base = facts.get("base")
    if isinstance(base, Mapping):
        props |= {
            "baseName": base.get("name"),
            "baseDigest": base.get("digest"),
            "baseEvidence": base.get("evidence"),
            # whether the layers proved the evidence (a label or annotation is only a claim)
            "baseVerified": _flag(base.get("verified")),
        }
    return {k: str(v) for k, v in props.items() if v is not None and v != ""}


LAYERS_LISTED = 64
WASTED_LISTED = 10
CACHES_LISTED = 20
CREATED_BY_CHARS = 200


def _layer_properties(facts: Mapping[str, Any]) -> dict[str, Any]:
    """The layer analysis as PolicyReport properties (strings; lists as compact JSON, clipped:
    a report object must stay far below the API server's size limit)."""
    analysis = facts.get("layerAnalysis")
    props: dict[str, Any] = {}
    user = facts.get("resolvedUser")
    if isinstance(user, Mapping):
        props["resolvedUser"] = f"{user.get('name')}={user.get('uid')}:{user.get('gid')}"
    if not isinstance(analysis, Mapping):
        return props
    layers = [
        {
            "digest": layer.get("digest"),
            "createdBy": str(layer.get("createdBy") or "")[:CREATED_BY_CHARS],
            "size": layer.get("size"),
            "wastedBytes": layer.get("wastedBytes"),
        }
        for layer in analysis.get("layers") or []
    ][:LAYERS_LISTED]
    wasted = [
        {"path": w.get("path"), "bytes": w.get("bytes")} for w in analysis.get("topWasted") or []
    ][:WASTED_LISTED]
    caches = list(analysis.get("cacheFiles") or [])[:CACHES_LISTED]
    efficiency = analysis.get("efficiency")
    user_wasted = analysis.get("userWastedPercent")
    return props | {
        "layerEfficiency": f"{efficiency:.4f}" if isinstance(efficiency, float) else efficiency,
        "wastedBytes": analysis.get("wastedBytes"),
        "userWastedPercent": f"{user_wasted:.4f}" if isinstance(user_wasted, float) else None,
        "layers": _compact(layers),
        "topWasted": _compact(wasted),
        "cacheFiles": _compact(caches),
    }


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def summary_of(results: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(RESULTS, 0)
    for result in results:
        outcome = result.get("result")
        if isinstance(outcome, str) and outcome in counts:
            counts[outcome] += 1
    return counts


def build_workload_report(
    workload: WorkloadRef, entries: Iterable[ReportEntry], now: datetime
) -> dict[str, Any]:
    """The PolicyReport of one workload (entries of other workloads are ignored).

    `scope` is the workload; the ownerReference is set only when its uid is known (one with an
    empty uid would be refused). Results beyond `MAX_REPORT_BYTES` are left out (`_capped`).
    """
    mine = [e for e in entries if _same_workload(e.workload, workload)]
    results, omitted = _capped(sorted((r for e in mine for r in results_of(e, now)), key=_key))
    labels = {
        MANAGED_BY_LABEL: MANAGED_BY,
        WORKLOAD_KIND_LABEL: label_value(workload.kind),
        WORKLOAD_NAME_LABEL: label_value(workload.name),
    }
    metadata: dict[str, Any] = {
        "name": report_name(workload),
        "namespace": workload.namespace,
        "labels": labels,
    }
    if workload.uid:
        labels[WORKLOAD_UID_LABEL] = label_value(workload.uid)
        metadata["ownerReferences"] = [owner_reference(workload)]
    if any(omitted.values()):
        metadata["annotations"] = {OMITTED_ANNOTATION: json.dumps(omitted, sort_keys=True)}
    return {
        "apiVersion": API_VERSION,
        "kind": POLICY_REPORT,
        "metadata": metadata,
        "scope": workload.to_json(),
        "summary": summary_of(results),
        "results": results,
    }


def owner_reference(workload: WorkloadRef) -> dict[str, str]:
    """The report's owner: the garbage collector deletes the report with the workload. Not a
    controller reference and no blockOwnerDeletion (that needs delete rights on the owner)."""
    return {
        "apiVersion": workload.api_version,
        "kind": workload.kind,
        "name": workload.name,
        "uid": workload.uid,
    }


def build_policy_reports(entries: Iterable[ReportEntry], now: datetime) -> list[dict[str, Any]]:
    """One PolicyReport per workload that has results, sorted by namespace, kind and name.

    Entries of one workload (namespace, kind, name) share its report; a uid any of them knows
    is the workload's. A workload whose containers no policy applies to gets no report.
    """
    entries = list(entries)
    workloads: dict[tuple[str, str, str], WorkloadRef] = {}
    for e in entries:
        w = e.workload
        key = (w.namespace, w.kind, w.name)
        if key not in workloads or (w.uid and not workloads[key].uid):
            workloads[key] = w
    reports = [build_workload_report(workloads[k], entries, now) for k in sorted(workloads)]
    return [r for r in reports if r["results"]]


def _same_workload(a: WorkloadRef, b: WorkloadRef) -> bool:
    return (a.namespace, a.kind, a.name) == (b.namespace, b.kind, b.name)


_KEEP_FIRST: Final = {"error": 0, "fail": 1, "warn": 2, "pass": 3, "skip": 4}


def _capped(
    results: list[dict[str, Any]], budget: int = MAX_REPORT_BYTES
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The results that fit `budget` bytes of JSON (problems first, then in order), and how
    many of each outcome were left out. Only a workload with hundreds of containers, or
    policies with huge messages, ever gets here; the summary counts what the report holds."""
    omitted: dict[str, int] = dict.fromkeys(RESULTS, 0)
    sizes = [len(json.dumps(r, separators=(",", ":"))) + 1 for r in results]
    if sum(sizes) <= budget:
        return results, omitted
    order = sorted(
        range(len(results)),
        key=lambda i: (_KEEP_FIRST.get(str(results[i].get("result")), 5), i),
    )
    kept: list[int] = []
    used = 0
    for i in order:
        if used + sizes[i] <= budget:
            kept.append(i)
            used += sizes[i]
        else:
            omitted[str(results[i].get("result"))] += 1
    return [results[i] for i in sorted(kept)], omitted


def merge_report(stored: Mapping[str, Any] | None, report: Mapping[str, Any]) -> dict[str, Any]:
    """The workload PolicyReport `report` stored over `stored` (None: not stored yet).

    The results are `report`'s (they are the workload's latest); the stored metadata is kept
    (labels and annotations others added, the resourceVersion) with `report`'s labels,
    annotations and ownerReferences over it. Results of anything but the report's workload
    that the stored object held are dropped: nobody else's results belong in it.
    """
    body = dict(report)
    body["results"] = [r for r in report.get("results") or [] if isinstance(r, Mapping)]
    body["summary"] = summary_of(body["results"])
    if stored is None:
        return body
    new_meta = report.get("metadata") or {}
    metadata = dict(stored.get("metadata") or {})
    metadata["labels"] = {**(metadata.get("labels") or {}), **(new_meta.get("labels") or {})}
    annotations = {
        k: v for k, v in (metadata.get("annotations") or {}).items() if k != OMITTED_ANNOTATION
    }
    annotations |= new_meta.get("annotations") or {}
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    if new_meta.get("ownerReferences"):
        metadata["ownerReferences"] = new_meta["ownerReferences"]
    body["metadata"] = metadata
    return body


def _resource_of(result: Mapping[str, Any]) -> tuple[str, str]:
    """(kind, name) of the resource a result is about."""
    resources = result.get("resources") or [{}]
    first = resources[0] if isinstance(resources[0], Mapping) else {}
    return str(first.get("kind", "")), str(first.get("name", ""))


def _key(result: Mapping[str, Any]) -> tuple[str, ...]:
    props = result.get("properties") or {}
    rule = str(result.get("rule", ""))
    return (
        *_resource_of(result),
        str(props.get("container", "")),
        str(result.get("policy", "")),
        f"{_rule_order(rule)[0]:02d}{rule}",
    )


# ---------------------------------------------------------------------------------------------
# Reading reports back


def is_imagegate_result(result: Mapping[str, Any]) -> bool:
    return result.get("source") == SOURCE


def report_results(objs: Iterable[Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    """(namespace, result) for every imagegate result of every (Cluster)PolicyReport in `objs`.

    Results of other sources (Kyverno, Kubewarden…) in the same reports are skipped. A result
    without `resources` is about the report's `scope` (as in Kyverno's per-resource reports).
    """
    out: list[tuple[str, Mapping[str, Any]]] = []
    for obj in objs:
        if obj.get("kind") not in (POLICY_REPORT, CLUSTER_POLICY_REPORT):
            continue
        namespace = str((obj.get("metadata") or {}).get("namespace") or "")
        scope = obj.get("scope")
        for result in obj.get("results") or []:
            if isinstance(result, Mapping) and is_imagegate_result(result):
                if not result.get("resources") and isinstance(scope, Mapping):
                    result = {**result, "resources": [scope]}
                out.append((namespace, result))
    return out


def entries_from_policy_reports(objs: Iterable[Mapping[str, Any]]) -> list[ReportEntry]:
    """The entries that `build_policy_reports` was given, as far as the reports record them.

    Building reports from the returned entries gives the same reports again (round trip).
    """
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = defaultdict(list)
    refs: dict[tuple[Any, ...], WorkloadRef] = {}
    for namespace, result in report_results(objs):
        res = (result.get("resources") or [{}])[0]
        props = result.get("properties") or {}
        ref = WorkloadRef(
            api_version=str(res.get("apiVersion", "")),
            kind=str(res.get("kind", "")),
            namespace=str(res.get("namespace") or namespace),
            name=str(res.get("name", "")),
            uid=str(res.get("uid", "")),
        )
        key = (ref, str(props.get("container", "")), str(props.get("image", "")))
        refs[key] = ref
        groups[key].append(result)
    return [_entry(refs[key], key[1], key[2], results) for key, results in groups.items()]


def _entry(
    ref: WorkloadRef, container: str, image: str, results: list[Mapping[str, Any]]
) -> ReportEntry:
    props: dict[str, str] = {}
    for result in results:
        props |= {str(k): str(v) for k, v in (result.get("properties") or {}).items()}
    policies: dict[str, PolicyInfo] = {}
    rules: dict[str, dict[str, Severity]] = defaultdict(dict)
    violations: list[Violation] = []
    errors: list[str] = []
    for result in results:
        policy = str(result.get("policy", ""))
        rule = str(result.get("rule", ""))
        outcome = result.get("result")
        rp = result.get("properties") or {}
        severity = _severity(result.get("severity"))
        if outcome == "error":
            errors.append(_error_reason(plain_message(result)))
        elif rule:
            rules[policy][rule] = severity
            if outcome in ("fail", "warn"):
                violations.append(Violation(rule, plain_message(result), severity, policy))
        mode = _enum(Mode, rp.get("mode"), Mode.enforce)
        on_error = _enum(OnError, rp.get("onError"), OnError.deny)
        policies[policy] = PolicyInfo(mode, on_error, rules[policy])
    facts: dict[str, Any] = {}
    for key in ("compressedSize", "sizeBudget"):
        value = props.get(key)
        if isinstance(value, str) and value.isascii() and value.isdigit():
            facts[key] = int(value)
    if "effectiveUser" in props:
        facts["effectiveUser"] = props["effectiveUser"]
    if "baseName" in props:
        facts["base"] = {
            "name": props["baseName"],
            "digest": props.get("baseDigest"),
            "evidence": props.get("baseEvidence"),
        }
        if props.get("baseVerified") in ("true", "false"):
            facts["base"]["verified"] = props["baseVerified"] == "true"
    verdict: Literal["pass", "fail", "error"] = (
        "error" if errors else "fail" if violations else "pass"
    )
    check = CheckResult(
        image=image,
        verdict=verdict,
        digest=props.get("digest"),
        platform=props.get("platform"),
        violations=violations,
        facts=facts,
        policies=list(policies),
        error=errors[0] if errors else None,
    )
    stamps = [_from_timestamp(r.get("timestamp")) for r in results]
    checked = max((s for s in stamps if s is not None), default=None)
    return ReportEntry(ref, container, check, policies, checked)


def _error_reason(message: str) -> str:
    prefix, sep, rest = message.partition("): ")
    return rest if sep and prefix.startswith("cannot be inspected (") else message


def _severity(value: Any) -> Severity:
    try:
        return Severity(str(value))
    except ValueError:
        return Severity.low if value == "info" else Severity.medium


_E = TypeVar("_E", Mode, OnError)


def _enum(kind: type[_E], value: Any, default: _E) -> _E:
    try:
        return kind(str(value)) if value is not None else default
    except ValueError:
        return default


def _from_timestamp(value: Any) -> datetime | None:
    if not isinstance(value, Mapping) or "seconds" not in value:
        return None
    try:
        seconds, nanos = int(value["seconds"]), int(value.get("nanos", 0))
    except (TypeError, ValueError):
        return None
    return datetime.fromtimestamp(seconds, tz=UTC) + timedelta(microseconds=nanos // 1000)


def _flag(value: Any) -> str | None:
    """A PolicyReport property is a string: "true"/"false" for a boolean, else left out."""
    return ("true" if value else "false") if isinstance(value, bool) else None
