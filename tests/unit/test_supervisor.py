"""Recovery, health and reclaim over fake workers: the real loader, scheduler and pool."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from autoweave_plugins.events import Event, EventBus
from autoweave_plugins.loader import Loader
from autoweave_plugins.metrics import ManagerMetrics
from autoweave_plugins.pool import WorkerPool
from autoweave_plugins.recovery import CircuitBreaker
from autoweave_plugins.registry import PluginRecord, PluginState, Registry
from autoweave_plugins.settings import LoaderConfig, ManagerConfig, Priority, WorkerPoolConfig
from autoweave_plugins.supervisor import Supervisor
from tests.unit.conftest import FakeWorker, Spawner, as_process, plugin


@dataclass
class Host:
    supervisor: Supervisor
    loader: Loader
    registry: Registry
    spawner: Spawner
    events: list[Event] = field(default_factory=list)
    seen: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, name: str = "alpha", pinned: bool = False, **manifest: Any) -> PluginRecord:
        pool = self.supervisor.config.worker_pool
        breaker = CircuitBreaker(pool.breaker_threshold, pool.breaker_window)
        record = PluginRecord(plugin(name, **manifest), Priority.NORMAL, pinned, breaker)
        self.registry.add(record)
        return record

    async def loaded(self, name: str = "alpha", **manifest: Any) -> PluginRecord:
        record = self.add(name, **manifest)
        await self.loader.request_load(record)
        return record

    async def event(self, name: str, count: int = 1) -> list[Event]:
        """Wait until ``count`` events called ``name`` were emitted; returns them."""
        while len(matching := [e for e in self.events if e.name == name]) < count:
            self.seen.clear()
            await asyncio.wait_for(self.seen.wait(), 5)
        return matching


def state_of(record: PluginRecord) -> PluginState:
    """Read afresh (mypy would keep the state narrowed from an earlier assert)."""
    return record.state


def worker_of(record: PluginRecord, index: int = 0) -> FakeWorker:
    worker = record.workers[index]
    assert isinstance(worker, FakeWorker)
    return worker


@pytest.fixture
async def host(request: pytest.FixtureRequest, spawner: Spawner) -> AsyncIterator[Host]:
    options = {"min_workers": 0, "restart_backoff_base": 0.0001, **getattr(request, "param", {})}
    config = ManagerConfig(
        plugin_directory=Path("/nonexistent/plugins"),
        worker_pool=WorkerPoolConfig(**options),
        loader=LoaderConfig(load_retries=0),
    )
    registry, bus = Registry(), EventBus()
    metrics = ManagerMetrics(lambda: pytest.fail("not scraped"), list)
    pool = WorkerPool(config.worker_pool, spawn=spawner)
    loader = Loader(config, registry, pool, bus, metrics)
    loader.running = True  # open() would also start an HTTP client, which no fake needs
    made = Host(Supervisor(config, registry, loader, bus), loader, registry, spawner)

    def record(event: Event) -> None:
        made.events.append(event)
        made.seen.set()

    bus.on("*", record)
    yield made
    await made.supervisor.stop()
    await loader.close()


async def test_a_crash_is_reported_and_restarted(host: Host) -> None:
    record = await host.loaded()
    first = worker_of(record)
    first.exit("crashed")
    assert record.state is PluginState.QUEUED and record.restarts == 1
    [error] = await host.event("plugin:error")
    assert error.data["reason"] == "crashed" and "exited (crashed" in str(error.data["error"])
    await host.event("plugin:loaded", 2)
    assert state_of(record) is PluginState.IDLE and worker_of(record) is not first
    assert [e.data["reason"] for e in await host.event("worker:terminated")] == ["crashed"]


async def test_an_ordinary_exit_only_detaches(host: Host) -> None:
    record = await host.loaded()
    worker_of(record).exit("idle")
    assert not record.workers and record.restarts == 0 and not record.errors


@pytest.mark.parametrize("host", [{"breaker_threshold": 2}], indirect=True)
async def test_the_breaker_opens_and_kills_the_other_workers(host: Host) -> None:
    record = await host.loaded(permissions={"memory": {"max_workers": 2}})
    worker_of(record).exit("crashed")
    await host.event("plugin:loaded", 2)
    spare = FakeWorker()
    host.loader.attach(record, as_process(spare))
    worker_of(record).exit("unhealthy")
    [failed] = await host.event("plugin:failed")
    assert failed.data["crashes"] == 2 and record.state is PluginState.FAILED
    assert record.breaker.open and not record.workers and not spare.alive
    assert record.restarts == 1  # no restart once the breaker is open


async def test_a_worker_up_past_the_healthy_period_resets_the_restart_count(host: Host) -> None:
    record = await host.loaded()
    record.consecutive_restarts = 3
    record.assignments[0].started = time.monotonic() - 3600
    worker_of(record).exit("crashed")
    assert record.consecutive_restarts == 1 and record.restarts == 1


@pytest.mark.parametrize("host", [{"rss_allowance_mb": 0}], indirect=True)
async def test_the_memory_check_kills_a_worker_over_budget_even_when_busy(host: Host) -> None:
    record = await host.loaded(permissions={"memory": {"max_heap_mb": 16}})
    small = await host.loaded("small", permissions={"memory": {"max_heap_mb": 64}})
    record.call_started(record.assignments[0])
    hungry = worker_of(record)
    await host.supervisor.memory_check()
    assert hungry.exit_reason == "memory" and worker_of(small).alive  # 30 MiB: within 64


async def test_the_health_check_pings_idle_workers_and_spares_only(host: Host) -> None:
    record = await host.loaded()
    idle = await host.loaded("idle")
    record.call_started(record.assignments[0])
    spare = FakeWorker()
    host.supervisor.pool.spares.append(as_process(spare))
    await host.supervisor.health_check()
    assert (worker_of(record).pings, worker_of(idle).pings, spare.pings) == (0, 1, 1)


async def test_reclaim_idle_unloads_unpinned_plugins_and_scales_in(host: Host) -> None:
    pinned = host.add("pinned", pinned=True, permissions={"memory": {"max_workers": 2}})
    await host.loader.request_load(pinned)
    extra = FakeWorker()
    host.loader.attach(pinned, as_process(extra))
    idle = await host.loaded("idle")
    busy = await host.loaded("busy")
    busy.call_started(busy.assignments[0])
    long_ago = time.monotonic() - 3600  # past worker_idle_timeout and scale_in_idle
    for record in (pinned, idle, busy):
        record.last_used = long_ago
        for assignment in record.assignments:
            assignment.used = long_ago
    await host.supervisor.reclaim_idle()
    assert idle.state is PluginState.DORMANT and not idle.workers
    assert pinned.state is PluginState.IDLE and len(pinned.workers) == 1 and not extra.alive
    assert busy.state is PluginState.ACTIVE and busy.workers


async def test_reclaim_lru_frees_the_least_recently_used(host: Host) -> None:
    old, new = await host.loaded("old"), await host.loaded("new")
    old.last_used, new.last_used = 1.0, 2.0
    assert await host.supervisor.reclaim_lru()
    assert old.state is PluginState.DORMANT and new.workers
    assert await host.supervisor.reclaim_lru() and not new.workers
    assert not await host.supervisor.reclaim_lru()  # nothing left to reclaim


@pytest.mark.parametrize("host", [{"scale_out_queue": 2}], indirect=True)
async def test_scale_out_up_to_the_manifest_s_max_workers(host: Host) -> None:
    record = await host.loaded(permissions={"memory": {"max_workers": 2}})
    assignment = record.assignments[0]
    record.call_started(assignment)
    host.supervisor.maybe_scale_out(record)
    assert not record.scaling  # one call in flight: below the queue threshold
    record.call_started(assignment)
    host.supervisor.maybe_scale_out(record)
    assert record.scaling
    await host.supervisor.tasks.wait()
    assert len(record.workers) == 2 and not record.scaling
    host.supervisor.maybe_scale_out(record)
    assert not record.scaling  # at the manifest's max_workers
