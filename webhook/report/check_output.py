"""Rendering `imagegate check` results: a rich table for people, JSON for machines."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from webhook.policy.checker import CheckResult
from webhook.policy.rules.size_budget import human

VERDICT_STYLE = {"pass": "bold green", "fail": "bold red", "error": "bold yellow"}


def to_json(results: Sequence[CheckResult]) -> str:
    return json.dumps({"results": [r.to_json() for r in results]}, indent=2)


def render_table(results: Sequence[CheckResult], console: Console) -> None:
    table = Table(title="imagegate check", title_justify="left", show_lines=False)
    for column in (
        "Image",
        "Verdict",
        "Platform",
        "Digest",
        "Size",
        "User",
        "Base",
        "Rules failed",
    ):
        table.add_column(column, overflow="fold")
    for r in results:
        base = r.facts.get("base")
        table.add_row(
            r.image,
            Text(r.verdict.upper(), style=VERDICT_STYLE[r.verdict]),
            r.platform or "",
            (r.digest or "")[:19],
            human(r.facts["compressedSize"]) if "compressedSize" in r.facts else "",
            r.facts.get("user", "") or ("(root)" if r.facts else ""),
            f"{base['name']} ({base['evidence']})" if base else ("unknown" if r.facts else ""),
            ", ".join(sorted({v.rule for v in r.violations})),
        )
    console.print(table)
    for r in results:
        if r.error:
            console.print(
                Text.assemble(("error ", "bold yellow"), (r.image, "bold"), f": {r.error}")
            )
        for v in r.violations:
            console.print(
                Text.assemble(
                    ("✗ ", "red"),
                    (r.image, "bold"),
                    f" [{v.rule}, {v.severity}]",
                    f" ({v.policy})" if v.policy else "",
                    f": {v.message}",
                )
            )
    passed = sum(r.verdict == "pass" for r in results)
    console.print(f"{passed}/{len(results)} images pass")
