"""Prometheus metrics for a manager, in a private ``CollectorRegistry`` (never the global one).

Every family is named ``autoweave_plugins_*`` (README, "Metrics", lists them), so one prefix
finds them all. Durations are histograms observed as they happen (plugin loads, hook calls). Everything else
is read at scrape time by a collector, so no number is kept twice and none can drift: plugin
states, workers, restarts, errors, the manifest cache, and the plugins' own metrics, capped at
``MAX_PLUGIN_SERIES`` exported series. The collector is fed by two callables (the manager's
stats, and a snapshot per plugin): it knows the shapes in ``stats.py``, not the manager.

``serve_metrics`` exposes ``/metrics`` from the manager's own event loop: prometheus-client's
threaded server would read the manager's state from another thread while it changes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from autoweave_plugins.stats import ManagerStats, PluginSnapshot

__all__ = ["ManagerMetrics", "serve_metrics"]

log = logging.getLogger(__name__)

StatsSource = Callable[[], ManagerStats]
PluginsSource = Callable[[], Iterable[PluginSnapshot]]

MAX_PLUGIN_SERIES = 10_000
CALL_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_le_label: Callable[[float], str] = floatToGoString  # how prometheus-client writes "le"
LOAD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _StateCollector(Collector):
    def __init__(self, stats: StatsSource, plugins: PluginsSource) -> None:
        self.stats = stats
        self.plugins = plugins

    def collect(self) -> Iterator[Metric]:
        stats = self.stats()
        snapshots = list(self.plugins())
        plugins = GaugeMetricFamily(
            "autoweave_plugins_plugins",
            "Plugins by state (invalid: rejected folders)",
            labels=["state"],
        )
        for state, count in stats["plugins"].items():
            plugins.add_metric([state], count)
        yield plugins
        workers = GaugeMetricFamily(
            "autoweave_plugins_workers", "Worker processes", labels=["kind"]
        )
        for kind in ("live", "spare", "assigned", "busy"):
            workers.add_metric([kind], stats["workers"][kind])
        yield workers
        created = CounterMetricFamily(
            "autoweave_plugins_workers_created", "Worker processes started"
        )
        created.add_metric([], stats["workers"]["created"])
        yield created
        terminated = CounterMetricFamily(
            "autoweave_plugins_workers_terminated", "Worker processes ended", labels=["reason"]
        )
        for reason, count in stats["workers"]["terminated"].items():
            terminated.add_metric([reason], count)
        yield terminated
        loads = CounterMetricFamily(
            "autoweave_plugins_loads", "Plugin loads by outcome", labels=["outcome"]
        )
        loads.add_metric(["ok"], stats["loader"]["loads_ok"])
        loads.add_metric(["failed"], stats["loader"]["loads_failed"])
        yield loads
        restarts = CounterMetricFamily(
            "autoweave_plugins_restarts", "Restarts after a crash", labels=["plugin"]
        )
        calls = CounterMetricFamily("autoweave_plugins_calls", "Hook calls", labels=["plugin"])
        rss = GaugeMetricFamily(
            "autoweave_plugins_worker_rss_bytes",
            "RSS at the last host measurement",
            labels=["plugin", "pid"],
        )
        for plugin in snapshots:
            name = plugin["name"]
            restarts.add_metric([name], plugin["restarts"])
            calls.add_metric([name], plugin["calls"])
            for worker in plugin["workers"]:
                if worker["rss"] is not None:
                    rss.add_metric([name, str(worker["pid"])], float(worker["rss"]))
        yield restarts
        yield calls
        yield rss
        cache = stats["cache"]
        for key in ("hits", "misses", "evictions"):
            family = CounterMetricFamily(
                f"autoweave_plugins_manifest_cache_{key}", f"Manifest cache {key}"
            )
            family.add_metric([], cache[key])
            yield family
        size = GaugeMetricFamily("autoweave_plugins_manifest_cache_size", "Manifests in the cache")
        size.add_metric([], cache["size"])
        yield size
        yield from self._environments(stats)
        yield from self._plugin_metrics(snapshots)

    @staticmethod
    def _environments(stats: ManagerStats) -> Iterator[Metric]:
        counts = stats["environments"]
        for key, value in (("preparing", counts["preparing"]), ("in_use", counts["in_use"])):
            gauge = GaugeMetricFamily(
                f"autoweave_plugins_environments_{key}",
                f"Plugin environments {key.replace('_', ' ')}",
            )
            gauge.add_metric([], value)
            yield gauge
        for key, value in (
            ("hits", counts["hits"]),
            ("builds", counts["builds"]),
            ("failures", counts["failures"]),
            ("pruned", counts["pruned"]),
        ):
            counter = CounterMetricFamily(
                f"autoweave_plugins_environment_{key}", f"Plugin environment {key} since start"
            )
            counter.add_metric([], value)
            yield counter

    @staticmethod
    def _plugin_metrics(snapshots: list[PluginSnapshot]) -> Iterator[Metric]:
        last = Metric(
            "autoweave_plugins_plugin_metric", "Last value of a plugin's own metric", "gauge"
        )
        total = Metric(
            "autoweave_plugins_plugin_metric_sum", "Sum of a plugin's own metric samples", "counter"
        )
        dropped = CounterMetricFamily(
            "autoweave_plugins_plugin_metric_dropped",
            "Plugin metric samples dropped",
            labels=["plugin", "reason"],
        )
        exported = 0
        for plugin in snapshots:
            name = plugin["name"]
            for worker in plugin["workers"]:
                snapshot = worker["plugin_metrics"]
                for reason in ("dropped_rate", "dropped_series", "rejected"):
                    dropped.add_metric([name, reason.removeprefix("dropped_")], snapshot[reason])
                for series in snapshot["series"]:
                    if exported >= MAX_PLUGIN_SERIES:
                        break
                    labels = {f"label_{k}": v for k, v in series["labels"].items()}
                    labels.update(plugin=name, pid=str(worker["pid"]), metric=series["name"])
                    last.add_sample("autoweave_plugins_plugin_metric", labels, series["last"])
                    total.add_sample(
                        "autoweave_plugins_plugin_metric_sum_total", labels, series["total"]
                    )
                    exported += 1
        yield last
        yield total
        yield dropped


class CallHistogram(Collector):
    """``autoweave_plugins_hook_call_seconds``: the hook call round trip, per plugin and hook.

    Observed on every call, so it is counted in plain lists, not prometheus-client's
    ``Histogram`` (a lock per bucket and for the sum, the buckets walked one by one: several
    microseconds of a call that takes tens). The manager observes and is scraped on its
    event loop's thread (``serve_metrics``); a scrape from another thread may read a call
    half-counted, never a broken series.
    """

    NAME = "autoweave_plugins_hook_call_seconds"

    def __init__(self, buckets: tuple[float, ...] = CALL_BUCKETS) -> None:
        self.bounds = (*buckets, math.inf)
        self._series: dict[tuple[str, str], _Series] = {}

    def observe(self, plugin: str, hook: str, seconds: float) -> None:
        series = self._series.get((plugin, hook))
        if series is None:
            series = self._series[plugin, hook] = _Series(len(self.bounds), time.time())
        series.counts[bisect_left(self.bounds, seconds)] += 1
        series.total += seconds

    def collect(self) -> Iterator[Metric]:
        family = Metric(self.NAME, "Hook call round trip", "histogram")
        bounds = [_le_label(b) for b in self.bounds]
        for (plugin, hook), series in self._series.items():
            labels = {"plugin": plugin, "hook": hook}
            cumulative = 0
            for bound, count in zip(bounds, series.counts, strict=True):
                cumulative += count
                family.add_sample(f"{self.NAME}_bucket", {**labels, "le": bound}, cumulative)
            family.add_sample(f"{self.NAME}_count", labels, cumulative)
            family.add_sample(f"{self.NAME}_sum", labels, series.total)
            family.add_sample(f"{self.NAME}_created", labels, series.created)
        yield family


class _Series:
    __slots__ = ("counts", "created", "total")

    def __init__(self, buckets: int, created: float) -> None:
        self.counts = [0] * buckets
        self.created = created
        self.total = 0.0


class ManagerMetrics:
    """The metrics of one manager. ``text()`` is the Prometheus exposition.

    ``stats`` returns the manager's stats and ``plugins`` a snapshot of each plugin; both are
    called at every scrape.
    """

    def __init__(self, stats: StatsSource, plugins: PluginsSource) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.load_seconds = Histogram(
            "autoweave_plugins_load_seconds",
            "Time to load a plugin into a worker",
            ["plugin"],
            buckets=LOAD_BUCKETS,
            registry=self.registry,
        )
        self.calls = CallHistogram()
        self.registry.register(self.calls)
        self.errors = Counter(
            "autoweave_plugins_errors",
            "Errors by plugin and type",
            ["plugin", "type"],
            registry=self.registry,
        )
        self.registry.register(_StateCollector(stats, plugins))

    def observe_call(self, plugin: str, hook: str, seconds: float) -> None:
        self.calls.observe(plugin, hook, seconds)

    def text(self) -> str:
        return generate_latest(self.registry).decode("utf-8")


async def serve_metrics(metrics: ManagerMetrics, host: str, port: int) -> asyncio.Server:
    """Serve ``GET /metrics`` on host:port from this event loop."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, _, rest = head.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            if method == b"GET" and path == b"/metrics":
                body, status, kind = metrics.text().encode(), "200 OK", CONTENT_TYPE_LATEST
            else:
                body, status, kind = b"not found; try /metrics\n", "404 Not Found", "text/plain"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ConnectionError,
        ):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=8192)
