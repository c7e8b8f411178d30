"""`make bench`: warm admission throughput of imagegate against bare FastAPI and bare Starlette.

Three servers, each one uvicorn worker (uvloop + httptools, HTTPS with the same certificate):
imagegate `serve`, the allow-all FastAPI app (`bench/bare_app.py`) and the same endpoint on
bare Starlette (`bench/bare_starlette.py`). wrk (one thread, leaving the other core to the
server) posts a realistic Pod review (`realistic_pod_review`) that passes and one that is
denied (an image running as root), over 1 and 16 connections. The bare apps admit both; for
imagegate the verdicts are checked once before measuring, which also warms its caches. Every
round runs every (review, connections, server) cell, servers in a rotating order, so the noise
of a shared machine hits all three; medians over rounds are compared.

Besides req/s, each cell reports the server's own CPU time per request (from /proc): on a
shared machine, throughput moves with the neighbours' load, CPU per request much less.

Targets (issue 17): imagegate ≥ 1.1 × bare FastAPI at 1 and 16 connections on both reviews,
and p99 ≤ 5 ms at 16 connections. Exit 1 when one is missed.

    python bench/bench_warm.py [--seconds 4] [--rounds 3] [--gate-src DIR] [--baseline-src DIR]

`--gate-src DIR` runs the `webhook` package found in DIR instead of this tree's;
`--baseline-src DIR` adds the `webhook` package in DIR (an older copy) as a fourth server in
the same rounds, for a before/after comparison under the same noise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import httpx  # noqa: E402

from bench.wrk import median, wrk  # noqa: E402
from tests.fixtures.images import build_fixtures  # noqa: E402
from tests.integration.reviews import realistic_pod_review  # noqa: E402
from tests.support.processes import LoggedProcess, free_port, spawn  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402

RATIO_TARGET = 1.1
P99_TARGET_MS = 5.0
CONNECTIONS = (1, 16)
REVIEWS = ("pass", "deny")
BASELINE = "imagegate (baseline)"


@dataclass(frozen=True)
class Target:
    name: str
    url: str  # the /validate URL
    pid: int  # the server process, whose CPU time per request is measured

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used so far (noise from other processes on
        the machine slows it down but hardly changes this)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait(url: str, ca: Path, proc: LoggedProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    context = ssl.create_default_context(cafile=str(ca))
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.logs()}")
        try:
            httpx.get(url, verify=context)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up:\n{proc.logs()}")


@contextmanager
def _imagegate(
    state: Path, policy: Path, gate_src: Path | None, name: str = "imagegate"
) -> Iterator[Target]:
    """`imagegate serve`, from this tree or from `gate_src`: the first one started makes the
    certificate (`--self-signed`), later ones serve the same files."""
    port = free_port()
    src = str(gate_src or ROOT)
    boot = (
        f"import sys, runpy; sys.path.insert(0, {src!r}); "
        "runpy.run_module('webhook', run_name='__main__')"
    )
    tls = state / "tls"
    if (tls / "tls.key").exists():
        certs = ["--tls-cert", str(tls / "tls.crt"), "--tls-key", str(tls / "tls.key")]
    else:
        certs = ["--self-signed", "--san", "127.0.0.1", "--cert-dir", str(tls)]
    argv = [sys.executable, "-c", boot, "serve", *certs, "--host", "127.0.0.1",
            "--port", str(port), "--policy", str(policy), "--log-format", "json"]  # fmt: skip
    env = {**os.environ, "IMAGEGATE_WEBHOOK_KUBERNETES": "off",
           "IMAGEGATE_WEBHOOK_METRICS_PORT": "0"}  # fmt: skip
    log_name = name.replace(" ", "-").replace("(", "").replace(")", "")
    proc = spawn(name, argv, state / f"{log_name}.log", env=env)
    try:
        deadline = time.monotonic() + 30
        while not (tls / "tls.key").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        base = f"https://127.0.0.1:{port}"
        _wait(f"{base}/healthz", tls / "ca.crt", proc)
        yield Target(name, f"{base}/validate", proc.pid)
    finally:
        proc.stop(10)


@contextmanager
def _bare(state: Path, name: str, module: str) -> Iterator[Target]:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", module, "--port", str(port), "--loop", "uvloop",
            "--http", "httptools", "--no-access-log", "--log-level", "warning",
            "--ssl-certfile", str(state / "tls/tls.crt"),
            "--ssl-keyfile", str(state / "tls/tls.key")]  # fmt: skip
    proc = spawn(name, argv, state / f"{module}.log")
    try:
        base = f"https://127.0.0.1:{port}"
        _wait(f"{base}/docs", state / "tls" / "ca.crt", proc)
        yield Target(name, f"{base}/validate", proc.pid)
    finally:
        proc.stop(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--gate-src", type=Path, default=None, help="directory with `webhook/`")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="also run the `webhook/` in this directory, as 'imagegate (baseline)', in the "
        "same alternating rounds (a before/after comparison under the same noise)",
    )
    args = parser.parse_args()
    os.chdir(ROOT)  # uvicorn imports bench.bare_app from the working directory
    if shutil.which("wrk") is None:
        print("wrk is not installed: run hack/install-deps.sh", file=sys.stderr)
        return 2
    runs: dict[tuple[str, int, str], list[tuple[float, float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="imagegate-bench-warm-") as tmp, ExitStack() as stack:
        state = Path(tmp)
        registry = start_registry(state / "registry")
        stack.callback(registry.stop)
        refs = build_fixtures(docker.from_env(timeout=300), registry.host)
        policy = state / "policy.yaml"
        policy.write_text(
            "apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: bench}\n"
            "spec:\n  mode: enforce\n  rules:\n"
            f"    allowedBases: {{references: ['{refs['base']}']}}\n"
        )
        bodies = {"pass": state / "pass.json", "deny": state / "deny.json"}
        bodies["pass"].write_text(json.dumps(realistic_pod_review(refs["good"])))
        bodies["deny"].write_text(json.dumps(realistic_pod_review(refs["zero"])))
        gate = stack.enter_context(_imagegate(state, policy, args.gate_src))
        targets = [
            gate,
            stack.enter_context(_bare(state, "bare FastAPI", "bench.bare_app:app")),
            stack.enter_context(_bare(state, "bare Starlette", "bench.bare_starlette:app")),
        ]
        if args.baseline_src is not None:
            baseline = _imagegate(state, policy, args.baseline_src, BASELINE)
            targets.append(stack.enter_context(baseline))
        trust = ssl.create_default_context(cafile=str(state / "tls" / "ca.crt"))
        for review, allowed in (("pass", True), ("deny", False)):  # real verdicts, warm caches
            for target in targets:
                if target.name.startswith("imagegate"):
                    answer = httpx.post(
                        target.url, content=bodies[review].read_bytes(), verify=trust
                    )
                    assert answer.json()["response"]["allowed"] is allowed, answer.text
        for round_ in range(args.rounds):
            for review in REVIEWS:
                for connections in CONNECTIONS:
                    shift = round_ % len(targets)  # rotate who goes first
                    for target in targets[shift:] + targets[:shift]:
                        key = (review, connections, target.name)
                        cpu = target.cpu_seconds()
                        rps, p50, p99 = wrk(target.url, bodies[review], connections, args.seconds)
                        used = (target.cpu_seconds() - cpu) / (rps * args.seconds) * 1e6
                        runs.setdefault(key, []).append((rps, p50, p99, used))
    return report(runs, args.rounds, args.seconds, [t.name for t in targets])


def report(
    runs: dict[tuple[str, int, str], list[tuple[float, float, float, float]]],
    rounds: int,
    seconds: float,
    servers: list[str],
) -> int:
    """Print the medians and ratios; 0 when every target of issue 17 is met."""
    ok = True
    print(
        f"warm /validate, {rounds} alternating rounds of {seconds:g} s per cell, 1 worker each, "
        "HTTPS, wrk -t1"
    )
    for review in REVIEWS:
        for connections in CONNECTIONS:
            med = {
                name: tuple(
                    median([r[i] for r in runs[(review, connections, name)]]) for i in range(4)
                )
                for name in servers
            }
            print(f"  {review} review, {connections} connection(s):")
            for name in servers:
                rps, p50, p99, cpu = med[name]
                each = ", ".join(f"{r[0]:,.0f}" for r in runs[(review, connections, name)])
                print(
                    f"    {name:20} {rps:8,.0f} req/s  p50 {p50:5.2f} ms  p99 {p99:5.2f} ms  "
                    f"server CPU {cpu:4.0f} µs/req  ({each})"
                )
            vs_fastapi = med["imagegate"][0] / med["bare FastAPI"][0]
            vs_starlette = med["imagegate"][0] / med["bare Starlette"][0]
            p99 = med["imagegate"][2]
            cpu_ratio = med["bare FastAPI"][3] / med["imagegate"][3]
            verdicts = [
                f"imagegate/FastAPI {vs_fastapi:.2f}",
                f"imagegate/Starlette {vs_starlette:.2f}",
                f"FastAPI CPU/imagegate CPU per request {cpu_ratio:.2f}",
            ]
            if BASELINE in med:
                verdicts.append(f"imagegate/baseline {med['imagegate'][0] / med[BASELINE][0]:.2f}")
            ok &= vs_fastapi >= RATIO_TARGET
            if connections == 16:
                verdicts.append(f"p99 {p99:.2f} ms")
                ok &= p99 <= P99_TARGET_MS
            print(f"    ratios: {'; '.join(verdicts)}")
    print(
        f"targets: imagegate/FastAPI ≥ {RATIO_TARGET} everywhere, p99 ≤ {P99_TARGET_MS:g} ms at "
        f"16 connections: {'met' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
