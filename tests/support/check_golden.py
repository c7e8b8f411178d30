"""The golden input of the report chain: real `imagegate check --output json`, normalised.

``tests/golden/report/check-output.json`` feeds ``tests/unit/test_report_render.py`` (the JSON
and Markdown report goldens) and ``tests/unit/test_report_sources.py``. It is what the real CLI
prints for four images of a real registry (``CHECKED``), under ``policy_text``'s policy, with
what changes from run to run replaced:

* the registry's ``127.0.0.1:PORT`` by ``localhost:5001`` (``GOLDEN_HOST``);
* every ``sha256:`` digest (images, configs, layers, bases: new with every build) by
  ``sha256:000…01``, ``…02``, … in order of first appearance, so equal digests stay equal.

Sizes stay as measured: they only move with the fixtures (the host's static busybox, Docker's
compression), so ``without_sizes`` leaves them out when a new run is compared with the file.
``hack/golden_check_output.py`` writes the file; ``tests/integration/test_report_golden_chain.py``
fails when the CLI's output no longer matches it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.fixtures.images import FIXTURE_TAG, REGISTRY_NAMESPACE, push_copy
from tests.support.paths import ROOT

__all__ = [
    "CHECKED",
    "EXPECTED",
    "GOLDEN",
    "GOLDEN_HOST",
    "check_refs",
    "normalise",
    "policy_text",
    "run_check",
    "without_sizes",
]

GOLDEN = ROOT / "tests" / "golden" / "report" / "check-output.json"
GOLDEN_HOST = "localhost:5001"

# (fixture, tag) in the order checked; "missing" is never pushed (an inspection error), and
# `zero` is checked by `latest` (pushed for it) so that one image fails two rules.
CHECKED: tuple[tuple[str, str], ...] = (
    ("good", FIXTURE_TAG),
    ("zero", "latest"),
    ("big", FIXTURE_TAG),
    ("missing", FIXTURE_TAG),
)

# What each image gets under `policy_text` (every rule but those that read layers or limit
# registries): rule → result. The report chain tests derive their expectations from this.
RULES = (
    "non-root-user",
    "allowed-base",
    "size-budget",
    "single-entrypoint",
    "immutable-reference",
)
EXPECTED: dict[str, dict[str, str]] = {
    "good": dict.fromkeys(RULES, "pass"),
    "zero": {
        **dict.fromkeys(RULES, "pass"),
        "non-root-user": "fail",  # USER 0:0
        "immutable-reference": "fail",  # the `latest` tag
    },
    "big": {**dict.fromkeys(RULES, "pass"), "size-budget": "fail"},  # 3 MiB of random bytes
    "missing": {"inspection": "error"},
}

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_SIZE = re.compile(r"\b\d+(?:\.\d+)? [kMGT]?i?B\b")
_SIZE_KEYS = frozenset({"compressedSize", "size"})


def policy_text(base: str) -> str:
    """One enforce policy: the fixture base approved, a 2 MB budget, the other rules default."""
    return (
        "apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: default}\n"
        "spec:\n  rules:\n"
        f"    allowedBases: {{references: ['{base}']}}\n"
        "    sizeBudget: {maxCompressedSize: 2MB}\n"
    )


def check_refs(docker_client: Any, host: str) -> list[str]:
    """The references of `CHECKED` in the registry at `host`, pushing `zero:latest` first
    (the fixtures themselves must be there already: `tests.fixtures.images.build_fixtures`)."""
    push_copy(docker_client, "zero", f"{host}/{REGISTRY_NAMESPACE}/zero", "latest")
    return [f"{host}/{REGISTRY_NAMESPACE}/{name}:{tag}" for name, tag in CHECKED]


def run_check(refs: list[str], policy: Path) -> subprocess.CompletedProcess[str]:
    """`imagegate check REFS --policy POLICY --output json`, as a user runs it."""
    argv = [sys.executable, "-m", "webhook", "check", *refs, "--policy", str(policy)]
    return subprocess.run(
        [*argv, "--output", "json"], capture_output=True, text=True, timeout=300, check=False
    )


def normalise(output: str, host: str) -> str:
    """The check output `output` (JSON text) as the golden file holds it (see module doc)."""
    seen: dict[str, str] = {}

    def placeholder(match: re.Match[str]) -> str:
        return seen.setdefault(match.group(0), f"sha256:{len(seen) + 1:064x}")

    text = _DIGEST.sub(placeholder, output.replace(host, GOLDEN_HOST))
    return json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"


def without_sizes(value: Any) -> Any:
    """`value` (parsed check output) with measured sizes replaced by `<size>`, in facts and in
    messages alike; the budget, which the policy sets, stays."""
    if isinstance(value, Mapping):
        return {
            k: "<size>" if k in _SIZE_KEYS and isinstance(v, int) else without_sizes(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [without_sizes(v) for v in value]
    if isinstance(value, str):
        return _SIZE.sub("<size>", value)
    return value
