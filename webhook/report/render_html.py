"""One self-contained HTML report: inline CSS, plots as inline SVG drawn here, no script.

Nothing is fetched: no external scripts, fonts, stylesheets or images (system fonts only), so
the file can be mailed, attached to a CI run or opened offline. Every piece of text that comes
from a report (names, images, messages) goes through `html.escape`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape
from typing import Final

from webhook.policy.rules.size_budget import human
from webhook.report.policyreport import RESULTS
from webhook.report.sources import Report
from webhook.report.summary import (
    Counts,
    ImageSummary,
    Summary,
    compliance,
    headline,
    percent,
    short_digest,
    size_text,
    summarize,
    timestamp_text,
)

COLORS: Final = {
    "pass": "#1f883d",
    "fail": "#d1242f",
    "warn": "#d4a72c",
    "error": "#8250df",
    "skip": "#afb8c1",
}
SEVERITY_COLORS: Final = {
    "critical": "#82071e",
    "high": "#d1242f",
    "medium": "#bc4c00",
    "low": "#9a6700",
    "info": "#57606a",
}
ROW_H: Final = 30
BAR_H: Final = 18
MAX_SIZE_ROWS: Final = 25
MAX_PROBLEM_ROWS: Final = 500
OPEN_PROBLEMS_UP_TO: Final = 25
_CODE: Final = re.compile(r"`([^`<>]+)`")

CSS: Final = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#ffffff; --panel:#f6f8fa;
  --pass:#1f883d; --fail:#d1242f; --warn:#d4a72c; --error:#8250df; --skip:#afb8c1; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: var(--panel); color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "Noto Sans",
    "Liberation Sans", "DejaVu Sans", Arial, sans-serif; }
code, .mono { font-family: ui-monospace, SFMono-Regular, "SF Mono", Menlo, Consolas,
  "Liberation Mono", "DejaVu Sans Mono", monospace; font-size: .86em; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 24px 48px; }
header { display: flex; flex-wrap: wrap; align-items: baseline; justify-content: space-between;
  gap: 4px 24px; margin-bottom: 18px; }
h1 { font-size: 26px; margin: 0; letter-spacing: -.01em; }
h1 .brand { color: var(--muted); font-weight: 400; }
.meta { color: var(--muted); font-size: 13px; }
.headline { font-size: 18px; margin: 0 0 18px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(130px, 1fr)); gap: 12px;
  margin-bottom: 22px; }
.card { background: var(--bg); border: 1px solid var(--line); border-radius: 10px;
  padding: 12px 16px; border-top: 4px solid var(--line); }
.card .n { font-size: 28px; font-weight: 650; line-height: 1.15;
  font-variant-numeric: tabular-nums; }
.card .l { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .06em; }
.card.pass { border-top-color: var(--pass); } .card.fail { border-top-color: var(--fail); }
.card.warn { border-top-color: var(--warn); } .card.error { border-top-color: var(--error); }
.card.skip { border-top-color: var(--skip); } .card.total { border-top-color: #0969da; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 18px; }
section { background: var(--bg); border: 1px solid var(--line); border-radius: 10px;
  padding: 16px 20px 18px; margin-bottom: 18px; min-width: 0; }
h2 { font-size: 17px; margin: 0 0 2px; }
.sub { color: var(--muted); font-size: 13px; margin: 0 0 12px; }
svg { display: block; width: 100%; height: auto; }
svg text { font-family: inherit; fill: var(--fg); }
svg .muted { fill: var(--muted); }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; font-size: 13px; color: var(--muted);
  margin: 0 0 10px; padding: 0; list-style: none; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 6px; vertical-align: -1px; }
table { width: 100%; border-collapse: collapse; font-size: 13.5px; }
th { text-align: left; font-weight: 600; color: var(--muted); font-size: 12px;
  text-transform: uppercase; letter-spacing: .05em; border-bottom: 1px solid var(--line);
  padding: 6px 8px; }
td { border-bottom: 1px solid #eaeef2; padding: 8px; vertical-align: top;
  overflow-wrap: break-word; }
td.any { overflow-wrap: anywhere; }
tr:last-child td { border-bottom: 0; }
.pill { display: inline-block; border-radius: 999px; padding: 1px 9px; font-size: 12px;
  font-weight: 600; color: #fff; white-space: nowrap; margin: 1px 2px 1px 0; }
.rule { display: inline-block; border: 1px solid var(--line); border-radius: 6px;
  padding: 0 6px; margin: 1px 3px 1px 0; background: var(--panel); white-space: nowrap; }
.offender { border-top: 1px solid var(--line); padding: 14px 0 4px; }
.offender:first-of-type { border-top: 0; padding-top: 4px; }
.offender h3 { font-size: 15px; margin: 0; overflow-wrap: anywhere; }
.offender .facts { color: var(--muted); font-size: 13px; margin: 2px 0 8px; }
.offender ul { margin: 0; padding-left: 0; list-style: none; }
.offender li { margin: 0 0 8px; padding-left: 12px; border-left: 3px solid var(--line); }
.offender li.critical, .offender li.high { border-left-color: var(--fail); }
.offender li.medium { border-left-color: #bc4c00; }
.offender li.low, .offender li.info { border-left-color: var(--warn); }
.fix { display: block; color: var(--fg); }
.small { color: var(--muted); font-size: 12px; margin-top: 2px; }
.nw { white-space: nowrap; }
td code, .fix code { background: var(--panel); border-radius: 4px; padding: 0 3px; }
details summary { cursor: pointer; font-weight: 600; }
details[open] summary { margin-bottom: 8px; }
.empty { color: var(--muted); font-style: italic; }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 8px; }
@media (max-width: 560px) { main { padding: 16px 10px 32px; } .grid { display: block; }
  h1 { font-size: 22px; } section { padding: 12px; } }
@media print { body { background: #fff; } section, .card { break-inside: avoid; } }
"""


def render_html(report: Report) -> str:
    s = summarize(report)
    t = s.totals
    ids = _Ids()
    title = "imagegate report"
    group_sub = (
        "Results per namespace: every rule of every policy, for every workload container."
        if s.group_label == "Namespace"
        else "Results per image: every rule of every policy that applied."
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="color-scheme" content="light">',
        f"<title>{escape(title)}</title>",
        f"<style>{CSS}</style>",
        "</head><body><main>",
        "<header>",
        '<h1><span class="brand">imagegate</span> compliance report</h1>',
        f'<div class="meta">Source: {escape(report.source)} · '
        f"generated {escape(timestamp_text(report.generated))}</div>",
        "</header>",
        f'<p class="headline" id="headline">{escape(headline(s))}</p>',
        _cards(s),
        '<div class="grid">',
        _section(
            "by-group",
            f"Compliance by {s.group_label.lower()}",
            group_sub,
            _legend() + _stacked_bars(s.groups, ids, images=s.group_label == "Image"),
        ),
        _section(
            "by-rule",
            "Compliance by rule",
            "Each bar is one rule across every container and policy.",
            _legend() + _stacked_bars(s.rules, ids, mono=True),
        ),
        "</div>",
        _section(
            "sizes",
            "Image size against budget",
            "Compressed size a node pulls; the dark tick is the image's size budget.",
            _size_chart(s.images, ids),
        ),
        _section(
            "offenders",
            "Top offending images",
            "Ranked by severity-weighted problems × workloads running the image, with the fix.",
            _offenders(s.offenders),
        ),
        _section("problems", "All problems", "", _problem_table(report, s)),
        f"<footer>{escape(title)} · {sum(t.values())} results · "
        f"compliance {escape(percent(t))}</footer>",
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _section(ident: str, title: str, sub: str, body: str) -> str:
    sub_html = f'<p class="sub">{escape(sub)}</p>' if sub else ""
    return f'<section id="{ident}"><h2>{escape(title)}</h2>{sub_html}{body}</section>'


def _cards(s: Summary) -> str:
    t = s.totals
    share = compliance(t)
    color = (
        "var(--muted)"
        if share is None
        else COLORS["pass"]
        if share >= 0.9
        else COLORS["warn"]
        if share >= 0.6
        else COLORS["fail"]
    )
    cards = [
        f'<div class="card total"><div class="n" style="color:{color}">{escape(percent(t))}</div>'
        '<div class="l">compliance</div></div>'
    ]
    if s.workloads:
        cards.append(_card("total", f"{s.failing_workloads}/{s.workloads}", "workloads failing"))
    else:
        failing = sum(1 for i in s.images if i.problems)
        cards.append(_card("total", f"{failing}/{len(s.images)}", "images failing"))
    cards += [_card(k, str(t[k]), k) for k in RESULTS]
    return '<div class="cards">' + "".join(cards) + "</div>"


def _card(kind: str, number: str, label: str) -> str:
    return (
        f'<div class="card {kind}"><div class="n">{escape(number)}</div>'
        f'<div class="l">{escape(label)}</div></div>'
    )


def _legend() -> str:
    items = "".join(f'<li><i style="background:{COLORS[k]}"></i>{k}</li>' for k in RESULTS)
    return f'<ul class="legend">{items}</ul>'


def _message(text: str) -> str:
    """Escaped text, with `code spans` (as rule messages write commands) set in monospace."""
    return _CODE.sub(r"<code>\1</code>", escape(text))


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pct(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") + "%"


class _Ids:
    """Unique element ids within one document (clip paths)."""

    def __init__(self) -> None:
        self.n = 0

    def next(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"


def _svg_open(height: int, label: str) -> str:
    # No viewBox: widths are percentages of the container and text keeps its real size, so the
    # charts stay crisp and readable at every page width.
    return (
        f'<svg width="100%" height="{height}" role="img" aria-label="{escape(label)}" '
        'xmlns="http://www.w3.org/2000/svg">'
    )


def _label(
    text: str, y: float, width_pct: float, limit: int, *, mono: bool, image: bool = False
) -> str:
    """A row label, left-aligned and clipped to its column (full text in a tooltip); an
    image reference is shown as repository and tag (`_image_label`)."""
    family = ' class="mono" font-size="12"' if mono else ' font-size="13"'
    shown = _image_label(text, limit) if image else _truncate(text, limit)
    return (
        f'<svg x="0" y="{y - 14:.1f}" width="{_pct(width_pct - 1)}" height="20">'
        f'<text x="0" y="14"{family}><title>{escape(text)}</title>'
        f"{escape(shown)}</text></svg>"
    )


def _stacked_bars(
    groups: Sequence[tuple[str, Counts]], ids: _Ids, *, mono: bool = False, images: bool = False
) -> str:
    """Horizontal 100% stacked bars: one per group, a segment per result, % passing at right."""
    if not groups:
        return '<p class="empty">No results.</p>'
    left, span = 32.0, 48.0
    height = ROW_H * len(groups) + 4
    out = [_svg_open(height, "stacked bars of results: pass, fail, warn, error, skip")]
    for i, (name, counts) in enumerate(groups):
        y = i * ROW_H + 4
        total = sum(counts.values())
        out.append(_label(name, y + BAR_H - 4, left, 24, mono=mono or images, image=images))
        clip = ids.next("bar")
        out.append(
            f'<clipPath id="{clip}"><rect x="{_pct(left)}" y="{y}" width="{_pct(span)}" '
            f'height="{BAR_H}" rx="4"/></clipPath>'
            f'<rect x="{_pct(left)}" y="{y}" width="{_pct(span)}" height="{BAR_H}" rx="4" '
            'fill="#eaeef2"/>'
            f'<g clip-path="url(#{clip})">'
        )
        x = left
        for kind in RESULTS:
            n = counts[kind]
            if not n or not total:
                continue
            w = span * n / total
            out.append(
                f'<rect x="{_pct(x)}" y="{y}" width="{_pct(w)}" height="{BAR_H}" '
                f'fill="{COLORS[kind]}"><title>{escape(name)}: {n} {kind}</title></rect>'
            )
            if w >= 3.5:
                out.append(
                    f'<text x="{_pct(x + w / 2)}" y="{y + BAR_H - 5}" text-anchor="middle" '
                    f'font-size="11.5" font-weight="600" style="fill:#fff">{n}</text>'
                )
            x += w
        out.append("</g>")
        scored = total - counts["skip"]
        out.append(
            f'<text x="{_pct(left + span + 2)}" y="{y + BAR_H - 4}" font-size="13" '
            f'font-weight="600">{escape(percent(counts))}'
            f'<tspan dx="7" font-size="12" font-weight="400" class="muted">'
            f"{counts['pass']}/{scored}</tspan></text>"
        )
    out.append("</svg>")
    return "".join(out)


def _short_image(image: str) -> str:
    """`registry.example.com/team/app:1` → `team/app:1` (the host is in the tooltip)."""
    first, sep, rest = image.partition("/")
    is_host = "." in first or ":" in first or first == "localhost"
    return rest if sep and is_host else image


def _image_label(image: str, limit: int) -> str:
    """What tells images apart in a narrow column: repository and tag, without the host; a
    digest only when there is no tag (shortened); clipped from the left, so the tag stays."""
    short = _short_image(image)
    name, at, digest = short.partition("@")
    tagged = ":" in name.rsplit("/", 1)[-1]
    if at and tagged:
        short = name
    elif at:
        short = f"{name}@{digest[: len('sha256:') + 12]}"
    return short if len(short) <= limit else "…" + short[-(limit - 1) :]


def _size_chart(images: Sequence[ImageSummary], ids: _Ids) -> str:
    sized = sorted(
        (i for i in images if i.size is not None),
        key=lambda i: (-(i.size or 0) / (i.budget or i.size or 1), i.image),
    )
    if not sized:
        return '<p class="empty">No image sizes in this report.</p>'
    shown = sized[:MAX_SIZE_ROWS]
    scale_max = max(max(i.size or 0, i.budget or 0) for i in shown) * 1.08 or 1
    left, span = 26.0, 54.0
    axis_h = 24
    height = ROW_H * len(shown) + axis_h + 6
    out = [_svg_open(height, "image sizes against their budgets")]
    for k in range(5):  # gridlines with size labels
        gx = left + span * k / 4
        out.append(
            f'<line x1="{_pct(gx)}" x2="{_pct(gx)}" y1="0" y2="{height - axis_h}" '
            'stroke="#eaeef2" stroke-width="1"/>'
            f'<text x="{_pct(gx)}" y="{height - 6}" text-anchor="middle" font-size="11" '
            f'class="muted">{escape(human(int(scale_max * k / 4)))}</text>'
        )
    for i, img in enumerate(shown):
        y = i * ROW_H + 6
        size = img.size or 0
        over = img.budget is not None and size > img.budget
        color = COLORS["fail"] if over else COLORS["pass"]
        w = span * size / scale_max
        out.append(_label(img.image, y + BAR_H - 4, left, 30, mono=True, image=True))
        out.append(
            f'<rect x="{_pct(left)}" y="{y}" width="{_pct(max(w, 0.2))}" height="{BAR_H}" '
            f'rx="3" fill="{color}" fill-opacity="0.88"><title>{escape(img.image)}: '
            f"{escape(size_text(img.size, img.budget))}</title></rect>"
        )
        if img.budget is not None:
            bx = left + span * img.budget / scale_max
            out.append(
                f'<line x1="{_pct(bx)}" x2="{_pct(bx)}" y1="{y - 4}" y2="{y + BAR_H + 4}" '
                'stroke="#1f2328" stroke-width="3" stroke-linecap="round">'
                f"<title>budget {escape(human(img.budget))}</title></line>"
            )
        label = human(size)
        extra = ""
        if img.budget:
            extra = f"{size / img.budget * 100:.0f}% of {human(img.budget)}"
        weight = ' font-weight="600"' if over else ""
        fill = f' style="fill:{COLORS["fail"]}"' if over else ""
        out.append(
            f'<text x="{_pct(left + span + 2)}" y="{y + BAR_H - 4}" font-size="13"'
            f"{weight}{fill}>{escape(label)}"
            f'<tspan dx="8" font-size="12" font-weight="400" class="muted">{escape(extra)}'
            "</tspan></text>"
        )
    out.append("</svg>")
    more = len(sized) - len(shown)
    note = f'<p class="sub">…and {more} smaller images.</p>' if more > 0 else ""
    return "".join(out) + note


def _offenders(offenders: Sequence[ImageSummary]) -> str:
    if not offenders:
        return '<p class="empty">No image has a problem. Nothing to fix.</p>'
    out = []
    for img in offenders:
        facts = []
        if img.digest:
            facts.append(f'<span class="mono">{escape(short_digest(img.digest))}</span>')
        if img.size is not None:
            facts.append(escape(size_text(img.size, img.budget)))
        if img.workloads:
            n = len(img.workloads)
            names = ", ".join(sorted(img.workloads))
            facts.append(
                f'<span title="{escape(names)}">{n} workload{"s" if n != 1 else ""}: '
                f"{escape(_truncate(names, 120))}</span>"
            )
        items = []
        for p in img.sorted_problems():
            color = SEVERITY_COLORS.get(p.severity, SEVERITY_COLORS["info"])
            items.append(
                f'<li class="{escape(p.severity)}"><span class="rule mono">{escape(p.rule)}</span>'
                f'<span class="pill" style="background:{color}">{escape(p.severity)}</span>'
                f'<span class="fix">{_message(p.message)}</span></li>'
            )
        out.append(
            f'<div class="offender"><h3 class="mono">{escape(img.image)}</h3>'
            f'<div class="facts">{" · ".join(facts)}</div><ul>{"".join(items)}</ul></div>'
        )
    return "".join(out)


def _problem_table(report: Report, s: Summary) -> str:
    if not s.problems:
        return '<p class="empty">No problems: every check passes.</p>'
    rows = s.problems[:MAX_PROBLEM_ROWS]
    head = ["Workload", "Image", "Rule", "Result", "Message (fix)"]
    if not report.workloads:
        head.remove("Workload")
    out = [
        f"<details{' open' if len(s.problems) <= OPEN_PROBLEMS_UP_TO else ''}>"
        f"<summary>{len(s.problems)} problem{'s' if len(s.problems) != 1 else ''}"
        f"</summary><table><thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead>"
        "<tbody>"
    ]
    for r in rows:
        cells = (
            [
                f"{escape(r.namespace)}/{escape(r.workload_label)}"
                f'<div class="small">container {escape(r.container)}</div>'
            ]
            if report.workloads
            else []
        )
        detail = " · ".join(escape(x) for x in (r.severity, r.mode, r.policy) if x)
        cells += [
            f'<span class="mono">{escape(r.image)}</span>',
            f'<span class="mono nw">{escape(r.rule)}</span>',
            f'<span class="pill" style="background:{COLORS.get(r.result, COLORS["error"])}">'
            f'{escape(r.result)}</span><div class="small">{detail}</div>',
            _message(r.message),
        ]
        classes = [""] * (len(cells) - 4) + [' class="any"', "", "", ' class="any"']
        tds = "".join(f"<td{k}>{c}</td>" for k, c in zip(classes, cells, strict=True))
        out.append(f"<tr>{tds}</tr>")
    out.append("</tbody></table>")
    if len(s.problems) > len(rows):
        out.append(f'<p class="sub">…and {len(s.problems) - len(rows)} more (see JSON).</p>')
    out.append("</details>")
    return "".join(out)
