"""Prometheus metrics of the job queue, read at scrape time from a status callable.

As ``autoweave_plugins.metrics`` does for the manager, nothing is counted twice: the collector
calls ``JobConsumer.status`` (and ``RedisHotplugSource.status``) when scraped, and turns the
dicts into families. Register it on the manager's registry with ``register_jobs_metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["JobsCollector", "register_jobs_metrics"]

Status = Callable[[], Mapping[str, Any]]

OUTCOMES = ("done", "failed", "redelivered", "dead", "malformed", "duplicate", "released")
QUEUE = {
    "depth": "Entries in the plugin's job stream: queued plus in flight (XLEN)",
    "pending": "Jobs delivered to a host and not yet answered (the group's pending list)",
    "lag": "Jobs queued and not yet delivered to any host",
}


class JobsCollector(Collector):
    def __init__(self, jobs: Status | None = None, hotplug: Status | None = None) -> None:
        self.jobs = jobs
        self.hotplug = hotplug

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "autoweave_redis_up", "1 while the Redis link answers, else 0", labels=["link"]
        )
        disconnects = CounterMetricFamily(
            "autoweave_redis_disconnects", "Times the Redis link was lost", labels=["link"]
        )
        for link, status in (("jobs", self.jobs), ("hotplug", self.hotplug)):
            if status is not None:
                state = status()["link"]
                up.add_metric([link], 1.0 if state["state"] == "up" else 0.0)
                disconnects.add_metric([link], state["disconnects"])
        yield up
        yield disconnects
        if self.jobs is not None:
            yield from self._jobs(self.jobs())
        if self.hotplug is not None:
            events = CounterMetricFamily(
                "autoweave_hotplug_events",
                "aw:hotplug entries by outcome",
                labels=["outcome"],
            )
            counts = self.hotplug()
            for outcome in ("events", "malformed", "reclaimed", "acked"):
                events.add_metric([outcome], counts.get(outcome, 0))
            yield events

    @staticmethod
    def _jobs(status: Mapping[str, Any]) -> Iterator[Metric]:
        jobs = CounterMetricFamily(
            "autoweave_jobs",
            "Jobs settled by this host, per plugin and outcome (duplicate: a late answer "
            "dropped; released: given back after a worker crash)",
            labels=["plugin", "outcome"],
        )
        in_flight = GaugeMetricFamily(
            "autoweave_jobs_in_flight", "Jobs this host is running", labels=["plugin"]
        )
        queue = {
            key: GaugeMetricFamily(f"autoweave_jobs_queue_{key}", text, labels=["plugin"])
            for key, text in QUEUE.items()
        }
        for plugin, counts in status["plugins"].items():
            for outcome in OUTCOMES:
                jobs.add_metric([plugin, outcome], counts.get(outcome, 0))
            in_flight.add_metric([plugin], counts["in_flight"])
            for key, family in queue.items():
                if key in counts:
                    family.add_metric([plugin], counts[key])
        yield jobs
        yield in_flight
        yield from queue.values()
        capacity = GaugeMetricFamily("autoweave_jobs_capacity", "Jobs this host runs at once")
        capacity.add_metric([], status["capacity"])
        yield capacity


def register_jobs_metrics(
    registry: CollectorRegistry, jobs: Status | None = None, hotplug: Status | None = None
) -> JobsCollector:
    collector = JobsCollector(jobs, hotplug)
    registry.register(collector)
    return collector
