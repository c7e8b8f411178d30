"""Installing the chart on a bare API server (no kubelet, no controller-manager: no Job runs).

The chart's CRDs are release objects; its default ImagePolicy and peering come from a Job (a
release object on a first install, then a post-install/post-upgrade hook), and uninstall runs a
pre-delete Job: on a bare API server `helm install`/`uninstall` would wait for Jobs that never
run. So the CRDs are applied first (then the chart renders the policy and peering itself) and the
chart is told to leave them, the re-apply hook and the cleanup hook out (`BARE_API_VALUES`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping

from tests.support.paths import CHART

BARE_API_VALUES = {"crds": {"install": False}, "hooks": {"cleanup": False, "reapply": False}}
CRDS = (
    "imagepolicies.imagegate.dev",
    "imagerebuilds.imagegate.dev",
    "clusterkopfpeerings.kopf.dev",
    "kopfpeerings.kopf.dev",
)


def apply_chart_crds(helm: str, env: Mapping[str, str]) -> None:
    """Apply the chart's CRDs (as `crds.install` renders them) and wait until they are served.

    Forced: an earlier module's release may own them (the CRDs are kept on uninstall)."""
    rendered = subprocess.run(
        [helm, "template", "crds", str(CHART), "--show-only", "templates/crds.yaml"],
        capture_output=True, text=True, timeout=120, check=True, env=dict(env),
    ).stdout  # fmt: skip
    for args, stdin in (
        (
            [
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=imagegate-tests",
                "-f",
                "-",
            ],
            rendered,
        ),
        (
            ["wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{c}" for c in CRDS)],
            None,
        ),
    ):
        done = subprocess.run(
            ["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=120,
            check=False, env=dict(env),
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:2])}: {done.stderr.strip()}")
