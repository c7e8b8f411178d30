"""The HTML report, opened in a real browser: Debian's headless Chromium.

The page is rendered from the golden PolicyReports (tests/golden/report/policyreports.json),
opened with every host name unresolvable (so nothing outside can be fetched; that the HTML
references nothing outside is checked in tests/unit/test_report_render.py), and must:

* log nothing to the browser console (the page has no script: any console line is an error
  or an uncaught exception);
* keep every section in the rendered DOM;
* paint the charts: the screenshot holds the pass green and the fail red of the bars.

A control page with a script error proves the console check catches one. Without Chromium the
test skips locally and fails under CI=true (hack/install-deps.sh installs `chromium`).
Set IMAGEGATE_REPORT_PNG=/some/file.png to keep the screenshot for a look.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.parts import missing_part
from webhook.report.render_html import COLORS, render_html
from webhook.report.sources import report_from_file

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "report"
WINDOW = (1280, 2000)
SECTIONS = ("headline", "by-group", "by-rule", "sizes", "offenders", "problems")
CONSOLE = re.compile(r":CONSOLE(?:\(\d+\)|:\d+)\] (.*)")


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    missing_part("chromium is not installed (apt-get install chromium; hack/install-deps.sh)")


def run_chromium(binary: str, profile: Path, url: str, *args: str) -> tuple[str, list[str]]:
    """Run headless Chromium on `url`; its stdout and the console lines it logged."""
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing may be fetched from outside
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"chromium exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    console = [m.group(1) for m in CONSOLE.finditer(proc.stderr)]
    return proc.stdout, console


def png_pixels(path: Path) -> tuple[int, int, set[tuple[int, int, int]]]:
    """Width, height and the set of RGB colours of an 8-bit RGB/RGBA PNG (no Pillow needed)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color_type = struct.unpack(">IIBB", header[:10])
    assert depth == 8, f"unexpected PNG bit depth {depth}"
    assert color_type in (2, 6), f"unexpected PNG colour type {color_type}"
    bpp = 3 if color_type == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    colours: set[tuple[int, int, int]] = set()
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        if y % 4 == 0:  # every 4th row is plenty to find the colours of the charts
            colours.update((line[i], line[i + 1], line[i + 2]) for i in range(0, stride, bpp * 2))
        previous = line
    return width, height, colours


def rgb(hex_colour: str) -> tuple[int, int, int]:
    value = int(hex_colour.lstrip("#"), 16)
    return (value >> 16, (value >> 8) & 0xFF, value & 0xFF)


def near(colour: tuple[int, int, int], colours: set[tuple[int, int, int]]) -> bool:
    return any(sum(abs(a - b) for a, b in zip(colour, c, strict=True)) <= 12 for c in colours)


def test_console_check_catches_a_script_error(chromium: str, tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><p>x</p><script>notAFunction();</script>", "utf-8")
    _, console = run_chromium(chromium, tmp_path / "profile", page.as_uri(), "--dump-dom")
    assert any("Uncaught ReferenceError" in line for line in console), console


def test_html_report_renders_in_chromium(chromium: str, tmp_path: Path) -> None:
    report = report_from_file(GOLDEN / "policyreports.json", datetime(2025, 3, 14, tzinfo=UTC))
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")

    dom, console = run_chromium(chromium, tmp_path / "p1", page.as_uri(), "--dump-dom")
    assert console == [], f"the browser console reported: {console}"
    for section in SECTIONS:
        assert f'id="{section}"' in dom, f"section {section} missing from the rendered page"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom  # user text stays text

    png = tmp_path / "report.png"
    size = f"--window-size={WINDOW[0]},{WINDOW[1]}"
    _, console = run_chromium(chromium, tmp_path / "p2", page.as_uri(), f"--screenshot={png}", size)
    assert console == [], f"the browser console reported: {console}"
    width, height, colours = png_pixels(png)
    assert (width, height) == WINDOW
    assert len(colours) > 50, "the screenshot is (nearly) blank"
    for result in ("pass", "fail", "error"):
        assert near(rgb(COLORS[result]), colours), f"no {result} colour painted: charts missing"
    keep = os.environ.get("IMAGEGATE_REPORT_PNG")
    if keep:
        shutil.copyfile(png, keep)
