"""Rendering `imagegate check` results: a rich table for people, JSON for machines."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from webhook.policy.checker import CheckResult
from webhook.policy.rules.size_budget import human

VERDICT_STYLE = {"pass": "bold green", "fail": "bold red", "error": "bold yellow"}


def to_json(results: Sequence[CheckResult]) -> str:
    return json.dumps({"results": [r.to_json() for r in results]}, indent=2)


def render_table(results: Sequence[CheckResult], console: Console) -> None:
    """A summary row per image, then every violation (with its fix) grouped by image."""
    table = Table(title_justify="left", expand=False)
    table.add_column("Image", overflow="fold", ratio=3)
    table.add_column("Verdict", no_wrap=True)
    table.add_column("Size", justify="right", no_wrap=True)
    table.add_column("User", overflow="fold")
    table.add_column("Base (evidence)", overflow="fold", ratio=2)
    table.add_column("Failed rules", overflow="fold", ratio=2)
    for r in results:
        image = Text(r.image, style="bold")
        if r.digest or r.platform:
            image.append(f"\n{r.platform or ''} {_short(r.digest)}".rstrip(), style="dim")
        table.add_row(
            image,
            Text(r.verdict.upper(), style=VERDICT_STYLE[r.verdict]),
            Text(human(r.facts["compressedSize"]) if "compressedSize" in r.facts else ""),
            Text(_user(r)),
            Text(_base(r)),
            Text("\n".join(sorted({v.rule for v in r.violations}))),
        )
    console.print(table)
    for r in results:
        if isinstance(r.facts.get("layerAnalysis"), dict):
            _render_layers(r, console)
    for r in results:
        if not (r.error or r.violations):
            continue
        console.print(Text(r.image, style="bold"))
        if r.error:
            console.print(Text.assemble("  ", ("! cannot inspect", "bold yellow")))
            console.print(Padding(Text(r.error), (0, 0, 0, 4)))
        for v in r.violations:
            where = f"{v.severity}, policy {v.policy}" if v.policy else str(v.severity)
            console.print(Text.assemble("  ", ("✗ ", "red"), (v.rule, "bold"), f" ({where})"))
            console.print(Padding(Text(v.message), (0, 0, 0, 4)))
    passed = sum(r.verdict == "pass" for r in results)
    console.print(f"\n{passed} of {len(results)} images pass")


def _render_layers(r: CheckResult, console: Console) -> None:
    """`--layers`: where the image's bytes go, Dive-style, with what is wasted and left behind."""
    a = r.facts["layerAnalysis"]
    user_wasted = a.get("userWastedPercent")
    console.print(
        Text.assemble(
            (r.image, "bold"),
            f"  efficiency {a['efficiency']:.1%}, wasted {human(a['wastedBytes'])}",
            f" ({user_wasted:.1%} of the layers above the base)" if user_wasted is not None else "",
        )
    )
    table = Table(expand=False, box=None, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("Size", justify="right", no_wrap=True)
    table.add_column("+", justify="right")
    table.add_column("~", justify="right")
    table.add_column("-", justify="right")
    table.add_column("Wasted", justify="right", no_wrap=True)
    table.add_column("Command", overflow="ellipsis", no_wrap=True, max_width=90)
    for i, layer in enumerate(a["layers"]):
        table.add_row(
            str(i), human(layer["size"]), str(layer["added"]), str(layer["changed"]),
            str(layer["removed"]), human(layer["wastedBytes"]) if layer["wastedBytes"] else "",
            Text(" ".join(str(layer["createdBy"]).split())),
        )  # fmt: skip
    console.print(Padding(table, (0, 0, 0, 2)))
    for w in a["topWasted"][:5]:
        console.print(Text(f"  wasted  {human(w['bytes']):>9}  {w['path']}"))
    for c in a["cacheFiles"][:10]:
        console.print(Text(f"  cache   {human(c['bytes']):>9}  {c['path']} ({c['kind']})"))
    for path in a["setuid"][:10]:
        console.print(Text(f"  setuid             {path}"))
    user = r.facts.get("resolvedUser")
    if isinstance(user, dict):
        console.print(Text(f"  USER {user['name']} is {user['uid']}:{user['gid']} in /etc/passwd"))
    console.print()


def _short(digest: str | None) -> str:
    return digest.removeprefix("sha256:")[:12] if digest else ""


def _user(r: CheckResult) -> str:
    if not r.facts:
        return ""
    return str(r.facts.get("user") or "(none: root)")


def _base(r: CheckResult) -> str:
    if not r.facts:
        return ""
    base = r.facts.get("base")
    if not base:
        return "unknown"
    proof = {True: ", verified", False: ", unverified"}.get(base.get("verified"), "")
    return f"{base['name']}\n({base['evidence']}{proof})"
