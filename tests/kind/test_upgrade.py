"""`helm upgrade` of a running release, to HA values (two webhook replicas with soft
anti-affinity on our one node, two operator replicas) and a changed Pod annotation that rolls
every Pod: admission keeps working during the rollout, TLS is kept, both webhook replicas
serve, and the two operators share the work through kopf peering without ever rebuilding the
same image twice."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.kind.conftest import Release, fresh_namespace
from tests.kind.harness import SYSTEM, Kind
from tests.support.manifests import image_rebuild, pod

HA = ("webhook.replicas=2", "webhook.podAntiAffinity=soft", "operator.replicas=2")
DENIED = 'admission webhook "validate.imagegate.dev" denied the request'


@dataclass
class Load:
    """Pods created (server-side dry run: the API server calls the webhooks, nothing is
    scheduled) in a loop: a good image must be admitted, a root image denied by imagegate.
    Anything else (`failed calling webhook`, timeouts, a wrong answer) is a failure."""

    kind: Kind
    namespace: str
    images: dict[str, str]
    answers: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            for name, admitted in (("good", True), ("root-script", False)):
                manifest = pod("", self.images[name])
                manifest["metadata"] = {"generateName": f"load-{name}-"}
                done = self.kind.create(manifest, self.namespace, "--dry-run=server")
                self.answers += 1
                if admitted and done.returncode != 0:
                    self.failures.append(f"{name} refused: {done.stderr.strip()}")
                elif not admitted and (done.returncode == 0 or DENIED not in done.stderr):
                    self.failures.append(f"{name} not denied by imagegate: {done.stderr.strip()}")


@dataclass
class Upgrade:
    load: Load
    seconds: float
    tls_before: dict[str, str]
    tls_after: dict[str, str]
    ca_bundles: set[str]


@pytest.fixture(scope="module")
def upgraded(
    kind: Kind, release: Release, kind_images: dict[str, str], summary: list[str]
) -> Upgrade:
    """The release upgraded to HA values and a rolled-out Pod template, under admission load."""
    secret = f"{release.deployment('webhook')}-tls"
    tls_before = kind.get("secret", secret, SYSTEM)["data"]
    rollout = uuid.uuid4().hex
    with fresh_namespace(kind, {}) as namespace:
        load = Load(kind, namespace, kind_images)
        worker = threading.Thread(target=load.run, name="admission load", daemon=True)
        worker.start()
        try:
            time.sleep(3)  # answers before the upgrade too
            started = time.monotonic()
            release.sets.extend(HA)
            release.upgrade(
                "--set", f"webhook.podAnnotations.kind\\.imagegate\\.dev/rollout={rollout}",
                "--set", f"operator.podAnnotations.kind\\.imagegate\\.dev/rollout={rollout}",
            )  # fmt: skip
            release.wait_ready("webhook")
            release.wait_ready("operator")
            seconds = time.monotonic() - started
            time.sleep(5)  # and after it, once the old Pods are gone
        finally:
            load.stop.set()
            worker.join(timeout=60)
    tls_after = kind.get("secret", secret, SYSTEM)["data"]
    bundles = {
        hook["clientConfig"]["caBundle"]
        for kind_name in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration")
        for hook in kind.get(kind_name, release.deployment("webhook"))["webhooks"]
    }
    summary.append(
        f"helm upgrade to HA values with a rollout: {seconds:.0f}s, {load.answers} admissions "
        f"meanwhile, {len(load.failures)} failed"
    )
    return Upgrade(load, seconds, tls_before, tls_after, bundles)


def test_no_admission_fails_while_the_upgrade_rolls_the_webhook_out(upgraded: Upgrade) -> None:
    load = upgraded.load
    assert load.answers >= 20, f"only {load.answers} admissions in {upgraded.seconds:.0f}s"
    assert load.failures == [], (
        f"{len(load.failures)} of {load.answers} admissions failed during the upgrade:\n"
        + "\n".join(load.failures[:10])
    )


def test_the_upgrade_keeps_the_tls_and_its_ca_in_the_webhook_configurations(
    upgraded: Upgrade, release: Release
) -> None:
    """The webhook's own Secret and the caBundle it patched in survive a rollout of every
    webhook Pod (new Pods reuse the Secret) and Helm's three-way merge (the chart never sets
    caBundle, so an upgrade does not blank it)."""
    assert upgraded.tls_after == upgraded.tls_before
    bundle = upgraded.tls_before.get("ca-bundle.crt", upgraded.tls_before["ca.crt"])
    assert upgraded.ca_bundles == {bundle}
    assert release.test() == "Succeeded"


def test_both_webhook_replicas_are_ready_and_serve(
    upgraded: Upgrade, kind: Kind, release: Release
) -> None:
    pods = release.wait_ready("webhook")
    assert len(pods) == 2
    assert len({p["metadata"]["name"] for p in pods}) == 2
    endpoints = kind.get("endpoints", release.deployment("webhook"), SYSTEM)
    addresses = {a["ip"] for s in endpoints.get("subsets", []) for a in s.get("addresses", [])}
    assert addresses == {p["status"]["podIP"] for p in pods}


def test_one_operator_replica_works_and_the_other_waits_through_kopf_peering(
    upgraded: Upgrade, kind: Kind, release: Release
) -> None:
    pods = release.wait_ready("operator")
    assert len(pods) == 2

    def peers() -> dict[str, Any]:
        return dict(kind.get("clusterkopfpeering", "imagegate").get("status") or {})

    names = [p["metadata"]["name"] for p in pods]

    def priorities() -> dict[str, int] | None:  # operator Pod → its kopf peering priority
        found = {
            n: int(v["priority"]) for i, v in peers().items() for n in names
            if i.startswith(f"nonroot@{n}/")
        }  # fmt: skip
        return found if len(found) == len(names) else None

    found = kind.wait_for(
        "both operator replicas in the ClusterKopfPeering", priorities, 60,
        lambda: f"peers: {peers()}",
    )  # fmt: skip
    assert len(set(found.values())) == 2, f"distinct priorities: {found}"
    low, high = sorted(found, key=found.__getitem__)

    def peering_state(pod: str) -> str:
        """kopf starts paused; it logs "Resuming operations" when it may work and "Pausing
        operations" when a peer with a higher priority appears."""
        text = release.logs("operator")[pod]
        pause, resume = text.rfind("Pausing operations"), text.rfind("Resuming operations")
        return "working" if resume > pause else "paused"

    kind.wait_for(
        f"{high} (higher priority) to work", lambda: peering_state(high) == "working", 60,
        lambda: release.logs("operator")[high][-3000:],
    )  # fmt: skip
    assert peering_state(low) == "paused", release.logs("operator")[low][-3000:]


def test_two_operator_replicas_never_rebuild_the_same_image_twice(
    upgraded: Upgrade, kind: Kind, release: Release, namespace: str, kind_images: dict[str, str]
) -> None:
    targets = {
        name: f"{kind.registry}/kind/ha-{name}-{uuid.uuid4().hex[:6]}"
        for name in ("zero", "root-script")
    }
    for name, target in targets.items():
        answer = kind.apply(image_rebuild(f"ha-{name}", kind_images[name], target), namespace)
        assert answer.returncode == 0, answer.stderr
    for name, target in targets.items():
        status = kind.wait_rebuilt(namespace, f"ha-{name}")
        assert status["phase"] == "Succeeded", status

        logs = release.logs("operator")
        line = f"for ImageRebuild {namespace}/ha-{name}"
        runs = {pod: text.count(line) for pod, text in logs.items()}
        assert sum(runs.values()) == 1, f"rebuilds per operator Pod: {runs}"

        events = kind.events(namespace, f"ha-{name}")
        rebuilt = [e for e in events if e["reason"] == "Rebuilt"]
        assert sum(int(e.get("count") or 1) for e in rebuilt) == 1, rebuilt

        repository = target.split("/", 1)[1]
        tags = httpx.get(f"http://{kind.registry}/v2/{repository}/tags/list", timeout=10).json()
        assert tags["tags"] == [status["replacementTag"].rsplit(":", 1)[1]], tags
