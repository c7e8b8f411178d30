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
from webhook.report.sources import LayerBar, LayerReport, Report
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
# The layer chart: layer bytes, and the wasted part of them (or, past a layer's own bytes, what
# its whiteouts delete from the layers below: still shipped, hatched).
LAYER_COLORS: Final = {"bytes": "#54aeff", "wasted": "#e16f24"}
ROW_H: Final = 30
BAR_H: Final = 18
LAYER_ROW_H: Final = 24
LAYER_BAR_H: Final = 14
MAX_LAYER_IMAGES: Final = 20
OPEN_LAYER_IMAGES: Final = 4
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
.layers { border-top: 1px solid var(--line); padding: 12px 0 4px; }
.layers:first-of-type { border-top: 0; padding-top: 4px; }
.layers summary { overflow-wrap: anywhere; }
.layers summary .facts { display: block; color: var(--muted); font-size: 13px; font-weight: 400;
  margin: 2px 0 0 1.15em; }
.layers summary .facts b { color: var(--fg); }
.layers h4 { font-size: 12px; margin: 14px 0 2px; color: var(--muted); font-weight: 600;
  text-transform: uppercase; letter-spacing: .05em; }
.layers table { margin-bottom: 4px; }
.layers td { vertical-align: baseline; }
th.num, td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
.fix { display: block; color: var(--fg); }
.small { color: var(--muted); font-size: 12px; margin-top: 2px; }
.nw { white-space: nowrap; }
td code, .fix code { background: var(--panel); border-radius: 4px; padding: 0 3px; }
details summary { cursor: pointer; font-weight: 600; }
details[open] summary { margin-bottom: 8px; }
.empty { color: var(--muted); font-style: italic; }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 8px; }
@media (max-width: 560px) { main { padding: 16px 10px 32px; } .grid { display: block; }
  h1 { font-size: 22px; } section { padding: 12px; }
  svg .tick { display: none; } svg .narrow-off { display: none; } }
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
        _layers_section(s.layered, ids) if s.layered else "",
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
    text: str,
    y: float,
    width_pct: float,
    limit: int,
    *,
    mono: bool,
    image: bool = False,
    x_pct: float = 0,
    tooltip: str = "",
) -> str:
    """A row label, left-aligned and clipped to its column (the full text, or `tooltip`, in a
    tooltip); an image reference is shown as repository and tag (`_image_label`)."""
    family = ' class="mono" font-size="12"' if mono else ' font-size="13"'
    shown = _image_label(text, limit) if image else _truncate(text, limit)
    return (
        f'<svg x="{_pct(x_pct)}" y="{y - 14:.1f}" width="{_pct(width_pct - x_pct - 1)}" '
        f'height="20"><text x="0" y="14"{family}><title>{escape(tooltip or text)}</title>'
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
    out = [
        _svg_open(height, "image sizes against their budgets"),
        _grid(left, span, height - axis_h, scale_max),
    ]
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


def _grid(left: float, span: float, bottom: float, scale_max: float) -> str:
    """Vertical gridlines at quarters of `scale_max`, with their sizes below `bottom`."""
    out = []
    for k in range(5):
        gx = left + span * k / 4
        tick = " tick" if k in (1, 3) else ""  # too tight on a phone
        out.append(
            f'<line x1="{_pct(gx)}" x2="{_pct(gx)}" y1="0" y2="{bottom}" '
            'stroke="#eaeef2" stroke-width="1"/>'
            f'<text x="{_pct(gx)}" y="{bottom + 18}" text-anchor="middle" font-size="11" '
            f'class="muted{tick}">{escape(human(int(scale_max * k / 4)))}</text>'
        )
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Layers (`imagegate check --layers`): where each image's bytes go


def _layers_section(images: Sequence[ImageSummary], ids: _Ids) -> str:
    """One block per analysed image, most wasted bytes first (the worst ones open)."""
    shown = images[:MAX_LAYER_IMAGES]
    blocks = [
        _layer_block(img, img.layers, ids, k < OPEN_LAYER_IMAGES)
        for k, img in enumerate(shown)
        if img.layers
    ]
    more = len(images) - len(shown)
    note = f'<p class="sub">…and {more} more analysed images (see JSON).</p>' if more > 0 else ""
    legend = (
        '<ul class="legend">'
        f'<li><i style="background:{LAYER_COLORS["bytes"]}"></i>bytes of the layer</li>'
        f'<li><i style="background:{LAYER_COLORS["wasted"]}"></i>wasted: stored again in '
        "another layer, or deleted later</li>"
        f'<li><i style="background:repeating-linear-gradient(45deg,{LAYER_COLORS["wasted"]} 0 '
        f'2px,#fff 2px 4px);outline:1px solid {LAYER_COLORS["wasted"]}"></i>deleted by this '
        "layer, still shipped below</li></ul>"
    )
    return _section(
        "layers",
        "Where the bytes go: layers",
        "Dive's efficiency per image: each layer's bytes, the wasted part highlighted, and the "
        "files stored more than once. Fix: delete in the same RUN, build multi-stage, or squash.",
        legend + "".join(blocks) + note,
    )


def _layer_block(img: ImageSummary, layers: LayerReport, ids: _Ids, is_open: bool) -> str:
    failing = any(p.rule == "layer-efficiency" for p in img.problems.values())
    style = f' style="color:{COLORS["fail"]}"' if failing else ""
    facts = []
    if layers.efficiency is not None:
        facts.append(f"<b{style}>{layers.efficiency * 100:.1f}%</b> efficient")
    if layers.wasted_bytes is not None:
        user = layers.user_wasted
        own = f" ({user * 100:.1f}% of its own layers)" if user is not None else ""
        facts.append(f"<b{style}>{escape(human(layers.wasted_bytes))}</b> wasted{own}")
    count = len(layers.layers) + layers.more_layers
    if count:
        facts.append(f"{count} layer{'s' if count != 1 else ''}")
    if layers.cache_files:
        facts.append(f"{escape(human(layers.cache_bytes))} of cache files")
    if layers.user:
        facts.append(f"USER <b>{escape(str(layers.user))}</b> in its /etc/passwd")
    body = [
        f'<details class="layers"{" open" if is_open else ""}>'
        f'<summary><span class="mono">{escape(img.image)}</span>'
        f'<span class="facts">{" · ".join(facts)}</span></summary>',
        _layer_chart(layers, ids),
        _top_wasted(layers),
        _cache_files(layers),
        "</details>",
    ]
    return "".join(body)


def _layer_chart(layers: LayerReport, ids: _Ids) -> str:
    """A bar per layer, bottom (first built) at the top, as `docker history` reads reversed."""
    if not layers.layers:
        return ""
    scale_max = max(max(b.size, b.wasted) for b in layers.layers) * 1.05 or 1
    num, left, span = 3.5, 42.0, 38.0
    axis_h = 22
    height = LAYER_ROW_H * len(layers.layers) + axis_h + 6
    hatch = ids.next("hatch")
    wasted = LAYER_COLORS["wasted"]
    out = [
        _svg_open(height, "bytes per layer, wasted bytes highlighted"),
        f'<defs><pattern id="{hatch}" width="5" height="5" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="2.5" height="5" fill="{wasted}"/>'
        "</pattern></defs>",
        _grid(left, span, height - axis_h, scale_max),
    ]
    for i, bar in enumerate(layers.layers):
        y = i * LAYER_ROW_H + 6
        out.append(
            f'<text x="{_pct(num - 1)}" y="{y + LAYER_BAR_H - 3}" text-anchor="end" '
            f'font-size="11" class="muted">{i}</text>'
        )
        command = _command(bar.created_by)
        tooltip = f"layer {i} {bar.digest}\n{bar.created_by or '(no history)'}"
        out.append(
            _label(command or "(no history)", y + LAYER_BAR_H - 2, left, 50, mono=True,
                   x_pct=num, tooltip=tooltip)
        )  # fmt: skip
        out.append(_layer_bar(bar, i, y, left, span / scale_max, hatch))
        extra = f"{human(bar.wasted)} wasted" if bar.wasted else ""
        weight = ' font-weight="600"' if bar.wasted else ""
        out.append(
            f'<text x="{_pct(left + span + 1.5)}" y="{y + LAYER_BAR_H - 2}" font-size="12.5">'
            f"{escape(human(bar.size))}"
            f'<tspan dx="8" font-size="12"{weight} class="narrow-off" style="fill:{wasted}">'
            f"{escape(extra)}</tspan>"
            "</text>"
        )
    out.append("</svg>")
    if layers.more_layers:
        out.append(f'<p class="sub">…and {layers.more_layers} more layers (see the source).</p>')
    return "".join(out)


def _layer_bar(bar: LayerBar, i: int, y: float, left: float, per_byte: float, hatch: str) -> str:
    """The layer's bytes, its wasted part at their end, and any wasted excess hatched after."""
    size_w = bar.size * per_byte
    own = min(bar.wasted, bar.size)
    out = [
        f'<rect x="{_pct(left)}" y="{y}" width="{_pct(max(size_w, 0.15))}" '
        f'height="{LAYER_BAR_H}" rx="2" fill="{LAYER_COLORS["bytes"]}"><title>layer {i}: '
        f"{escape(human(bar.size))} ({bar.size:,} bytes)</title></rect>"
    ]
    if own:
        w = own * per_byte
        out.append(
            f'<rect x="{_pct(left + size_w - w)}" y="{y}" width="{_pct(max(w, 0.15))}" '
            f'height="{LAYER_BAR_H}" rx="2" fill="{LAYER_COLORS["wasted"]}"><title>layer {i}: '
            f"{escape(human(own))} of its bytes wasted</title></rect>"
        )
    if bar.wasted > bar.size:
        excess = bar.wasted - bar.size
        out.append(
            f'<rect x="{_pct(left + size_w)}" y="{y + 0.5}" width="{_pct(excess * per_byte)}" '
            f'height="{LAYER_BAR_H - 1}" rx="2" fill="url(#{hatch})" '
            f'stroke="{LAYER_COLORS["wasted"]}" stroke-width="1"><title>layer {i}: deletes or '
            f"overwrites {escape(human(excess))} still shipped in the layers below</title></rect>"
        )
    return "".join(out)


def _command(created_by: str) -> str:
    """`docker history`'s text, shorter for a label: one line, without the shell's `#(nop)`
    prefix and BuildKit's comment (the tooltip keeps it whole)."""
    text = " ".join(created_by.split())
    text = text.removeprefix("/bin/sh -c #(nop) ").removesuffix(" # buildkit")
    if text.startswith("/bin/sh -c "):
        text = "RUN " + text.removeprefix("/bin/sh -c ")
    return text.replace("RUN /bin/sh -c ", "RUN ", 1)


def _top_wasted(layers: LayerReport) -> str:
    if not layers.top_wasted:
        return ""
    where = any(w.added_in is not None for w in layers.top_wasted)
    head = '<th>Path</th><th class="num">Wasted</th><th class="num">Bytes</th>'
    head += "<th>Layers</th>" if where else ""
    rows = []
    for w in layers.top_wasted:
        cells = (
            f'<td class="any mono">{escape(w.path)}</td>'
            f'<td class="num">{escape(human(w.bytes))}</td><td class="num">{w.bytes:,}</td>'
        )
        if where:
            changed = ", ".join(map(str, w.changed_in))
            added = f"added in {w.added_in}" if w.added_in is not None else ""
            again = f"again in {changed}" if changed else ""
            cells += f'<td class="small">{", ".join(x for x in (added, again) if x)}</td>'
        rows.append(f"<tr>{cells}</tr>")
    return (
        "<h4>Most wasted files</h4>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _cache_files(layers: LayerReport) -> str:
    if not layers.cache_files:
        return ""
    rows = "".join(
        f'<tr><td class="nw">{escape(c.kind)}</td><td class="any mono">{escape(c.path)}</td>'
        f'<td class="num">{escape(human(c.bytes))}</td><td class="num">{c.bytes:,}</td></tr>'
        for c in layers.cache_files
    )
    return (
        "<h4>Cache files left in the image</h4>"
        '<table><thead><tr><th>Kind</th><th>Path</th><th class="num">Size</th>'
        f'<th class="num">Bytes</th></tr></thead><tbody>{rows}</tbody></table>'
    )


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
