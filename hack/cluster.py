"""Start, stop and show a local control plane (etcd + kube-apiserver), from a shell.

The processes keep running after ``up`` returns (pid files in STATE); the harness itself is
``tests/support/cluster.py``, which the e2e tests, the bench and ``make demo`` use::

    python hack/cluster.py up [--state DIR]       # prints `export KUBECONFIG=...`
    python hack/cluster.py status [--state DIR]
    python hack/cluster.py down [--state DIR]

STATE defaults to ``$IMAGEGATE_STATE/cluster`` (``/tmp/imagegate/cluster``). ``make cluster-up``,
``make cluster-down`` and ``make cluster-status`` run these.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a script: hack/ is on the path

from tests.support import cluster as harness


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hack/cluster.py", description="A local etcd + kube-apiserver for imagegate."
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--state", type=Path, default=None, help="state dir (default $IMAGEGATE_STATE/cluster)"
    )
    args = parser.parse_args(argv)
    state: Path = (args.state or harness.default_state()).resolve()
    try:
        if args.command == "up":
            if (state / harness.STATE_FILE).exists():
                existing = harness.load_cluster(state)
                if existing.alive() and existing.readyz()[0]:
                    print(f"# already running: {existing.server}", file=sys.stderr)
                    print(f"export KUBECONFIG={existing.kubeconfig}")
                    return 0
            cluster = harness.start_cluster(state).detach()
            print(
                f"# kube-apiserver {cluster.server} ready in {cluster.start_seconds:.1f}s; "
                f"logs in {cluster.log_dir}; stop with: python hack/cluster.py down "
                f"--state {state}",
                file=sys.stderr,
            )
            print(f"export KUBECONFIG={cluster.kubeconfig}")
        elif args.command == "down":
            if not (state / harness.STATE_FILE).exists():
                print(f"no cluster recorded in {state}", file=sys.stderr)
                return 0
            harness.load_cluster(state).stop()
            print(f"stopped the cluster of {state}", file=sys.stderr)
        else:
            cluster = harness.load_cluster(state)
            ready, detail = cluster.readyz()
            alive = cluster.alive()
            print(f"server:     {cluster.server}")
            print(f"kubeconfig: {cluster.kubeconfig}")
            print(f"logs:       {cluster.log_dir}")
            print(f"processes:  {'running' if alive else 'NOT all running'}")
            print(f"readyz:     {'ok' if ready else detail}")
            return 0 if alive and ready else 1
    except harness.ClusterError as e:
        print(f"hack/cluster.py {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
