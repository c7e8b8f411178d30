"""`make demo`: imagegate end to end, on this machine.

1. A real registry on localhost:5001 and sample images (good and bad) built by the Docker engine.
2. `imagegate check` on them.
3. A cluster. kind when it can be had (IMAGEGATE_DEMO_CLUSTER=auto, the default: a kind
   cluster already runs, or the offline node image of hack/kind-node-image.sh is cached, or
   `registry:2` can be pulled): `make kind-up kind-load kind-install` as docs/kind.md says, the
   webhook and operator run as Pods and the kubelet runs what is admitted. Otherwise (or with
   IMAGEGATE_DEMO_CLUSTER=local) the local control plane (etcd + kube-apiserver,
   `hack/cluster.py`, or the cluster of KUBECONFIG), with the chart's webhook in url mode served
   by `imagegate serve` on this machine: admission is real, but no kubelet runs Pods.
4. Good and bad workloads applied with kubectl: denials with the fix, audit warnings, a tag
   pinned to its digest, a root image rebuilt into a compliant replacement and swapped in; on
   kind the admitted Pods run, and `id -u` inside them shows the uid imagegate checked.
5. `imagegate report` from the cluster's PolicyReports (table, and an HTML file).

Everything keeps running afterwards but the url-mode webhook and operator, which stop with the
demo; its last lines say how to go on (or start them again).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import yaml  # noqa: E402

from tests.fixtures.images import build_fixtures  # noqa: E402
from tests.support.chart import BARE_API_VALUES, apply_chart_crds  # noqa: E402
from tests.support.cluster import load_cluster  # noqa: E402
from tests.support.manifests import deployment, image_rebuild, pod  # noqa: E402
from tests.support.registry import attach, start_registry  # noqa: E402
from webhook.admission.tls import self_signed  # noqa: E402

STATE = Path(os.environ.get("IMAGEGATE_STATE", "/tmp/imagegate"))
PORT = int(os.environ.get("IMAGEGATE_DEMO_PORT", "5001"))
WEBHOOK_PORT = int(os.environ.get("IMAGEGATE_DEMO_WEBHOOK_PORT", "9443"))
IMAGEGATE = str(ROOT / ".venv" / "bin" / "imagegate")
SYSTEM = "imagegate-system"
AUDIT_LABEL = "demo.imagegate.dev/mode"


def say(text: str) -> None:
    print(f"\n\033[1;34m==> {text}\033[0m", flush=True)


def show(cmd: list[str], env: dict[str, str] | None = None, check: bool = False) -> int:
    """Run a command the way a user would type it, printing it and its output."""
    print(f"$ {shlex.join(c.replace(str(ROOT) + '/', '') for c in cmd)}", flush=True)
    code = subprocess.run(cmd, env=env, check=False).returncode
    if check and code != 0:
        raise SystemExit(f"demo: `{cmd[0]}` failed with exit code {code}")
    return code


def kubectl(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["kubectl", *args], env=env, input=stdin, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"demo: kubectl {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def apply(env: dict[str, str], manifest: dict[str, Any], namespace: str) -> None:
    """`kubectl apply` showing what a user sees, warnings and denials included."""
    what = f"{manifest['kind']}/{manifest['metadata']['name']} ({_images(manifest)})"
    print(f"$ kubectl apply -n {namespace} -f -   # {what}", flush=True)
    subprocess.run(
        ["kubectl", "apply", "-n", namespace, "-f", "-"],
        env=env, input=yaml.safe_dump(manifest), text=True, check=False,
    )  # fmt: skip


def _images(manifest: dict[str, Any]) -> str:
    spec = manifest["spec"].get("template", {}).get("spec") or manifest["spec"]
    return ", ".join(c["image"] for c in spec.get("containers", []))


def tools_bin() -> Path:
    out = subprocess.run(
        [str(ROOT / "hack" / "build-tools.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    return Path(out.splitlines()[-1])


def cluster_env() -> dict[str, str]:
    """The environment for kubectl, helm and imagegate: the current KUBECONFIG when set, else
    the local control plane (started if needed). The e2e tests prove the chart's RBAC with its
    ServiceAccounts' tokens; the demo keeps it simple and uses the admin credentials."""
    if os.environ.get("KUBECONFIG"):
        print(f"using the cluster of KUBECONFIG={os.environ['KUBECONFIG']}")
        return dict(os.environ)
    print(f"$ python hack/cluster.py up --state {STATE / 'cluster'}", flush=True)
    subprocess.run(
        [sys.executable, str(ROOT / "hack/cluster.py"), "up", "--state", str(STATE / "cluster")],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return load_cluster(STATE / "cluster").env()


def kind_available() -> str | None:
    """Why the demo can use kind here, or None: a kind cluster already runs, the offline node
    image is cached, or the official images can be pulled (never a 30-minute build unasked)."""
    tools = subprocess.run(
        [str(ROOT / "hack/build-tools.sh"), "--kind", "--print-dir"], capture_output=True, text=True
    ).stdout.strip()
    kind_bin = Path(tools) / "kind"
    if tools and kind_bin.exists():
        running = subprocess.run([str(kind_bin), "get", "clusters"], capture_output=True, text=True)
        if "imagegate" in running.stdout.split():
            return "the kind cluster `imagegate` is running"
    node = subprocess.run(
        [str(ROOT / "hack/kind-node-image.sh"), "--name"], capture_output=True, text=True
    ).stdout.strip()
    if node and _docker_ok("image", "inspect", node):
        return f"the offline node image {node} is cached"
    if _docker_ok("image", "inspect", "registry:2") or _docker_ok("pull", "-q", "registry:2"):
        return "the official kind images can be pulled"
    return None


def _docker_ok(*args: str) -> bool:
    try:
        done = subprocess.run(["docker", *args], capture_output=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:  # a pull that hangs (a network that drops packets) is a no
        return False
    return done.returncode == 0


def main() -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    choice = os.environ.get("IMAGEGATE_DEMO_CLUSTER", "auto")
    if choice == "kind":
        return kind()
    if choice == "auto" and not os.environ.get("KUBECONFIG"):
        reason = kind_available()
        if reason:
            say(f"using kind: {reason}")
            return kind()
        say(
            "no kind here: no node image is cached and none can be pulled, so this demo uses a "
            "local API server (admission is real, but no kubelet runs the Pods). "
            "`make kind-node-image` builds the offline node image (about 8 minutes cold); "
            "`make demo` then runs on kind"
        )
    say(f"registry on 127.0.0.1:{PORT}, sample images built by the Docker engine")
    registry = attach(STATE / "registry")
    if registry is None:
        registry = start_registry(STATE / "registry", PORT)
        registry.detach()
    refs = build_fixtures(docker.from_env(timeout=300), registry.host)
    for name, ref in refs.items():
        print(f"  {name:20} {ref}")
    base = refs["base"]

    policy = STATE / "demo-policy.yaml"
    policy.write_text(
        "apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: demo}\n"
        f"spec:\n  rules:\n    allowedBases: {{references: ['{base}']}}\n"
        "    sizeBudget: {maxCompressedSize: 2MB}\n"
    )
    say("imagegate check: the inspection core, straight from the registry")
    shown = ("good", "tini", "root-script", "named-user", "shell-chain", "supervisor", "big")
    show([IMAGEGATE, "check", *(refs[n] for n in shown), "--policy", str(policy)])

    say("a Kubernetes API server")
    helm = str(tools_bin() / "helm")
    admin = cluster_env()

    say("helm install charts/imagegate (webhooks in url mode, served from this machine)")
    certs = self_signed(["127.0.0.1"], STATE / "webhook-tls")
    values = STATE / "demo-values.yaml"
    apply_chart_crds(helm, admin)  # no Job runs on a bare API server (tests/support/chart.py)
    values.write_text(yaml.safe_dump({
        **BARE_API_VALUES,
        "webhook": {"external": {"url": f"https://127.0.0.1:{WEBHOOK_PORT}",
                                 "caBundle": certs.ca_bundle()}},
        "policyReports": {"installCRDs": "auto"},
        "policy": {"spec": {
            "exclude": {"namespaceSelector": {"matchLabels": {AUDIT_LABEL: "audit"}}},
            "rules": {"allowedBases": {"references": [base]},
                      "sizeBudget": {"maxCompressedSize": "2MB"}},
        }},
    }))  # fmt: skip
    show([helm, "upgrade", "--install", "imagegate", "charts/imagegate", "--namespace", SYSTEM,
          "--create-namespace", "--values", str(values)], env=admin, check=True)  # fmt: skip

    logs = STATE / "logs"
    logs.mkdir(exist_ok=True)
    say(f"imagegate serve and imagegate operator in the background (logs in {logs})")
    serve = subprocess.Popen(
        [IMAGEGATE, "serve", "--policies-from-cluster", "--host", "127.0.0.1",
         "--port", str(WEBHOOK_PORT), "--tls-cert", str(certs.cert), "--tls-key", str(certs.key)],
        env={**admin, "IMAGEGATE_NAMESPACE": SYSTEM,
             "IMAGEGATE_WEBHOOK_POLICY_REFRESH_SECONDS": "1"},
        stdout=(logs / "serve.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    operator = subprocess.Popen(
        [IMAGEGATE, "operator", "--all-namespaces", "--peering=imagegate", "--log-format=text"],
        env={**admin, "IMAGEGATE_OPERATOR_SCAN_SECONDS": "5", "IMAGEGATE_NAMESPACE": SYSTEM},
        stdout=(logs / "operator.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_ready(certs.ca or certs.cert, admin)
        _workloads(admin, refs)
    finally:
        for process in (serve, operator):
            process.terminate()
            process.wait(20)
    serve_cmd = shlex.join([
        ".venv/bin/imagegate", "serve", "--policies-from-cluster", "--host", "127.0.0.1",
        "--port", str(WEBHOOK_PORT), "--tls-cert", str(certs.cert), "--tls-key", str(certs.key),
    ])  # fmt: skip
    print(
        f"\nThe control plane and the registry keep running: "
        f"export KUBECONFIG={admin.get('KUBECONFIG')}\n"
        "The webhook and the operator stopped with the demo, and the webhook configurations still "
        "point at them: until you start the webhook again, creating a Pod fails with "
        "`connection refused` (failurePolicy: Fail). Start it with\n"
        f"  IMAGEGATE_NAMESPACE={SYSTEM} {serve_cmd}\n"
        f"or remove imagegate: helm uninstall imagegate -n {SYSTEM}\n"
        "Stop everything with `make cluster-down` and `python hack/registry.py stop`."
    )
    return 0


def kind() -> int:
    """The story on a kind cluster, where the chart's webhook and operator run as Pods and the
    kubelet runs what they admit (docs/kind.md has each step)."""
    say("kind cluster with a local registry on localhost:5001, imagegate built and installed")
    show(["make", "kind-up", "kind-load", "kind-install"], check=True)
    env = {**os.environ, "KUBECONFIG": str(_kind_kubeconfig())}
    say("sample images pushed to the kind registry")
    refs = build_fixtures(docker.from_env(timeout=300), f"localhost:{PORT}")
    kubectl(env, "patch", "imagepolicy", "default", "--type=merge", "-p", json.dumps({"spec": {
        "exclude": {"namespaceSelector": {"matchLabels": {AUDIT_LABEL: "audit"}}},
        "rules": {"allowedBases": {"references": [refs["base"]]},
                  "sizeBudget": {"maxCompressedSize": "2MB"}},
    }}))  # fmt: skip
    _workloads(env, refs, running=True)
    print(
        "\nThe kind cluster keeps running with imagegate in it (the webhook and the operator are "
        f"Pods in {SYSTEM}):\n"
        f"  export KUBECONFIG={env['KUBECONFIG']}\n"
        f"  kubectl -n shop run zero --image={refs['zero']}   # denied: runs as uid 0\n"
        f"  kubectl -n {SYSTEM} logs deploy/imagegate-webhook\n"
        "Remove it with `make kind-down`."
    )
    return 0


def _kind_kubeconfig() -> Path:
    """The kind cluster's context alone, so nothing the demo runs touches another cluster."""
    path = STATE / "kind-imagegate.kubeconfig"
    raw = kubectl(dict(os.environ), "config", "view", "--raw", "--minify",
                  "--context", "kind-imagegate")  # fmt: skip
    path.touch(mode=0o600)  # it holds the cluster admin's client key: never readable by others
    path.chmod(0o600)
    path.write_text(raw)
    return path


def _wait_ready(ca: Path, env: dict[str, str]) -> None:
    import ssl

    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            trust = ssl.create_default_context(cafile=str(ca))
            answer = httpx.get(f"https://127.0.0.1:{WEBHOOK_PORT}/readyz", verify=trust)
            if answer.status_code == 200:
                print(f"webhook ready: {answer.json()}")
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"demo: the webhook did not become ready; see {STATE / 'logs' / 'serve.log'}")


def _wait_admitted(
    env: dict[str, str], manifest: dict[str, Any], namespace: str, warning: str
) -> None:
    """Until a server-side dry run of `manifest` is admitted (with `warning`, when given)."""
    deadline = time.monotonic() + 60
    while True:
        done = subprocess.run(
            ["kubectl", "apply", "--dry-run=server", "-n", namespace, "-f", "-"],
            env=env, input=yaml.safe_dump(manifest), capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode == 0 and warning in done.stderr:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: the webhook did not load the demo policies: {done.stderr}")
        time.sleep(1)


def _workloads(env: dict[str, str], refs: dict[str, str], running: bool = False) -> None:
    for namespace in ("shop", "legacy"):
        manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        kubectl(env, "apply", "-f", "-", stdin=yaml.safe_dump(manifest))
    kubectl(env, "label", "namespace", "legacy", f"{AUDIT_LABEL}=audit", "--overwrite")
    kubectl(env, "apply", "-f", "-", stdin=yaml.safe_dump({
        "apiVersion": "imagegate.dev/v1alpha1", "kind": "ImagePolicy",
        "metadata": {"name": "legacy-audit"},
        "spec": {"mode": "audit", "match": {"namespaces": ["legacy"]},
                 "rules": {"allowedBases": {"references": [refs["base"]]}}},
    }))  # fmt: skip
    # The webhook re-reads ImagePolicies every few seconds: wait until both are in force.
    _wait_admitted(env, deployment("web", refs["good"]), "shop", "")
    _wait_admitted(env, pod("probe", refs["named-user"]), "legacy", "imagegate (audit)")

    say("enforce mode (namespace shop): a compliant Deployment is admitted, pinned to its digest")
    apply(env, deployment("web", refs["good"], replicas=2), "shop")
    image = kubectl(env, "get", "deployment", "web", "-n", "shop", "-o",
                    "jsonpath={.spec.template.spec.containers[0].image}")  # fmt: skip
    print(f"stored image: {image}")
    if running:
        say("the kubelet pulled the pinned image and runs it, as the uid imagegate checked")
        show(["kubectl", "-n", "shop", "rollout", "status", "deployment/web", "--timeout=120s"],
             env=env, check=True)  # fmt: skip
        show(["kubectl", "-n", "shop", "get", "pods", "-o", "wide"], env=env)
        show(["kubectl", "-n", "shop", "exec", "deploy/web", "--", "id"], env=env)

    say("enforce mode: a root image and a shell chain are denied, with the fix")
    apply(env, pod("cart", refs["root-script"]), "shop")
    apply(env, deployment("worker", refs["shell-chain"]), "shop")

    say("audit mode (namespace legacy): admitted, kubectl prints the warnings")
    apply(env, deployment("monolith", refs["named-user"]), "legacy")
    apply(env, deployment("batch", refs["big"]), "legacy")

    say("the operator rebuilds the root image into a compliant, immutable replacement")
    source = refs["root-script"]
    rebuild = image_rebuild("cart-nonroot", source, source.rsplit(":", 1)[0])
    kubectl(env, "apply", "-n", "shop", "-f", "-", stdin=yaml.safe_dump(rebuild))
    status: dict[str, Any] = {}
    for _ in range(120):
        status = json.loads(kubectl(env, "get", "imagerebuild", "cart-nonroot", "-n", "shop",
                                    "-o", "json")).get("status") or {}  # fmt: skip
        if status.get("phase") in ("Succeeded", "PartiallyFixed", "Failed", "Unfixable"):
            break
        time.sleep(1)
    show(["kubectl", "get", "imagerebuilds", "-n", "shop"], env=env)
    print(json.dumps({k: status.get(k) for k in ("phase", "replacement", "replacementTag",
                                                   "before", "after")}, indent=2))  # fmt: skip

    say("the same root image again: the webhook swaps in the replacement, and it is admitted")
    _wait_admitted(env, pod("cart", source), "shop", "")  # ImageRebuilds are re-read too
    apply(env, pod("cart", source), "shop")
    print("stored image:", kubectl(env, "get", "pod", "cart", "-n", "shop", "-o",
                                   "jsonpath={.spec.containers[0].image}"))  # fmt: skip
    if running:
        show(["kubectl", "-n", "shop", "wait", "--for=condition=Ready", "pod/cart",
              "--timeout=120s"], env=env)  # fmt: skip
        show(["kubectl", "-n", "shop", "exec", "cart", "--", "id"], env=env)

    say("the background audit writes PolicyReports; imagegate report reads them")
    time.sleep(8)
    show(["kubectl", "get", "policyreports", "-A"], env=env)
    show([IMAGEGATE, "report", "--from-cluster"], env=env)
    html = STATE / "report.html"
    show([IMAGEGATE, "report", "--from-cluster", "--output", "html", "--out", str(html)], env=env)
    print(f"open {html} in a browser")


if __name__ == "__main__":
    sys.exit(main())
