"""docs/kind.md is followed word for word: every command between its `walkthrough` markers runs,
in order, as a user would paste it, and the `text` block after a command is what it must print.

A `text` block matches when each of its lines, up to a `...`, starts a line of the output (in
order). A command followed by an expected `Error from server` may fail; every other command
must succeed.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

import pytest

from tests.kind.harness import Kind
from tests.support.paths import ROOT

DOC = ROOT / "docs" / "kind.md"
FENCE = re.compile(r"```(sh|text)\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Step:
    command: str
    expected: str | None  # the text block right after the command's block, if any


def walkthrough(markdown: str) -> list[Step]:
    """The commands between `<!-- walkthrough -->` and `<!-- /walkthrough -->`, each with the
    output the page shows for it (a text block expects the output of the block's last line)."""
    match = re.search(r"<!-- walkthrough -->(.*?)<!-- /walkthrough -->", markdown, re.DOTALL)
    assert match, f"{DOC} has no <!-- walkthrough --> section"
    steps: list[Step] = []
    for kind, body in FENCE.findall(match.group(1)):
        if kind == "sh":
            steps += [Step(line, None) for line in body.splitlines() if line.strip()]
        else:
            assert steps, "a text block before any command"
            steps[-1] = Step(steps[-1].command, body.strip())
    return steps


def matches(expected: str, output: str) -> bool:
    lines = output.splitlines()
    position = 0
    for want in expected.splitlines():
        prefix = want.split("...", 1)[0].rstrip() if "..." in want else want.rstrip()
        while position < len(lines) and not lines[position].startswith(prefix):
            position += 1
        if position == len(lines):
            return False
        position += 1
    return True


def test_the_walkthrough_parser_reads_commands_and_their_output() -> None:
    page = (
        "x\n<!-- walkthrough -->\n```sh\na\nb\n```\n\n```text\nout ...\n```\n"
        "```sh\nc\n```\n<!-- /walkthrough -->\n```sh\nnot run\n```\n"
    )
    assert walkthrough(page) == [Step("a", None), Step("b", "out ..."), Step("c", None)]
    assert matches("Error from server: denied: ...", "Error from server: denied: because")
    assert not matches("pod/x created", "Error from server: denied")


def test_docs_kind_md_walkthrough_works_word_for_word(kind: Kind) -> None:
    """`kind` only makes sure the cluster answers; the page itself does the rest."""
    steps = walkthrough(DOC.read_text())
    assert any("make kind-install" in s.command for s in steps)
    subprocess.run(
        ["kubectl", "--context", "kind-imagegate", "delete", "namespace", "demo",
         "--ignore-not-found", "--wait=true", "--timeout=120s"],
        capture_output=True, check=False,
    )  # fmt: skip
    for step in steps:
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", step.command],
            cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        output = done.stdout + done.stderr
        may_fail = step.expected is not None and step.expected.startswith("Error from server")
        if done.returncode != 0 and not may_fail:
            pytest.fail(f"docs/kind.md: `{step.command}` failed ({done.returncode}):\n{output}")
        if may_fail and done.returncode == 0:
            pytest.fail(f"docs/kind.md: `{step.command}` should have been refused:\n{output}")
        if step.expected is not None and not matches(step.expected, output):
            pytest.fail(
                f"docs/kind.md: `{step.command}` printed\n{output}\nnot what the page shows:\n"
                f"{step.expected}"
            )
