"""Where `imagegate report` gets its results, normalised into one model: `Report` of `ReportRow`.

Sources:

* PolicyReports, as the cluster holds them (`--from-cluster`: the caller lists them), as
  `kubectl get policyreports -A -o json` prints them (a `List`), or a single report;
* the output of `imagegate check --output json` (`{"results": [...]}`);
* `ReportEntry`s of a live scan (through the PolicyReport builder, so every source is read
  the same way).

A row is one PolicyReport result: (workload container, policy, rule) → pass/fail/….
A row also carries what the layers say about its image (`LayerReport`), when they were read.

Every source may be hostile (a PolicyReport is whatever the cluster holds): values of the wrong
type, negative or absurd numbers, bad JSON and huge lists are ignored or clipped, never fatal.
"""

from __future__ import annotations

import json
import math
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
    plain_message,
    report_results,
)

# What a check result's facts say about which rules were evaluated (webhook.policy.rules).
_EVALUATED_BY_FACT: Final = {
    "effectiveUser": "non-root-user",
    "sizeBudget": "size-budget",
    "argv": "single-entrypoint",
    "pinned": "immutable-reference",
    "layerAnalysis": "layer-efficiency",  # the rule runs wherever the layers are read
}

# How much layer data one image keeps: enough for every real image, bounded for a hostile one.
MAX_LAYERS: Final = 128  # an image has at most 127 layers in practice
MAX_TOP_WASTED: Final = 10
MAX_CACHE_FILES: Final = 20
MAX_TEXT: Final = 4096  # a command or path longer than this is clipped
_MAX_JSON_PROPERTY: Final = 1 << 20  # a JSON-encoded property longer than this is not parsed
_MAX_NUMBER: Final = (1 << 63) - 1  # bytes, ids: beyond this a value is nonsense
# The PolicyReport properties that carry the layer analysis (report.policyreport._properties).
LAYER_PROPERTIES: Final = (
    "layerEfficiency",
    "wastedBytes",
    "userWastedPercent",
    "layers",
    "topWasted",
    "cacheFiles",
    "resolvedUser",
)


@dataclass(frozen=True)
class LayerBar:
    """One layer, bottom first: what made it, its bytes, and the wasted bytes Dive puts on it
    (which may exceed its size: a whiteout counts the bytes it deletes from the layers below)."""

    digest: str
    created_by: str
    size: int
    wasted: int


@dataclass(frozen=True)
class WastedFile:
    """A path stored more than once (`bytes`: every copy, as Dive counts), and the positions of
    the layer that added it and of those that changed or removed it, when the source says
    (check output does, PolicyReport properties do not)."""

    path: str
    bytes: int
    added_in: int | None = None
    changed_in: tuple[int, ...] = ()


@dataclass(frozen=True)
class CacheFile:
    kind: str  # apt, pip, npm, tmp…
    path: str
    bytes: int


@dataclass(frozen=True)
class ResolvedUser:
    """A named USER as the image's own /etc/passwd resolves it."""

    name: str
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"{self.name} ({self.uid}:{self.gid})"


@dataclass(frozen=True)
class LayerReport:
    """What the layers of one image say (`imagegate check --layers`), as far as it is valid:
    Dive's efficiency (0..1), wasted bytes, user-wasted ratio, the layers (at most `MAX_LAYERS`;
    `more_layers` counts the rest), the most wasted paths and the cache files left behind."""

    efficiency: float | None = None
    wasted_bytes: int | None = None
    user_wasted: float | None = None
    layers: tuple[LayerBar, ...] = ()
    more_layers: int = 0
    top_wasted: tuple[WastedFile, ...] = ()
    cache_files: tuple[CacheFile, ...] = ()
    user: ResolvedUser | None = None

    @property
    def cache_bytes(self) -> int:
        return sum(c.bytes for c in self.cache_files)

    def to_json(self) -> dict[str, Any]:
        """The per-image summary (the full data is in the source)."""
        user = self.user
        return {
            "efficiency": self.efficiency,
            "wastedBytes": self.wasted_bytes,
            "userWastedPercent": self.user_wasted,
            "layerCount": len(self.layers) + self.more_layers,
            "cacheBytes": self.cache_bytes,
            "topWasted": [{"path": w.path, "bytes": w.bytes} for w in self.top_wasted[:3]],
            "resolvedUser": {"name": user.name, "uid": user.uid, "gid": user.gid} if user else None,
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
    layers: LayerReport | None = None  # the same for every row of an image

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
    parsed: dict[tuple[str | None, ...], LayerReport | None] = {}  # results share an image's
    for namespace, result in report_results(objs):
        resources = result.get("resources")
        first = resources[0] if isinstance(resources, list) and resources else None
        res: Mapping[str, Any] = first if isinstance(first, Mapping) else {}
        found = result.get("properties")
        props = {str(k): str(v) for k, v in found.items()} if isinstance(found, Mapping) else {}
        key = tuple(props.get(k) for k in LAYER_PROPERTIES)
        if key not in parsed:
            parsed[key] = layers_from_properties(props)
        outcome = str(result.get("result", ""))
        rows.append(
            ReportRow(
                image=props.get("image", ""),
                rule=str(result.get("rule", "")),
                result=outcome if outcome in RESULTS else "error",
                severity=str(result.get("severity", "")),
                message=plain_message(result),  # one row per container already says which
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
                layers=parsed[key],
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
        "layers": layers_from_facts(facts),
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
                        # not every rule is in the table (`allowed-registry`, `layer-efficiency`
                        # apply only sometimes); medium is the default of every rule's model
                        severity=str(DEFAULT_SEVERITIES.get(rule, "medium")),
                        message=f"{rule}: {PASS_MESSAGES.get(rule, 'the rule passes')}",
                        policy=policy,
                        **common,
                    )
                )
    return rows


# ---------------------------------------------------------------------------------------------
# Layer analysis (`facts.layerAnalysis` of check output, or PolicyReport properties)


def layers_from_facts(facts: Mapping[str, Any]) -> LayerReport | None:
    """The layer analysis of a check result's facts; None when the layers were not read."""
    analysis = facts.get("layerAnalysis")
    if not isinstance(analysis, Mapping):
        return None
    return _layer_report(
        analysis.get("efficiency"),
        analysis.get("wastedBytes"),
        analysis.get("userWastedPercent"),
        analysis.get("layers"),
        analysis.get("topWasted"),
        analysis.get("cacheFiles"),
        _resolved_user(facts.get("resolvedUser")),
    )


def layers_from_properties(props: Mapping[str, str]) -> LayerReport | None:
    """The layer analysis of a PolicyReport result's properties (numbers as strings, lists as
    JSON strings); None when the layers were not read."""
    if not any(k in props for k in LAYER_PROPERTIES):
        return None
    return _layer_report(
        _float_text(props.get("layerEfficiency")),
        props.get("wastedBytes"),
        _float_text(props.get("userWastedPercent")),
        _json_property(props.get("layers")),
        _json_property(props.get("topWasted")),
        _json_property(props.get("cacheFiles")),
        _user_text(props.get("resolvedUser")),
    )


def _layer_report(
    efficiency: Any,
    wasted: Any,
    user_wasted: Any,
    layers: Any,
    top_wasted: Any,
    cache_files: Any,
    user: ResolvedUser | None,
) -> LayerReport | None:
    bars = [
        LayerBar(
            digest=_text(item.get("digest"), 200),
            created_by=_text(item.get("createdBy"), MAX_TEXT),
            size=size,
            wasted=_int(item.get("wastedBytes")) or 0,
        )
        for item in _objects(layers, MAX_LAYERS)
        if (size := _int(item.get("size"))) is not None
    ]
    top = [
        WastedFile(path, size, _int(item.get("addedIn")), _positions(item.get("changedIn")))
        for item in _objects(top_wasted, MAX_TOP_WASTED)
        if (path := _text(item.get("path"), MAX_TEXT)) and (size := _int(item.get("bytes")))
    ]
    caches = [
        CacheFile(_text(item.get("kind"), 40) or "cache", path, size)
        for item in _objects(cache_files, MAX_CACHE_FILES)
        if (path := _text(item.get("path"), MAX_TEXT))
        and (size := _int(item.get("bytes"))) is not None
    ]
    report = LayerReport(
        efficiency=_ratio(efficiency, upper=1.0),
        wasted_bytes=_int(wasted),
        user_wasted=_ratio(user_wasted, upper=None),
        layers=tuple(bars),
        more_layers=max(0, len(layers) - MAX_LAYERS) if isinstance(layers, list) else 0,
        top_wasted=tuple(sorted(top, key=lambda w: (-w.bytes, w.path))),
        cache_files=tuple(sorted(caches, key=lambda c: (-c.bytes, c.kind, c.path))),
        user=user,
    )
    return None if report == LayerReport() else report


def _objects(value: Any, limit: int) -> list[Mapping[str, Any]]:
    """The first `limit` items of a list that are objects (anything else: none)."""
    if not isinstance(value, list):
        return []
    return [item for item in value[:limit] if isinstance(item, Mapping)]


def _positions(value: Any) -> tuple[int, ...]:
    """Layer positions (a few: the rest would not be read)."""
    items = value[:MAX_LAYERS] if isinstance(value, list) else []
    return tuple(n for item in items if (n := _int(item)) is not None and n < MAX_LAYERS)[:8]


def _text(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _ratio(value: Any, upper: float | None) -> float | None:
    """A finite number in 0..upper (no bound when None), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value) if abs(value) <= _MAX_NUMBER else math.inf
    if not math.isfinite(number) or number < 0 or (upper is not None and number > upper):
        return None
    return number


def _float_text(value: str | None) -> float | None:
    """A decimal number written as a property ("0.8731"); None for anything else."""
    if value is None or len(value) > 40 or not value.isascii():
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _json_property(value: str | None) -> Any:
    """A JSON-encoded property, or None when absent, too long, not JSON or nested too deep."""
    if value is None or len(value) > _MAX_JSON_PROPERTY:
        return None
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return None


def _resolved_user(value: Any) -> ResolvedUser | None:
    """`{"name", "uid", "gid"}` of check output."""
    if not isinstance(value, Mapping):
        return None
    name, uid, gid = _text(value.get("name"), 64), _int(value.get("uid")), _int(value.get("gid"))
    return ResolvedUser(name, uid, gid) if name and uid is not None and gid is not None else None


def _user_text(value: str | None) -> ResolvedUser | None:
    """`nobody=65534:65534` of a PolicyReport property."""
    name, _, ids = (value or "").rpartition("=")
    uid, _, gid = ids.partition(":")
    return _resolved_user({"name": name, "uid": uid, "gid": gid})


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
    except RecursionError:
        raise UsageError(f"{path}: JSON nested too deeply to be a report source") from None
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
    """A count of bytes (or an id): an int, or decimal digits as a property writes it; None for
    anything else, negative or beyond 2**63 (no float arithmetic can overflow on it then)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, int) and 0 <= value <= _MAX_NUMBER:
        return value
    return None


def _evidence(props: Mapping[str, str]) -> str:
    """How the base is known, and whether its layers proved it (`label, verified`)."""
    evidence = props.get("baseEvidence", "")
    verified = {"true": "verified", "false": "unverified"}.get(props.get("baseVerified", ""))
    return f"{evidence}, {verified}" if evidence and verified else evidence
