"""End-to-end harness: a real control plane (etcd + kube-apiserver, ``hack/cluster.py``).

Session fixture (request it by name from any test under ``tests/e2e``):

* ``cluster`` — a started ``hack.cluster.Cluster``: ``.kubeconfig`` (admin, ``system:masters``
  client cert), ``.server`` (``https://127.0.0.1:PORT``), ``.ca_path``, ``.log_dir``,
  ``.start_seconds``, ``.kubectl(*args, kubeconfig=None, input=None, check=True)``,
  ``.env(kubeconfig=None)`` (environment with ``KUBECONFIG``),
  ``.serviceaccount_kubeconfig(namespace, name)`` (a TokenRequest token kubeconfig for that
  ServiceAccount, created if missing, no permissions until bound). Started once per session,
  stopped at its end; its state dir (PKI, logs, kubeconfigs) is removed when every test passed
  and kept — its path printed in the summary — when one failed.

Function fixture:

* ``namespace`` — a fresh namespace (``e2e-<random>``) for the test; deleted afterwards without
  waiting (no controller-manager runs, so it stays ``Terminating`` in etcd: harmless).

The binaries come from ``hack/build-tools.sh`` (or ``$IMAGEGATE_TOOLS_BIN``,
``$KUBEBUILDER_ASSETS``). Missing ones skip these tests with the reason locally and fail them
under ``CI=true`` (DESIGN.md §5), via ``tests/conftest.py``'s ``missing_part``.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator

import pytest

from hack.cluster import BinaryNotFoundError, Cluster, ClusterError, start_cluster
from tests.conftest import missing_part

_SUMMARY = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SUMMARY] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(_SUMMARY, [])
    if lines:
        terminalreporter.section("e2e control plane")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """etcd + kube-apiserver on free loopback ports for the whole session (see module doc)."""
    summary = request.config.stash[_SUMMARY]
    state = tmp_path_factory.mktemp("cluster")
    try:
        started = start_cluster(state)
    except BinaryNotFoundError as e:
        missing_part(str(e))
    except ClusterError as e:
        summary.append(f"control plane failed to start; logs kept in {state / 'logs'}")
        pytest.fail(f"could not start the control plane: {e}", pytrace=False)
    version = started.kubectl("version", "-o", "json", check=False).stdout
    server_version = _server_git_version(version)
    summary.append(
        f"etcd + kube-apiserver {server_version} ({started.server}) "
        f"ready in {started.start_seconds:.1f}s"
    )
    failed_before = request.session.testsfailed
    try:
        yield started
    finally:
        started.stop()
        if request.session.testsfailed > failed_before:
            summary.append(f"a test failed: control plane logs kept in {started.log_dir}")
        else:
            shutil.rmtree(state, ignore_errors=True)


def _server_git_version(kubectl_version_json: str) -> str:
    try:
        return str(json.loads(kubectl_version_json)["serverVersion"]["gitVersion"])
    except (ValueError, KeyError, TypeError):
        return "(unknown version)"


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace for one test."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
