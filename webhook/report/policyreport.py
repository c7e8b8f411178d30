"""Check results as PolicyReports (`wgpolicyk8s.io/v1alpha2`), and back.

The format Kyverno, Kubewarden and Policy Reporter read. Pure functions, no I/O: the cluster
writer (operator, webhook) decides when to write; this module decides what.

Layout:

* one namespaced `PolicyReport` per namespace, named `imagegate-<namespace>`, labelled
  `app.kubernetes.io/managed-by: imagegate`;
* in it one result per (workload container, policy, rule): every enabled rule of every policy
  that applied to the container's image gets a result, so pass counts mean something;
* one cluster-scoped `ClusterPolicyReport` `imagegate-cluster-summary` whose `summary` adds up
  every namespace (it carries no results: they live in the namespaced reports);
* a batch of admission records is merged into the stored report of its namespace
  (`merge_report`): the results of the resources it names replace theirs, the others stay.

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

import json
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
CLUSTER_SUMMARY_NAME: Final = "imagegate-cluster-summary"
NAMESPACES_ANNOTATION: Final = "imagegate.dev/namespaces"
REPORT_NAME_PREFIX: Final = "imagegate-"
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


def report_name(namespace: str) -> str:
    return f"{REPORT_NAME_PREFIX}{namespace}"


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
    out: list[dict[str, Any]] = []
    for policy in dict.fromkeys(r.policies):
        info = entry.info(policy)
        if r.verdict == "error":
            props = _properties(entry, info) | {"onError": str(info.on_error)}
            message = f"cannot be inspected (onError: {info.on_error}): {r.error or 'unknown'}"
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
                message = f"{rule}: {PASS_MESSAGES.get(rule, 'the rule passes')}"
                out.append(_result(policy, rule, "pass", severity, message, when, resource, props))
            else:
                out.append(
                    _result(policy, rule, "fail", str(v.severity), v.message, when, resource, props)
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


def build_namespace_report(
    namespace: str, entries: Iterable[ReportEntry], now: datetime
) -> dict[str, Any]:
    """The PolicyReport of one namespace (entries of other namespaces are ignored)."""
    results = [
        res for e in entries if e.workload.namespace == namespace for res in results_of(e, now)
    ]
    results.sort(key=_result_key)
    return {
        "apiVersion": API_VERSION,
        "kind": POLICY_REPORT,
        "metadata": {
            "name": report_name(namespace),
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
        },
        "summary": summary_of(results),
        "results": results,
    }


def build_cluster_summary(reports: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The ClusterPolicyReport `imagegate-cluster-summary`: every namespace's summary added up.

    `reports` are the namespaces' PolicyReports, as built or as read back from the cluster
    (other kinds are skipped, missing counts are zeros).
    """
    total: dict[str, int] = dict.fromkeys(RESULTS, 0)
    namespaces: dict[str, dict[str, int]] = {}
    for report in reports:
        if report.get("kind") != POLICY_REPORT:
            continue
        summary = report.get("summary") or {}
        ns = str((report.get("metadata") or {}).get("namespace", ""))
        counts = namespaces.setdefault(ns, dict.fromkeys(RESULTS, 0))
        for k in RESULTS:
            n = int(summary.get(k) or 0)
            counts[k] += n
            total[k] += n
    return {
        "apiVersion": API_VERSION,
        "kind": CLUSTER_POLICY_REPORT,
        "metadata": {
            "name": CLUSTER_SUMMARY_NAME,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
            "annotations": {NAMESPACES_ANNOTATION: json.dumps(namespaces, sort_keys=True)},
        },
        "summary": total,
        "results": [],
    }


def build_policy_reports(entries: Iterable[ReportEntry], now: datetime) -> list[dict[str, Any]]:
    """One PolicyReport per namespace that has entries (sorted by namespace), then the
    ClusterPolicyReport summary (always present, zeros when there is nothing)."""
    entries = list(entries)
    namespaces = sorted({e.workload.namespace for e in entries})
    reports = [build_namespace_report(ns, entries, now) for ns in namespaces]
    return [*reports, build_cluster_summary(reports)]


def merge_report(stored: Mapping[str, Any] | None, report: Mapping[str, Any]) -> dict[str, Any]:
    """The namespace PolicyReport `report` merged into its `stored` version (None: not stored).

    The results of the resources (kind/name) that `report` has results for replace the stored
    results of those resources; the other stored results stay. The stored metadata is kept
    (with `report`'s labels added) and the summary is recounted.
    """
    new = [r for r in report.get("results") or [] if isinstance(r, Mapping)]
    body = dict(report)
    if stored is None:
        body["summary"] = summary_of(new)
        return body
    replaced = {_resource_of(r) for r in new}
    kept = [
        r
        for r in stored.get("results") or []
        if isinstance(r, Mapping) and _resource_of(r) not in replaced
    ]
    metadata = dict(stored.get("metadata") or {})
    metadata["labels"] = {
        **(metadata.get("labels") or {}),
        **((report.get("metadata") or {}).get("labels") or {}),
    }
    body["metadata"] = metadata
    body["results"] = sorted([*kept, *new], key=_result_key)
    body["summary"] = summary_of(body["results"])
    return body


def _resource_of(result: Mapping[str, Any]) -> tuple[str, str]:
    """(kind, name) of the resource a result is about."""
    resources = result.get("resources") or [{}]
    first = resources[0] if isinstance(resources[0], Mapping) else {}
    return str(first.get("kind", "")), str(first.get("name", ""))


def _result_key(result: Mapping[str, Any]) -> tuple[str, ...]:
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

    Results of other sources (Kyverno, Kubewarden…) in the same reports are skipped.
    """
    out: list[tuple[str, Mapping[str, Any]]] = []
    for obj in objs:
        if obj.get("kind") not in (POLICY_REPORT, CLUSTER_POLICY_REPORT):
            continue
        namespace = str((obj.get("metadata") or {}).get("namespace") or "")
        for result in obj.get("results") or []:
            if isinstance(result, Mapping) and is_imagegate_result(result):
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
            errors.append(_error_reason(str(result.get("message", ""))))
        elif rule:
            rules[policy][rule] = severity
            if outcome in ("fail", "warn"):
                violations.append(Violation(rule, str(result.get("message", "")), severity, policy))
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
