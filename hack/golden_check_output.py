"""Write tests/golden/report/check-output.json from real `imagegate check` output.

    .venv/bin/python hack/golden_check_output.py [--out PATH]

Starts a throwaway registry (the test harness's, ``tests/support/registry.py``), builds and
pushes the fixture images with the Docker engine (``tests/fixtures/images.py``), runs
``imagegate check --output json`` on the images of ``tests.support.check_golden.CHECKED`` as a
user would, and writes the output normalised (registry host and digests, which change with
every run: see ``tests/support/check_golden.py``). Then regenerate what is derived from it and
review the diff::

    IMAGEGATE_UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/unit/test_report_render.py \
        tests/unit/test_report_policyreport.py
    git diff tests/golden/report/

``tests/integration/test_report_golden_chain.py`` runs the same check in the test suite and
fails when the file is no longer what the CLI prints (sizes aside): run this script then.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a script: hack/ is on the path

from tests.fixtures.images import build_fixtures
from tests.support.check_golden import GOLDEN, check_refs, normalise, policy_text, run_check
from tests.support.registry import start_registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/golden_check_output.py", description=__doc__)
    parser.add_argument("--out", type=Path, default=GOLDEN, help=f"default: {GOLDEN}")
    args = parser.parse_args(argv)

    import docker  # a project dependency; imported here so that --help works without an engine

    client = docker.from_env(timeout=300)
    with tempfile.TemporaryDirectory(prefix="imagegate-golden-") as tmp:
        work = Path(tmp)
        with start_registry(work / "registry") as registry:
            fixtures = build_fixtures(client, registry.host)
            refs = check_refs(client, registry.host)
            policy = work / "policy.yaml"
            policy.write_text(policy_text(fixtures["base"]), encoding="utf-8")
            done = run_check(refs, policy)
            if done.returncode not in (0, 1, 2) or not done.stdout.strip():
                print(f"imagegate check failed (exit {done.returncode}):\n{done.stderr}")
                return 1
            text = normalise(done.stdout, registry.host)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} (imagegate check exit {done.returncode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
