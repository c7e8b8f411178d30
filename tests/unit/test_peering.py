"""Which operator replica scans: kopf's peering rule applied to the peering object's status."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from webhook.errors import ClusterUnavailable
from webhook.operator.peering import Seat, works

NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)


def peer(priority: Any, seconds_ago: float = 1, lifetime: Any = 60) -> dict[str, Any]:
    seen = NOW - datetime.timedelta(seconds=seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"me": peer(100)}, True),  # alone
        ({"me": peer(200), "other": peer(100)}, True),  # the highest
        ({"me": peer(100), "other": peer(200)}, False),  # a standby
        ({"me": peer(100), "other": peer(100)}, False),  # a tie pauses both, as kopf does
        ({"me": peer(100), "other": peer(200, seconds_ago=61)}, True),  # the other is dead
        ({"other": peer(1)}, False),  # not announced yet
        ({"me": peer(100, seconds_ago=120)}, False),  # our own entry went stale
        ({"me": peer(100), "other": "garbage"}, True),  # a malformed entry is no peer
        ({"me": peer(100), "other": peer("high")}, True),
        ({"me": peer(100), "other": {"priority": 300}}, True),  # no lastseen: not live
        ({"me": peer(100, lifetime="x")}, False),
    ],
)
def test_a_replica_works_when_no_live_peer_outranks_it(
    status: dict[str, Any], expected: bool
) -> None:
    mine = status.get("me", {}).get("priority", 100)
    assert works(status, "me", mine, now=NOW) is expected


class Reader:
    def __init__(self, answer: dict[str, Any] | Exception) -> None:
        self.answer = answer
        self.paths: list[str] = []

    async def get_path(self, path: str, what: str) -> dict[str, Any]:
        self.paths.append(path)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def test_a_standalone_replica_always_works_without_reading_anything() -> None:
    reader = Reader({})
    assert await Seat("me", 1).working(reader)
    assert reader.paths == []


async def test_the_seat_reads_the_cluster_or_namespaced_peering_object() -> None:
    status = {
        "status": {"me": {**peer(5), "lastseen": datetime.datetime.now(datetime.UTC).isoformat()}}
    }
    cluster = Reader(status)
    assert await Seat("me", 5, "imagegate").working(cluster)
    assert cluster.paths == ["/apis/kopf.dev/v1/clusterkopfpeerings/imagegate"]
    namespaced = Reader(status)
    assert await Seat("me", 5, "imagegate", "team-a").working(namespaced)
    assert namespaced.paths == ["/apis/kopf.dev/v1/namespaces/team-a/kopfpeerings/imagegate"]


async def test_an_unreadable_peering_object_means_no_scan() -> None:
    assert not await Seat("me", 5, "imagegate").working(Reader(ClusterUnavailable("down")))
