"""Issue 16, the chart side of a production install: HA by default, CRDs that upgrade, no key
material in the default render, PolicyReport CRDs next to other owners, NetworkPolicy, a CA for
private registries, the metrics port, packaging (kubeVersion, Artifact Hub, README) and the
pre-delete hook. Each test renders with the real `helm` and asserts on the objects."""

from __future__ import annotations

import base64
import importlib.util
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.chart.conftest import KUBE_VERSION, NAMESPACE, RELEASE, HelmError, Rendered
from tests.support.paths import CHART, ROOT

Render = Callable[..., Rendered]
WEBHOOK = "ig-imagegate-webhook"
WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
SYSTEM_CLASSES = ("system-cluster-critical", "system-node-critical")


def _webhook_pod(rendered: Rendered) -> dict[str, Any]:
    return dict(rendered.one("Deployment", WEBHOOK)["spec"]["template"])


def _container(rendered: Rendered, deployment: str = WEBHOOK) -> dict[str, Any]:
    (container,) = rendered.one("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


# ---- 1. high availability --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "replicas"),
    [(None, 2), (CHART / "ci" / "ha-values.yaml", 3)],
    ids=["defaults", "ha"],
)
def test_webhook_is_highly_available_by_default(render: Render, values: Any, replicas: int) -> None:
    rendered = render(*([values] if values else []))
    deployment = rendered.one("Deployment", WEBHOOK)
    assert deployment["spec"]["replicas"] == replicas
    pdb = rendered.one("PodDisruptionBudget", WEBHOOK)
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert 1 <= pdb["spec"]["minAvailable"] < replicas  # a drain can always evict one


def test_topology_spread_over_zones_and_nodes_selects_the_webhook_pods(render: Render) -> None:
    rendered = render()
    pod = _webhook_pod(rendered)
    constraints = pod["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in constraints] == [
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    ]
    for c in constraints:
        assert c["whenUnsatisfiable"] == "ScheduleAnyway"  # a one-node cluster still schedules
        assert c["maxSkew"] == 1
        selector = c["labelSelector"]["matchLabels"]
        assert selector.items() <= pod["metadata"]["labels"].items()
        assert selector["app.kubernetes.io/component"] == "webhook"
        assert c["matchLabelKeys"] == ["pod-template-hash"]  # only this rollout's Pods count


@pytest.mark.parametrize(
    ("sets", "keys"),
    [
        (["webhook.topologySpread.topologyKeys=null"], None),
        (["webhook.topologySpread.whenUnsatisfiable=DoNotSchedule"], "DoNotSchedule"),
        (
            ["webhook.topologySpreadConstraints[0].maxSkew=2",
             "webhook.topologySpreadConstraints[0].topologyKey=rack",
             "webhook.topologySpreadConstraints[0].whenUnsatisfiable=DoNotSchedule"],
            "rack",
        ),
    ],
    ids=["off", "hard", "explicit"],
)  # fmt: skip
def test_topology_spread_can_be_hardened_replaced_or_turned_off(
    render: Render, sets: list[str], keys: str | None
) -> None:
    constraints = _webhook_pod(render(set=sets))["spec"].get("topologySpreadConstraints")
    if keys is None:
        assert constraints is None
    elif keys == "rack":
        assert constraints == [
            {"maxSkew": 2, "topologyKey": "rack", "whenUnsatisfiable": "DoNotSchedule"}
        ]
    else:
        assert {c["whenUnsatisfiable"] for c in constraints} == {keys}


@pytest.mark.parametrize(
    ("sets", "namespace", "classes"),
    [
        (["webhook.priorityClassName=system-cluster-critical"], NAMESPACE,
         ["system-cluster-critical"]),
        (["webhook.priorityClassName=system-cluster-critical",
          "operator.priorityClassName=system-node-critical"], NAMESPACE, list(SYSTEM_CLASSES)),
        (["webhook.priorityClassName=system-cluster-critical"], "kube-system", None),
        (["webhook.priorityClassName=team-high"], NAMESPACE, None),
        ([], NAMESPACE, None),
    ],
    ids=["system-class", "both-classes", "in-kube-system", "own-class", "none"],
)  # fmt: skip
def test_a_system_priority_class_outside_kube_system_gets_its_resource_quota(
    render: Render, sets: list[str], namespace: str, classes: list[str] | None
) -> None:
    quotas = render(set=sets, namespace=namespace).kinds("ResourceQuota")
    if classes is None:
        assert quotas == []
        return
    (quota,) = quotas
    assert quota["metadata"]["namespace"] == namespace
    (expression,) = quota["spec"]["scopeSelector"]["matchExpressions"]
    assert expression == {"scopeName": "PriorityClass", "operator": "In", "values": classes}
    assert quota["spec"]["hard"]["pods"] == "1G"


def test_ha_values_render_the_quota_their_priority_class_needs(render: Render) -> None:
    rendered = render(CHART / "ci" / "ha-values.yaml")
    assert _webhook_pod(rendered)["spec"]["priorityClassName"] == "system-cluster-critical"
    (quota,) = rendered.kinds("ResourceQuota")
    assert (
        "system-cluster-critical" in quota["spec"]["scopeSelector"]["matchExpressions"][0]["values"]
    )


# ---- 2. the chart's own custom resources around their CRDs -----------------------------------


def test_first_install_bootstraps_the_policy_and_peering_with_helm_ownership(
    render: Render,
) -> None:
    """CRDs not served yet (a first install, `helm template`): no ImagePolicy or
    ClusterKopfPeering in the manifest (Helm could not map them), a Job applies them, annotated
    so the next upgrade adopts them. Not a hook: `helm install --wait` runs post-install hooks
    only once the webhook is Ready, and it is Ready only with a policy loaded."""
    rendered = render()
    assert rendered.kinds("ImagePolicy") == rendered.kinds("ClusterKopfPeering") == []
    job = rendered.one("Job", "ig-imagegate-bootstrap-1")
    assert "helm.sh/hook" not in job["metadata"].get("annotations", {})
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == [
        "install-objects",
        "--file",
        "/etc/imagegate/bootstrap/objects.yaml",
    ]
    configmap = rendered.one("ConfigMap", "ig-imagegate-bootstrap")
    assert "helm.sh/hook" not in configmap["metadata"].get("annotations", {})
    for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding"):
        assert "helm.sh/hook" not in rendered.one(kind, "ig-imagegate-bootstrap")["metadata"].get(
            "annotations", {}
        )
    objects = list(yaml.safe_load_all(configmap["data"]["objects.yaml"]))
    served = render(served=True)
    assert {j["metadata"]["name"] for j in served.kinds("Job")} == {
        "ig-imagegate-cleanup",
        "ig-imagegate-bootstrap-1",
    }
    by_kind = {o["kind"]: o for o in objects}
    assert by_kind.keys() == {"ImagePolicy", "ClusterKopfPeering"}
    for kind, obj in by_kind.items():
        release_object = served.one(kind)
        assert obj["metadata"]["annotations"] == {
            "meta.helm.sh/release-name": RELEASE,
            "meta.helm.sh/release-namespace": NAMESPACE,
        }
        assert obj["metadata"]["labels"] == release_object["metadata"]["labels"]
        assert obj.get("spec") == release_object.get("spec")
    (binding_role,) = [
        r for r in rendered.kinds("ClusterRole") if r["metadata"]["name"].endswith("bootstrap")
    ]
    names = {n for rule in binding_role["rules"] for n in rule["resourceNames"]}
    assert names == {"default", "imagegate"}


def test_every_revision_reapplies_the_policy_because_helm_does_not_patch_what_it_adopts(
    render: Render,
) -> None:
    """CRDs served (an upgrade): the objects are release objects, and the Job, named by revision,
    applies them too: Helm adopts an object the previous manifest lacked without patching it, so
    values changed by the first upgrade after a first install would otherwise be lost. There it
    is a post-upgrade hook, so `helm upgrade` returns only once the new policy is applied."""
    served = render(served=True)
    assert served.kinds("ImagePolicy")
    job = served.one("Job", "ig-imagegate-bootstrap-1")
    for kind in ("Job", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"):
        name = "ig-imagegate-bootstrap-1" if kind == "Job" else "ig-imagegate-bootstrap"
        hook = served.one(kind, name)["metadata"]["annotations"]["helm.sh/hook"]
        assert hook == "post-install,post-upgrade"
    configmap = served.one("ConfigMap", "ig-imagegate-bootstrap")
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert {"name": "objects", "configMap": {"name": "ig-imagegate-bootstrap"}} in volumes
    [policy] = [
        o
        for o in yaml.safe_load_all(configmap["data"]["objects.yaml"])
        if o["kind"] == "ImagePolicy"
    ]
    assert policy["spec"] == served.one("ImagePolicy")["spec"]


def test_reapply_off_renders_no_hook_but_a_first_install_still_bootstraps(render: Render) -> None:
    """`hooks.reapply=false` is for API servers where no Job runs: no hook to wait on once the
    CRDs are served; without them the policy has no other way in, so the Job stays."""
    served = render(set=["hooks.reapply=false"], served=True)
    assert [j["metadata"]["name"] for j in served.kinds("Job")] == ["ig-imagegate-cleanup"]
    assert served.kinds("ImagePolicy")
    first = render(set=["hooks.reapply=false"])
    assert "ig-imagegate-bootstrap-1" in [j["metadata"]["name"] for j in first.kinds("Job")]


@pytest.mark.parametrize(
    ("sets", "expected"), [([], "false"), (["webhook.logDenies=true"], "true")]
)
def test_log_denies_reaches_the_webhook(render: Render, sets: list[str], expected: str) -> None:
    """Off by default as Gatekeeper's --log-denies; the setting the webhook reads is set."""
    assert _env(_container(render(set=sets)))["IMAGEGATE_WEBHOOK_LOG_DENIES"] == expected


def test_nothing_to_bootstrap_renders_no_job(render: Render) -> None:
    rendered = render(set=["policy.create=false", "operator.enabled=false"])
    assert [j["metadata"]["name"] for j in rendered.kinds("Job")] == ["ig-imagegate-cleanup"]


# ---- 3. certificates ------------------------------------------------------------------------


def _template(run_helm: Callable[..., str], *sets: str) -> str:
    args = [
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
    ]
    return run_helm(*args, *(a for s in sets for a in ("--set", s)))


def test_rotate_mode_renders_the_same_bytes_twice_and_helm_mode_does_not(
    run_helm: Callable[..., str],
) -> None:
    """GitOps: two renders of the defaults are byte-identical. The check can fail: the helm
    mode's genCA makes a new CA on every render without a cluster."""
    assert _template(run_helm) == _template(run_helm)
    assert _template(run_helm, "certificates.mode=helm") != _template(
        run_helm, "certificates.mode=helm"
    )


def test_rotate_mode_renders_no_key_material(render: Render, run_helm: Callable[..., str]) -> None:
    out = _template(run_helm)
    assert "PRIVATE KEY" not in out
    assert "BEGIN CERTIFICATE" not in out
    rendered = render()
    assert rendered.kinds("Secret") == []
    for kind in WEBHOOK_KINDS:
        (hook,) = rendered.one(kind)["webhooks"]
        assert "caBundle" not in hook["clientConfig"]  # the webhook patches it
        assert hook["clientConfig"]["service"]["name"] == WEBHOOK


def test_rotate_mode_tells_the_webhook_what_to_rotate_and_gives_it_only_that(
    render: Render,
) -> None:
    rendered = render()
    container = _container(rendered)
    env = _env(container)
    assert env["IMAGEGATE_WEBHOOK_CERT_SECRET"] == "ig-imagegate-webhook-tls"
    assert env["IMAGEGATE_WEBHOOK_CERT_WEBHOOKS"] == WEBHOOK
    assert {rendered.one(k)["metadata"]["name"] for k in WEBHOOK_KINDS} == {WEBHOOK}
    svc = f"{WEBHOOK}.{NAMESPACE}"
    assert env["IMAGEGATE_WEBHOOK_CERT_DNS_NAMES"].split(",") == [
        WEBHOOK, svc, f"{svc}.svc", f"{svc}.svc.cluster.local"
    ]  # fmt: skip
    assert env["IMAGEGATE_WEBHOOK_CERT_DIR"] == "/tls"
    volumes = {v["name"]: v for v in _webhook_pod(rendered)["spec"]["volumes"]}
    assert "emptyDir" in volumes["tls"]
    assert "secret" not in volumes["tls"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
    assert mount["readOnly"] is False
    role = rendered.one("Role", "ig-imagegate-webhook-certs")
    assert role["metadata"]["namespace"] == NAMESPACE
    cluster_role = rendered.one("ClusterRole", WEBHOOK)
    (admission,) = [
        r for r in cluster_role["rules"] if r["apiGroups"] == ["admissionregistration.k8s.io"]
    ]
    assert admission["resourceNames"] == [WEBHOOK]
    assert admission["verbs"] == ["get", "patch"]


@pytest.mark.parametrize("mode", ["helm", "certManager", "external"])
def test_other_modes_get_no_rotation_rights(render: Render, mode: str) -> None:
    sets = [
        f"certificates.mode={mode}",
        "certificates.caBundle=" + base64.b64encode(b"ca").decode(),
    ]
    rendered = render(set=sets)
    assert rendered.kinds("Role") == []
    assert not any(
        r["apiGroups"] == ["admissionregistration.k8s.io"]
        for r in rendered.one("ClusterRole", WEBHOOK)["rules"]
    )
    assert "IMAGEGATE_WEBHOOK_CERT_SECRET" not in _env(_container(rendered))


def test_external_mode_uses_the_given_ca_and_requires_it(render: Render) -> None:
    bundle = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    rendered = render(set=["certificates.mode=external", f"certificates.caBundle={bundle}"])
    assert rendered.kinds("Secret") == []
    for kind in WEBHOOK_KINDS:
        assert rendered.one(kind)["webhooks"][0]["clientConfig"]["caBundle"] == bundle
    with pytest.raises(HelmError) as caught:
        render(set=["certificates.mode=external"])
    assert "certificates.caBundle" in caught.value.stderr


def test_cert_manager_enabled_still_selects_cert_manager(render: Render) -> None:
    rendered = render(set=["certManager.enabled=true"])
    assert rendered.kinds("Certificate")
    assert rendered.kinds("Role") == []


# ---- 4. PolicyReport CRDs --------------------------------------------------------------------


@pytest.mark.parametrize(("value", "rendered_crds"), [("auto", 2), ("true", 2), ("false", 0)])
def test_policyreport_crds_follow_install_crds(
    render: Render, value: str, rendered_crds: int
) -> None:
    """Under `helm template` the lookup of auto finds nothing, so auto renders them; against a
    cluster that has them from another owner it renders none (tests/kind/test_ha.py)."""
    crds = [
        c
        for c in render(set=[f"policyReports.installCRDs={value}"]).kinds(
            "CustomResourceDefinition"
        )
        if c["spec"]["group"] == "wgpolicyk8s.io"
    ]
    assert len(crds) == rendered_crds
    for crd in crds:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_install_crds_refuses_other_words(render: Render) -> None:
    with pytest.raises(HelmError) as caught:
        render(set=["policyReports.installCRDs=maybe"])
    assert "installCRDs" in caught.value.stderr


# ---- 5. network and private registries --------------------------------------------------------


def test_network_policy_is_off_by_default(render: Render) -> None:
    assert render().kinds("NetworkPolicy") == []


def test_network_policies_open_only_the_served_ports_and_the_needed_egress(render: Render) -> None:
    rendered = render(
        set=[
            "networkPolicy.enabled=true",
            "networkPolicy.apiServerCIDRs={172.18.0.2/32}",
            "networkPolicy.registryCIDRs={10.20.0.0/16,192.168.1.0/24}",
            "networkPolicy.registryPorts={443,5000}",
        ]
    )
    webhook = rendered.one("NetworkPolicy", WEBHOOK)["spec"]
    assert webhook["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "webhook"
    assert webhook["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = webhook["ingress"]
    assert "from" not in ingress  # the API server's address varies: any source, these ports
    assert {p["port"] for p in ingress["ports"]} == {8443, 8081}
    dns, api, registries = webhook["egress"]
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert api == {
        "to": [{"ipBlock": {"cidr": "172.18.0.2/32"}}],
        "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}],
    }
    assert [t["ipBlock"]["cidr"] for t in registries["to"]] == ["10.20.0.0/16", "192.168.1.0/24"]
    assert [p["port"] for p in registries["ports"]] == [443, 5000]
    operator = rendered.one("NetworkPolicy", "ig-imagegate-operator")["spec"]
    assert operator["egress"] == webhook["egress"]
    assert [p["port"] for p in operator["ingress"][0]["ports"]] == [8080]


def test_network_policy_without_cidrs_limits_egress_to_the_ports(render: Render) -> None:
    egress = render(set=["networkPolicy.enabled=true"]).one("NetworkPolicy", WEBHOOK)["spec"][
        "egress"
    ]
    assert egress[1] == {
        "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]
    }
    assert egress[2] == {"ports": [{"protocol": "TCP", "port": 443}]}


@pytest.mark.parametrize("source", ["configMap", "secret"])
def test_registry_ca_is_mounted_read_only_and_named_in_both_components(
    render: Render, source: str
) -> None:
    rendered = render(set=[f"registryCA.{source}=corp-ca", "registryCA.key=bundle.pem"])
    for deployment in (WEBHOOK, "ig-imagegate-operator"):
        spec = rendered.one("Deployment", deployment)["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert _env(container)["IMAGEGATE_REGISTRY_CA_FILE"] == "/etc/imagegate/registry-ca"
        mount = next(m for m in container["volumeMounts"] if m["name"] == "registry-ca")
        assert mount == {
            "name": "registry-ca", "mountPath": "/etc/imagegate/registry-ca", "readOnly": True
        }  # fmt: skip
        volume = next(v for v in spec["volumes"] if v["name"] == "registry-ca")
        ref = volume[source]
        assert ref.get("name", ref.get("secretName")) == "corp-ca"
        assert ref["items"] == [{"key": "bundle.pem", "path": "bundle.pem"}]


def test_registry_ca_is_absent_by_default_and_one_source_only(render: Render) -> None:
    assert "IMAGEGATE_REGISTRY_CA_FILE" not in _env(_container(render()))
    with pytest.raises(HelmError) as caught:
        render(set=["registryCA.configMap=a", "registryCA.secret=b"])
    assert "not both" in caught.value.stderr


# ---- 6. metrics port --------------------------------------------------------------------------


def test_metrics_have_their_own_plain_http_port_and_service_port(render: Render) -> None:
    rendered = render(set=["metrics.port=9090"])
    container = _container(rendered)
    assert _env(container)["IMAGEGATE_WEBHOOK_METRICS_PORT"] == "9090"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"https": 8443, "metrics": 9090}
    service = {p["name"]: p for p in rendered.one("Service", WEBHOOK)["spec"]["ports"]}
    assert service["metrics"]["port"] == 9090
    assert service["metrics"]["targetPort"] == "metrics"
    assert service["https"]["port"] == 443


# ---- 7. packaging -----------------------------------------------------------------------------


def test_chart_metadata_declares_kube_version_and_artifact_hub_annotations() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == ">=1.30.0-0"
    annotations = chart["annotations"]
    assert annotations["artifacthub.io/license"] == "Apache-2.0"
    images = yaml.safe_load(annotations["artifacthub.io/images"])
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert images == [
        {"name": "imagegate", "image": f"{values['image']['repository']}:{chart['appVersion']}"}
    ]
    crds = {c["name"] for c in yaml.safe_load(annotations["artifacthub.io/crds"])}
    files = {
        p.name.removesuffix(".yaml")
        for p in (CHART / "files" / "crds").glob("*.imagegate.dev.yaml")
    }
    assert crds == files
    for key in ("artifacthub.io/links", "artifacthub.io/changes", "artifacthub.io/crdsExamples"):
        assert isinstance(yaml.safe_load(annotations[key]), list), key


def _readme_module() -> Any:
    spec = importlib.util.spec_from_file_location("chart_readme", ROOT / "hack" / "chart-readme.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_chart_readme_is_current() -> None:
    readme = _readme_module().render()
    assert (CHART / "README.md").read_text() == readme, "run hack/chart-readme.py"


def test_chart_readme_lists_every_documented_value_with_its_default() -> None:
    module = _readme_module()
    values = {v.key: v for v in module.documented_values((CHART / "values.yaml").read_text())}
    assert values["webhook.replicas"].default == "2"
    assert values["certificates.mode"].default == '"rotate"'
    assert values["policyReports.installCRDs"].default == '"auto"'
    assert "webhook.resources.requests" not in values  # inside a documented value
    assert "policy.spec.mode" not in values
    check = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "chart-readme.py"), "--check"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_pre_delete_hook_deletes_exactly_the_webhook_configurations(render: Render) -> None:
    rendered = render()
    job = rendered.one("Job", "ig-imagegate-cleanup")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-delete"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "uninstall-cleanup"
    names = args[args.index("--webhooks") + 1].split(",")
    assert set(names) == {rendered.one(k)["metadata"]["name"] for k in WEBHOOK_KINDS}
    # The rotator would recreate its Secret: the webhook is scaled to 0 before it is deleted.
    assert args[args.index("--deployment") + 1] == WEBHOOK
    assert args[args.index("--secret") + 1] == "ig-imagegate-webhook-tls"
    assert args.index("--deployment") < args.index("--secret")
    named = {
        (r["resources"][0], tuple(r.get("resourceNames", ())), tuple(r["verbs"]))
        for r in rendered.one("Role", "ig-imagegate-cleanup")["rules"]
    }
    assert named == {
        ("secrets", ("ig-imagegate-webhook-tls",), ("get", "delete")),
        ("deployments/scale", (WEBHOOK,), ("get", "patch")),
        ("pods", (), ("list",)),
    }
    role = rendered.one("ClusterRole", "ig-imagegate-cleanup")
    (rule,) = role["rules"]
    assert rule["resourceNames"] == names
    assert set(rule["verbs"]) == {"get", "delete"}
    for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        hook = rendered.one(kind, "ig-imagegate-cleanup")["metadata"]["annotations"]
        assert hook["helm.sh/hook"] == "pre-delete"
        assert int(hook["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "ig-imagegate-cleanup"


def test_pre_delete_hook_can_be_turned_off(render: Render) -> None:
    rendered = render(set=["hooks.cleanup=false"], served=True)
    assert [j["metadata"]["name"] for j in rendered.kinds("Job")] == ["ig-imagegate-bootstrap-1"]
