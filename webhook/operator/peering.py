"""Which operator replica is the working one, for the work kopf does not schedule itself.

kopf pauses the watches and handlers of a standby replica, but not the operator's own tasks
(the background audit). Rather than put a timer, hence a finalizer, on objects the operator does
not own, the audit asks here before each scan, applying kopf's own rule to the peering object
(`kopf._core.engines.peering.process_peering_event`): a replica works when no other live peer
has a priority at least as high as its own. The identity is ours (given to `kopf.run`), so the
replica finds its own entry.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from webhook.errors import ImagegateError

log = logging.getLogger("imagegate.operator")


class PathReader(Protocol):
    async def get_path(self, path: str, what: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Seat:
    """This replica's place among its peers: `peering` None means standalone (always works)."""

    identity: str
    priority: int
    peering: str | None = None
    namespace: str | None = None  # a namespaced operator's KopfPeering lives in a namespace

    @property
    def path(self) -> str:
        if self.namespace:
            return f"/apis/kopf.dev/v1/namespaces/{self.namespace}/kopfpeerings/{self.peering}"
        return f"/apis/kopf.dev/v1/clusterkopfpeerings/{self.peering}"

    async def working(self, cluster: PathReader) -> bool:
        if self.peering is None:
            return True
        try:
            body = await cluster.get_path(self.path, f"read peering {self.peering}")
        except ImagegateError as err:
            log.warning("peering unreadable: not scanning", extra={"error": str(err)})
            return False
        return works(body.get("status") or {}, self.identity, self.priority)


def works(
    status: dict[str, Any], identity: str, priority: int, now: datetime.datetime | None = None
) -> bool:
    """kopf's rule: this peer is live, and no other live peer has priority >= its own."""
    now = now or datetime.datetime.now(datetime.UTC)
    live = {name: peer for name, peer in status.items() if _alive(peer, now)}
    if identity not in live:
        return False  # kopf has not announced this replica yet (or it was cleaned as dead)
    return not any(_priority(peer) >= priority for name, peer in live.items() if name != identity)


def _alive(peer: Any, now: datetime.datetime) -> bool:
    if not isinstance(peer, dict):
        return False
    try:
        seen = datetime.datetime.fromisoformat(str(peer["lastseen"]))
        lifetime = datetime.timedelta(seconds=int(peer.get("lifetime", 60)))
    except (KeyError, TypeError, ValueError):
        return False
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=datetime.UTC)
    return seen + lifetime > now


def _priority(peer: dict[str, Any]) -> int:
    try:
        return int(peer.get("priority", 0))
    except (TypeError, ValueError):
        return 0
