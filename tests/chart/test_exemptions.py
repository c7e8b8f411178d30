"""Who may opt a namespace out: the chart's ValidatingAdmissionPolicy and its binding
(templates/exemptions.yaml). tests/e2e/test_gate_coverage.py runs them in a real API server;
here, what renders from which values, and that values reach CEL only as literals."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import RELEASE, HelmError, Rendered
from tests.support.paths import CHART
from webhook.settings import WebhookSettings

Render = Callable[..., Rendered]
POLICY = "ValidatingAdmissionPolicy"
BINDING = "ValidatingAdmissionPolicyBinding"
DEFAULT_LABEL = WebhookSettings.model_fields["opt_out_label"].default


def _variables(policy: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["expression"] for v in policy["spec"]["variables"]}


def _values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_the_policy_and_its_binding_render_by_default(render: Render) -> None:
    rendered = render()
    policy, binding = rendered.one(POLICY), rendered.one(BINDING)
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            # status and finalize write a Namespace's labels too
            "resources": ["namespaces", "namespaces/status", "namespaces/finalize"],
            "operations": ["CREATE", "UPDATE"],
        }
    ]
    variables = _variables(policy)
    assert json.loads(variables["label"]) == DEFAULT_LABEL
    assert json.loads(variables["allowedGroups"]) == ["system:masters"]
    (validation,) = spec["validations"]
    assert validation["reason"] == "Forbidden"
    assert "request.userInfo.groups" in validation["expression"]
    assert f"add, change or remove the Namespace label {DEFAULT_LABEL}" in validation["message"]


def test_label_and_groups_come_from_values(render: Render) -> None:
    rendered = render(
        set=[
            "webhook.ignoreLabel=example.com/skip-imagegate",
            "exemptions.allowedGroups={platform-admins,kubeadm:cluster-admins}",
        ]
    )
    policy = rendered.one(POLICY)
    variables = _variables(policy)
    assert json.loads(variables["label"]) == "example.com/skip-imagegate"
    assert json.loads(variables["allowedGroups"]) == ["platform-admins", "kubeadm:cluster-admins"]
    message = policy["spec"]["validations"][0]["message"]
    assert message.startswith("only members of platform-admins, kubeadm:cluster-admins may")
    assert "example.com/skip-imagegate" in message
    # The webhook's namespaceSelector and the processes themselves skip the same label.
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        (hook,) = rendered.one(kind)["webhooks"]
        keys = {e["key"] for e in hook["namespaceSelector"]["matchExpressions"]}
        assert "example.com/skip-imagegate" in keys
    for name, spec in rendered.pod_specs().items():
        if not name.startswith("Deployment/"):
            continue
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        assert env["IMAGEGATE_WEBHOOK_OPT_OUT_LABEL"] == "example.com/skip-imagegate", name


def test_group_names_reach_cel_only_as_a_list_literal(render: Render, tmp_path: Path) -> None:
    """A group name that tries to end the literal and add `|| true` stays one string."""
    hostile = ['x"] || true || ["', "a\\", "b'c", "line\nbreak", "<&>", "\u2028"]
    values = _values_file(tmp_path, {"exemptions": {"allowedGroups": hostile}})
    policy = render(values).one(POLICY)
    literal = _variables(policy)["allowedGroups"]
    assert json.loads(literal) == hostile
    # Go's JSON escapes (\", \\, \n, \u003c, \u2028 …) are CEL escapes too: no other token.
    assert (literal[0], literal[-1]) == ("[", "]")
    assert not {"\n", "\u2028"} & set(literal)


def test_disabled_renders_no_policy(render: Render) -> None:
    rendered = render(set=["exemptions.enabled=false"])
    assert rendered.kinds(POLICY) + rendered.kinds(BINDING) == []


@pytest.mark.parametrize("exemptions", ["true", "false"])
def test_kubernetes_before_1_30_is_refused(run_helm: Callable[..., str], exemptions: str) -> None:
    """Chart.yaml's kubeVersion (>=1.30.0-0) refuses older clusters before any template runs,
    with or without the opt-out label's ValidatingAdmissionPolicy."""
    args = ["template", RELEASE, str(CHART), "--kube-version", "1.29.9"]
    with pytest.raises(HelmError) as caught:
        run_helm(*args, "--set", f"exemptions.enabled={exemptions}")
    assert "chart requires kubeVersion: >=1.30.0-0" in caught.value.stderr
    assert "ValidatingAdmissionPolicy" in run_helm(*args[:-2], "--kube-version", "1.30.0-eks-1")


@pytest.mark.parametrize(
    "sets",
    [
        pytest.param(["exemptions.bogus=1"], id="unknown-key"),
        pytest.param(["exemptions.allowedGroups=null"], id="no-groups"),
        pytest.param(["exemptions.allowedGroups={}"], id="empty-groups"),
        pytest.param(["webhook.ignoreLabel=not a label"], id="label-not-a-label-key"),
        pytest.param(['webhook.ignoreLabel=x"'], id="label-with-a-quote"),
    ],
)
def test_values_schema_rejects_invalid_exemptions(render: Render, sets: list[str]) -> None:
    with pytest.raises(HelmError) as caught:
        render(set=sets)
    assert "values don't meet the specifications of the schema" in caught.value.stderr
