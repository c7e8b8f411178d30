"""`imagegate report` outputs. JSON and Markdown are golden files in tests/golden/report/.

Regenerate the golden files after an intended change with

    IMAGEGATE_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_report_*.py

and review the diff: it is what users (and PR comments) will see.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from rich.console import Console

from webhook.errors import UsageError
from webhook.report.output import render
from webhook.report.render import render_json, render_markdown, render_table
from webhook.report.render_html import COLORS, render_html
from webhook.report.sources import (
    LayerBar,
    LayerReport,
    Report,
    ReportRow,
    WastedFile,
    report_from_file,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "report"
NOW = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)
UPDATE = os.environ.get("IMAGEGATE_UPDATE_GOLDEN", "") not in ("", "0")
SOURCES = {
    "cluster": "policyreports.json",
    "check": "check-output.json",
    # with layer analysis (`imagegate check --layers`), as check output and as a PolicyReport
    "check-layers": "check-layers.json",
    "cluster-layers": "policyreport-layers.json",
}


def report(source: str) -> Report:
    loaded = report_from_file(GOLDEN / SOURCES[source], NOW)
    # the source is a path; keep golden files independent of where the checkout lives
    return Report(loaded.rows, SOURCES[source], loaded.generated, loaded.workloads)


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing: run with IMAGEGATE_UPDATE_GOLDEN=1"
    assert path.read_text(encoding="utf-8") == text, (
        f"{name} differs from the golden file: run with IMAGEGATE_UPDATE_GOLDEN=1 and review"
    )


@pytest.mark.parametrize("source", list(SOURCES))
def test_json_golden(source: str) -> None:
    assert_golden(f"{source}.report.json", render_json(report(source)))


@pytest.mark.parametrize("source", list(SOURCES))
def test_markdown_golden(source: str) -> None:
    assert_golden(f"{source}.report.md", render_markdown(report(source)))


def test_json_is_stable_and_sorted() -> None:
    text = render_json(report("cluster"))
    doc = json.loads(text)
    assert text == json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert doc["summary"] == {
        "pass": 37,
        "fail": 8,
        "warn": 0,
        "error": 1,
        "skip": 0,
        "compliance": 0.8043,
    }
    assert doc["byNamespace"]["monitoring"]["compliance"] == 1.0
    assert doc["topOffenders"][0].startswith("localhost:5001/shop/cart:1.9@")


def test_check_output_groups_by_image() -> None:
    doc = json.loads(render_json(report("check")))
    assert "byImage" in doc
    assert "byNamespace" not in doc
    assert doc["headline"] == "4 of 16 checks fail, in 3 of 4 images."


def test_markdown_escapes_table_cells() -> None:
    row = ReportRow(
        image="a:1",
        rule="non-root-user",
        result="fail",
        severity="high",
        message="use | pipes <b>and</b>\nnewlines",
        namespace="ns",
        kind="Deployment",
        workload="w",
        container="c",
    )
    text = render_markdown(Report.of([row], "x", NOW))
    assert "use \\| pipes &lt;b&gt;and&lt;/b&gt;<br>newlines" in text
    assert "<b>" not in text


def test_markdown_of_a_clean_report() -> None:
    row = ReportRow(image="a:1", rule="size-budget", result="pass", severity="medium", message="")
    text = render_markdown(Report.of([row], "x", NOW))
    assert "✅ **All 1 check passes, in 1 image.**" in text
    assert "Top offending" not in text
    assert "problems</summary>" not in text


def test_table_prints_every_problem_without_rich_markup() -> None:
    console = Console(record=True, width=400, color_system=None)
    render_table(report("cluster"), console)
    out = console.export_text()
    assert "rebuild FROM one of [gcr.io/distroless/*," in out  # not eaten as rich markup
    assert "9 of 46 checks fail, in 4 of 7 workloads in 3 namespaces." in out
    assert "immutable-reference" in out


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs
        self.ids += [v for k, v in attrs if k == "id" and v]


@pytest.mark.parametrize("source", list(SOURCES))
def test_html_is_self_contained(source: str) -> None:
    html = render_html(report(source))
    parser = _Collector()
    parser.feed(html)
    assert "script" not in parser.tags, "user text must be escaped, and no script is needed"
    assert not {"link", "img", "iframe", "object", "embed"} & set(parser.tags)
    for name, value in parser.attrs:
        assert name not in ("src", "href") or not value, (name, value)
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html)
    assert "@import" not in html
    assert "url(http" not in html
    assert len(parser.ids) == len(set(parser.ids)), "element ids must be unique"
    assert {"by-group", "by-rule", "sizes", "offenders", "problems"} <= set(parser.ids)
    assert parser.tags.count("svg") >= 3


def test_html_escapes_user_text() -> None:
    html = render_html(report("cluster"))
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_html_of_an_empty_report() -> None:
    html = render_html(Report.of([], "nothing", NOW))
    assert "No results." in html
    assert "Nothing to fix." in html


def test_render_dispatch() -> None:
    r = report("check")
    assert render(r, "json") == render_json(r)
    assert render(r, "markdown") == render_markdown(r)
    assert render(r, "html") == render_html(r)
    with pytest.raises(UsageError, match="choose one of table, json, markdown, html"):
        render(r, "yaml")


@pytest.mark.parametrize(
    ("image", "shown"),
    [
        ("registry.example.com:5000/team/app:1.2", "team/app:1.2"),
        ("localhost:5001/app@sha256:" + "ab" * 32, "app@sha256:abababababab"),
        ("localhost:5001/app:2@sha256:" + "ab" * 32, "app:2"),
        ("nginx:1.27", "nginx:1.27"),
        ("registry.example.com/a/very/deep/repository/path/app:v1.2.3", "…ository/path/app:v1.2.3"),
    ],
)
def test_html_image_labels_show_repository_and_tag_not_the_host(image: str, shown: str) -> None:
    rows = [
        ReportRow(rule="non-root-user", result="pass", severity="high", message="ok", image=image)
    ]
    html = render_html(Report(rows, "check", NOW, workloads=False))  # grouped by image
    by_group = html[html.index('id="by-group"') : html.index('id="by-rule"')]
    labels = re.findall(r'class="mono"[^>]*><title>([^<]*)</title>([^<]*)<', by_group)
    assert labels == [(image, shown)]


# ---------------------------------------------------------------------------------------------
# Layers (`imagegate check --layers`)


def layers_html(source: str) -> str:
    html = render_html(report(source))
    start = html.index('<section id="layers">')
    return html[start : html.index("</section>", start)]


@pytest.mark.parametrize("source", ["cluster", "check"])
def test_reports_without_layer_analysis_show_no_layer_section(source: str) -> None:
    assert 'id="layers"' not in render_html(report(source))
    assert "Layer efficiency" not in render_markdown(report(source))
    assert all("layerAnalysis" not in i for i in json.loads(render_json(report(source)))["images"])


@pytest.mark.parametrize("source", ["check-layers", "cluster-layers"])
def test_html_layer_chart_per_analysed_image(source: str) -> None:
    section = layers_html(source)
    blocks = section.split('<details class="layers"')[1:]
    # most wasted first; the image without analysis shows nothing
    assert [re.search(r'<span class="mono">([^<]*)<', b)[1] for b in blocks] == [  # type: ignore[index]
        "localhost:5001/shop/api:2.3",
        "localhost:5001/fixtures/nobody:1",
    ]
    api, nobody = blocks
    assert "84.4%</b> efficient" in api
    assert "65.3 MB</b> wasted (20.8% of its own layers)" in api
    assert f'style="color:{COLORS["fail"]}"' in api  # its layer-efficiency rule fails
    assert "color:" not in nobody.split("</summary>")[0]
    assert "USER <b>nobody (65534:65534)</b>" in nobody
    assert api.count("<title>layer ") >= 6 + 6  # a bar and a tooltip label per layer
    # the whiteout layer: 1 kB of its own, 31.5 MB deleted below, hatched past its bar
    assert "deletes or overwrites 31.5 MB still shipped in the layers below" in api
    assert re.search(r'fill="url\(#hatch\d+\)"', api)
    for shown in (
        # labels are tidied and clipped, the tooltip keeps the whole command
        ">RUN pip install -r /app/requirements.txt<",
        "\nRUN /bin/sh -c pip install -r /app/requirements.txt # buildkit</title>",
        "<h4>Most wasted files</h4>",
        ">62,914,560<",
        ">62.9 MB<",
        "<h4>Cache files left in the image</h4>",
        "/var/lib/apt/lists",
    ):
        assert shown in api
    assert "<h4>Cache files" not in nobody


def test_html_layer_text_is_escaped() -> None:
    for source in ("check-layers", "cluster-layers"):
        section = layers_html(source)
        assert "<script>" not in section
        assert "<img" not in section
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section
        assert "/app/&lt;img src=x onerror=alert(1)&gt;.txt" in section


def test_html_layer_sources_differ_only_in_what_properties_omit() -> None:
    check, cluster = layers_html("check-layers"), layers_html("cluster-layers")
    assert "<th>Layers</th>" in check
    assert "added in 3, again in 4" in check
    assert "<th>Layers</th>" not in cluster


def test_html_layer_chart_of_hostile_layers() -> None:
    layers = LayerReport(
        efficiency=0.5,
        wasted_bytes=0,
        layers=tuple(LayerBar("d", "</text><script>x</script>" * 300, 0, 0) for _ in range(3)),
        more_layers=7,
    )
    rows = [ReportRow(image="a:1", rule="layer-efficiency", result="pass", severity="medium",
                      message="", layers=layers)]  # fmt: skip
    html = render_html(Report.of(rows, "x", NOW))
    parser = _Collector()
    parser.feed(html)
    assert "script" not in parser.tags
    assert "…and 7 more layers" in html
    assert len(parser.ids) == len(set(parser.ids))


def test_json_and_markdown_summarise_the_layers() -> None:
    doc = json.loads(render_json(report("check-layers")))
    by_image = {i["image"].split("/")[-1]: i.get("layerAnalysis") for i in doc["images"]}
    assert by_image["plain:1"] is None
    assert by_image["api:2.3"]["efficiency"] == 0.8438
    assert by_image["api:2.3"]["wastedBytes"] == 65_323_008
    assert by_image["nobody:1"]["resolvedUser"] == {"name": "nobody", "uid": 65534, "gid": 65534}
    md = render_markdown(report("check-layers"))
    lines = [line for line in md.splitlines() if "| 84.4% |" in line or "| 99.9% |" in line]
    assert len(lines) == 2


def test_markdown_layer_paths_cannot_break_the_table() -> None:
    layers = LayerReport(wasted_bytes=5, top_wasted=(WastedFile("/a|b\n| c <i>", 5),))
    rows = [ReportRow(image="a:1", rule="layer-efficiency", result="pass", severity="medium",
                      message="", layers=layers)]  # fmt: skip
    md = render_markdown(Report.of(rows, "x", NOW))
    [line] = [line for line in md.splitlines() if line.startswith("| `a:1`")]
    assert line.endswith("| `/a\\|b \\| c <i>` (5 B) |")
    assert len(re.findall(r"(?<!\\)\|", line)) == 6  # five cells, no more
