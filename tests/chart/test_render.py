"""`helm lint` and `helm template` of charts/imagegate for every ci/ scenario, validated offline
against the Kubernetes OpenAPI schemas (kubernetes-validate) and the chart's own CRDs, plus the
behaviour the chart promises (see the test names)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tests.chart.conftest import (
    CI_VALUES,
    KUBE_VERSION,
    NAMESPACE,
    HelmError,
    Rendered,
)
from tests.chart.schemas import load_crds, validate_custom_resource
from tests.support.paths import CHART, ROOT
from webhook.policy.model import ImagePolicy
from webhook.policy.workloads import ADMITTED_RESOURCES

Render = Callable[..., Rendered]
CRD_SCHEMAS = load_crds(CHART / "files" / "crds")
CI_IDS = [p.name.removesuffix("-values.yaml") for p in CI_VALUES]
# Kinds defined by CRDs the chart does not ship (cert-manager): checked for shape only.
EXTERNAL_KINDS = {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate")}
WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")


def test_ci_scenarios_exist() -> None:
    assert {"enforce", "audit", "cert-manager", "ha", "url"} <= set(CI_IDS)


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=["defaults", *CI_IDS])
def test_helm_lint_passes(run_helm: Callable[..., str], values: Path | None) -> None:
    args = ["lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION]
    if values:
        args += ["--values", str(values)]
    out = run_helm(*args)
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=["defaults", *CI_IDS])
def test_rendered_manifests_match_kubernetes_and_crd_schemas(
    render: Render, values: Path | None
) -> None:
    rendered = render(*([values] if values else []), set=["policyReports.installCRDs=true"])
    schemas = dict(CRD_SCHEMAS)
    for crd in rendered.kinds("CustomResourceDefinition"):  # the CRDs the chart renders
        spec = crd["spec"]
        for v in spec["versions"]:
            schemas[(f"{spec['group']}/{v['name']}", spec["names"]["kind"])] = v["schema"][
                "openAPIV3Schema"
            ]
    problems: list[str] = []
    for doc in rendered.docs:
        key = (doc["apiVersion"], doc["kind"])
        where = f"{doc['kind']}/{doc['metadata'].get('name')}"
        if key in schemas:
            problems += [f"{where}: {p}" for p in validate_custom_resource(doc, schemas[key])]
        elif key in EXTERNAL_KINDS:
            assert doc["spec"], where
        else:
            try:
                kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                problems.append(f"{where}: {'.'.join(map(str, e.path))}: {e.message}")
    assert problems == []


def test_default_policy_values_equal_policies_default_yaml() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    default = yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())
    assert values["policy"]["spec"] == default["spec"]
    assert values["policy"]["name"] == default["metadata"]["name"]


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=["defaults", *CI_IDS])
def test_rendered_imagepolicy_is_a_valid_policy(render: Render, values: Path | None) -> None:
    policy = render(*([values] if values else []), served=True).one("ImagePolicy")
    assert ImagePolicy.model_validate(policy).name == "default"


def test_audit_scenario_renders_an_audit_policy(render: Render) -> None:
    rendered = render(CHART / "ci" / "audit-values.yaml", served=True)
    assert rendered.one("ImagePolicy")["spec"]["mode"] == "audit"
    names = {c["metadata"]["name"] for c in rendered.kinds("CustomResourceDefinition")}
    assert {"policyreports.wgpolicyk8s.io", "clusterpolicyreports.wgpolicyk8s.io"} <= names


@pytest.mark.parametrize("namespace", ["imagegate-system", "security"])
def test_webhooks_skip_kube_system_own_namespace_and_opted_out(
    render: Render, namespace: str
) -> None:
    rendered = render(namespace=namespace, set=["webhook.excludedNamespaces={team-legacy}"])
    for kind in WEBHOOK_KINDS:
        (hook,) = rendered.one(kind)["webhooks"]
        expressions = hook["namespaceSelector"]["matchExpressions"]
        by_key = {e["key"]: e for e in expressions}
        names = by_key["kubernetes.io/metadata.name"]
        assert names["operator"] == "NotIn"
        assert set(names["values"]) == {"kube-system", namespace, "team-legacy"}
        assert by_key["imagegate.dev/ignore"] == {
            "key": "imagegate.dev/ignore",
            "operator": "NotIn",
            "values": ["true"],
        }


def _rule_grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    """(group, version, resource, operation) every rule matches; a rule matches all
    combinations of its lists, and `pods` does not match `pods/ephemeralcontainers`."""
    grants = set()
    for rule in rules:
        assert rule["scope"] == "Namespaced"
        for group in rule["apiGroups"]:
            for version in rule["apiVersions"]:
                for resource in rule["resources"]:
                    grants |= {(group, version, resource, op) for op in rule["operations"]}
    return grants


ADMITTED = {(r.group, r.version, r.resource, op) for r in ADMITTED_RESOURCES for op in r.operations}


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=["defaults", *CI_IDS])
def test_webhook_rules_cover_exactly_what_the_service_checks(
    render: Render, values: Path | None
) -> None:
    """Both webhook configurations are sent every resource and subresource in
    webhook.policy.workloads.ADMITTED_RESOURCES, on its operations, and nothing else: a kind
    the service reads but the API server never sends (as `pods/ephemeralcontainers` was) is a
    way around the gate."""
    rendered = render(*([values] if values else []))
    for kind in WEBHOOK_KINDS:
        (hook,) = rendered.one(kind)["webhooks"]
        assert _rule_grants(hook["rules"]) == ADMITTED, kind
        assert hook["admissionReviewVersions"] == ["v1"]
    assert ("", "v1", "pods/ephemeralcontainers", "UPDATE") in ADMITTED


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        pytest.param([], {"failurePolicy": "Fail", "sideEffects": "NoneOnDryRun"}, id="defaults"),
        pytest.param(
            [
                "webhook.failurePolicy=Ignore",
                "webhook.sideEffects=None",
                "webhook.timeoutSeconds=3",
            ],
            {"failurePolicy": "Ignore", "sideEffects": "None", "timeoutSeconds": 3},
            id="overridden",
        ),
    ],
)
def test_webhook_behaviour_comes_from_values(
    render: Render, sets: list[str], expected: dict[str, Any]
) -> None:
    rendered = render(set=sets)
    for kind in WEBHOOK_KINDS:
        (hook,) = rendered.one(kind)["webhooks"]
        assert {k: hook[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("replicas", "has_pdb"), [(1, False), (2, True), (3, True)], ids=["1", "2", "3"]
)
def test_pdb_only_when_more_than_one_webhook_replica(
    render: Render, replicas: int, has_pdb: bool
) -> None:
    rendered = render(set=[f"webhook.replicas={replicas}"])
    pdbs = rendered.kinds("PodDisruptionBudget")
    assert bool(pdbs) is has_pdb
    if has_pdb:
        (pdb,) = pdbs
        deployment = rendered.one("Deployment", f"{pdb['metadata']['name']}")
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert pdb["spec"]["selector"]["matchLabels"] == selector


def _cert(b64: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(b64))


def _verify_signed_by(cert: x509.Certificate, ca: x509.Certificate) -> None:
    key = ca.public_key()
    assert cert.signature_hash_algorithm is not None
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(
            cert.signature,
            cert.tbs_certificate_bytes,
            padding.PKCS1v15(),
            cert.signature_hash_algorithm,
        )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(
            cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
        )
    else:  # pragma: no cover - genCA makes RSA keys
        pytest.fail(f"unexpected CA key type {type(key)}")


def test_cabundle_is_the_ca_that_signed_the_served_certificate(render: Render) -> None:
    rendered = render(set=["certificates.mode=helm"])
    deployment = rendered.one("Deployment", "ig-imagegate-webhook")
    (tls_volume,) = [
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"
    ]
    secret = rendered.one("Secret", tls_volume["secret"]["secretName"])
    served = _cert(secret["data"]["tls.crt"])
    service = rendered.one("Service")
    for kind in WEBHOOK_KINDS:
        (hook,) = rendered.one(kind)["webhooks"]
        ca = _cert(hook["clientConfig"]["caBundle"])
        assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
        assert served.issuer == ca.subject
        _verify_signed_by(served, ca)
        assert hook["clientConfig"]["service"]["name"] == service["metadata"]["name"]
    sans = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"ig-imagegate-webhook.{NAMESPACE}.svc" in sans.get_values_for_type(x509.DNSName)


def test_cert_manager_mode_injects_the_ca_of_the_certificate_the_webhook_serves(
    render: Render,
) -> None:
    rendered = render(CHART / "ci" / "cert-manager-values.yaml")
    assert rendered.kinds("Secret") == []  # cert-manager writes it
    deployment = rendered.one("Deployment", "ig-imagegate-webhook")
    (tls_volume,) = [
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"
    ]
    served = [
        c
        for c in rendered.kinds("Certificate")
        if c["spec"]["secretName"] == tls_volume["secret"]["secretName"]
    ]
    assert len(served) == 1
    certificate = served[0]
    assert f"ig-imagegate-webhook.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    for kind in WEBHOOK_KINDS:
        config = rendered.one(kind)
        assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
            f"{NAMESPACE}/{certificate['metadata']['name']}"
        )
        assert "caBundle" not in config["webhooks"][0]["clientConfig"]


RESTRICTED_CONTAINER = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=["defaults", *CI_IDS])
def test_every_pod_runs_restricted(render: Render, values: Path | None) -> None:
    rendered = render(*([values] if values else []), set=["operator.enabled=true"])
    specs = rendered.pod_specs()
    assert specs
    for where, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert {k: sc.get(k) for k in RESTRICTED_CONTAINER} == RESTRICTED_CONTAINER, where
            assert container.get("resources", {}).get("requests"), where
        for volume in spec.get("volumes", []):
            assert "hostPath" not in volume, where


def test_deployments_have_probes_and_anti_affinity(render: Render) -> None:
    rendered = render(CHART / "ci" / "ha-values.yaml")
    webhook = rendered.one("Deployment", "ig-imagegate-webhook")["spec"]["template"]["spec"]
    (container,) = webhook["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    anti = webhook["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "webhook"
    operator = rendered.one("Deployment", "ig-imagegate-operator")["spec"]["template"]["spec"]
    assert operator["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_containers_use_the_command_line_contract(render: Render) -> None:
    rendered = render(served=True)
    webhook = rendered.one("Deployment", "ig-imagegate-webhook")["spec"]["template"]["spec"]
    (container,) = webhook["containers"]
    # certificates.mode rotate: the certificate comes from IMAGEGATE_WEBHOOK_CERT_*, not files.
    assert container["args"] == ["serve", "--policies-from-cluster", "--port", "8443"]
    helm_mode = render(set=["certificates.mode=helm"]).one("Deployment", "ig-imagegate-webhook")
    assert helm_mode["spec"]["template"]["spec"]["containers"][0]["args"][4:] == [
        "--tls-cert",
        "/tls/tls.crt",
        "--tls-key",
        "/tls/tls.key",
    ]
    env = {e["name"]: e for e in container["env"]}
    assert env["IMAGEGATE_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    operator = rendered.one("Deployment", "ig-imagegate-operator")["spec"]["template"]["spec"]
    assert operator["containers"][0]["args"] == [
        "operator",
        "--all-namespaces",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--peering=imagegate",
    ]
    assert rendered.one("ClusterKopfPeering")["metadata"]["name"] == "imagegate"


def test_files_policy_source_mounts_the_policy(render: Render) -> None:
    rendered = render(set=["webhook.policySource=files"])
    spec = rendered.one("Deployment", "ig-imagegate-webhook")["spec"]["template"]["spec"]
    assert spec["containers"][0]["args"][1:3] == ["--policy", "/etc/imagegate/policies"]
    configmap = rendered.one("ConfigMap", "ig-imagegate-policies")
    (text,) = configmap["data"].values()
    assert ImagePolicy.model_validate(yaml.safe_load(text)) == ImagePolicy()


def test_url_mode_calls_the_external_url_and_no_service(render: Render) -> None:
    rendered = render(CHART / "ci" / "url-values.yaml")
    values = yaml.safe_load((CHART / "ci" / "url-values.yaml").read_text())["webhook"]["external"]
    for kind in WEBHOOK_KINDS:
        (hook,) = rendered.one(kind)["webhooks"]
        path = "/validate" if kind.startswith("Validating") else "/mutate"
        assert hook["clientConfig"] == {"url": values["url"] + path, "caBundle": values["caBundle"]}
    assert rendered.kinds("Service") == []
    assert rendered.kinds("Secret") == []
    assert [d["metadata"]["name"] for d in rendered.kinds("Deployment")] == []
    assert rendered.kinds("Pod") == []  # no helm test pod for an external server


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        pytest.param(
            ["webhook.external.url=https://10.0.0.1:8443"], "caBundle", id="url-without-cabundle"
        ),
        pytest.param(
            ["webhook.external.url=http://10.0.0.1:8443", "webhook.external.caBundle=eA=="],
            "/webhook/external/url",
            id="plain-http-url",
        ),
    ],
)
def test_url_mode_refuses_incomplete_values(render: Render, sets: list[str], message: str) -> None:
    with pytest.raises(HelmError) as caught:
        render(set=sets)
    assert message in caught.value.stderr


@pytest.mark.parametrize(
    "sets",
    [
        pytest.param(["webhook.bogus=1"], id="unknown-webhook-key"),
        pytest.param(["bogus=1"], id="unknown-top-level-key"),
        pytest.param(["webhook.failurePolicy=Sometimes"], id="bad-enum"),
        pytest.param(["operator.replicas=9"], id="operator-replicas"),
        pytest.param(["policy.spec.rules.sizeBudget.typo=1"], id="unknown-policy-key"),
    ],
)
def test_values_schema_rejects_invalid_values(render: Render, sets: list[str]) -> None:
    with pytest.raises(HelmError) as caught:
        render(set=sets)
    assert "values don't meet the specifications of the schema" in caught.value.stderr


def _walk_objects(node: Any, path: str = "") -> list[str]:
    missing: list[str] = []
    if isinstance(node, dict):
        closed = node.get("additionalProperties") is False
        if node.get("type") == "object" and "properties" in node and not closed:
            missing.append(path or "<root>")
        for key, value in node.items():
            missing += _walk_objects(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            missing += _walk_objects(value, f"{path}[{i}]")
    return missing


def test_values_schema_closes_every_object() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert _walk_objects(schema) == []


def test_every_value_key_is_commented() -> None:
    """Every key has a comment right above it, except inside a `# --` documented value that is
    a Kubernetes object passed through (resources, probes, ...) or the policy spec."""
    undocumented: list[str] = []
    skip_deeper_than: int | None = None
    previous = ""
    block_start = ""  # first line of the comment block above the current line
    for number, line in enumerate((CHART / "values.yaml").read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("#"):
            if not previous.startswith("#"):
                block_start = stripped
            previous = stripped
            continue
        if skip_deeper_than is not None and indent > skip_deeper_than:
            previous = stripped
            continue
        skip_deeper_than = None
        if not stripped.startswith("- ") and ":" in stripped:
            if not previous.startswith("#"):
                undocumented.append(f"line {number}: {stripped}")
            elif block_start.startswith("# --"):
                skip_deeper_than = indent
        previous = stripped
    assert undocumented == []


def test_helm_test_pod_checks_readyz_through_the_service(render: Render) -> None:
    rendered = render()
    pod = rendered.one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["args"][0]
    service = rendered.one("Service")["metadata"]["name"]
    assert f"https://{service}.{NAMESPACE}.svc:443/readyz" in script
    assert "cafile=" in script


@pytest.mark.parametrize("mode", ["rotate", "helm", "certManager"])
def test_secrets_and_service_accounts_are_only_ever_read_by_name(render: Render, mode: str) -> None:
    """Least privilege: imagegate reads the pull secrets a Pod names, never every Secret; it
    changes or deletes only Secrets named in resourceNames, and may create Secrets only in its
    own namespace (a Role: `create` cannot be limited to a name)."""
    rendered = render(set=[f"certificates.mode={mode}"])
    roles = rendered.kinds("ClusterRole") + rendered.kinds("Role")
    assert roles
    for role in roles:
        where = (role["kind"], role["metadata"]["name"])
        for rule in role.get("rules") or []:
            if not {"secrets", "serviceaccounts"} & set(rule.get("resources", [])):
                continue
            if rule.get("resourceNames"):
                assert rule["resources"] == ["secrets"], where
                assert rule["resourceNames"] == ["ig-imagegate-webhook-tls"], where
            elif rule["verbs"] == ["create"]:
                assert role["kind"] == "Role", where
                assert role["metadata"]["namespace"] == NAMESPACE, where
            else:
                assert rule["verbs"] == ["get"], (where, rule)
