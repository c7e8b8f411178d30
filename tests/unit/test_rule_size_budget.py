"""size-budget: compressed layer sizes against the budget."""

from __future__ import annotations

import pytest
from pydantic import ByteSize

from tests.unit.factories import facts
from webhook.policy.model import SizeBudgetRule
from webhook.policy.rules import size_budget


@pytest.mark.parametrize(
    ("sizes", "budget", "passes"),
    [
        pytest.param([100, 200], 300, True, id="exactly-at-budget"),
        pytest.param([100, 201], 300, False, id="one-byte-over"),
        pytest.param([], 1, True, id="no-layers"),
        pytest.param([150_000_000, 60_000_000], 200_000_000, False, id="sum-of-layers-counts"),
    ],
)
def test_budget(sizes: list[int], budget: int, passes: bool) -> None:
    image = facts(diff_ids=[f"sha256:{i:064x}" for i in range(len(sizes))], sizes=sizes)
    outcome = size_budget.check(SizeBudgetRule(max_compressed_size=ByteSize(budget)), image)
    assert (not outcome.violations) is passes
    assert outcome.facts["sizeBudget"] == budget


def test_message_reports_size_budget_and_fix() -> None:
    image = facts(sizes=[312_000_000])
    [v] = size_budget.check(SizeBudgetRule(), image).violations
    assert "312.0 MB compressed" in v.message
    assert "200.0 MB budget" in v.message
    assert "multi-stage" in v.message


def test_daemon_images_say_the_size_is_uncompressed() -> None:
    [v] = size_budget.check(
        SizeBudgetRule(), facts(sizes=[300_000_000], source="docker-daemon")
    ).violations
    assert "uncompressed" in v.message


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (1_500_000, "1.5 MB"),
        (2_000_000_000, "2.0 GB"),
    ],
)
def test_human_sizes(size: int, text: str) -> None:
    assert size_budget.human(size) == text
