"""`imagegate report` outputs: a rich table, JSON and Markdown (pull-request comments); HTML is
`render_html`, and `output.render` picks one.

Every renderer reads the same `Summary` of a `Report` (report/summary.py), so the outputs agree
with each other; the renderers never import each other.
Output is deterministic (sorted, no clock reads): the report carries its `generated` time.
"""

from __future__ import annotations

import json
from typing import Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

from webhook.policy.rules.size_budget import human
from webhook.report.policyreport import RESULTS
from webhook.report.sources import LayerReport, Report
from webhook.report.summary import (
    PROBLEMS,
    Summary,
    compliance,
    headline,
    percent,
    short_digest,
    short_image,
    size_text,
    summarize,
    timestamp_text,
)

MAX_MARKDOWN_PROBLEMS: Final = 200  # GitHub comments are limited to 65536 characters
MAX_MARKDOWN_LAYERS: Final = 50
RESULT_STYLE: Final = {
    "pass": "green",
    "fail": "bold red",
    "warn": "yellow",
    "error": "magenta",
    "skip": "dim",
}


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
    out += _markdown_layers(s)
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


def _markdown_layers(s: Summary) -> list[str]:
    """A line per image whose layers were read: efficiency, waste, caches, the worst path."""
    if not s.layered:
        return []
    out = ["", "### Layer efficiency", ""]
    out.append("| Image | Efficiency | Wasted | Cache files | Most wasted |")
    out.append("|-------|-----------:|-------:|------------:|-------------|")
    for img in s.layered[:MAX_MARKDOWN_LAYERS]:
        if img.layers:
            out.append(f"| {md_code(img.image)} | {_layer_cells(img.layers)} |")
    more = len(s.layered) - MAX_MARKDOWN_LAYERS
    if more > 0:
        out += ["", f"…and {more} more: see `imagegate report --output json`."]
    return out


def _layer_cells(layers: LayerReport) -> str:
    efficiency = "" if layers.efficiency is None else f"{layers.efficiency * 100:.1f}%"
    wasted = "" if layers.wasted_bytes is None else human(layers.wasted_bytes)
    if wasted and layers.user_wasted is not None:
        wasted += f" ({layers.user_wasted * 100:.1f}% of its own layers)"
    caches = human(layers.cache_bytes) if layers.cache_files else ""
    top = layers.top_wasted[0] if layers.top_wasted else None
    # a path is attacker-chosen: one line, pipes escaped (GitHub reads `\|` in code as `|`)
    path = " ".join(top.path[:200].split()).replace("|", "\\|") if top else ""
    worst = f"{md_code(path)} ({human(top.bytes)})" if top else ""
    return " | ".join(md_cell(x) for x in (efficiency, wasted, caches)) + f" | {worst}"


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
