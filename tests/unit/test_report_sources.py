"""`imagegate report --from FILE`: check output or PolicyReports in, one row model out."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from webhook.errors import UsageError
from webhook.policy.checker import CheckResult
from webhook.policy.model import RULE_IDS, Mode
from webhook.report.policyreport import CATEGORIES, PASS_MESSAGES, ReportEntry, WorkloadRef
from webhook.report.sources import (
    MAX_LAYERS,
    MAX_TEXT,
    MAX_TOP_WASTED,
    CacheFile,
    LayerBar,
    LayerReport,
    ReportRow,
    ResolvedUser,
    WastedFile,
    report_from_cluster,
    report_from_entries,
    report_from_file,
    rows_from_document,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "report"
POLICY_REPORTS = GOLDEN / "policyreports.json"  # written by test_report_policyreport.py
CHECK_OUTPUT = GOLDEN / "check-output.json"  # real `imagegate check --output json`, normalised
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
        message=(
            "the image has no USER, so it runs as root: set a numeric non-root USER in the "
            "Dockerfile (for example `USER 65532:65532`), or runAsUser in the pod's "
            "securityContext"
        ),
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


def test_rows_are_sorted() -> None:
    rows = report_from_file(POLICY_REPORTS, NOW).rows
    assert rows == sorted(rows, key=ReportRow.sort_key)


def test_a_single_policy_report(tmp_path: Path) -> None:
    cart = next(
        i
        for i in load(POLICY_REPORTS)["items"]
        if i["metadata"]["name"] == "imagegate-deployment-cart"
    )
    rows = report_from_file(write(tmp_path, cart), NOW).rows
    assert len(rows) == sum(cart["summary"].values()) == 10
    assert {(r.namespace, r.kind, r.workload) for r in rows} == {("shop", "Deployment", "cart")}


def test_a_cluster_summary_of_an_earlier_version_alone_has_no_rows(tmp_path: Path) -> None:
    """Versions before per-workload reports wrote a ClusterPolicyReport with counts only:
    reading it adds nothing (its results are in the PolicyReports)."""
    cluster = {
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "ClusterPolicyReport",
        "metadata": {"name": "imagegate-cluster-summary"},
        "summary": {"pass": 36, "fail": 8, "warn": 0, "error": 1, "skip": 0},
        "results": [],
    }
    assert report_from_file(write(tmp_path, cluster), NOW).rows == []


def test_rows_show_the_checks_words_not_the_per_container_suffix() -> None:
    """Report messages end with the container and image (so Policy Reporter keeps every
    result); rows already say both, and equal problems of an image stay one problem."""
    rows = report_from_file(POLICY_REPORTS, NOW).rows
    assert all("(container " not in r.message for r in rows)
    shipper = {r.message for r in rows if r.container == "log-shipper" and r.rule == "size-budget"}
    assert shipper == {"size-budget: the image fits the size budget"}


def test_reports_of_earlier_versions_still_read(tmp_path: Path) -> None:
    """A per-namespace report as earlier versions wrote it (no scope, no resultID)."""
    legacy = {
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {"name": "imagegate-shop", "namespace": "shop"},
        "results": [
            {
                "source": "imagegate", "policy": "default", "rule": "non-root-user",
                "result": "fail", "severity": "high", "message": "runs as root",
                "resources": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                               "namespace": "shop"}],
                "properties": {"container": "web", "image": "web:1"},
            }
        ],
    }  # fmt: skip
    [row] = report_from_file(write(tmp_path, legacy), NOW).rows
    assert (row.workload, row.container, row.message) == ("web", "web", "runs as root")


def test_results_of_other_tools_are_skipped(tmp_path: Path) -> None:
    doc = load(POLICY_REPORTS)
    doc["items"][0]["results"].append(
        {"policy": "disallow-latest", "rule": "x", "result": "fail", "source": "kyverno"}
    )
    rows = report_from_file(write(tmp_path, doc), NOW).rows
    assert "disallow-latest" not in {r.policy for r in rows}


def test_check_output() -> None:
    """Real `imagegate check` output (hack/golden_check_output.py), one row per rule."""
    report = report_from_file(CHECK_OUTPUT, NOW)
    assert report.workloads is False
    by_image: dict[str, dict[str, str]] = {}
    for r in report.rows:
        by_image.setdefault(r.image.split("/")[-1], {})[r.rule] = r.result
    every = dict.fromkeys(
        ["non-root-user", "allowed-base", "size-budget", "single-entrypoint",
         "immutable-reference"],
        "pass",
    )  # fmt: skip
    assert by_image == {
        "good:1": every,
        "zero:latest": every | {"non-root-user": "fail", "immutable-reference": "fail"},
        "big:1": every | {"size-budget": "fail"},
        "missing:1": {"inspection": "error"},
    }
    raw = {r["image"].split("/")[-1]: r for r in load(CHECK_OUTPUT)["results"]}
    [big] = [r for r in report.rows if r.image.endswith("big:1") and r.rule == "size-budget"]
    facts = raw["big:1"]["facts"]
    assert (big.size, big.budget, big.base, big.base_evidence) == (
        facts["compressedSize"],
        2_000_000,
        "localhost:5001/fixtures/base:1",
        "diff_ids",
    )
    assert big.size is not None
    assert big.size > 3 * 1024 * 1024  # the 3 MiB random layer
    assert (big.digest, big.platform) == (raw["big:1"]["digest"], "linux/amd64")
    [good] = [r for r in report.rows if r.image.endswith("good:1") and r.rule == "allowed-base"]
    assert (good.base, good.base_evidence) == ("localhost:5001/fixtures/base:1", "label")
    [missing] = [r for r in report.rows if r.result == "error"]
    assert missing.message == (
        "cannot be inspected: manifest unknown: localhost:5001/fixtures/missing:1"
    )
    assert (missing.digest, missing.platform, missing.size) == ("", "", None)


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
        pytest.param("[" * 100_000, "JSON nested too deeply", id="too-deep"),
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


# ---------------------------------------------------------------------------------------------
# Layer analysis (`imagegate check --layers`): parsed from both sources, hostile data survived

CHECK_LAYERS = GOLDEN / "check-layers.json"  # three images: two analysed, one not
CLUSTER_LAYERS = GOLDEN / "policyreport-layers.json"  # the same images as PolicyReport results


def layers_by_image(path: Path) -> dict[str, LayerReport | None]:
    found: dict[str, LayerReport | None] = {}
    for row in report_from_file(path, NOW).rows:
        assert found.get(row.image, row.layers) == row.layers, "one analysis per image"
        found[row.image.split("/")[-1]] = row.layers
    return found


def test_layer_analysis_of_check_output() -> None:
    layers = layers_by_image(CHECK_LAYERS)
    assert layers["plain:1"] is None
    api = layers["api:2.3"]
    assert api is not None
    assert (api.efficiency, api.wasted_bytes, api.user_wasted) == (0.8438, 65_323_008, 0.2078)
    assert [b.size for b in api.layers] == [74_812_416, 212_381_696, 1_236, 96_104_448, 1_024,
                                            3_407_872]  # fmt: skip
    assert api.layers[4].wasted > api.layers[4].size  # a whiteout counts what it deletes
    assert api.top_wasted[0] == WastedFile("/root/.cache/pip", 62_914_560, 3, (4,))
    assert [c.kind for c in api.cache_files] == ["apt-lists", "pycache", "tmp"]
    assert api.cache_bytes == 47_426_048 + 3_145_728 + 8_192
    assert api.user is None
    assert layers["nobody:1"] is not None
    assert layers["nobody:1"].user == ResolvedUser("nobody", 65534, 65534)


def test_layer_analysis_of_policy_reports_says_what_check_output_says() -> None:
    from_check, from_cluster = layers_by_image(CHECK_LAYERS), layers_by_image(CLUSTER_LAYERS)
    assert from_check.keys() == from_cluster.keys()
    for image, check in from_check.items():
        cluster = from_cluster[image]
        if check is None or cluster is None:
            assert check is cluster is None
            continue
        # properties do not say which layers added and changed a wasted path
        bare = tuple(WastedFile(w.path, w.bytes) for w in check.top_wasted)
        assert cluster == replace(check, top_wasted=bare)


def test_the_layer_rule_passes_in_check_output_when_the_layers_were_read() -> None:
    rows = report_from_file(CHECK_LAYERS, NOW).rows
    rules = {(r.image.split("/")[-1], r.rule): r for r in rows}
    assert rules["nobody:1", "layer-efficiency"].result == "pass"
    assert rules["nobody:1", "layer-efficiency"].severity == "medium"
    assert rules["api:2.3", "layer-efficiency"].result == "fail"
    assert ("plain:1", "layer-efficiency") not in rules


def test_every_rule_has_a_category_and_a_pass_message() -> None:
    assert set(RULE_IDS) <= set(CATEGORIES)
    assert set(RULE_IDS) <= set(PASS_MESSAGES)
    assert CATEGORIES["layer-efficiency"] == "Efficiency"


def with_properties(**changed: Any) -> Any:
    """The layer PolicyReport with these properties changed in every result (None: removed)."""
    doc = load(CLUSTER_LAYERS)
    for result in (r for report in doc["items"] for r in report["results"]):
        for key, value in changed.items():
            if value is None:
                result["properties"].pop(key, None)
            else:
                result["properties"][key] = value
    return doc


def api_layers(doc: Any) -> LayerReport | None:
    rows = rows_from_document(doc, "f")
    return next(r.layers for r in rows if r.image.endswith("api:2.3"))


HUGE = json.dumps([{"digest": "d", "createdBy": "x", "size": 1, "wastedBytes": 0}] * 10_000)


@pytest.mark.parametrize(
    ("key", "value", "check"),
    [
        ("layerEfficiency", "nan", lambda r: r.efficiency is None),
        ("layerEfficiency", "inf", lambda r: r.efficiency is None),
        ("layerEfficiency", "1.5", lambda r: r.efficiency is None),
        ("layerEfficiency", "-0.1", lambda r: r.efficiency is None),
        ("layerEfficiency", "0." + "9" * 5000, lambda r: r.efficiency is None),
        ("userWastedPercent", "1.7", lambda r: r.user_wasted == 1.7),  # whiteouts: above 1
        ("wastedBytes", "-12", lambda r: r.wasted_bytes is None),
        ("wastedBytes", "9" * 5000, lambda r: r.wasted_bytes is None),  # int() would raise
        ("wastedBytes", "١٢٣", lambda r: r.wasted_bytes is None),  # digits, not ASCII
        ("layers", "{not json", lambda r: r.layers == ()),
        ("layers", "[" * 100_000, lambda r: r.layers == ()),  # RecursionError in json
        ("layers", '{"digest": "d"}', lambda r: r.layers == ()),
        (
            "layers",
            '["a", 1, null, {"size": -5}, {"size": "7"}, {"size": 3}]',
            lambda r: [b.size for b in r.layers] == [7, 3],
        ),
        (
            "layers",
            '[{"size": 5, "wastedBytes": -3, "createdBy": 7, "digest": []}]',
            lambda r: r.layers == (LayerBar("", "", 5, 0),),
        ),
        ("layers", HUGE, lambda r: len(r.layers) == MAX_LAYERS and r.more_layers == 10_000 - 128),
        (
            "layers",
            json.dumps([{"size": 1, "createdBy": "x" * 100_000}]),
            lambda r: len(r.layers[0].created_by) == MAX_TEXT,
        ),
        (
            "topWasted",
            json.dumps([{"path": "/a", "bytes": 5}] * 1000),
            lambda r: len(r.top_wasted) == MAX_TOP_WASTED,
        ),
        (
            "topWasted",
            '[{"path": "", "bytes": 5}, {"path": "/a", "bytes": true}]',
            lambda r: r.top_wasted == (),
        ),
        ("cacheFiles", '[{"path": "/tmp", "bytes": 1e400}]', lambda r: r.cache_files == ()),
        (
            "cacheFiles",
            '[{"path": "/tmp", "bytes": 3}]',
            lambda r: r.cache_files == (CacheFile("cache", "/tmp", 3),),
        ),
        ("resolvedUser", "nobody", lambda r: r.user is None),
        ("resolvedUser", "=1:2", lambda r: r.user is None),
        ("resolvedUser", "x=-1:2", lambda r: r.user is None),
        ("resolvedUser", "x=1:", lambda r: r.user is None),
        ("resolvedUser", "a=b=1:2", lambda r: r.user == ResolvedUser("a=b", 1, 2)),
    ],
)
def test_malformed_layer_properties_are_ignored(key: str, value: str, check: Any) -> None:
    layers = api_layers(with_properties(**{key: value}))
    assert layers is not None
    assert check(layers), layers


def test_layer_properties_that_are_all_malformed_are_no_analysis() -> None:
    doc = with_properties(
        layerEfficiency="x", wastedBytes="-1", userWastedPercent="", layers="[]", topWasted="1",
        cacheFiles="{}", resolvedUser="?",
    )  # fmt: skip
    assert api_layers(doc) is None


@pytest.mark.parametrize(
    "facts",
    [
        {"layerAnalysis": "yes"},
        {"layerAnalysis": []},
        {"layerAnalysis": {}},
        {"layerAnalysis": {"layers": {"0": {"size": 1}}}, "resolvedUser": "nobody"},
        {"layerAnalysis": {"efficiency": True, "wastedBytes": 1.5, "layers": None}},
        {"resolvedUser": {"name": "nobody", "uid": 65534, "gid": 65534}},  # no analysis
    ],
)
def test_malformed_layer_facts_are_no_analysis(facts: dict[str, Any]) -> None:
    rows = rows_from_document({"results": [{"image": "x:1", "verdict": "pass", "facts": facts,
                                            "policies": ["p"]}]}, "f")  # fmt: skip
    assert [r.layers for r in rows] == [None] * len(rows)


def test_hostile_policy_report_shapes_do_not_crash() -> None:
    results: list[Any] = [
        {"source": "imagegate", "rule": "size-budget", "result": "pass", "properties": ["x"]},
        {"source": "imagegate", "rule": "size-budget", "result": "pass", "resources": "x"},
        {"source": "imagegate", "rule": "size-budget", "result": "pass", "resources": [7]},
        {
            "source": "imagegate",
            "rule": "size-budget",
            "result": "pass",
            "properties": {"compressedSize": "9" * 5000, "sizeBudget": "-1"},
        },
    ]
    rows = rows_from_document({"kind": "PolicyReport", "results": results}, "f")
    assert len(rows) == 4
    assert {(r.size, r.budget) for r in rows} == {(None, None)}


def test_layer_analysis_survives_the_policy_report_the_cluster_writer_builds() -> None:
    """The contract with report.policyreport._properties: what the writer puts in a
    PolicyReport, the reader gets back (less what properties leave out)."""
    results = load(CHECK_LAYERS)["results"]
    entries = [
        ReportEntry(
            WorkloadRef("apps/v1", "Deployment", "shop", f"w{i}"),
            "c",
            CheckResult(
                r["image"],
                r["verdict"],
                r["digest"],
                r["platform"],
                facts=r["facts"],
                policies=r["policies"],
            ),
            {"default": Mode.enforce},
        )
        for i, r in enumerate(results)
    ]
    written = {r.image: r.layers for r in report_from_entries(entries, NOW).rows}
    read = {r.image: r.layers for r in report_from_file(CHECK_LAYERS, NOW).rows}
    assert written.keys() == read.keys()
    for image, layers in read.items():
        if layers is not None:
            layers = replace(
                layers, top_wasted=tuple(WastedFile(w.path, w.bytes) for w in layers.top_wasted)
            )
        assert written[image] == layers, image


def test_per_workload_reports_of_real_check_output_add_up_like_the_check_output() -> None:
    """`imagegate report` over the PolicyReports of two identical containers per image (the
    golden check.policyreports.json, built from real check output) counts every check twice
    and shows each image's problems once, in the check's own words."""
    from webhook.report.summary import summarize

    direct = summarize(report_from_file(CHECK_OUTPUT, NOW))
    reports = summarize(report_from_file(GOLDEN / "check.policyreports.json", NOW))
    assert reports.totals == {k: 2 * n for k, n in direct.totals.items()}
    assert reports.workloads == 4
    assert dict(reports.rules) == {
        rule: {k: 2 * n for k, n in c.items()} for rule, c in direct.rules
    }
    by_image = {i.image: i for i in reports.images}
    for image in direct.images:
        mine = by_image[image.image]
        assert mine.counts == {k: 2 * n for k, n in image.counts.items()}, image.image
        fails = {k: p for k, p in image.problems.items() if p.result == "fail"}
        assert {k: p for k, p in mine.problems.items() if p.result == "fail"} == fails
        assert len(mine.problems) == len(image.problems), "one problem per rule, not per container"
