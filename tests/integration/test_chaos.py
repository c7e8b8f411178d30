"""`imagegate serve` against a registry that misbehaves in every way at once (issue 13.9).

The short, fixed budget of `make chaos` (hack/chaos.py): each fault of
tests/support/chaos.py a few times, through TLS, concurrently. Every review gets a
well-formed answer with its uid, none a 5xx, and the server ends with about the file
descriptors it started with (abandoned fetches are cancelled, connections closed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.support.chaos import FAULTS, ChaosRegistry, drive
from tests.support.webhook import WebhookServer, start_webhook


@pytest.fixture(scope="module")
def registry() -> Iterator[ChaosRegistry]:
    chaos = ChaosRegistry()
    yield chaos
    chaos.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookServer]:
    env = {"IMAGEGATE_WEBHOOK_REQUEST_BUDGET_SECONDS": "3", "IMAGEGATE_REGISTRY_RETRIES": "1"}
    webhook = start_webhook(tmp_path_factory.mktemp("chaos"), [], env=env)
    yield webhook
    webhook.stop()


def test_every_hostile_registry_behaviour_gets_an_answer(
    server: WebhookServer, registry: ChaosRegistry
) -> None:
    figures = asyncio.run(drive(server, registry, rounds=2))
    print(figures.summary())
    assert figures.malformed == []
    assert set(figures.statuses) == {200}, figures.statuses
    assert len(figures.latencies) == 2 * len(FAULTS) + 2
    assert figures.percentile(1.0) < 6.0  # the 3 s budget, plus the answer's way back
    assert figures.fds[1] <= figures.fds[0] + 64, figures.summary()  # keep-alive pool
    assert "Traceback" not in server.logs()
