"""The pinned command-line tools the tests run (helm).

``helm`` is found in ``$IMAGEGATE_TOOLS_BIN`` (where ``hack/build-tools.sh`` puts the Helm built
from its Go module at the version pinned in the repository; when unset, the directory
``hack/tools-env.sh --no-build`` prints), else on ``PATH``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from tests.support.parts import missing_part
from tests.support.paths import ROOT


def tools_bin() -> str:
    """$IMAGEGATE_TOOLS_BIN, else where `hack/tools-env.sh --no-build` says the tools are."""
    tools = os.environ.get("IMAGEGATE_TOOLS_BIN", "").strip()
    script = ROOT / "hack" / "tools-env.sh"
    if tools or not script.is_file():
        return tools
    proc = subprocess.run(
        [str(script), "--no-build"], capture_output=True, text=True, timeout=30, check=False
    )
    prefix = "export IMAGEGATE_TOOLS_BIN="
    for line in proc.stdout.splitlines():
        if line.startswith(prefix):
            return shlex.split(line[len(prefix) :])[0] if line[len(prefix) :] else ""
    return ""


def find_helm() -> str | None:
    tools = tools_bin()
    if tools:
        candidate = Path(tools) / "helm"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("helm")


def require_helm() -> str:
    """``find_helm()``, or the test is missing a part."""
    path = find_helm()
    if path is None:
        missing_part(
            "no helm binary: run hack/build-tools.sh (puts it in $IMAGEGATE_TOOLS_BIN, "
            "see hack/tools-env.sh) or put helm on PATH"
        )
    return path
