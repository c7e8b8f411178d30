"""The report golden chain starts from real `imagegate check` output.

``tests/golden/report/check-output.json`` is the input of the report goldens
(``tests/unit/test_report_render.py``). Here the real CLI checks the same images of the real
registry (Docker-built fixtures) under the same policy (``tests/support/check_golden.py``):

* its output, normalised, must be the golden file, sizes aside (they move by a few bytes with
  every build): so the golden input is what ``imagegate check`` prints today, field for field;
* ``imagegate report --from`` that output must render it in every format without loss: every
  check of every image, every problem's message, the sizes and digests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.support.check_golden import (
    CHECKED,
    EXPECTED,
    GOLDEN,
    check_refs,
    normalise,
    policy_text,
    run_check,
    without_sizes,
)
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.integration

REGENERATE = (
    "run `.venv/bin/python hack/golden_check_output.py`, then "
    "`IMAGEGATE_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_report_render.py "
    "tests/unit/test_report_policyreport.py`, "
    "and review the diff of tests/golden/report/"
)


@pytest.fixture(scope="module")
def checked(
    docker_client: Any,
    registry: RegistryProcess,
    fixture_images: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, Any]]:
    """The real check output (the file, and its results by fixture name)."""
    directory = tmp_path_factory.mktemp("golden-chain")
    refs = check_refs(docker_client, registry.host)
    policy = directory / "policy.yaml"
    policy.write_text(policy_text(fixture_images["base"]), encoding="utf-8")
    done = run_check(refs, policy)
    assert done.returncode == 2, f"an inspection error is exit 2:\n{done.stderr}"  # `missing`
    path = directory / "check-output.json"
    path.write_text(done.stdout, encoding="utf-8")
    results = json.loads(done.stdout)["results"]
    assert [r["image"] for r in results] == refs
    names = [name for name, _ in CHECKED]
    return path, dict(zip(names, results, strict=True))


def report(source: Path, output: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "webhook", "report", "--from", str(source), "--output", output],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "COLUMNS": "4000"},  # the table: one line per row, nothing wrapped
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_golden_input_is_what_imagegate_check_prints(
    checked: tuple[Path, dict[str, Any]], registry: RegistryProcess
) -> None:
    path, _ = checked
    real = json.loads(normalise(path.read_text(encoding="utf-8"), registry.host))
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert without_sizes(real) == without_sizes(golden), REGENERATE


def test_check_output_has_every_field_the_report_reads(
    checked: tuple[Path, dict[str, Any]], fixture_images: dict[str, str]
) -> None:
    _, results = checked
    for name, result in results.items():
        if name == "missing":
            assert result["verdict"] == "error"
            assert "manifest unknown" in result["error"]
            continue
        failed = {rule for rule, outcome in EXPECTED[name].items() if outcome == "fail"}
        assert result["verdict"] == ("fail" if failed else "pass"), name
        assert {v["rule"] for v in result["violations"]} == failed, name
        for v in result["violations"]:
            assert v["policy"] == "default"
            assert v["severity"] in {"medium", "high"}
            assert v["message"]
        assert result["policies"] == ["default"]
        assert result["digest"].startswith("sha256:")
        assert result["platform"] == "linux/amd64"
        facts = result["facts"]
        # the facts the reader turns into passing checks, one per rule evaluated
        for key in ("effectiveUser", "sizeBudget", "argv", "pinned", "base"):
            assert key in facts, (name, key)
        assert facts["sizeBudget"] == 2_000_000
        assert facts["compressedSize"] == sum(layer["size"] for layer in facts["layers"])
        assert facts["base"]["name"] == fixture_images["base"]
        assert facts["base"]["evidence"] == ("label" if name == "good" else "diff_ids")


def test_every_report_format_renders_it_without_loss(
    checked: tuple[Path, dict[str, Any]],
) -> None:
    path, results = checked
    problems = [
        (r["image"], v["rule"], v["message"]) for r in results.values() for v in r["violations"]
    ] + [
        (r["image"], "inspection", f"cannot be inspected: {r['error']}")
        for r in results.values()
        if r["verdict"] == "error"
    ]
    checks = sum(len(outcomes) for outcomes in EXPECTED.values())
    failing = sum(o != "pass" for outcomes in EXPECTED.values() for o in outcomes.values())
    headline = f"{failing} of {checks} checks fail, in 3 of {len(CHECKED)} images."
    assert (checks, failing) == (16, 4)

    doc = json.loads(report(path, "json"))
    assert doc["headline"] == headline
    for name, result in results.items():
        counts = Counter(EXPECTED[name].values())
        summary = doc["byImage"][result["image"]]
        assert {k: summary[k] for k in ("pass", "fail", "error")} == {
            k: counts[k] for k in ("pass", "fail", "error")
        }, name
    images = {i["image"]: i for i in doc["images"]}
    assert images.keys() == {r["image"] for r in results.values()}
    for name, result in results.items():
        image = images[result["image"]]
        facts = result["facts"]
        assert (image["digest"], image["size"], image["budget"]) == (
            result["digest"] or "",
            facts.get("compressedSize"),
            facts.get("sizeBudget"),
        ), name
    assert sorted(
        (i["image"], p["rule"], p["message"]) for i in doc["images"] for p in i["problems"]
    ) == sorted(problems)

    markdown = report(path, "markdown")
    assert headline in markdown
    for image, rule, message in problems:
        assert f"| `{image}` | default | `{rule}` |" in markdown
        assert message in markdown, (image, rule)

    text = html_text(report(path, "html"))
    assert headline in text
    for image, rule, message in problems:
        assert image in text
        assert rule in text
        assert message.replace("`", "") in text, (image, rule)  # `code` becomes <code>

    table = report(path, "table")
    assert headline in table
    lines = table.splitlines()
    for image, rule, message in problems:
        assert any(image in line and rule in line and message in line for line in lines), (
            image,
            rule,
        )


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_text(html: str) -> str:
    """The text a reader sees (entities decoded, tags gone), whitespace collapsed."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    return " ".join("".join(parser.parts).split())
