"""`layer-efficiency`: the layers waste little and ship no package caches (Dive CI's rules).

Dive's three CI thresholds, computed from the layer index as Dive computes them
(`webhook.layers.analysis.dive_efficiency`): efficiency below `lowestEfficiency`, wasted bytes at
or above `highestWastedBytes`, wasted bytes over the non-base layers' size at or above
`highestUserWastedPercent`; plus `forbidCacheFiles`. One violation names every threshold
crossed, the top wasted paths and the fix. Not evaluated without the layers (`findings` None).
"""

from __future__ import annotations

from webhook.layers.analysis import LayerAnalysis
from webhook.policy.model import LayerEfficiencyRule
from webhook.policy.outcome import RuleOutcome, Violation
from webhook.policy.rules.size_budget import human

RULE = "layer-efficiency"
SHOWN = 3
FIX = (
    "delete files in the same RUN that creates them (`apt-get ... && rm -rf "
    "/var/lib/apt/lists/*`, `pip install --no-cache-dir`), copy only the build output into a "
    "multi-stage final stage, or squash the layers (`imagegate rebuild --squash`)"
)


def check(rule: LayerEfficiencyRule, analysis: LayerAnalysis) -> RuleOutcome:
    problems: list[str] = []
    if analysis.efficiency < rule.lowest_efficiency:
        problems.append(
            f"efficiency {analysis.efficiency:.1%} is below {rule.lowest_efficiency:.1%}"
        )
    if rule.highest_wasted_bytes is not None and analysis.wasted_bytes >= int(
        rule.highest_wasted_bytes
    ):
        problems.append(
            f"{human(analysis.wasted_bytes)} wasted, the limit is "
            f"{human(int(rule.highest_wasted_bytes))}"
        )
    user = analysis.user_wasted_percent
    limit = rule.highest_user_wasted_percent
    if user is not None and limit is not None and user >= limit:
        problems.append(f"{user:.1%} of the non-base layers is wasted (limit {limit:.1%})")
    if problems and analysis.top_wasted:
        top = ", ".join(f"{w.path} ({human(w.bytes)})" for w in analysis.top_wasted[:SHOWN])
        problems.append(f"most wasted: {top}")
    if rule.forbid_cache_files and analysis.cache_files:
        caches = ", ".join(
            f"{c.path} ({c.kind}, {human(c.bytes)})" for c in analysis.cache_files[:SHOWN]
        )
        more = len(analysis.cache_files) - SHOWN
        problems.append(
            f"cache files left in the image: {caches}{f' and {more} more' if more > 0 else ''}"
        )
    if not problems:
        return RuleOutcome()
    return RuleOutcome([Violation(RULE, f"{'; '.join(problems)}: {FIX}", rule.severity)])
