"""``PluginManager``: the façade that discovers plugins, loads them lazily into sandboxed
workers, calls their hooks, recovers from crashes, and reports events and stats.

This module wires the parts and delegates to them; each owns one job:

- ``registry``: the records and their state machine;
- ``loader``: giving a plugin a worker and taking it away (with the scheduler and the pool);
- ``supervisor``: exits, restarts, the breaker, health, reclaim and scale-out;
- ``reloader``: discovery, hot reload (blue/green) and the watcher;
- ``preparer``: dependencies checked and each plugin's own environment built before it loads;
- ``stats`` and ``metrics``: what is measured, and its Prometheus exposition.

The route of a call stays here: find the record, load it if needed, pick the least busy worker,
call, account. Calls are at-most-once: a call in flight when its worker dies fails with
``PluginCrashed`` and is never retried.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from autoweave_plugins.broadcast import BroadcastResult, fan_out
from autoweave_plugins.config import collecting, from_mapping
from autoweave_plugins.environments import EnvironmentBuilder, EnvironmentsConfig
from autoweave_plugins.environments.leases import Leases
from autoweave_plugins.errors import (
    AutoweaveError,
    LoadError,
    PluginCrashed,
    PluginFailed,
    UnknownHook,
    UnsendableValue,
)
from autoweave_plugins.events import Event, EventBus, Listener
from autoweave_plugins.loader import Loader
from autoweave_plugins.manifest.cache import ManifestCache
from autoweave_plugins.metrics import ManagerMetrics
from autoweave_plugins.options import (
    EnvironmentsOptions,
    LimitsOptions,
    LoaderOptions,
    PolicyOptions,
    WatcherOptions,
    WorkerPoolOptions,
)
from autoweave_plugins.policy import GrantPolicy
from autoweave_plugins.pool import WorkerPool
from autoweave_plugins.preparer import Preparer
from autoweave_plugins.recovery import ExitReason
from autoweave_plugins.registry import PluginState, Registry
from autoweave_plugins.reloader import Reloader
from autoweave_plugins.roots import default_data_root
from autoweave_plugins.scheduler import LoadScheduler
from autoweave_plugins.settings import (
    LimitsConfig,
    LoaderConfig,
    ManagerConfig,
    WatcherConfig,
    WorkerPoolConfig,
)
from autoweave_plugins.startmethod import StartMethod
from autoweave_plugins.stats import (
    ManagerStats,
    PluginMetadata,
    PluginSnapshot,
    manager_stats,
    plugin_metadata,
    plugin_snapshot,
)
from autoweave_plugins.supervisor import Supervisor
from autoweave_plugins.watcher import PluginWatcher

__all__ = ["BroadcastResult", "PluginManager"]


class PluginManager:
    """Discover, load and call plugins, each in its own sandboxed worker process.

    Each option set may be a dataclass from ``settings`` or a mapping with its keys (typed
    as the TypedDicts in ``options``); a mapping is validated, and a bad key is named.
    """

    def __init__(
        self,
        plugin_directory: str | Path | None = None,
        *,
        config: ManagerConfig | None = None,
        worker_pool: WorkerPoolOptions | WorkerPoolConfig | Mapping[str, Any] | None = None,
        loader: LoaderOptions | LoaderConfig | Mapping[str, Any] | None = None,
        watcher: WatcherOptions | WatcherConfig | Mapping[str, Any] | None = None,
        policy: PolicyOptions | GrantPolicy | Mapping[str, Any] | None = None,
        limits: LimitsOptions | LimitsConfig | Mapping[str, Any] | None = None,
        environments: EnvironmentsOptions | EnvironmentsConfig | Mapping[str, Any] | None = None,
        strict: bool | None = None,
        plugin_config: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        base = config or ManagerConfig()
        with collecting():  # bad keys in several sections: one error naming every one
            config_built = ManagerConfig(
                plugin_directory=Path(plugin_directory)
                if plugin_directory is not None
                else base.plugin_directory,
                worker_pool=from_mapping(
                    WorkerPoolConfig, worker_pool or base.worker_pool, "worker_pool"
                ),
                loader=from_mapping(LoaderConfig, loader or base.loader, "loader"),
                watcher=from_mapping(WatcherConfig, watcher or base.watcher, "watcher"),
                policy=from_mapping(GrantPolicy, policy or base.policy, "policy"),
                limits=from_mapping(LimitsConfig, limits or base.limits, "limits"),
                environments=from_mapping(
                    EnvironmentsConfig, environments or base.environments, "environments"
                ),
                strict=base.strict if strict is None else strict,
                plugin_config=plugin_config if plugin_config is not None else base.plugin_config,
                broadcast_concurrency=base.broadcast_concurrency,
                jobs=base.jobs,
                plugins=base.plugins,
            )
        self.environments = EnvironmentBuilder(
            config_built.environments, data_root=Path(default_data_root())
        )
        # Plugins' environments are read by workers before their sandbox is complete: no
        # grant may ever reach them (and none may read another plugin's).
        policy_config = config_built.policy
        self.config = dataclasses.replace(
            config_built,
            policy=dataclasses.replace(
                policy_config,
                denied_paths=(*policy_config.denied_paths, str(self.environments.cache_dir)),
            ),
        )
        # Read on every call: kept here, not looked up through the config's sections.
        self._call_timeout = self.config.worker_pool.call_timeout
        self._cancel_grace = self.config.limits.cancel_grace
        self._scale_out_queue = self.config.worker_pool.scale_out_queue
        self.cache = ManifestCache()
        self.bus = EventBus()
        self.records = Registry()
        self.metrics = ManagerMetrics(self.get_manager_stats, self._plugin_snapshots)
        self.pool = WorkerPool(
            self.config.worker_pool,
            start_method=StartMethod(self.config.worker_pool, self.config.limits),
        )
        leases = Leases(self.environments.store)
        self.loader = Loader(self.config, self.records, self.pool, self.bus, self.metrics, leases)
        self.supervisor = Supervisor(self.config, self.records, self.loader, self.bus)
        self.preparer = Preparer(
            self.config, self.records, self.loader, self.bus, self.environments, leases
        )
        self.reloader = Reloader(
            self.config, self.records, self.loader, self.cache, self.bus, self.preparer
        )

    @property
    def scheduler(self) -> LoadScheduler[str]:
        return self.loader.scheduler

    @property
    def watcher(self) -> PluginWatcher | None:
        return self.reloader.watcher

    # --- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> PluginManager:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Discover plugins, start the spare workers, preload, and start health and reclaim."""
        if self.loader.running:
            return
        self.loader.open()
        self.rescan()
        await self.pool.start()
        self.supervisor.start()
        await self.loader.preload()
        self.preparer.start()
        self.reloader.start()
        self.bus.emit("manager:started", plugins=len(self.records))

    async def stop(self) -> None:
        """onUnload every plugin (bounded), stop and reap every worker. Safe to cancel around."""
        if not self.loader.running:
            return
        self.loader.running = False
        task = asyncio.ensure_future(self._shutdown())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task  # finish reaping even when our caller is cancelled, then propagate
            raise

    async def _shutdown(self) -> None:
        await self.reloader.stop()
        await self.preparer.stop()
        await self.supervisor.stop()
        await self.loader.close()
        self.preparer.release_all()
        self.bus.emit("manager:stopped")
        await self.bus.drain()
        self.bus.close()

    def rescan(self) -> list[str]:
        """Discover plugins again; returns the names of newly found ones."""
        return self.reloader.rescan()

    # --- calls ---------------------------------------------------------------------------

    async def call(
        self, name: str, hook: str, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Call ``hook`` of plugin ``name``, loading it first if needed. Returns its result."""
        if not self.loader.running:
            raise LoadError(
                "the manager is not running: use 'async with manager' or 'await manager.start()'",
                name,
            )
        record = self.records.get_record(name)
        if record.breaker.open:
            raise PluginFailed(
                "its circuit breaker is open after repeated crashes; reload it", name
            )
        if hook not in record.plugin.manifest.hooks:
            declared = ", ".join(sorted(record.plugin.manifest.hooks)) or "none"
            raise UnknownHook(f"hook {hook!r} is not declared (declared: {declared})", name)
        assignment = record.least_busy()
        if assignment is None:
            await self.loader.request_load(record)
            assignment = record.least_busy()
            if assignment is None:
                raise PluginCrashed("its worker exited right after loading", name)
        if assignment.busy >= self._scale_out_queue:  # else no worker is full: nothing to do
            self.supervisor.maybe_scale_out(record)
        if timeout is None:
            timeout = self._call_timeout
        record.call_started(assignment)
        started = time.monotonic()
        try:
            return await assignment.worker.call_with(
                hook, args, kwargs, timeout, self._cancel_grace
            )
        except UnsendableValue:
            raise  # the host refused the arguments before sending: not the plugin's error
        except AutoweaveError as exc:
            self.loader.report_error(record, exc, hook=hook)
            raise
        finally:
            now = time.monotonic()
            record.call_finished(assignment, now - started, now)
            self.metrics.calls.observe(name, hook, now - started)

    async def broadcast(
        self, hook: str, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> dict[str, BroadcastResult]:
        """Call ``hook`` on every plugin that declares it; never raises for one plugin's error."""
        targets = [
            r.name
            for r in self.records.values()
            if hook in r.plugin.manifest.hooks and not r.breaker.open
        ]
        return await fan_out(
            lambda name: self.call(name, hook, *args, timeout=timeout, **kwargs),
            targets,
            asyncio.Semaphore(self.config.broadcast_concurrency),
        )

    # --- batch load / unload / reload ----------------------------------------------------

    async def load(self, name: str) -> None:
        record = self.records.get_record(name)
        if record.breaker.open:
            raise PluginFailed("its circuit breaker is open; reload it", name)
        if not record.assignments:
            await self.loader.request_load(record)

    async def load_many(self, names: Iterable[str]) -> dict[str, AutoweaveError | None]:
        """Load each plugin; returns None or the error per name, never raising for one."""
        return await _each(names, self.load)

    async def unload(self, name: str) -> None:
        record = self.records.get_record(name)
        await self.loader.unload(record, ExitReason.IDLE, PluginState.DORMANT)

    async def unload_many(self, names: Iterable[str]) -> dict[str, AutoweaveError | None]:
        """Unload each plugin (onUnload, then stop); returns None or the error per name."""
        return await _each(names, self.unload)

    async def reload(self, name: str) -> None:
        """Load the plugin's current files in a new worker; swap only if it starts (blue/green).

        Closes an open circuit breaker. If the new version fails, the old one keeps serving
        and the error is raised (and emitted as ``plugin:error``).
        """
        await self.reloader.reload(self.records.get_record(name))

    # --- events and stats ----------------------------------------------------------------

    def on(self, event: str, listener: Listener) -> None:
        self.bus.on(event, listener)

    def off(self, event: str, listener: Listener) -> None:
        self.bus.off(event, listener)

    def events(self) -> AsyncIterator[Event]:
        """``async for event in manager.events()``: every event from now until the manager stops."""
        return self.bus.stream()

    def metrics_text(self) -> str:
        """The Prometheus exposition of this manager's metrics."""
        return self.metrics.text()

    def get_manager_stats(self) -> ManagerStats:
        return manager_stats(
            self.records.values(),
            [s.value for s in PluginState],
            self.pool,
            self.scheduler,
            self.cache.stats(),
            environments=self.preparer.counts(),
            rejected=len(self.records.rejected),
        )

    def get_plugin_metadata(self, name: str) -> PluginMetadata:
        return plugin_metadata(self.records.get_record(name))

    def _plugin_snapshots(self) -> list[PluginSnapshot]:
        return [plugin_snapshot(r) for r in self.records.values()]

    def state(self, name: str) -> PluginState:
        return self.records.get_record(name).state


async def _each(
    names: Iterable[str], operation: Callable[[str], Awaitable[None]]
) -> dict[str, AutoweaveError | None]:
    names = list(names)
    results = await asyncio.gather(*(operation(n) for n in names), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, AutoweaveError):
            raise result  # a bug or a cancellation is not one plugin's failure
    return {
        n: (r if isinstance(r, AutoweaveError) else None)
        for n, r in zip(names, results, strict=True)
    }
