"""The CRDs in charts/imagegate/files/crds/ are what webhook/crds.py generates from the models,
they are structural schemas the API server accepts, and the chart renders every one of them as a
release object (templates/crds.yaml) that uninstall keeps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import Rendered
from tests.chart.schemas import (
    crd_schemas,
    load_crds,
    structural_problems,
    validate_custom_resource,
)
from tests.support.paths import CHART, ROOT
from webhook.crds import crd_file_name, render_crds
from webhook.policy.model import ImagePolicy

CRDS = CHART / "files" / "crds"
GENERATED = render_crds()
IMAGEGATE_V1ALPHA1 = "imagegate.dev/v1alpha1"
Render = Callable[..., Rendered]


def _ids(crds: list[dict[str, Any]]) -> list[str]:
    return [c["metadata"]["name"] for c in crds]


@pytest.mark.parametrize("crd", GENERATED, ids=_ids(GENERATED))
def test_committed_crd_equals_generated(crd: dict[str, Any]) -> None:
    path = CRDS / crd_file_name(crd)
    assert path.is_file(), f"{path} missing: regenerate with `imagegate crds --out {CRDS}`"
    committed = yaml.safe_load(path.read_text())
    assert committed == crd, (
        f"{path.relative_to(ROOT)} is stale: regenerate with `imagegate crds --out {CRDS}`"
    )


def test_every_crd_file_is_known() -> None:
    expected = {crd_file_name(c) for c in GENERATED} | {
        "kopfpeerings.kopf.dev.yaml",
        "clusterkopfpeerings.kopf.dev.yaml",
    }
    assert {p.name for p in CRDS.glob("*.yaml")} == expected


@pytest.mark.parametrize("path", sorted(CRDS.glob("*.yaml")), ids=lambda p: p.name)
def test_crd_schema_is_structural(path: Path) -> None:
    crd = yaml.safe_load(path.read_text())
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        assert list(structural_problems(schema)) == []
        assert schema["properties"].get("metadata", {"type": "object"}) == {"type": "object"}


def test_imagerebuild_crd_has_status_subresource_and_printer_columns() -> None:
    crd = next(c for c in GENERATED if c["spec"]["names"]["kind"] == "ImageRebuild")
    assert crd["spec"]["scope"] == "Namespaced"
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Source": ".spec.source",
        "Phase": ".status.phase",
        "Replacement": ".status.replacement",
        "Age": ".metadata.creationTimestamp",
    }


def test_imagepolicy_crd_is_cluster_scoped() -> None:
    crd = next(c for c in GENERATED if c["spec"]["names"]["kind"] == "ImagePolicy")
    assert crd["spec"]["scope"] == "Cluster"


def test_size_budget_is_int_or_string() -> None:
    crd = next(c for c in GENERATED if c["spec"]["names"]["kind"] == "ImagePolicy")
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    size = schema["properties"]["spec"]["properties"]["rules"]["properties"]["sizeBudget"]
    field = size["properties"]["maxCompressedSize"]
    assert field["x-kubernetes-int-or-string"] is True
    assert "type" not in field


@pytest.mark.parametrize("path", sorted((ROOT / "policies").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_policies_validate_against_the_crd(path: Path) -> None:
    schemas = load_crds(CRDS)
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            assert validate_custom_resource(doc, schemas[(IMAGEGATE_V1ALPHA1, "ImagePolicy")]) == []


@pytest.mark.parametrize(
    ("patch", "error"),
    [
        pytest.param({"mode": "block"}, "spec.mode", id="bad-enum"),
        pytest.param({"typo": True}, "typo", id="unknown-field"),
        pytest.param(
            {"rules": {"sizeBudget": {"maxCompressedSize": "huge"}}},
            "maxCompressedSize",
            id="bad-size",
        ),
    ],
)
def test_crd_schema_rejects_invalid_policies(patch: dict[str, Any], error: str) -> None:
    doc = ImagePolicy().model_dump(mode="json", by_alias=True)
    doc["spec"].update(patch)
    schemas = crd_schemas(next(c for c in GENERATED if c["spec"]["names"]["kind"] == "ImagePolicy"))
    problems = validate_custom_resource(doc, schemas[(IMAGEGATE_V1ALPHA1, "ImagePolicy")])
    assert any(error in p for p in problems), problems


def test_imagerebuild_with_status_validates() -> None:
    schemas = crd_schemas(
        next(c for c in GENERATED if c["spec"]["names"]["kind"] == "ImageRebuild")
    )
    doc = {
        "apiVersion": IMAGEGATE_V1ALPHA1,
        "kind": "ImageRebuild",
        "metadata": {"name": "app", "namespace": "team-a"},
        "spec": {"source": "localhost:5001/app:1", "targetRepository": "localhost:5001/app-fixed"},
        "status": {
            "phase": "Succeeded",
            "replacement": "localhost:5001/app-fixed@sha256:" + "0" * 64,
            "before": {"verdict": "fail", "failedRules": ["non-root-user"]},
            "after": None,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    assert validate_custom_resource(doc, schemas[(IMAGEGATE_V1ALPHA1, "ImageRebuild")]) == []


def test_the_chart_has_no_crds_directory() -> None:
    """Helm installs crds/ once and never upgrades it; the CRDs are templates instead (and a
    crds/ directory next to them would make Helm create them twice)."""
    assert not (CHART / "crds").exists()


def test_every_crd_file_is_rendered_as_a_kept_release_object(render: Render) -> None:
    rendered = {c["metadata"]["name"]: c for c in render().kinds("CustomResourceDefinition")}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        name = crd["metadata"]["name"]
        assert name in rendered, f"{path.name} is not rendered"
        got = rendered[name]
        assert got["spec"] == crd["spec"], name
        assert got["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert got["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_crds_install_false_renders_none_of_them(render: Render) -> None:
    names = {
        c["metadata"]["name"]
        for c in render(set=["crds.install=false"]).kinds("CustomResourceDefinition")
    }
    assert not names & {yaml.safe_load(p.read_text())["metadata"]["name"] for p in CRDS.glob("*")}
    assert names == {"policyreports.wgpolicyk8s.io", "clusterpolicyreports.wgpolicyk8s.io"}
