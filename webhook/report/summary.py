"""What every `imagegate report` output shows: counts by result, rule and namespace, the images
and their problems, in one `Summary` of a `Report`, so the renderers agree with each other and
depend on this module only (never on each other)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from webhook.policy.model import RULE_IDS
from webhook.policy.rules.size_budget import human
from webhook.report.policyreport import RESULTS
from webhook.report.sources import LayerReport, Report, ReportRow

PROBLEMS: Final = ("fail", "warn", "error")
SEVERITY_WEIGHT: Final = {"critical": 8, "high": 4, "medium": 2, "low": 1, "info": 0}
TOP_OFFENDERS: Final = 10

Counts = dict[str, int]


def new_counts() -> Counts:
    return dict.fromkeys(RESULTS, 0)


def compliance(counts: Counts) -> float | None:
    """Share of scored results that pass (skips do not count); None when nothing was scored."""
    scored = sum(counts[k] for k in ("pass", *PROBLEMS))
    return counts["pass"] / scored if scored else None


def percent(counts: Counts) -> str:
    share = compliance(counts)
    return "–" if share is None else f"{share * 100:.0f}%"


@dataclass(frozen=True)
class Problem:
    rule: str
    severity: str
    message: str
    result: str


@dataclass
class ImageSummary:
    """One image (by reference and digest) across every container that runs it."""

    image: str
    digest: str = ""
    size: int | None = None
    budget: int | None = None
    counts: Counts = field(default_factory=new_counts)
    workloads: set[str] = field(default_factory=set)
    problems: dict[tuple[str, str], Problem] = field(default_factory=dict)
    layers: LayerReport | None = None  # when its layers were read

    @property
    def failed_rules(self) -> list[str]:
        return sorted({p.rule for p in self.problems.values()}, key=_rule_order)

    @property
    def score(self) -> int:
        """How bad: severity-weighted distinct problems, times how many workloads run it."""
        weight = sum(SEVERITY_WEIGHT.get(p.severity, 2) + 1 for p in self.problems.values())
        return weight * max(1, len(self.workloads))

    @property
    def worst(self) -> str:
        return max(
            (p.severity for p in self.problems.values()),
            key=lambda s: SEVERITY_WEIGHT.get(s, 2),
            default="",
        )

    def to_json(self) -> dict[str, Any]:
        layers = {"layerAnalysis": self.layers.to_json()} if self.layers else {}
        return layers | {
            "image": self.image,
            "digest": self.digest,
            "size": self.size,
            "budget": self.budget,
            "summary": self.counts,
            "failedRules": self.failed_rules,
            "workloads": sorted(self.workloads),
            "problems": [
                {"rule": p.rule, "severity": p.severity, "result": p.result, "message": p.message}
                for p in self.sorted_problems()
            ],
        }

    def sorted_problems(self) -> list[Problem]:
        return sorted(
            self.problems.values(),
            key=lambda p: (-SEVERITY_WEIGHT.get(p.severity, 2), _rule_order(p.rule), p.message),
        )


@dataclass(frozen=True)
class Summary:
    totals: Counts
    group_label: str  # "Namespace", or "Image" for reports without workloads
    groups: list[tuple[str, Counts]]
    rules: list[tuple[str, Counts]]
    images: list[ImageSummary]
    offenders: list[ImageSummary]
    problems: list[ReportRow]
    workloads: int
    namespaces: int
    layered: list[ImageSummary] = field(default_factory=list)  # analysed, most wasted first

    @property
    def failing_workloads(self) -> int:
        return len({(r.namespace, r.kind, r.workload) for r in self.problems if r.workload})


def summarize(report: Report) -> Summary:
    totals = new_counts()
    groups: dict[str, Counts] = defaultdict(new_counts)
    rules: dict[str, Counts] = defaultdict(new_counts)
    images: dict[tuple[str, str], ImageSummary] = {}
    for row in report.rows:
        totals[row.result] += 1
        group = row.namespace if report.workloads else row.image
        groups[group or "(none)"][row.result] += 1
        if row.rule:
            rules[row.rule][row.result] += 1
        img = images.setdefault((row.image, row.digest), ImageSummary(row.image, row.digest))
        img.counts[row.result] += 1
        img.size = row.size if row.size is not None else img.size
        img.budget = row.budget if row.budget is not None else img.budget
        img.layers = img.layers or row.layers
        if row.workload:
            img.workloads.add(f"{row.namespace}/{row.kind}/{row.workload}")
        if row.result in PROBLEMS:
            img.problems.setdefault(
                (row.rule, row.message), Problem(row.rule, row.severity, row.message, row.result)
            )
    all_images = sorted(images.values(), key=lambda i: (i.image, i.digest))
    offenders = sorted(
        (i for i in all_images if i.problems), key=lambda i: (-i.score, i.image, i.digest)
    )
    return Summary(
        totals=totals,
        group_label="Namespace" if report.workloads else "Image",
        groups=sorted(groups.items()),
        rules=sorted(rules.items(), key=lambda kv: _rule_order(kv[0])),
        images=all_images,
        offenders=offenders[:TOP_OFFENDERS],
        problems=[r for r in report.rows if r.result in PROBLEMS],
        workloads=len({(r.namespace, r.kind, r.workload) for r in report.rows if r.workload}),
        namespaces=len({r.namespace for r in report.rows if r.namespace}),
        layered=sorted((i for i in all_images if i.layers), key=_most_wasted_first),
    )


def _most_wasted_first(img: ImageSummary) -> tuple[int, str, str]:
    wasted = img.layers.wasted_bytes if img.layers else None
    return (-(wasted or 0), img.image, img.digest)


def _rule_order(rule: str) -> tuple[int, str]:
    return (RULE_IDS.index(rule) if rule in RULE_IDS else len(RULE_IDS), rule)


def headline(summary: Summary) -> str:
    """One sentence: how many checks fail where."""
    t = summary.totals
    bad = sum(t[k] for k in PROBLEMS)
    scored = bad + t["pass"]
    if not scored:
        return "No results."
    checks = _plural(scored, "check")
    if summary.workloads:
        workloads = _plural(summary.workloads, "workload")
        scope = f"{workloads} in {_plural(summary.namespaces, 'namespace')}"
        failing = summary.failing_workloads
    else:
        scope = _plural(len(summary.images), "image")
        failing = sum(1 for i in summary.images if i.problems)
    if not bad:
        return f"All {checks} {'passes' if scored == 1 else 'pass'}, in {scope}."
    return f"{bad} of {checks} fail, in {failing} of {scope}."


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def timestamp_text(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def short_image(image: str) -> str:
    """`repo:tag@sha256:0123456789ab`: enough of a pinned digest to tell images apart."""
    name, sep, digest = image.partition("@")
    if not sep:
        return image
    algorithm = digest.partition(":")[0]
    return f"{name}@{algorithm}:{short_digest(digest)}"


def short_digest(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def size_text(size: int | None, budget: int | None) -> str:
    if size is None:
        return ""
    return f"{human(size)} / {human(budget)}" if budget is not None else human(size)
