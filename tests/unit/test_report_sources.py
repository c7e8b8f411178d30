"""`imagegate report --from FILE`: check output or PolicyReports in, one row model out."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from webhook.errors import UsageError
from webhook.report.sources import (
    ReportRow,
    report_from_cluster,
    report_from_entries,
    report_from_file,
    rows_from_document,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "report"
POLICY_REPORTS = GOLDEN / "policyreports.json"  # written by test_report_policyreport.py
CHECK_OUTPUT = GOLDEN / "check-output.json"  # `imagegate check --output json` of 4 fixtures
NOW = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write(tmp_path: Path, content: Any, name: str = "in.json") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), "utf-8")
    return path


def test_kubectl_list_of_policy_reports() -> None:
    report = report_from_file(POLICY_REPORTS, NOW)
    assert report.source == str(POLICY_REPORTS)
    assert report.workloads is True
    assert {r.namespace for r in report.rows} == {"legacy", "monitoring", "shop"}
    [cart_root] = [
        r
        for r in report.rows
        if (r.workload, r.container, r.rule) == ("cart", "cart", "non-root-user")
    ]
    assert cart_root == ReportRow(
        image="localhost:5001/shop/cart:1.9",
        rule="non-root-user",
        result="fail",
        severity="high",
        message=cart_root.message,
        policy="default",
        namespace="shop",
        kind="Deployment",
        workload="cart",
        container="cart",
        digest="sha256:" + "c" * 64,
        platform="linux/amd64",
        mode="enforce",
        size=312_400_000,
        budget=200_000_000,
        base="docker.io/library/python:3.12-slim",
        base_evidence="annotation",
    )
    assert "USER 65532:65532" in cart_root.message


def test_rows_are_sorted() -> None:
    rows = report_from_file(POLICY_REPORTS, NOW).rows
    assert rows == sorted(rows, key=ReportRow.sort_key)


def test_a_single_policy_report(tmp_path: Path) -> None:
    shop = next(
        i for i in load(POLICY_REPORTS)["items"] if i["metadata"]["name"] == "imagegate-shop"
    )
    rows = report_from_file(write(tmp_path, shop), NOW).rows
    assert len(rows) == sum(shop["summary"].values())
    assert {r.namespace for r in rows} == {"shop"}


def test_the_cluster_summary_alone_has_no_rows(tmp_path: Path) -> None:
    cluster = load(POLICY_REPORTS)["items"][-1]
    assert cluster["kind"] == "ClusterPolicyReport"
    assert report_from_file(write(tmp_path, cluster), NOW).rows == []


def test_results_of_other_tools_are_skipped(tmp_path: Path) -> None:
    doc = load(POLICY_REPORTS)
    doc["items"][0]["results"].append(
        {"policy": "disallow-latest", "rule": "x", "result": "fail", "source": "kyverno"}
    )
    rows = report_from_file(write(tmp_path, doc), NOW).rows
    assert "disallow-latest" not in {r.policy for r in rows}


def test_check_output() -> None:
    report = report_from_file(CHECK_OUTPUT, NOW)
    assert report.workloads is False
    by_image: dict[str, dict[str, str]] = {}
    for r in report.rows:
        by_image.setdefault(r.image.split("/")[-1], {})[r.rule] = r.result
    assert by_image == {
        "good:1": dict.fromkeys(
            [
                "non-root-user",
                "allowed-base",
                "size-budget",
                "single-entrypoint",
                "immutable-reference",
            ],
            "pass",
        ),
        "zero:1": {
            "non-root-user": "fail",
            "allowed-base": "fail",
            "size-budget": "pass",
            "single-entrypoint": "pass",
            "immutable-reference": "pass",
        },
        "big:1": {
            "non-root-user": "pass",
            "allowed-base": "pass",
            "size-budget": "fail",
            "single-entrypoint": "pass",
            "immutable-reference": "pass",
        },
        "missing:1": {"inspection": "error"},
    }
    [big] = [r for r in report.rows if r.image.endswith("big:1") and r.rule == "size-budget"]
    assert (big.size, big.budget, big.base_evidence) == (31_500_000, 20_000_000, "diff_ids")
    [missing] = [r for r in report.rows if r.result == "error"]
    assert "manifest unknown" in missing.message


def test_check_output_of_an_image_no_policy_applies_to_is_a_skip() -> None:
    rows = rows_from_document(
        {"results": [{"image": "x:1", "verdict": "pass", "policies": [], "violations": []}]}, "f"
    )
    assert [(r.result, r.rule) for r in rows] == [("skip", "")]


def test_entries_and_cluster_objects_read_like_files() -> None:
    from tests.unit.test_report_policyreport import reports, sample_entries

    live = report_from_entries(sample_entries(), NOW)
    cluster = report_from_cluster(reports(), NOW)
    assert live.rows == cluster.rows == report_from_file(POLICY_REPORTS, NOW).rows
    assert live.source == "live scan"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param("", "the file is empty", id="empty"),
        pytest.param("{not json", "not JSON (line 1, column 2", id="not-json"),
        pytest.param("[1, 2]", "expected a JSON object, found list", id="array"),
        pytest.param({"kind": "Pod"}, "not a report source (kind 'Pod')", id="wrong-kind"),
        pytest.param({"foo": 1}, "not a report source (keys ['foo'])", id="unknown-object"),
        pytest.param({"results": {}}, "`results` must be a list", id="results-not-a-list"),
        pytest.param(
            {"results": [{"verdict": "pass"}]}, "results[0] is not a check result", id="no-image"
        ),
        pytest.param(
            {"results": [{"image": "a", "verdict": "maybe"}]},
            "results[0]: `verdict` must be pass, fail or error, not 'maybe'",
            id="bad-verdict",
        ),
        pytest.param(
            {"apiVersion": "v1", "kind": "List", "items": [{"kind": "Pod"}]},
            "items[0] is a Pod, not a PolicyReport",
            id="list-of-pods",
        ),
        pytest.param({"kind": "List"}, "a List without an `items` list", id="list-without-items"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(
    tmp_path: Path, content: Any, expected: str
) -> None:
    path = write(tmp_path, content, "report-input.json")
    with pytest.raises(UsageError) as err:
        report_from_file(path, NOW)
    assert str(err.value).startswith(f"{path}: ")
    assert expected in str(err.value)
    assert err.value.exit_code == 2


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"nope\.json: no such file"):
        report_from_file(tmp_path / "nope.json", NOW)
