"""`imagegate operator` against the real API server, with the chart's operator ServiceAccount.

It reconciles ImageRebuilds into compliant replacements pushed to the real registry, two
replicas never rebuild the same image twice (kopf peering), and the webhook then swaps the
replacement into new Pods that use the old image.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import AUDIT_LABEL, SYSTEM, Install
from tests.support.manifests import image_policy, image_rebuild, pod
from tests.support.processes import LoggedProcess, spawn

pytestmark = pytest.mark.integration

Operator = LoggedProcess


def start_operator(installed: Install, name: str, priority: int) -> Operator:
    account = installed.kubectl(
        "get", "serviceaccounts", "-n", SYSTEM, "-l", "app.kubernetes.io/component=operator",
        "-o", "jsonpath={.items[0].metadata.name}",
    ).stdout.strip()  # fmt: skip
    kubeconfig = installed.cluster.serviceaccount_kubeconfig(SYSTEM, account)
    log = installed.directory / f"operator-{name}.log"
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "IMAGEGATE_OPERATOR_SCAN_SECONDS": "3",
        "IMAGEGATE_WEBHOOK_POLICY_REFRESH_SECONDS": "1",
    }
    argv = [sys.executable, "-m", "webhook", "operator", "--all-namespaces",
            "--peering=imagegate", f"--priority={priority}", "--log-format=text"]  # fmt: skip
    return spawn(f"operator-{name}", argv, log, env=env)


@pytest.fixture(scope="module")
def operators(installed: Install) -> Iterator[list[Operator]]:
    """Two replicas sharing the chart's peering object, as an HA install runs them."""
    running = [start_operator(installed, "a", 100), start_operator(installed, "b", 200)]
    time.sleep(3)
    for op in running:
        assert op.alive(), op.logs()
    yield running
    for op in running:
        op.stop(20)


def wait_for_phase(
    installed: Install, namespace: str, name: str, timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = json.loads(
            installed.kubectl("get", "imagerebuild", name, "-n", namespace, "-o", "json").stdout
        )
        status = obj.get("status") or {}
        if status.get("phase") in ("Succeeded", "PartiallyFixed", "Failed", "Unfixable"):
            return status
        time.sleep(0.5)
    pytest.fail(f"ImageRebuild {namespace}/{name} never finished: {status}")


def test_an_image_rebuild_is_reconciled_once_and_swapped_into_new_pods(
    installed: Install,
    operators: list[Operator],
    namespace: str,
    fixture_images: dict[str, str],
) -> None:
    source = fixture_images["root-script"]
    target = source.rsplit(":", 1)[0] + "-fixed"
    answer = installed.apply(image_rebuild("fix-root", source, target), "-n", namespace)
    assert answer.returncode == 0, answer.stderr
    status = wait_for_phase(installed, namespace, "fix-root")
    assert status["phase"] == "Succeeded", status
    assert status["replacement"].startswith(f"{target}@sha256:")
    # layer-efficiency fails too once this machine has indexed the fixture's layers
    # (deepInspection: cachedOnly); the rebuild then squashes as well
    assert status["before"]["verdict"] == "fail"
    assert set(status["before"]["failedRules"]) - {"layer-efficiency"} == {"non-root-user"}
    assert status["after"] == {"verdict": "pass", "failedRules": []}
    assert status["conditions"][0]["type"] == "Ready"
    assert status["conditions"][0]["status"] == "True"

    rebuilt = [op.logs().count(f"ImageRebuild {namespace}/fix-root") for op in operators]
    assert sorted(rebuilt) == [0, 1], "two replicas must never rebuild the same image twice"

    events = installed.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=fix-root",
        "-o", "jsonpath={.items[*].reason}",
    ).stdout  # fmt: skip
    assert "Rebuilt" in events

    deadline = time.monotonic() + 15
    while True:
        swapped = installed.apply(
            pod(f"swap-{uuid.uuid4().hex[:6]}", source), "-n", namespace, "-o", "json"
        )
        if swapped.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)  # the webhook re-reads ImageRebuilds every second or so
    assert swapped.returncode == 0, swapped.stderr
    stored = json.loads(swapped.stdout)
    assert stored["spec"]["containers"][0]["image"] == status["replacement"]
    record = json.loads(stored["metadata"]["annotations"]["imagegate.dev/mutations"])
    assert record[0]["why"] == "replacement"


def test_an_unfixable_image_is_reported_not_retried(
    installed: Install, operators: list[Operator], namespace: str, fixture_images: dict[str, str]
) -> None:
    source = fixture_images["shell-chain"]
    target = source.rsplit(":", 1)[0] + "-fixed"
    installed.apply(image_rebuild("chain", source, target), "-n", namespace)
    status = wait_for_phase(installed, namespace, "chain")
    assert status["phase"] == "Unfixable"
    assert "&" in status["message"]


def test_a_partially_fixed_image_is_pushed_reported_and_never_swapped_in(
    installed: Install, operators: list[Operator], namespace: str, fixture_images: dict[str, str]
) -> None:
    """Only the size fix is asked for: the root image is squashed and pushed, but it still runs
    as root, so the webhook keeps refusing Pods of the source instead of swapping it in."""
    source = fixture_images["root-script"]
    target = source.rsplit(":", 1)[0] + "-partial"
    manifest = image_rebuild("partial", source, target)
    manifest["spec"]["fixes"] = ["sizeBudget"]
    assert installed.apply(manifest, "-n", namespace).returncode == 0
    status = wait_for_phase(installed, namespace, "partial")
    assert status["phase"] == "PartiallyFixed", status
    assert status["replacement"].startswith(f"{target}@sha256:")
    assert status["fixes"] == ["sizeBudget"]
    assert status["after"] == {"verdict": "fail", "failedRules": ["non-root-user"]}
    [still] = status["stillFailing"]
    assert still["rule"] == "non-root-user"
    assert "nonRootUser fix was not asked for" in still["reason"]
    assert status["conditions"][0]["status"] == "False"
    events = installed.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=partial",
        "-o", "jsonpath={.items[*].reason}",
    ).stdout  # fmt: skip
    assert "PartiallyFixed" in events

    time.sleep(3)  # the webhook re-reads ImageRebuilds every half second
    refused = installed.apply(pod(f"partial-{uuid.uuid4().hex[:6]}", source), "-n", namespace)
    assert refused.returncode != 0, "a replacement that still fails was swapped in"
    assert "non-root-user" in refused.stderr


def test_a_rebuild_naming_a_missing_policy_fails_and_says_why(
    installed: Install, operators: list[Operator], namespace: str, fixture_images: dict[str, str]
) -> None:
    source = fixture_images["root-script"]
    manifest = image_rebuild("typo", source, source.rsplit(":", 1)[0] + "-fixed")
    manifest["spec"]["policy"] = "no-such-policy"
    installed.apply(manifest, "-n", namespace)
    status = wait_for_phase(installed, namespace, "typo")
    assert status["phase"] == "Failed"
    assert "no-such-policy" in status["message"]
    assert "runningBy" not in status


def test_the_background_audit_writes_policy_reports_and_events(
    installed: Install, operators: list[Operator], namespace: str, fixture_images: dict[str, str]
) -> None:
    installed.kubectl("label", "namespace", namespace, f"{AUDIT_LABEL}=audit")
    audit = image_policy(
        f"audit-{namespace}", {"namespaces": [namespace]}, fixture_images["base"],
        remediation={"auto": True},
    )  # fmt: skip
    assert installed.apply(audit).returncode == 0
    legacy_pod = pod("legacy", fixture_images["zero"])
    legacy_pod["spec"]["imagePullSecrets"] = [{"name": "legacy-pull"}]  # need not exist
    deadline = time.monotonic() + 20
    while True:  # the webhook re-reads policies every half second
        legacy = installed.apply(legacy_pod, "-n", namespace)
        if legacy.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert legacy.returncode == 0, legacy.stderr
    deadline = time.monotonic() + 60
    results: list[dict[str, Any]] = []
    reasons = ""
    while time.monotonic() < deadline:
        got = installed.kubectl("get", "policyreports", "-n", namespace, "-o", "json", check=False)
        items = json.loads(got.stdout).get("items", []) if got.returncode == 0 else []
        results = [r for item in items for r in item.get("results", [])]
        reasons = installed.kubectl(
            "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=legacy",
            "-o", "jsonpath={.items[*].message}",
        ).stdout  # fmt: skip
        if "non-root-user" in reasons and any(
            r["resources"][0]["name"] == "legacy" for r in results
        ):
            break
        time.sleep(1)
    failed = {r["rule"] for r in results if r["result"] == "fail"}
    assert "non-root-user" in failed, results
    assert "non-root-user" in reasons, "the scan puts a Warning Event on the workload"

    # remediation.auto: the scan asked for a rebuild of the failing image, and it succeeded
    deadline = time.monotonic() + 90
    rebuilds: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rebuilds = json.loads(
            installed.kubectl("get", "imagerebuilds", "-n", namespace, "-o", "json").stdout
        )["items"]
        if rebuilds and (rebuilds[0].get("status") or {}).get("phase") == "Succeeded":
            break
        time.sleep(1)
    assert [r["metadata"]["name"][:5] for r in rebuilds] == ["auto-"], rebuilds
    assert rebuilds[0]["spec"]["source"].startswith(fixture_images["zero"] + "@sha256:")
    # the source is read with what the pod pulls with, never the operator's own credentials
    assert rebuilds[0]["spec"]["imagePullSecrets"] == ["legacy-pull"], rebuilds[0]["spec"]
    assert rebuilds[0]["status"]["phase"] == "Succeeded", rebuilds[0]["status"]

    # and `imagegate report` reads what the operator wrote, or scans the cluster itself
    env = {**os.environ, "KUBECONFIG": str(installed.cluster.kubeconfig)}
    for source in ("--from-cluster", "--scan"):
        done = subprocess.run(
            [sys.executable, "-m", "webhook", "report", source, "--output", "json"],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        rows = json.loads(done.stdout)
        assert namespace in json.dumps(rows), source
        assert "non-root-user" in json.dumps(rows), source


def test_the_operator_only_reads_policies_and_only_the_working_replica_scans(
    installed: Install, operators: list[Operator], namespace: str, fixture_images: dict[str, str]
) -> None:
    standby, working = operators  # priorities 100 and 200: the higher one works
    # "a" started first and may have scanned alone for a moment: only what follows counts
    before = {op.name: len(op.logs()) for op in operators}
    policy = image_policy(
        f"watched-{namespace}", {"namespaces": [namespace]}, fixture_images["base"]
    )
    assert installed.apply(policy).returncode == 0
    time.sleep(7)  # two scan periods, and a policy change
    meta = json.loads(
        installed.kubectl("get", "imagepolicy", f"watched-{namespace}", "-o", "json").stdout
    )["metadata"]
    assert not meta.get("finalizers"), meta  # a stopped operator cannot hold up a deletion
    assert not [k for k in meta.get("annotations", {}) if k.startswith("imagegate.dev/")], meta
    account = "system:serviceaccount:" + SYSTEM + ":" + installed.kubectl(
        "get", "serviceaccounts", "-n", SYSTEM, "-l", "app.kubernetes.io/component=operator",
        "-o", "jsonpath={.items[0].metadata.name}",
    ).stdout.strip()  # fmt: skip
    for verb in ("patch", "update", "delete"):
        can = installed.kubectl(
            "auth", "can-i", verb, "imagepolicies", "--as", account, check=False
        )
        assert can.stdout.strip() == "no", (verb, can.stdout)
    assert installed.kubectl("delete", "imagepolicy", f"watched-{namespace}", "--wait=true",
                             "--timeout=10s").returncode == 0  # fmt: skip

    assert "scan done" in working.logs()[before[working.name] :], working.log_tail()
    assert "scan done" not in standby.logs()[before[standby.name] :], standby.log_tail()
