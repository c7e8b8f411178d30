"""Policy Reporter's result id rule, as its default id generator computes it.

kyverno/policy-reporter `pkg/report/result/id_generator.go` (`defaultIDGenerator`): FNV-1a
64-bit over the report's scope (else the result's first resource) name and uid, then the
result's policy, rule, result, category and message, concatenated with no separator; the
decimal value is the id. Policy Reporter keeps one result per id, so two results with the same
id are one to it (the other is silently dropped). A `properties.resultID` replaces the hash;
`rule_id` is the hash alone, which is what must not collide.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

OFFSET64 = 14695981039346656037
PRIME64 = 1099511628211
MASK64 = (1 << 64) - 1


def fnv1a64(h: int, text: str) -> int:
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * PRIME64) & MASK64
    return h


def rule_id(report: Mapping[str, Any], result: Mapping[str, Any]) -> str:
    """The id Policy Reporter derives for `result` of `report` when it has no resultID."""
    resource = report.get("scope")
    if not resource:
        resources = result.get("resources") or []
        resource = resources[0] if resources else None
    h = OFFSET64
    if resource:
        h = fnv1a64(h, str(resource.get("name", "")))
        h = fnv1a64(h, str(resource.get("uid", "")))
    for key in ("policy", "rule", "result", "category", "message"):
        h = fnv1a64(h, str(result.get(key, "")))
    return str(h)


def collisions(reports: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """{id: how many results share it} for every id more than one result of `reports` has
    (counted across reports: an id names a result wherever it was found)."""
    counts = Counter(rule_id(report, r) for report in reports for r in report.get("results") or [])
    return {i: n for i, n in counts.items() if n > 1}


def lost(reports: Iterable[Mapping[str, Any]]) -> int:
    """How many results Policy Reporter would drop as duplicates."""
    return sum(n - 1 for n in collisions(reports).values())
