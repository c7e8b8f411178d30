"""The operator closes the loop on kind: it rebuilds a root image into a compliant replacement
in the local registry, /mutate swaps it into a new Pod, and that Pod serves as non-root."""

from __future__ import annotations

import json
import uuid

from tests.kind.harness import Kind
from tests.support.manifests import image_rebuild, pod

PAGE = "served by a rebuilt image\n"


def test_a_rebuilt_root_image_is_swapped_into_a_new_pod_that_serves_as_non_root(
    kind: Kind, namespace: str, kind_images: dict[str, str]
) -> None:
    source = kind_images["root-script"]
    target = f"{kind.registry}/kind/root-script-{uuid.uuid4().hex[:6]}"
    web = pod("web", source)
    web["metadata"]["labels"] = {"app": "web"}
    web["spec"]["containers"][0]["volumeMounts"] = [{"name": "www", "mountPath": "/www"}]
    web["spec"]["volumes"] = [{"name": "www", "configMap": {"name": "www"}}]

    before = kind.apply(web, namespace)
    assert before.returncode != 0, "without a replacement the root image is denied"
    assert "non-root-user" in before.stderr

    answer = kind.apply(image_rebuild("fix-root", source, target), namespace)
    assert answer.returncode == 0, answer.stderr
    status = kind.wait_rebuilt(namespace, "fix-root")
    assert status["phase"] == "Succeeded", status
    assert status["replacement"].startswith(f"{target}@sha256:")
    # the operator reads layers: Dive counts the entrypoint, copied then chmod-ed, as waste
    assert set(status["before"]["failedRules"]) - {"layer-efficiency"} == {"non-root-user"}
    assert status["after"] == {"verdict": "pass", "failedRules": []}
    reasons = [e["reason"] for e in kind.events(namespace, "fix-root")]
    assert "Rebuilt" in reasons, reasons

    page = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "www"},
            "data": {"index.html": PAGE}}  # fmt: skip
    assert kind.apply(page, namespace).returncode == 0

    def swapped_in() -> bool:  # the webhook re-reads succeeded ImageRebuilds every few seconds
        return kind.apply(web, namespace).returncode == 0

    kind.wait_for(
        "the webhook to admit the Pod with the replacement swapped in",
        swapped_in,
        30,
        lambda: kind.apply(web, namespace, "--dry-run=server").stderr,
        interval=2,
    )
    stored = kind.wait_pod(namespace, "web")
    assert stored["spec"]["containers"][0]["image"] == status["replacement"]
    record = json.loads(stored["metadata"]["annotations"]["imagegate.dev/mutations"])
    assert [m["why"] for m in record] == ["replacement"], record

    proc = kind.exec("web", namespace, "cat", "/proc/1/status").stdout  # httpd, the entrypoint
    uids = next(line for line in proc.splitlines() if line.startswith("Uid:")).split()[1:]
    assert set(uids) == {"65532"}, proc

    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 8080, "targetPort": 8080}]},
    }
    assert kind.apply(service, namespace).returncode == 0
    assert kind.apply(pod("client", kind_images["good"]), namespace).returncode == 0
    kind.wait_pod(namespace, "client")
    url = f"http://web.{namespace}.svc:8080/index.html"

    def served() -> str | None:
        got = kind.exec("client", namespace, "wget", "-q", "-O", "-", url)
        return got.stdout if got.returncode == 0 else None

    def diagnosis() -> str:
        return kind.exec("client", namespace, "wget", "-O", "-", url).stderr + kind.diagnose(
            namespace
        )

    body = kind.wait_for(f"{url} to answer through the Service", served, 60, diagnosis)
    assert body == PAGE
