"""`imagegate report` outputs: a rich table, JSON, Markdown (pull-request comments) and HTML.

Every renderer reads the same `Summary` of a `Report`, so the outputs agree with each other.
Output is deterministic (sorted, no clock reads): the report carries its `generated` time.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

from webhook.errors import UsageError
from webhook.policy.model import RULE_IDS
from webhook.policy.rules.size_budget import human
from webhook.report.policyreport import RESULTS
from webhook.report.sources import Report, ReportRow

Output = Literal["table", "json", "markdown", "html"]
OUTPUTS: Final[tuple[str, ...]] = ("table", "json", "markdown", "html")
PROBLEMS: Final = ("fail", "warn", "error")
SEVERITY_WEIGHT: Final = {"critical": 8, "high": 4, "medium": 2, "low": 1, "info": 0}
TOP_OFFENDERS: Final = 10
MAX_MARKDOWN_PROBLEMS: Final = 200  # GitHub comments are limited to 65536 characters
RESULT_STYLE: Final = {
    "pass": "green",
    "fail": "bold red",
    "warn": "yellow",
    "error": "magenta",
    "skip": "dim",
}

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
        return {
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
    )


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


# ---------------------------------------------------------------------------------------------
# JSON


def render_json(report: Report) -> str:
    """Stable JSON: sorted keys, rows in report order, summaries alongside."""
    s = summarize(report)
    doc = {
        "generated": timestamp_text(report.generated),
        "source": report.source,
        "headline": headline(s),
        "summary": s.totals | {"compliance": _ratio(compliance(s.totals))},
        "by" + s.group_label: {
            name: counts | {"compliance": _ratio(compliance(counts))} for name, counts in s.groups
        },
        "byRule": {
            rule: counts | {"compliance": _ratio(compliance(counts))} for rule, counts in s.rules
        },
        "images": [i.to_json() for i in s.images],
        "topOffenders": [f"{i.image}@{i.digest}" if i.digest else i.image for i in s.offenders],
        "results": [r.to_json() for r in report.rows],
    }
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _ratio(share: float | None) -> float | None:
    return None if share is None else round(share, 4)


# ---------------------------------------------------------------------------------------------
# Markdown

_ICON: Final = {"pass": "✅", "fail": "❌", "warn": "⚠️", "error": "💥", "skip": "⏭️"}


def md_cell(text: object) -> str:
    """Text safe inside a GitHub table cell: no pipes, newlines or raw HTML."""
    return (
        str(text)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("|", "\\|")
        .replace("\r", "")
        .replace("\n", "<br>")
    )


def md_code(text: str) -> str:
    return f"`{text.replace('`', 'ˋ')}`" if text else ""


def render_markdown(report: Report) -> str:
    """A pull-request comment: headline, counts, a table by rule, top offenders, details."""
    s = summarize(report)
    t = s.totals
    icon = "❌" if any(t[k] for k in PROBLEMS) else "✅"
    out = [
        "## imagegate report",
        "",
        f"{icon} **{md_cell(headline(s))}** Compliance **{percent(t)}**.",
        "",
        " · ".join(f"{_ICON[k]} {t[k]} {k}" for k in RESULTS),
        "",
        f"<sub>Source: {md_cell(report.source)} · generated {timestamp_text(report.generated)}"
        "</sub>",
        "",
        "### By rule",
        "",
        "| Rule | Pass | Fail | Warn | Error | Skip | Compliance |",
        "|------|-----:|-----:|-----:|------:|-----:|-----------:|",
    ]
    for rule, c in s.rules:
        cells = " | ".join(str(c[k]) for k in RESULTS)
        out.append(f"| {md_code(rule)} | {cells} | {percent(c)} |")
    if s.workloads:
        out += ["", "### By namespace", "", "| Namespace | Pass | Fail | Warn | Error | Skip |"]
        out.append("|-----------|-----:|-----:|-----:|------:|-----:|")
        for name, c in s.groups:
            out.append(f"| {md_cell(name)} | " + " | ".join(str(c[k]) for k in RESULTS) + " |")
    if s.offenders:
        out += ["", "### Top offending images", ""]
        out.append("| Image | Failed rules | Workloads | Size / budget |")
        out.append("|-------|--------------|----------:|---------------|")
        for img in s.offenders:
            rules = ", ".join(md_code(r) for r in img.failed_rules)
            out.append(
                f"| {md_code(img.image)} | {rules} | {len(img.workloads)} | "
                f"{md_cell(size_text(img.size, img.budget))} |"
            )
        out += ["", "<details><summary>How to fix the top offenders</summary>", ""]
        for img in s.offenders:
            out.append(f"#### {md_code(img.image)}")
            digest = f" {md_code(short_digest(img.digest))}" if img.digest else ""
            if img.workloads:
                used = ", ".join(md_code(w) for w in sorted(img.workloads))
                out.append(f"Digest{digest or ' unknown'}; used by {used}.")
            out.append("")
            for p in img.sorted_problems():
                out.append(f"- **{md_cell(p.rule)}** ({p.severity}): {md_cell(p.message)}")
            out.append("")
        out.append("</details>")
    if s.problems:
        out += ["", f"<details><summary>All {len(s.problems)} problems</summary>", ""]
        if report.workloads:
            out.append("| Namespace | Workload | Container | Image | Rule | Result | Message |")
            out.append("|---|---|---|---|---|---|---|")
        else:
            out.append("| Image | Policy | Rule | Result | Severity | Message |")
            out.append("|---|---|---|---|---|---|")
        for r in s.problems[:MAX_MARKDOWN_PROBLEMS]:
            result = f"{_ICON[r.result]} {r.result} ({r.severity})"
            if report.workloads:
                out.append(
                    f"| {md_cell(r.namespace)} | {md_cell(r.workload_label)} | "
                    f"{md_cell(r.container)} | {md_code(r.image)} | {md_code(r.rule)} | "
                    f"{result} | {md_cell(r.message)} |"
                )
            else:
                out.append(
                    f"| {md_code(r.image)} | {md_cell(r.policy)} | {md_code(r.rule)} | "
                    f"{_ICON[r.result]} {r.result} | {r.severity} | {md_cell(r.message)} |"
                )
        more = len(s.problems) - MAX_MARKDOWN_PROBLEMS
        if more > 0:
            out += ["", f"…and {more} more: see `imagegate report --output json`."]
        out += ["", "</details>"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# Table


def render_table(report: Report, console: Console) -> None:
    """Counts by rule (and namespace), then every problem with its message (the fix)."""
    s = summarize(report)
    by_rule = Table(title="By rule", title_justify="left")
    by_rule.add_column("Rule")
    for k in RESULTS:
        by_rule.add_column(k.capitalize(), justify="right", style=RESULT_STYLE[k])
    by_rule.add_column("Compliance", justify="right")
    for rule, c in s.rules:
        by_rule.add_row(Text(rule), *(str(c[k]) for k in RESULTS), percent(c))
    console.print(by_rule)
    if s.workloads:
        by_ns = Table(title="By namespace", title_justify="left")
        by_ns.add_column("Namespace")
        for k in RESULTS:
            by_ns.add_column(k.capitalize(), justify="right", style=RESULT_STYLE[k])
        by_ns.add_column("Compliance", justify="right")
        for name, c in s.groups:
            by_ns.add_row(Text(name), *(str(c[k]) for k in RESULTS), percent(c))
        console.print(by_ns)
    if s.problems:
        # Every cell is a Text: report text is data, never rich markup (`[...]` in messages).
        problems = Table(title="Problems", title_justify="left", show_lines=True, expand=True)
        if report.workloads:
            problems.add_column("Workload", overflow="fold", ratio=2)
        problems.add_column("Image", overflow="fold", ratio=2)
        problems.add_column("Rule", no_wrap=True)
        problems.add_column("Result", no_wrap=True)
        problems.add_column("Message (fix)", overflow="fold", ratio=5)
        for r in s.problems:
            where = (
                [Text(f"{r.namespace}/{r.workload_label}\n{r.container}")]
                if report.workloads
                else []
            )
            problems.add_row(
                *where,
                Text(short_image(r.image)),
                Text(r.rule),
                Text(f"{r.result} ({r.severity})", style=RESULT_STYLE.get(r.result, "")),
                Text(r.message),
            )
        console.print(problems)
    style = "bold red" if any(s.totals[k] for k in PROBLEMS) else "bold green"
    console.print(Text(f"{headline(s)} Compliance {percent(s.totals)}.", style=style))


# ---------------------------------------------------------------------------------------------
# Dispatch


def render(report: Report, output: str) -> str:
    """JSON, Markdown or HTML as text (the table is printed: use `render_table`)."""
    if output == "json":
        return render_json(report)
    if output == "markdown":
        return render_markdown(report)
    if output == "html":
        from webhook.report.render_html import render_html

        return render_html(report)
    raise UsageError(f"--output {output!r}: choose one of {', '.join(OUTPUTS)}")
