"""Workloads as users apply them on kind: the webhook decides about the Pods the ReplicaSet
controller makes, and what it admits really runs on the kubelet, as the user imagegate said."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.kind.conftest import Release, fresh_namespace
from tests.kind.harness import Kind, container_state
from tests.support.manifests import deployment, pod

DENIED = 'admission webhook "validate.imagegate.dev" denied the request'


def imagegate_check(ref: str, base: str) -> dict[str, Any]:
    """``imagegate check REF --output json`` on the host, the fixtures' base approved."""
    done = subprocess.run(
        [sys.executable, "-m", "webhook", "check", ref, "--allow-base", base, "--output", "json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    (result,) = json.loads(done.stdout)["results"]
    return dict(result)


def test_a_compliant_deployment_gets_controller_made_pods_running_the_checked_digest(
    kind: Kind, namespace: str, kind_images: dict[str, str]
) -> None:
    good = kind_images["good"]
    checked = imagegate_check(good, kind_images["base"])
    assert checked["verdict"] == "pass", checked

    answer = kind.apply(deployment("web", good), namespace)
    assert answer.returncode == 0, answer.stderr

    (made,) = kind.wait_selector_ready(namespace, "app=web", 1)
    meta = made["metadata"]
    assert meta["generateName"].startswith("web-")
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["controller"]) == ("ReplicaSet", True)
    (container,) = made["spec"]["containers"]
    assert container["image"] == f"{good}@{checked['digest']}"  # repo:tag@sha256:…, pinned
    (status,) = made["status"]["containerStatuses"]
    assert status["imageID"].endswith(checked["digest"]), "the kubelet pulled the checked digest"


def test_a_root_deployment_is_refused_at_apply_with_the_fix(
    kind: Kind, namespace: str, kind_images: dict[str, str]
) -> None:
    answer = kind.apply(deployment("root", kind_images["root-script"]), namespace)
    assert answer.returncode != 0
    assert DENIED in answer.stderr
    assert "non-root-user" in answer.stderr
    assert "USER 65532:65532" in answer.stderr
    assert kind.kubectl("get", "deployment", "root", "-n", namespace, check=False).returncode


def test_pods_the_replicaset_controller_makes_of_a_root_image_are_denied_with_the_reason(
    kind: Kind, release: Release, kind_images: dict[str, str]
) -> None:
    """The Deployment is admitted while its namespace opts out (the API server does not even
    call the webhook); once the namespace opts in, the controller's next Pod is denied and the
    ReplicaSet's FailedCreate event carries imagegate's message."""
    with fresh_namespace(kind, {"imagegate.dev/ignore": "true"}) as namespace:
        answer = kind.apply(deployment("legacy", kind_images["root-script"]), namespace)
        assert answer.returncode == 0, answer.stderr
        kind.wait_selector_ready(namespace, "app=legacy", 1)

        kind.kubectl("label", "namespace", namespace, "imagegate.dev/ignore-")
        kind.kubectl("scale", "deployment/legacy", "--replicas=2", "-n", namespace)

        def denial() -> str | None:
            for event in kind.events(namespace):
                involved = event["involvedObject"]
                if involved["kind"] == "ReplicaSet" and event["reason"] == "FailedCreate":
                    return str(event["message"])
            return None

        message = kind.wait_for(
            "the ReplicaSet's FailedCreate event", denial, 60, lambda: kind.diagnose(namespace)
        )
        assert DENIED in message
        assert "non-root-user" in message
        assert len(kind.items("pods", namespace, "app=legacy")) == 1


def test_an_admitted_pod_runs_as_the_uid_imagegate_reported(
    kind: Kind, namespace: str, kind_images: dict[str, str]
) -> None:
    checked = imagegate_check(kind_images["good"], kind_images["base"])
    uid = checked["facts"]["user"].split(":")[0]
    assert uid == "65532", checked["facts"]

    answer = kind.apply(pod("web", kind_images["good"]), namespace)
    assert answer.returncode == 0, answer.stderr
    kind.wait_pod(namespace, "web")

    exec_id = kind.exec("web", namespace, "id", "-u")
    assert exec_id.returncode == 0, exec_id.stderr
    assert exec_id.stdout.strip() == uid
    status = kind.exec("web", namespace, "cat", "/proc/1/status").stdout  # the entrypoint
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert set(uids) == {uid}, status


@pytest.mark.parametrize(
    ("fixture", "imagegate_says", "kubelet_says"),
    [
        pytest.param(
            "named-user",
            "image has non-numeric user (nobody), cannot verify user is non-root",
            "image has non-numeric user (nobody), cannot verify user is non-root",
            id="named-user",
        ),
        pytest.param("zero", "runs as uid 0", "image will run as root", id="uid-0"),
    ],
)
def test_the_kubelets_run_as_non_root_refusal_matches_what_non_root_user_says(
    kind: Kind,
    audit_namespace: str,
    kind_images: dict[str, str],
    fixture: str,
    imagegate_says: str,
    kubelet_says: str,
) -> None:
    """In audit mode the Pod is admitted with imagegate's warning; the kubelet then refuses to
    start the container for the same reason."""
    strict = pod("strict", kind_images[fixture], securityContext={"runAsNonRoot": True})
    answer = kind.apply(strict, audit_namespace)
    assert answer.returncode == 0, answer.stderr
    warnings = [line for line in answer.stderr.splitlines() if "non-root-user" in line]
    assert warnings, answer.stderr
    assert imagegate_says in warnings[0]

    def refused() -> dict[str, Any] | None:
        waiting = container_state(kind.get("pod", "strict", audit_namespace)).get("waiting")
        return waiting if (waiting or {}).get("reason") == "CreateContainerConfigError" else None

    waiting = kind.wait_for(
        "the kubelet to refuse the container", refused, 90, lambda: kind.diagnose(audit_namespace)
    )
    assert kubelet_says in waiting["message"]
