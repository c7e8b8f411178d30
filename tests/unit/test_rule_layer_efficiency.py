"""layer-efficiency: Dive CI's three thresholds and forbidCacheFiles, from a layer analysis."""

from __future__ import annotations

import pytest

from webhook.layers.analysis import CacheFile, LayerAnalysis, WastedPath
from webhook.policy.model import LayerEfficiencyRule
from webhook.policy.rules import layer_efficiency


def analysis(
    efficiency: float = 1.0,
    wasted: int = 0,
    user: float | None = 0.0,
    caches: tuple[CacheFile, ...] = (),
) -> LayerAnalysis:
    top = (WastedPath("/big.bin", wasted, 1, (2,)),) if wasted else ()
    return LayerAnalysis(efficiency, wasted, user, (), top, caches, (), (), ())


APT = CacheFile("apt-lists", "/var/lib/apt/lists", 3_000_000, 12)


@pytest.mark.parametrize(
    ("rule", "found", "expected"),
    [
        pytest.param(LayerEfficiencyRule(), analysis(), None, id="clean"),
        pytest.param(
            LayerEfficiencyRule(), analysis(0.89, 100, 0.01), "below 90.0%", id="efficiency"
        ),
        pytest.param(LayerEfficiencyRule(), analysis(0.9, 100, 0.0), None, id="at-the-limit"),
        pytest.param(
            LayerEfficiencyRule(), analysis(0.95, 100, 0.1), "limit 10.0%", id="user-wasted"
        ),
        pytest.param(
            LayerEfficiencyRule(highest_wasted_bytes=1000),  # type: ignore[arg-type]
            analysis(0.99, 1000, 0.0),
            "limit is 1.0 kB",
            id="wasted-bytes-at-or-above",
        ),
        pytest.param(
            LayerEfficiencyRule(), analysis(caches=(APT,)), "/var/lib/apt/lists", id="caches"
        ),
        pytest.param(
            LayerEfficiencyRule(forbid_cache_files=False),
            analysis(caches=(APT,)),
            None,
            id="caches-allowed",
        ),
        pytest.param(
            LayerEfficiencyRule(highest_user_wasted_percent=None),
            analysis(0.95, 5, None),
            None,
            id="no-user-layers",
        ),
    ],
)
def test_thresholds(rule: LayerEfficiencyRule, found: LayerAnalysis, expected: str | None) -> None:
    outcome = layer_efficiency.check(rule, found)
    if expected is None:
        assert outcome.violations == []
        return
    (violation,) = outcome.violations
    assert violation.rule == "layer-efficiency"
    assert expected in violation.message, violation.message
    assert "multi-stage" in violation.message  # the fix is named


def test_the_message_names_the_most_wasted_paths() -> None:
    (violation,) = layer_efficiency.check(
        LayerEfficiencyRule(), analysis(0.5, 2000, 0.5)
    ).violations
    assert "most wasted: /big.bin (2.0 kB)" in violation.message
