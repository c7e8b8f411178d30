"""ImagePolicy: loading, clear errors, shipped policies, matching, schema export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from webhook.errors import PolicyError
from webhook.policy.loader import load_policies, parse_policies
from webhook.policy.model import ImagePolicy, Mode

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"

HEADER = "apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: p}\n"


def test_default_yaml_is_the_builtin_default() -> None:
    [policy] = load_policies(POLICIES / "default.yaml")
    assert policy == ImagePolicy()


def test_every_shipped_policy_loads() -> None:
    policies = load_policies(POLICIES)
    assert {p.name for p in policies} >= {"default", "strict", "audit"}
    strict = next(p for p in policies if p.name == "strict")
    assert strict.spec.rules.immutable_reference.mode == "requireDigest"
    assert next(p for p in policies if p.name == "audit").spec.mode is Mode.audit


@pytest.mark.parametrize(
    ("text", "budget"),
    [("200MB", 200_000_000), ("1.5GiB", 1_610_612_736), ("10kib", 10_240), ("123", 123)],
)
def test_size_units(text: str, budget: int) -> None:
    [p] = parse_policies(
        HEADER + f"spec:\n  rules:\n    sizeBudget:\n      maxCompressedSize: {text}\n"
    )
    assert int(p.spec.rules.size_budget.max_compressed_size) == budget


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            "spec:\n  mode: block\n",
            "spec.mode: Input should be 'audit', 'warn' or 'enforce'",
            id="bad-enum",
        ),
        pytest.param(
            "spec:\n  rules:\n    sizeBudget:\n      maxCompressedSize: huge\n",
            "spec.rules.sizeBudget.maxCompressedSize",
            id="bad-size",
        ),
        pytest.param(
            "spec:\n  rules:\n    nonRootUsr: {}\n",
            "spec.rules.nonRootUsr: unknown field",
            id="typo-field",
        ),
        pytest.param(
            "spec:\n  rules:\n    allowedBases:\n      references: ['Bad Ref']\n",
            "spec.rules.allowedBases.references",
            id="bad-reference",
        ),
        pytest.param(
            "spec:\n  rules:\n    allowedBases:\n      references: ['distroless/*']\n",
            "must be fully qualified",
            id="unqualified-glob",
        ),
        pytest.param("spec:\n  platform: linux\n", "invalid platform 'linux'", id="bad-platform"),
        pytest.param(
            "spec:\n  match:\n    namespaceSelector:\n"
            "      matchExpressions: [{key: a, operator: Has}]\n",
            "spec.match.namespaceSelector.matchExpressions[0].operator",
            id="bad-selector",
        ),
    ],
)
def test_invalid_policy_names_file_document_and_path(
    tmp_path: Path, body: str, expected: str
) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(HEADER + body)
    with pytest.raises(PolicyError) as err:
        load_policies(file)
    message = str(err.value)
    assert f"{file} (document 1) 'p'" in message
    assert expected in message
    assert "Traceback" not in message


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    file = tmp_path / "broken.yaml"
    file.write_text(HEADER + "spec:\n  mode: [enforce\n")
    with pytest.raises(PolicyError, match=r"broken.yaml: line \d+, column \d+: invalid YAML"):
        load_policies(file)


def test_wrong_kind_is_explained(tmp_path: Path) -> None:
    file = tmp_path / "cm.yaml"
    file.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(
        PolicyError, match=r"expected apiVersion imagegate\.dev/v1alpha1 and kind ImagePolicy"
    ):
        load_policies(file)


def test_directory_collects_every_problem_and_duplicate_names(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(HEADER + "---\n" + HEADER.replace("name: p", "name: q"))
    (tmp_path / "b.yml").write_text(HEADER)
    (tmp_path / "c.yaml").write_text(HEADER + "spec: {mode: nope}\n")
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.raises(PolicyError) as err:
        load_policies(tmp_path)
    message = str(err.value)
    assert "'p' is already defined in" in message
    assert "c.yaml (document 1) 'p': spec.mode" in message


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such file"):
        load_policies(tmp_path / "nope.yaml")
    with pytest.raises(PolicyError, match=r"no \.yaml or \.yml files"):
        load_policies(tmp_path)


def test_empty_documents_are_ignored() -> None:
    assert [p.name for p in parse_policies("---\n" + HEADER + "---\n")] == ["p"]


@pytest.mark.parametrize(
    ("spec", "image", "namespace", "labels", "applies"),
    [
        pytest.param("{}", "nginx", "default", {}, True, id="empty-match-is-everything"),
        pytest.param(
            "{match: {namespaces: ['team-*']}}", "nginx", "team-a", {}, True, id="namespace-glob"
        ),
        pytest.param(
            "{match: {namespaces: ['team-*']}}",
            "nginx",
            "default",
            {},
            False,
            id="namespace-glob-miss",
        ),
        pytest.param(
            "{match: {namespaces: ['team-*']}}", "nginx", None, {}, True, id="no-namespace-in-cli"
        ),
        pytest.param(
            "{match: {images: ['localhost:5001/*']}}",
            "localhost:5001/app:1",
            None,
            {},
            True,
            id="image-glob",
        ),
        pytest.param(
            "{match: {images: ['nginx*']}}",
            "docker.io/library/nginx:1",
            None,
            {},
            True,
            id="image-glob-short-form",
        ),
        pytest.param(
            "{match: {images: ['localhost:5001/*']}}",
            "nginx",
            None,
            {},
            False,
            id="image-glob-miss",
        ),
        pytest.param(
            "{exclude: {namespaces: [kube-system]}}",
            "nginx",
            "kube-system",
            {},
            False,
            id="excluded-namespace",
        ),
        pytest.param(
            "{exclude: {namespaceSelector: {matchLabels: {imagegate.dev/ignore: 'true'}}}}",
            "nginx",
            "x",
            {"imagegate.dev/ignore": "true"},
            False,
            id="opt-out-label",
        ),
        pytest.param(
            "{exclude: {namespaceSelector: {matchExpressions: "
            "[{key: tier, operator: In, values: [dev]}]}}}",
            "nginx",
            "x",
            {"tier": "prod"},
            True,
            id="selector-expression-miss",
        ),
        pytest.param(
            "{exclude: {namespaces: [dev], images: ['nginx*']}}",
            "nginx",
            "dev",
            {},
            False,
            id="exclude-all-parts-hold",
        ),
        pytest.param(
            "{exclude: {namespaces: [dev], images: ['nginx*']}}",
            "redis",
            "dev",
            {},
            True,
            id="exclude-one-part-fails",
        ),
    ],
)
def test_applies_to(
    spec: str, image: str, namespace: str | None, labels: dict[str, str], applies: bool
) -> None:
    [p] = parse_policies(HEADER + f"spec: {spec}\n")
    assert p.applies_to(image, namespace, labels) is applies


def test_cli_overrides_keep_the_rest() -> None:
    policy = ImagePolicy().with_overrides(["localhost:5001/base:1"], 1000)
    assert policy.spec.rules.allowed_bases.references[-1] == "localhost:5001/base:1"
    assert int(policy.spec.rules.size_budget.max_compressed_size) == 1000
    assert policy.spec.rules.non_root_user == ImagePolicy().spec.rules.non_root_user


def test_committed_schema_is_up_to_date() -> None:
    committed = json.loads((POLICIES / "imagepolicy.schema.json").read_text())
    assert committed == ImagePolicy.model_json_schema(by_alias=True), (
        "regenerate with: imagegate schema > policies/imagepolicy.schema.json"
    )
