"""Which ImageRebuilds the webhook swaps into Pods: only those whose replacement passes.

`Replacements.refresh` reads every ImageRebuild's status (a fake cluster here; the real API
server in tests/e2e/test_operator.py). A `PartiallyFixed` rebuild has a replacement, pushed and
better than the source, but it still fails a rule: swapping it in would admit, under the
source's name, an image the policy refuses.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.fakes import FakeCluster, digest
from webhook.rebuild.model import Phase
from webhook.rebuild.replacements import Replacements

SOURCE = digest("r")
FIXED = f"localhost:5001/team/app-fixed@{digest('f')}"


def rebuild(phase: str, namespace: str = "team-a") -> dict[str, Any]:
    return {
        "metadata": {"name": "fix", "namespace": namespace},
        "status": {"phase": phase, "sourceDigest": SOURCE, "replacement": FIXED},
    }


@pytest.mark.parametrize(
    ("phase", "swapped"),
    [pytest.param(p.value, p is Phase.succeeded, id=p.value) for p in Phase],
)
async def test_only_a_succeeded_rebuild_is_swapped_in(phase: str, swapped: bool) -> None:
    replacements = Replacements(cluster=FakeCluster(objects={"imagerebuilds": [rebuild(phase)]}))
    await replacements.refresh()
    assert replacements.lookup(SOURCE, "team-a") == (FIXED if swapped else None)


async def test_a_partially_fixed_rebuild_does_not_hide_a_succeeded_one_elsewhere() -> None:
    cluster = FakeCluster(
        objects={"imagerebuilds": [rebuild("PartiallyFixed"), rebuild("Succeeded", "team-b")]}
    )
    replacements = Replacements(cluster=cluster)
    await replacements.refresh()
    assert replacements.lookup(SOURCE, "team-a") is None
    assert replacements.lookup(SOURCE, "team-b") == FIXED
