"""Stats: the shapes of ``get_manager_stats()`` and ``get_plugin_metadata()``, and the builders
that fill them (latency windows are ``latency.py``'s).

Every number is measured, never a constant. This module sits low, so the builders do not import what they read: the ``Protocol`` classes
below say exactly which attributes they use, and records, pools and workers (or test fakes)
satisfy them structurally.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Sized
from typing import Any, Protocol, TypedDict, cast

from autoweave_plugins.latency import LatencySummary, LatencyWindow, percentile

__all__ = [
    "CacheCounts",
    "EnvironmentCounts",
    "ErrorEntry",
    "LatencySummary",
    "LatencyWindow",
    "LoaderCounts",
    "ManagerStats",
    "PluginMetadata",
    "PluginSnapshot",
    "WorkerCounts",
    "WorkerMetrics",
    "WorkerSnapshot",
    "manager_stats",
    "percentile",
    "plugin_metadata",
    "plugin_snapshot",
]


# --- the shapes ----------------------------------------------------------------------------


class WorkerCounts(TypedDict):
    live: int
    spare: int
    assigned: int
    busy: int
    created: int
    spawn_failures: int
    terminated: dict[str, int]
    """Ended workers by reason (idle, crashed, unhealthy, memory, timeout, shutdown, reload,
    load_failed)."""
    start_method: dict[str, Any]
    """How blank workers start: requested and active method, why it fell back to spawn (if it
    did), and the template's pid, forks, starts and replacements (``StartMethod.snapshot``)."""


class LoaderCounts(TypedDict):
    queued: int
    loading: int
    loads_ok: int
    loads_failed: int
    load_time_p50_ms: float | None
    load_time_p95_ms: float | None


class CacheCounts(TypedDict):
    hits: int
    misses: int
    size: int
    evictions: int


class EnvironmentCounts(TypedDict):
    """Plugins' own environments: preparing now, leased now, and counts since start."""

    preparing: int
    in_use: int
    hits: int
    resolutions: int
    builds: int
    failures: int
    uv_runs: int
    pruned: int


class ManagerStats(TypedDict):
    plugins: dict[str, int]
    """Plugins by state; every state is present, most with 0, and ``invalid``: folders found
    but rejected (an invalid manifest, a missing entry, a duplicate name)."""
    workers: WorkerCounts
    loader: LoaderCounts
    cache: CacheCounts
    environments: EnvironmentCounts


class ErrorEntry(TypedDict):
    time: float
    type: str
    message: str


class WorkerMetrics(TypedDict):
    pid: int | None
    rss: int | None
    cpu_seconds: float | None
    calls: int
    errors: int
    call_latency_p50_ms: float | None
    call_latency_p99_ms: float | None
    in_flight: int


class PluginMetadata(TypedDict):
    name: str
    version: str
    state: str
    priority: str
    pinned: bool
    loaded_at: float | None
    access_count: int
    restarts: int
    errors: list[ErrorEntry]
    call_latency: LatencySummary
    worker_metrics: list[WorkerMetrics]
    plugin_metrics: list[dict[str, Any]]
    """Each worker's own ``autoweave.metric`` series (bounded by the broker)."""
    environment: dict[str, Any] | None
    """Its own environment: key, path, requirements, and each package's name, version and
    source (the index or wheelhouse it came from); None when it has no requirements."""


class WorkerSnapshot(TypedDict):
    pid: int | None
    rss: int | None
    """RSS at the last host measurement (health or memory check), None before one."""
    plugin_metrics: dict[str, Any]


class PluginSnapshot(TypedDict):
    """What the Prometheus collector reads of one plugin at scrape time."""

    name: str
    restarts: int
    calls: int
    workers: list[WorkerSnapshot]


# --- what the builders read ----------------------------------------------------------------


class _WorkerStats(Protocol):
    @property
    def calls(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def latency(self) -> LatencyWindow: ...
    @property
    def rss(self) -> int | None: ...


class _Snapshotting(Protocol):
    def snapshot(self) -> dict[str, Any]: ...


class _Worker(Protocol):
    @property
    def pid(self) -> int | None: ...
    @property
    def stats(self) -> _WorkerStats: ...
    @property
    def metrics(self) -> _Snapshotting: ...
    def sample(self) -> _Sample | None: ...


class _Assignment(Protocol):
    @property
    def worker(self) -> _Worker: ...
    @property
    def busy(self) -> int: ...


class _Error(Protocol):
    @property
    def time(self) -> float: ...
    @property
    def type(self) -> str: ...
    @property
    def message(self) -> str: ...


class _Environment(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


class _Record(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def environment(self) -> _Environment | None: ...
    @property
    def version(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def priority_name(self) -> str: ...
    @property
    def pinned(self) -> bool: ...
    @property
    def loaded_at(self) -> float | None: ...
    @property
    def access_count(self) -> int: ...
    @property
    def restarts(self) -> int: ...
    @property
    def errors(self) -> Iterable[_Error]: ...
    @property
    def latency(self) -> LatencyWindow: ...
    @property
    def assignments(self) -> Sequence[_Assignment]: ...


class _Pool(Protocol):
    @property
    def live(self) -> Sized: ...
    @property
    def spares(self) -> Sized: ...
    @property
    def created(self) -> int: ...
    @property
    def spawn_failures(self) -> int: ...
    @property
    def terminated(self) -> Mapping[str, int]: ...
    @property
    def start_method_stats(self) -> Mapping[str, Any]: ...


class _Scheduler(Protocol):
    @property
    def queued(self) -> int: ...
    @property
    def loading(self) -> int: ...
    @property
    def loads_ok(self) -> int: ...
    @property
    def loads_failed(self) -> int: ...
    @property
    def load_times(self) -> LatencyWindow: ...


class _Cache(Protocol):
    @property
    def hits(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def evictions(self) -> int: ...


# --- the builders --------------------------------------------------------------------------


def manager_stats(
    records: Iterable[_Record],
    states: Iterable[str],
    pool: _Pool,
    scheduler: _Scheduler,
    cache: _Cache,
    *,
    environments: Mapping[str, int] | None = None,
    rejected: int = 0,
) -> ManagerStats:
    """Counts over every record (``states`` lists them all, so absent ones show 0), plus
    ``invalid``: the folders found but rejected, which have no record."""
    plugins = dict.fromkeys(states, 0)
    plugins["invalid"] = rejected
    assigned = busy = 0
    for record in records:
        plugins[record.state] += 1
        assigned += len(record.assignments)
        busy += sum(1 for a in record.assignments if a.busy)
    load_times = scheduler.load_times.summary_ms()
    return {
        "plugins": plugins,
        "workers": {
            "live": len(pool.live),
            "spare": len(pool.spares),
            "assigned": assigned,
            "busy": busy,
            "created": pool.created,
            "spawn_failures": pool.spawn_failures,
            "terminated": dict(pool.terminated),
            "start_method": dict(pool.start_method_stats),
        },
        "loader": {
            "queued": scheduler.queued,
            "loading": scheduler.loading,
            "loads_ok": scheduler.loads_ok,
            "loads_failed": scheduler.loads_failed,
            "load_time_p50_ms": load_times["p50_ms"],
            "load_time_p95_ms": load_times["p95_ms"],
        },
        "cache": {
            "hits": cache.hits,
            "misses": cache.misses,
            "size": cache.size,
            "evictions": cache.evictions,
        },
        "environments": cast(
            EnvironmentCounts,
            {key: (environments or {}).get(key, 0) for key in EnvironmentCounts.__annotations__},
        ),
    }


class _Sample(Protocol):
    @property
    def rss(self) -> int: ...
    @property
    def cpu_seconds(self) -> float: ...


def plugin_metadata(record: _Record) -> PluginMetadata:
    """One plugin's metadata; each worker is measured by the host (``worker.sample()``)."""
    workers: list[WorkerMetrics] = []
    for assignment in record.assignments:
        worker = assignment.worker
        measured = worker.sample()
        latency = worker.stats.latency.summary_ms()
        workers.append(
            {
                "pid": worker.pid,
                "rss": None if measured is None else measured.rss,
                "cpu_seconds": None if measured is None else round(measured.cpu_seconds, 3),
                "calls": worker.stats.calls,
                "errors": worker.stats.errors,
                "call_latency_p50_ms": latency["p50_ms"],
                "call_latency_p99_ms": latency["p99_ms"],
                "in_flight": assignment.busy,
            }
        )
    return {
        "name": record.name,
        "version": record.version,
        "state": str(record.state),
        "priority": record.priority_name,
        "pinned": record.pinned,
        "loaded_at": record.loaded_at,
        "access_count": record.access_count,
        "restarts": record.restarts,
        "errors": [{"time": e.time, "type": e.type, "message": e.message} for e in record.errors],
        "call_latency": record.latency.summary_ms(),
        "worker_metrics": workers,
        "plugin_metrics": [a.worker.metrics.snapshot() for a in record.assignments],
        "environment": record.environment.to_dict() if record.environment is not None else None,
    }


def plugin_snapshot(record: _Record) -> PluginSnapshot:
    """What metrics export of one plugin: counters, and each worker's RSS and own metrics."""
    return {
        "name": record.name,
        "restarts": record.restarts,
        "calls": record.access_count,
        "workers": [
            {
                "pid": a.worker.pid,
                "rss": a.worker.stats.rss,
                "plugin_metrics": a.worker.metrics.snapshot(),
            }
            for a in record.assignments
        ],
    }
