"""Where `imagegate report` gets its results, normalised into one model: `Report` of `ReportRow`.

Sources:

* PolicyReports, as the cluster holds them (`--from-cluster`: the caller lists them), as
  `kubectl get policyreports -A -o json` prints them (a `List`), or a single report;
* the output of `imagegate check --output json` (`{"results": [...]}`);
* `ReportEntry`s of a live scan (through the PolicyReport builder, so every source is read
  the same way).

A row is one PolicyReport result: (workload container, policy, rule) → pass/fail/….
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from webhook.errors import UsageError
from webhook.policy.model import RULE_IDS
from webhook.report.policyreport import (
    CLUSTER_POLICY_REPORT,
    DEFAULT_SEVERITIES,
    INSPECTION_RULE,
    PASS_MESSAGES,
    POLICY_REPORT,
    RESULTS,
    ReportEntry,
    build_policy_reports,
    report_results,
)

# What a check result's facts say about which rules were evaluated (webhook.policy.rules).
_EVALUATED_BY_FACT: Final = {
    "effectiveUser": "non-root-user",
    "sizeBudget": "size-budget",
    "argv": "single-entrypoint",
    "pinned": "immutable-reference",
}


@dataclass(frozen=True)
class ReportRow:
    """One result: a rule of a policy for one container (or one image, from `check`)."""

    image: str
    rule: str
    result: str  # pass | fail | warn | error | skip
    severity: str
    message: str
    policy: str = ""
    namespace: str = ""
    kind: str = ""
    workload: str = ""
    container: str = ""
    digest: str = ""
    platform: str = ""
    mode: str = ""
    size: int | None = None
    budget: int | None = None
    base: str = ""
    base_evidence: str = ""

    @property
    def workload_label(self) -> str:
        return f"{self.kind}/{self.workload}" if self.workload else ""

    def sort_key(self) -> tuple[Any, ...]:
        rule = RULE_IDS.index(self.rule) if self.rule in RULE_IDS else len(RULE_IDS)
        return (
            self.namespace,
            self.kind,
            self.workload,
            self.container,
            self.image,
            self.policy,
            rule,
            self.rule,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "kind": self.kind,
            "workload": self.workload,
            "container": self.container,
            "image": self.image,
            "digest": self.digest,
            "platform": self.platform,
            "policy": self.policy,
            "mode": self.mode,
            "rule": self.rule,
            "result": self.result,
            "severity": self.severity,
            "message": self.message,
            "size": self.size,
            "budget": self.budget,
            "base": self.base,
            "baseEvidence": self.base_evidence,
        }


@dataclass(frozen=True)
class Report:
    """Rows sorted by `ReportRow.sort_key`, where they came from, and when the report was made."""

    rows: list[ReportRow]
    source: str
    generated: datetime
    workloads: bool = field(default=True)  # False when rows are bare images (check output)

    @classmethod
    def of(cls, rows: Iterable[ReportRow], source: str, generated: datetime) -> Report:
        ordered = sorted(rows, key=ReportRow.sort_key)
        return cls(ordered, source, generated, any(r.workload for r in ordered))


# ---------------------------------------------------------------------------------------------
# PolicyReports


def rows_from_policy_reports(objs: Iterable[Mapping[str, Any]]) -> list[ReportRow]:
    """Every imagegate result of these PolicyReports / ClusterPolicyReports as rows."""
    rows = []
    for namespace, result in report_results(objs):
        res = (result.get("resources") or [{}])[0]
        props = {str(k): str(v) for k, v in (result.get("properties") or {}).items()}
        outcome = str(result.get("result", ""))
        rows.append(
            ReportRow(
                image=props.get("image", ""),
                rule=str(result.get("rule", "")),
                result=outcome if outcome in RESULTS else "error",
                severity=str(result.get("severity", "")),
                message=str(result.get("message", "")),
                policy=str(result.get("policy", "")),
                namespace=str(res.get("namespace") or namespace),
                kind=str(res.get("kind", "")),
                workload=str(res.get("name", "")),
                container=props.get("container", ""),
                digest=props.get("digest", ""),
                platform=props.get("platform", ""),
                mode=props.get("mode", ""),
                size=_int(props.get("compressedSize")),
                budget=_int(props.get("sizeBudget")),
                base=props.get("baseName", ""),
                base_evidence=_evidence(props),
            )
        )
    return rows


def rows_from_entries(entries: Iterable[ReportEntry], now: datetime) -> list[ReportRow]:
    """Rows of a live scan: exactly what its PolicyReports would say."""
    return rows_from_policy_reports(build_policy_reports(entries, now))


def report_from_entries(entries: Iterable[ReportEntry], now: datetime) -> Report:
    return Report.of(rows_from_entries(entries, now), "live scan", now)


def report_from_cluster(objs: Iterable[Mapping[str, Any]], now: datetime) -> Report:
    """`--from-cluster`: `objs` are the PolicyReports the caller listed (every namespace)."""
    return Report.of(rows_from_policy_reports(objs), "cluster PolicyReports", now)


# ---------------------------------------------------------------------------------------------
# `imagegate check --output json`


def rows_from_check_output(doc: Mapping[str, Any], where: str = "check output") -> list[ReportRow]:
    """Rows of `{"results": [...]}`: a fail row per violation, a pass row per rule the facts show
    was evaluated without one (per policy), an error row for an image not inspected."""
    results = doc.get("results")
    if not isinstance(results, list):
        raise UsageError(f"{where}: `results` must be a list of check results")
    rows: list[ReportRow] = []
    for i, r in enumerate(results):
        if not isinstance(r, Mapping) or not isinstance(r.get("image"), str):
            raise UsageError(f"{where}: results[{i}] is not a check result (no `image` string)")
        rows += _check_rows(r, f"{where}: results[{i}]")
    return rows


def _check_rows(r: Mapping[str, Any], where: str) -> list[ReportRow]:
    facts = r.get("facts") or {}
    if not isinstance(facts, Mapping):
        raise UsageError(f"{where}: `facts` must be an object")
    found = facts.get("base")
    base: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    common: dict[str, Any] = {
        "image": r["image"],
        "digest": str(r.get("digest") or ""),
        "platform": str(r.get("platform") or ""),
        "size": _int(facts.get("compressedSize")),
        "budget": _int(facts.get("sizeBudget")),
        "base": str(base.get("name") or ""),
        "base_evidence": str(base.get("evidence") or ""),
    }
    policies = [str(p) for p in r.get("policies") or []] or [""]
    verdict = r.get("verdict")
    if verdict not in ("pass", "fail", "error"):
        raise UsageError(f"{where}: `verdict` must be pass, fail or error, not {verdict!r}")
    if verdict == "error":
        message = f"cannot be inspected: {r.get('error') or 'unknown error'}"
        return [
            ReportRow(rule=INSPECTION_RULE, result="error", severity="high", message=message,
                      policy=p, **common)
            for p in policies
        ]  # fmt: skip
    violations = r.get("violations") or []
    if not isinstance(violations, list):
        raise UsageError(f"{where}: `violations` must be a list")
    rows: list[ReportRow] = []
    failed: set[tuple[str, str]] = set()
    for j, v in enumerate(violations):
        if not isinstance(v, Mapping) or "rule" not in v:
            raise UsageError(f"{where}: violations[{j}] has no `rule`")
        policy = str(v.get("policy") or policies[0])
        failed.add((policy, str(v["rule"])))
        rows.append(
            ReportRow(
                rule=str(v["rule"]),
                result="fail",
                severity=str(v.get("severity") or "medium"),
                message=str(v.get("message") or ""),
                policy=policy,
                **common,
            )
        )
    evaluated = {rule for key, rule in _EVALUATED_BY_FACT.items() if key in facts}
    if facts.get("base"):
        evaluated.add("allowed-base")
    if r.get("policies") == [] and not violations:
        return [ReportRow(rule="", result="skip", severity="info",
                          message="no policy applies to this image", **common)]  # fmt: skip
    for policy in policies:
        for rule in RULE_IDS:
            if rule in evaluated and (policy, rule) not in failed:
                rows.append(
                    ReportRow(
                        rule=rule,
                        result="pass",
                        severity=str(DEFAULT_SEVERITIES[rule]),
                        message=f"{rule}: {PASS_MESSAGES[rule]}",
                        policy=policy,
                        **common,
                    )
                )
    return rows


# ---------------------------------------------------------------------------------------------
# Files


def load_document(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: cannot read it: {err}") from None
    if not text.strip():
        raise UsageError(f"{path}: the file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(
            f"{path}: not JSON (line {err.lineno}, column {err.colno}: {err.msg}); expected "
            "`imagegate check --output json` or `kubectl get policyreports -A -o json`"
        ) from None


def rows_from_document(doc: Any, where: str) -> list[ReportRow]:
    """Rows of any supported JSON document; `where` names it in error messages."""
    if not isinstance(doc, Mapping):
        raise UsageError(f"{where}: expected a JSON object, found {type(doc).__name__}")
    kind = doc.get("kind")
    if "results" in doc and kind is None:
        return rows_from_check_output(doc, where)
    if kind in (POLICY_REPORT, CLUSTER_POLICY_REPORT):
        return rows_from_policy_reports([doc])
    if kind is not None and str(kind).endswith("List"):
        items = doc.get("items")
        if not isinstance(items, list):
            raise UsageError(f"{where}: a {kind} without an `items` list")
        for i, item in enumerate(items):
            item_kind = item.get("kind") if isinstance(item, Mapping) else None
            if item_kind not in (POLICY_REPORT, CLUSTER_POLICY_REPORT):
                raise UsageError(
                    f"{where}: items[{i}] is a {item_kind or type(item).__name__}, not a "
                    "PolicyReport or ClusterPolicyReport"
                )
        return rows_from_policy_reports(items)
    found = f"kind {kind!r}" if kind is not None else f"keys {sorted(map(str, doc))[:6]}"
    raise UsageError(
        f"{where}: not a report source ({found}); expected the output of "
        '`imagegate check --output json` ({"results": [...]}), a PolicyReport, or a List of '
        "them as `kubectl get policyreports -A -o json` prints it"
    )


def report_from_file(path: Path, now: datetime) -> Report:
    """`--from FILE`: check output or PolicyReports; `UsageError` naming the file otherwise."""
    rows = rows_from_document(load_document(path), str(path))
    return Report.of(rows, str(path), now)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _evidence(props: Mapping[str, str]) -> str:
    """How the base is known, and whether its layers proved it (`label, verified`)."""
    evidence = props.get("baseEvidence", "")
    verified = {"true": "verified", "false": "unverified"}.get(props.get("baseVerified", ""))
    return f"{evidence}, {verified}" if evidence and verified else evidence
