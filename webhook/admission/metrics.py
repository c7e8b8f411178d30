"""Prometheus metrics of the webhook, in a registry of the app's own (no import-time state)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from webhook.registry.client import RegistryStats


class RegistryStatsCollector(Collector):
    """Exposes the registry client's own counters (fetches, cache hits) at scrape time."""

    def __init__(self, stats: RegistryStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        fetches = CounterMetricFamily(
            "imagegate_registry_fetches",
            "Requests for manifests and configs sent to registries.",
            labels=["kind"],
        )
        fetches.add_metric(["manifest"], self._stats.manifest_fetches)
        fetches.add_metric(["config"], self._stats.config_fetches)
        fetches.add_metric(["token"], self._stats.token_fetches)
        yield fetches
        yield CounterMetricFamily(
            "imagegate_registry_cache_hits",
            "Answers served from the caches.",
            value=self._stats.cache_hits,
        )


class Metrics:
    def __init__(self, stats: RegistryStats) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "imagegate_admission_requests",
            "Admission reviews answered.",
            ["endpoint", "verdict"],
            registry=self.registry,
        )
        self.violations = Counter(
            "imagegate_violations",
            "Problems found at admission, by rule and effective mode.",
            ["rule", "mode"],
            registry=self.registry,
        )
        self.errors = Counter(
            "imagegate_errors",
            "Requests that could not be handled normally.",
            ["reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "imagegate_admission_duration_seconds",
            "Time to answer one review.",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 8, 10),
        )
        self.registry.register(RegistryStatsCollector(stats))

    # Label children are looked up once and kept: `labels()` takes a lock and builds a tuple on
    # every call, which shows in the admission hot path.
    @functools.cache  # noqa: B019 - one Metrics per app; the cache lives as long as it does
    def _child(self, metric: str, *labels: str) -> Any:
        return getattr(self, metric).labels(*labels)

    def request(self, endpoint: str, verdict: str) -> None:
        self._child("requests", endpoint, verdict).inc()

    def violation(self, rule: str, mode: str) -> None:
        self._child("violations", rule, mode).inc()

    def error(self, reason: str) -> None:
        self._child("errors", reason).inc()

    def observe(self, endpoint: str, seconds: float) -> None:
        self._child("latency", endpoint).observe(seconds)
