"""Monitoring: ServiceMonitor, PrometheusRule and the Grafana dashboard (issue 16).

An alert on a metric name nobody exports never fires, and a typo in PromQL only shows once
Prometheus loads the rule: every expression is parsed with a real PromQL parser and every
metric it reads must be one the webhook's metrics registry really exposes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import promql_parser
import pytest

from tests.chart.conftest import Rendered
from tests.support.paths import CHART
from webhook.admission.decision import Finding, problems_of
from webhook.admission.metrics import Metrics
from webhook.policy.checker import CheckResult
from webhook.policy.model import ImagePolicy
from webhook.policy.workloads import pod_template
from webhook.registry.client import RegistryStats

ALL_ON = (
    "metrics.serviceMonitor.enabled=true",
    "metrics.prometheusRule.enabled=true",
    "metrics.dashboard.enabled=true",
)
# Grafana's variables are not PromQL: give them values of the right type before parsing.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$namespace": "ns", "$job": "job"}
BUILTIN = {"up"}  # Prometheus' own series for every scraped target


def _exported() -> set[str]:
    """Series names (`_total`, `_bucket` ...) of every metric family the webhook registers."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    return {
        family.name + suffix
        for family in Metrics(RegistryStats()).registry.collect()
        for suffix in suffixes.get(family.type, [""])
    }


def _selectors(expr: Any) -> Iterator[str]:
    """The metric names an expression reads (walks promql_parser's tree)."""
    name = getattr(expr, "name", None)
    if type(expr).__name__ == "VectorSelector" and name:
        yield name
    for attr in ("expr", "lhs", "rhs", "vector_selector", "param"):
        child = getattr(expr, attr, None)
        if child is not None and not isinstance(child, str | int | float):
            yield from _selectors(child)
    for arg in getattr(expr, "args", None) or []:
        yield from _selectors(arg)


def _metric_names(promql: str) -> set[str]:
    for variable, value in GRAFANA_VARIABLES.items():
        promql = promql.replace(variable, value)
    return set(_selectors(promql_parser.parse(promql)))


def test_off_by_default(render: Callable[..., Rendered]) -> None:
    rendered = render()
    assert not rendered.kinds("ServiceMonitor")
    assert not rendered.kinds("PrometheusRule")
    assert not [
        d for d in rendered.kinds("ConfigMap") if d["metadata"]["name"].endswith("dashboard")
    ]


def test_the_service_monitor_scrapes_the_plain_http_metrics_port(
    render: Callable[..., Rendered],
) -> None:
    rendered = render(set=[*ALL_ON, "metrics.serviceMonitor.labels.release=prom"])
    monitor = rendered.one("ServiceMonitor")
    service = rendered.one("Service", monitor["metadata"]["name"])
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["scheme"] == "http"
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    pod = rendered.pod_specs()[f"Deployment/{monitor['metadata']['name']}"]
    [container] = [c for c in pod["containers"] if c["name"] == "webhook"]
    [target] = [p for p in container["ports"] if p["name"] == "metrics"]
    assert port["targetPort"] in ("metrics", target["containerPort"])
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env["IMAGEGATE_WEBHOOK_METRICS_PORT"] == str(target["containerPort"])
    assert monitor["metadata"]["labels"]["release"] == "prom"


def test_every_alert_parses_and_reads_exported_metrics(render: Callable[..., Rendered]) -> None:
    rule = render(set=list(ALL_ON)).one("PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {
        "ImagegateWebhookDown",
        "ImagegateAdmissionErrors",
        "ImagegateAdmissionLatencyHigh",
        "ImagegateRegistryErrors",
    }
    exported = _exported() | BUILTIN
    for name, alert in alerts.items():
        used = _metric_names(alert["expr"])
        assert used, name
        assert used <= exported, f"{name} reads {used - exported}, which /metrics does not have"
        assert alert["labels"]["severity"] in {"critical", "warning"}
        assert 'job="ig-imagegate-webhook"' in alert["expr"], name


@pytest.mark.parametrize("threshold", ["0.5", "3"])
def test_the_latency_alert_uses_the_threshold_value(
    render: Callable[..., Rendered], threshold: str
) -> None:
    rule = render(set=[*ALL_ON, f"metrics.prometheusRule.latencyP99Seconds={threshold}"]).one(
        "PrometheusRule"
    )
    [latency] = [
        r for g in rule["spec"]["groups"] for r in g["rules"] if r["alert"].endswith("LatencyHigh")
    ]
    assert re.search(rf"> {re.escape(threshold)}$", latency["expr"])


def test_the_dashboard_is_valid_and_reads_exported_metrics(render: Callable[..., Rendered]) -> None:
    rendered = render(set=[*ALL_ON, "metrics.dashboard.namespace=monitoring"])
    [config_map] = [
        d for d in rendered.kinds("ConfigMap") if d["metadata"]["name"].endswith("-dashboard")
    ]
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["imagegate.json"])
    assert dashboard == json.loads((CHART / "dashboards/imagegate.json").read_text())
    exported = _exported() | BUILTIN
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 8
    for expr in exprs:
        used = _metric_names(expr)
        assert used <= exported, f"{expr!r} reads {used - exported}"
    read = set().union(*(_metric_names(e) for e in exprs))
    shown = {n for n in exported - BUILTIN if not n.endswith(("_sum", "_count", "_created"))}
    assert shown - read == set(), "metrics the dashboard does not show"


def test_the_registry_alert_counts_what_an_uninspectable_image_is_counted_as(
    render: Callable[..., Rendered],
) -> None:
    """The alert filters `imagegate_violations_total` by `rule`: that must be the rule an image
    that could not be read really gets (a renamed rule would silence the alert)."""
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "r.io/a"}]}}
    template = pod_template("Pod", pod)
    assert template is not None
    policy = ImagePolicy.model_validate({"metadata": {"name": "p"}, "spec": {"onError": "deny"}})
    error = CheckResult("r.io/a", "error", policies=["p"], error="registry unreachable")
    [problem] = problems_of(Finding(template.containers[0], error), {"p": policy})
    rule = render(set=list(ALL_ON)).one("PrometheusRule")
    [alert] = [
        r
        for g in rule["spec"]["groups"]
        for r in g["rules"]
        if r["alert"] == "ImagegateRegistryErrors"
    ]
    assert f'rule="{problem.rule}"' in alert["expr"]
