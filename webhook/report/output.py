"""`imagegate report --output FORMAT`: the one place that knows every renderer, so that the
renderers themselves stay independent of each other (an import-linter contract keeps it)."""

from __future__ import annotations

from typing import Final

from webhook.errors import UsageError
from webhook.report.render import render_json, render_markdown
from webhook.report.render_html import render_html
from webhook.report.sources import Report

OUTPUTS: Final[tuple[str, ...]] = ("table", "json", "markdown", "html")


def render(report: Report, output: str) -> str:
    """JSON, Markdown or HTML as text (the table is printed: use `render.render_table`)."""
    if output == "json":
        return render_json(report)
    if output == "markdown":
        return render_markdown(report)
    if output == "html":
        return render_html(report)
    raise UsageError(f"--output {output!r}: choose one of {', '.join(OUTPUTS)}")
