#!/usr/bin/env python3
"""Generate charts/imagegate/README.md from Chart.yaml, README.md.tmpl and values.yaml.

The values table comes from the `# --` comments of values.yaml, the convention of helm-docs
(github.com/norwoodj/helm-docs). helm-docs itself is a Go tool that hack/tools does not pin and
the build could not fetch offline; the part of it this chart uses (a `# --` comment above a key
documents that key, its default is the value in values.yaml, keys inside a documented value are
not listed) is this script, run with the project's own Python and covered by a chart test.

    hack/chart-readme.py            # write charts/imagegate/README.md
    hack/chart-readme.py --check    # exit 1 when README.md is not what the script makes
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent.parent / "charts" / "imagegate"
TEMPLATE = "README.md.tmpl"
MAX_INLINE = 120  # longer defaults are shown as "see values.yaml"


@dataclass(frozen=True)
class Value:
    """One documented key: dotted path, type, default (JSON) and description."""

    key: str
    type: str
    default: str
    description: str


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if value is None:
        return "null"
    return "object"


def _lookup(tree: Any, path: list[str]) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def documented_values(text: str) -> list[Value]:
    """Every key with a `# --` comment block right above it, in file order."""
    tree = yaml.safe_load(text)
    found: list[Value] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    comment: list[str] = []
    skip_deeper_than: int | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            comment = []
            continue
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        block, comment = comment, []
        if skip_deeper_than is not None and indent > skip_deeper_than:
            continue
        skip_deeper_than = None
        if stripped.startswith("- ") or ":" not in stripped:
            continue
        key = stripped.split(":", 1)[0].strip().strip("\"'")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [key]
        stack.append((indent, key))
        starts = [i for i, c in enumerate(block) if c.startswith("--")]
        if not starts:
            continue
        words = [block[starts[-1]].removeprefix("--").strip(), *block[starts[-1] + 1 :]]
        value = _lookup(tree, path)
        found.append(Value(".".join(path), _type(value), _default(value), " ".join(words)))
        skip_deeper_than = indent
    return found


def _default(value: Any) -> str:
    shown = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return shown if len(shown) <= MAX_INLINE else "see values.yaml"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def values_table(values: list[Value]) -> str:
    rows = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for v in values:
        default = f"`{_cell(v.default)}`" if v.default != "see values.yaml" else v.default
        rows.append(f"| `{v.key}` | {v.type} | {default} | {_cell(v.description)} |")
    return "\n".join(rows)


def render(chart: Path = CHART) -> str:
    """The README: the template with {name}, {version}, {appVersion}, {kubeVersion},
    {description} and {values} filled in."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    values = documented_values((chart / "values.yaml").read_text())
    fields = {
        "name": meta["name"],
        "version": meta["version"],
        "appVersion": meta["appVersion"],
        "kubeVersion": meta.get("kubeVersion", ""),
        "description": " ".join(str(meta.get("description", "")).split()),
        "values": values_table(values),
    }
    text = (chart / TEMPLATE).read_text()
    for name, value in fields.items():
        text = text.replace("{{ " + name + " }}", str(value))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--check", action="store_true", help="fail when README.md is stale")
    args = parser.parse_args(argv)
    wanted = render()
    readme = CHART / "README.md"
    if args.check:
        if not readme.is_file() or readme.read_text() != wanted:
            print(f"{readme} is not current: run hack/chart-readme.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(wanted)
    print(readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
