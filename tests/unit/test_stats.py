"""Stats builders over fakes: every number comes from what was measured."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from autoweave_plugins.recovery import CircuitBreaker
from autoweave_plugins.registry import PluginRecord, PluginState
from autoweave_plugins.settings import Priority
from autoweave_plugins.stats import (
    LatencyWindow,
    manager_stats,
    percentile,
    plugin_metadata,
    plugin_snapshot,
)
from tests.unit.conftest import FakeWorker, as_process, plugin


@dataclass
class FakePool:
    live: set[object] = field(default_factory=set)
    spares: deque[object] = field(default_factory=deque)
    created: int = 0
    spawn_failures: int = 0
    terminated: Counter[str] = field(default_factory=Counter)
    start_method_stats: dict[str, object] = field(
        default_factory=lambda: {"requested": "template", "active": "spawn"}
    )


@dataclass
class FakeScheduler:
    queued: int = 0
    loading: int = 0
    loads_ok: int = 0
    loads_failed: int = 0
    load_times: LatencyWindow = field(default_factory=LatencyWindow)


@dataclass
class FakeCache:
    hits: int = 3
    misses: int = 2
    size: int = 2
    evictions: int = 0


def loaded(name: str, *workers: FakeWorker) -> PluginRecord:
    record = PluginRecord(plugin(name), Priority.HIGH, True, CircuitBreaker(5, 60.0))
    for state in (PluginState.QUEUED, PluginState.LOADING, PluginState.IDLE):
        record.move_to(state)
    for worker in workers:
        record.attach(as_process(worker))
    return record


def test_percentile_and_latency_window() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0 and percentile([1.0, 2.0], 1.0) == 2.0
    window = LatencyWindow(size=2)
    assert window.summary_ms() == {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    for seconds in (9.0, 0.001, 0.003):
        window.add(seconds)
    assert window.count == 3 and list(window.samples) == [0.001, 0.003]
    assert window.summary_ms() == {"p50_ms": 1.0, "p95_ms": 3.0, "p99_ms": 3.0}


def test_manager_stats_counts_every_state_and_busy_worker() -> None:
    busy, idle = FakeWorker(), FakeWorker()
    alpha = loaded("alpha", busy, idle)
    alpha.call_started(alpha.assignments[0])
    beta = PluginRecord(plugin("beta"), Priority.NORMAL, False, CircuitBreaker(5, 60.0))
    pool = FakePool(live={1, 2, 3}, spares=deque([3]), created=5, spawn_failures=1)
    pool.terminated.update({"crashed": 2})
    scheduler = FakeScheduler(loads_ok=1)
    scheduler.load_times.add(0.25)
    stats = manager_stats(
        [alpha, beta], [s.value for s in PluginState], pool, scheduler, FakeCache()
    )
    assert stats["plugins"] == {
        "discovered": 1,
        "preparing": 0,
        "queued": 0,
        "loading": 0,
        "active": 1,
        "idle": 0,
        "dormant": 0,
        "failed": 0,
        "invalid": 0,
    }
    rejected = manager_stats(
        [alpha, beta], [s.value for s in PluginState], pool, scheduler, FakeCache(), rejected=2
    )
    assert rejected["plugins"]["invalid"] == 2 and rejected["plugins"]["active"] == 1
    assert stats["workers"] == {
        "live": 3,
        "spare": 1,
        "assigned": 2,
        "busy": 1,
        "created": 5,
        "spawn_failures": 1,
        "terminated": {"crashed": 2},
        "start_method": {"requested": "template", "active": "spawn"},
    }
    assert stats["loader"]["loads_ok"] == 1 and stats["loader"]["load_time_p50_ms"] == 250.0
    assert stats["cache"] == {"hits": 3, "misses": 2, "size": 2, "evictions": 0}


def test_plugin_metadata_measures_each_worker() -> None:
    worker = FakeWorker()
    worker.stats.calls, worker.stats.errors = 4, 1
    worker.stats.latency.add(0.002)
    worker.metrics.record("plugin.started", 1, {})
    record = loaded("alpha", worker)
    record.record_error(RuntimeError("bad"))
    record.access_count = 4
    worker.cpu_seconds = 0.5
    worker.rss = 123_456
    meta = plugin_metadata(record)
    assert worker.samples == 1
    assert meta["name"] == "alpha" and meta["version"] == "1.0.0" and meta["state"] == "idle"
    assert type(meta["state"]) is str and meta["priority"] == "HIGH" and meta["pinned"]
    assert meta["access_count"] == 4 and meta["errors"][0]["type"] == "RuntimeError"
    assert meta["worker_metrics"] == [
        {
            "pid": worker.pid,
            "rss": 123_456,
            "cpu_seconds": 0.5,
            "calls": 4,
            "errors": 1,
            "call_latency_p50_ms": 2.0,
            "call_latency_p99_ms": 2.0,
            "in_flight": 0,
        }
    ]
    assert meta["plugin_metrics"][0]["series"][0]["name"] == "plugin.started"


def test_plugin_snapshot_reports_the_last_measured_rss() -> None:
    worker = FakeWorker(rss=42)
    record = loaded("alpha", worker)
    assert plugin_snapshot(record)["workers"][0]["rss"] is None  # not measured yet
    worker.measure_rss()
    snapshot = plugin_snapshot(record)
    assert snapshot["workers"][0]["rss"] == 42 and snapshot["calls"] == 0


def test_plugin_metadata_of_a_worker_that_is_gone() -> None:
    worker = FakeWorker()
    worker.exit("crashed")
    meta = plugin_metadata(loaded("alpha", worker))
    assert meta["worker_metrics"][0]["rss"] is None
    assert meta["worker_metrics"][0]["cpu_seconds"] is None
