"""``PluginManager``: the façade that discovers plugins, loads them lazily into sandboxed
workers, calls their hooks, recovers from crashes, and reports events and stats.

Ownership: the pool owns processes, the scheduler owns load ordering, each ``PluginRecord``
owns what happened to one plugin; this module wires them and holds the policies (reclaim,
scale-out, restart, breaker, health). Calls are at-most-once: a call in flight when its worker
dies fails with ``PluginCrashed`` and is never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil

from autoweave_plugins.broker.inbound import bind_inbound, close_all
from autoweave_plugins.config import from_mapping
from autoweave_plugins.discovery import (
    DiscoveredPlugin,
    DiscoveryProblem,
    check_plugin_folder,
    discover,
)
from autoweave_plugins.errors import (
    AutoweaveError,
    ConfigError,
    DiscoveryError,
    LoadError,
    PluginCrashed,
    PluginFailed,
    UnknownHook,
    UnknownPlugin,
    WorkerError,
)
from autoweave_plugins.events import Event, EventBus, Listener
from autoweave_plugins.manifest.cache import ManifestCache
from autoweave_plugins.metrics import ManagerMetrics
from autoweave_plugins.policy import GrantPolicy
from autoweave_plugins.pool import WorkerPool
from autoweave_plugins.process import WorkerProcess, build_spec
from autoweave_plugins.recovery import CircuitBreaker, backoff_delay
from autoweave_plugins.registry import PluginRecord, PluginState
from autoweave_plugins.scheduler import LoadScheduler
from autoweave_plugins.settings import (
    LoaderConfig,
    ManagerConfig,
    Priority,
    WatcherConfig,
    WorkerPoolConfig,
)
from autoweave_plugins.watcher import PluginWatcher, fingerprint_folder

__all__ = ["BroadcastResult", "PluginManager"]

log = logging.getLogger(__name__)

CRASH_REASONS = frozenset({"crashed", "protocol", "unhealthy", "memory", "timeout"})


@dataclass(frozen=True, slots=True)
class BroadcastResult:
    """One plugin's answer to a broadcast: a value, or the error it raised."""

    ok: bool
    value: Any = None
    error: AutoweaveError | None = None


class PluginManager:
    """Discover, load and call plugins, each in its own sandboxed worker process."""

    def __init__(
        self,
        plugin_directory: str | Path | None = None,
        *,
        config: ManagerConfig | None = None,
        worker_pool: Mapping[str, Any] | WorkerPoolConfig | None = None,
        loader: Mapping[str, Any] | LoaderConfig | None = None,
        watcher: Mapping[str, Any] | WatcherConfig | None = None,
        policy: Mapping[str, Any] | GrantPolicy | None = None,
        strict: bool | None = None,
        plugin_config: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        base = config or ManagerConfig()
        self.config = ManagerConfig(
            plugin_directory=Path(plugin_directory)
            if plugin_directory is not None
            else base.plugin_directory,
            worker_pool=from_mapping(
                WorkerPoolConfig, worker_pool or base.worker_pool, "worker_pool"
            ),
            loader=from_mapping(LoaderConfig, loader or base.loader, "loader"),
            watcher=from_mapping(WatcherConfig, watcher or base.watcher, "watcher"),
            policy=from_mapping(GrantPolicy, policy or base.policy, "policy"),
            strict=base.strict if strict is None else strict,
            plugin_config=plugin_config if plugin_config is not None else base.plugin_config,
            broadcast_concurrency=base.broadcast_concurrency,
            plugins=base.plugins,
        )
        pool_config = self.config.worker_pool
        self.cache = ManifestCache()
        self.bus = EventBus()
        self.records: dict[str, PluginRecord] = {}
        self.discovery_problems: list[DiscoveryProblem] = []
        self.pool = WorkerPool(
            pool_config,
            make_room=self._reclaim_lru,
            on_created=self._worker_created,
            on_terminated=self._worker_terminated,
        )
        self.scheduler: LoadScheduler[str] = LoadScheduler(
            self.config.loader,
            self._load,
            backoff_base=pool_config.restart_backoff_base,
            backoff_cap=pool_config.restart_backoff_cap,
        )
        self.http: httpx.AsyncClient | None = None
        self.metrics = ManagerMetrics(self)
        self._background: set[asyncio.Task[Any]] = set()
        self._running = False
        self._reported_problems: set[tuple[str, tuple[Any, ...]]] = set()
        self.watcher: PluginWatcher | None = None

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
        if self._running:
            return
        self._running = True
        self.http = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        self.rescan()
        await self.pool.start()
        self._every(self.config.worker_pool.health_check_interval, self._health_check)
        self._every(
            min(
                1.0,
                self.config.worker_pool.scale_in_idle / 4,
                self.config.worker_pool.worker_idle_timeout / 4,
            ),
            self._reclaim_idle,
        )
        await self._preload()
        if self.config.watcher.enabled:
            self.watcher = PluginWatcher(
                str(self.config.plugin_directory),
                self.config.watcher,
                self._plugin_folders,
                self._files_changed,
            )
            self._spawn(self.watcher.run())
        self.bus.emit("manager:started", plugins=len(self.records))

    async def stop(self) -> None:
        """onUnload every plugin (bounded), stop and reap every worker. Safe to cancel around."""
        if not self._running:
            return
        self._running = False
        task = asyncio.ensure_future(self._shutdown())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task  # finish reaping even when our caller is cancelled, then propagate
            raise

    async def _shutdown(self) -> None:
        for background in list(self._background):
            background.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.scheduler.close()
        loaded = [r for r in self.records.values() if r.workers]
        await asyncio.gather(
            *(self._unload(r, "shutdown", PluginState.DORMANT) for r in loaded),
            return_exceptions=True,
        )
        await self.pool.close(timeout=self.config.worker_pool.unload_timeout)
        for record in self.records.values():
            close_all(record.inbound)
        if self.http is not None:
            await self.http.aclose()
        self.bus.emit("manager:stopped")
        await self.bus.drain()
        self.bus.close()

    def _every(self, interval: float, job: Any) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await job()
                except Exception:
                    log.exception("background job %s failed", job.__name__)

        task = asyncio.ensure_future(loop())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- discovery -----------------------------------------------------------------------

    def rescan(self) -> list[str]:
        """Discover plugins again; returns the names of newly found ones."""
        watcher = self.config.watcher
        try:
            found = discover(
                self.config.plugin_directory,
                max_depth=watcher.max_depth,
                ignore=watcher.ignore_patterns,
                cache=self.cache,
            )
        except DiscoveryError as exc:
            raise ConfigError("plugin_directory", exc.reason) from None
        self.discovery_problems = found.problems
        for problem in found.problems:
            if (problem.folder, problem.issues) not in self._reported_problems:
                # each problem once, not on every rescan
                self.bus.emit("plugin:error", None, folder=problem.folder, error=problem.as_error())
        self._reported_problems = {(p.folder, p.issues) for p in found.problems}
        new = []
        for name, plugin in found.plugins.items():
            if name in self.records:
                continue
            priority = self.config.loader.priority_map.get(name, Priority.NORMAL)
            pinned = name in self.config.loader.preload_queue or priority <= Priority.HIGH
            pool = self.config.worker_pool
            record = PluginRecord(
                plugin,
                priority,
                pinned,
                CircuitBreaker(pool.breaker_threshold, pool.breaker_window),
            )
            record.fingerprint = self._fingerprint(plugin)
            self.records[name] = record
            new.append(name)
            self.bus.emit("plugin:discovered", record.view())
        return new

    async def _preload(self) -> None:
        order = list(self.config.loader.preload_queue)
        order += [
            n for n, r in self.records.items() if r.priority <= Priority.HIGH and n not in order
        ]
        known = [n for n in order if n in self.records]
        for name in order:
            if name not in self.records:
                log.warning("preload_queue names %r, which was not discovered", name)
        futures = [self._request_load(self.records[n]) for n in known]
        await asyncio.gather(*futures, return_exceptions=True)

    # --- loading -------------------------------------------------------------------------

    def _record(self, name: str) -> PluginRecord:
        record = self.records.get(name)
        if record is None:
            raise UnknownPlugin(name, tuple(sorted(self.records)))
        return record

    def _request_load(self, record: PluginRecord) -> asyncio.Future[None]:
        if not self.scheduler.in_progress(record.name):
            record.state = PluginState.QUEUED
        return self.scheduler.request(record.name, record.priority)

    async def _load(self, name: str, deadline: float) -> None:
        """Scheduler callback: give a worker this plugin. Raises on failure."""
        record = self.records[name]
        record.state = PluginState.LOADING
        started = time.monotonic()
        plugin = record.plugin
        try:
            self.config.policy.enforce(plugin.manifest, str(self.config.plugin_directory))
            worker = await self._start_worker(plugin, deadline, record)
        except BaseException as exc:  # a timeout arrives as a cancellation: reset the state too
            record.state = PluginState.IDLE if record.workers else PluginState.FAILED
            if isinstance(exc, AutoweaveError):
                self._report_error(record, exc)
            raise
        if not await self._still_wanted(record, plugin, worker):
            raise LoadError(
                "superseded while loading (reloaded, removed, or the manager stopped)", name
            )
        self._attach(record, worker)
        record.loaded_at = time.time()
        record.state = PluginState.IDLE
        seconds = time.monotonic() - started
        self.metrics.load_seconds.labels(name).observe(seconds)
        self.bus.emit("plugin:loaded", record.view(), pid=worker.pid, seconds=round(seconds, 6))

    async def _still_wanted(
        self, record: PluginRecord, plugin: DiscoveredPlugin, worker: WorkerProcess
    ) -> bool:
        """After an await: is this worker still for the current version of a known plugin?
        If not, retire it, rather than attach a stale version or leave an orphan."""
        if self._running and self.records.get(record.name) is record and record.plugin is plugin:
            return True
        await self.pool.retire(worker, "reload", self.config.worker_pool.unload_timeout)
        return False

    def _listeners(self, record: PluginRecord, plugin: DiscoveredPlugin) -> list[socket.socket]:
        """The plugin's inbound listening sockets: bound once, reused by restarts and reloads."""
        spec = plugin.manifest.permissions.inbound
        if spec is None:
            return []
        if record.inbound_spec == spec and record.inbound:
            return record.inbound
        return bind_inbound(plugin.name, spec)  # a new port (first load, or changed by reload)

    def _adopt_listeners(
        self, record: PluginRecord, plugin: DiscoveredPlugin, sockets: list[socket.socket]
    ) -> None:
        if sockets is not record.inbound:
            close_all(record.inbound)  # the worker that used them holds its own copies
            record.inbound = sockets
            record.inbound_spec = plugin.manifest.permissions.inbound

    async def _start_worker(
        self, plugin: DiscoveredPlugin, deadline: float, record: PluginRecord
    ) -> WorkerProcess:
        """A worker running ``plugin``, with its inbound sockets handed over."""
        listeners = self._listeners(record, plugin)
        try:
            worker = await self._assign_worker(plugin, deadline, listeners)
        except BaseException:
            if listeners is not record.inbound:
                close_all(listeners)
            raise
        self._adopt_listeners(record, plugin, listeners)
        return worker

    async def _assign_worker(
        self, plugin: DiscoveredPlugin, deadline: float, listeners: list[socket.socket]
    ) -> WorkerProcess:
        spec = build_spec(  # before a worker is taken: it may refuse (declared paths)
            plugin,
            strict=self.config.strict,
            config=dict(self.config.plugin_config.get(plugin.name, {})),
            **self.config.worker_options(plugin.name),
        )
        worker = await self.pool.acquire(deadline)
        try:
            await worker.assign(
                spec,
                timeout=max(0.001, deadline - time.monotonic()),
                http=self.http,
                inbound=listeners,
            )
        except BaseException:
            if worker.alive:
                worker.kill("crashed")
            raise
        return worker

    def _attach(self, record: PluginRecord, worker: WorkerProcess) -> None:
        record.add_worker(worker)
        worker.on_exit.append(
            lambda w, reason, code: self._assigned_worker_exited(record, w, reason)
        )

    # --- calls ---------------------------------------------------------------------------

    async def call(
        self, name: str, hook: str, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Call ``hook`` of plugin ``name``, loading it first if needed. Returns its result."""
        if not self._running:
            raise LoadError(
                "the manager is not running: use 'async with manager' or 'await manager.start()'",
                name,
            )
        record = self._record(name)
        if record.breaker.open:
            raise PluginFailed(
                "its circuit breaker is open after repeated crashes; reload it", name
            )
        if hook not in record.plugin.manifest.hooks:
            declared = ", ".join(sorted(record.plugin.manifest.hooks)) or "none"
            raise UnknownHook(f"hook {hook!r} is not declared (declared: {declared})", name)
        worker = record.least_busy()
        if worker is None:
            await self._request_load(record)
            worker = record.least_busy()
            if worker is None:
                raise PluginCrashed("its worker exited right after loading", name)
        self._maybe_scale_out(record)
        record.busy[worker] = record.busy.get(worker, 0) + 1
        record.calls_in_flight += 1
        record.access_count += 1
        record.state = PluginState.ACTIVE
        started = time.monotonic()
        try:
            return await worker.call(
                hook,
                *args,
                timeout=timeout if timeout is not None else self.config.worker_pool.call_timeout,
                **kwargs,
            )
        except AutoweaveError as exc:
            self._report_error(record, exc, hook=hook)
            raise
        finally:
            now = time.monotonic()
            record.latency.add(now - started)
            self.metrics.observe_call(record.name, hook, now - started)
            record.calls_in_flight -= 1
            record.last_used = now
            if worker in record.busy:
                record.busy[worker] -= 1
                record.worker_used[worker] = now
            if record.calls_in_flight == 0 and record.state is PluginState.ACTIVE:
                record.state = PluginState.IDLE

    def _report_error(self, record: PluginRecord, error: AutoweaveError, **data: Any) -> None:
        """Keep the error in the plugin's recent errors, count it, and emit plugin:error."""
        record.record_error(error)
        self.metrics.errors.labels(record.name, type(error).__name__).inc()
        self.bus.emit("plugin:error", record.view(), error=error, **data)

    def _maybe_scale_out(self, record: PluginRecord) -> None:
        limit = record.plugin.manifest.permissions.max_workers
        alive = [w for w in record.workers if w.alive]
        if record.scaling or len(alive) >= limit or not alive:
            return
        if min(record.busy.get(w, 0) for w in alive) < self.config.worker_pool.scale_out_queue:
            return
        record.scaling = True

        async def scale() -> None:
            try:
                deadline = time.monotonic() + self.config.loader.load_timeout
                plugin = record.plugin
                worker = await self._start_worker(plugin, deadline, record)
                if await self._still_wanted(record, plugin, worker) and record.workers:
                    self._attach(record, worker)
                elif worker.alive:
                    await self.pool.retire(worker, "idle", self.config.worker_pool.unload_timeout)
            except AutoweaveError as exc:
                log.warning("scale-out of %s failed: %s", record.name, exc)
            finally:
                record.scaling = False

        self._spawn(scale())

    async def broadcast(
        self, hook: str, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> dict[str, BroadcastResult]:
        """Call ``hook`` on every plugin that declares it; never raises for one plugin's error."""
        targets = [
            r.name
            for r in self.records.values()
            if hook in r.plugin.manifest.hooks and not r.breaker.open
        ]
        limit = asyncio.Semaphore(self.config.broadcast_concurrency)

        async def one(name: str) -> BroadcastResult:
            async with limit:
                try:
                    return BroadcastResult(
                        True, await self.call(name, hook, *args, timeout=timeout, **kwargs)
                    )
                except AutoweaveError as exc:
                    return BroadcastResult(False, error=exc)

        results = await asyncio.gather(*(one(n) for n in targets))
        return dict(zip(targets, results, strict=True))

    # --- batch load / unload / reload ----------------------------------------------------

    async def load(self, name: str) -> None:
        record = self._record(name)
        if record.breaker.open:
            raise PluginFailed("its circuit breaker is open; reload it", name)
        if not record.workers:
            await self._request_load(record)

    async def load_many(self, names: Iterable[str]) -> dict[str, AutoweaveError | None]:
        """Load each plugin; returns None or the error per name, never raising for one."""
        return await self._each(names, self.load)

    async def unload(self, name: str) -> None:
        record = self._record(name)
        await self._unload(record, "idle", PluginState.DORMANT)

    async def unload_many(self, names: Iterable[str]) -> dict[str, AutoweaveError | None]:
        """Unload each plugin (onUnload, then stop); returns None or the error per name."""
        return await self._each(names, self.unload)

    @staticmethod
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

    async def _unload(
        self,
        record: PluginRecord,
        reason: str,
        state: PluginState,
        workers: list[WorkerProcess] | None = None,
    ) -> None:
        """onUnload (bounded) then stop the given workers (all by default)."""
        targets = list(record.workers if workers is None else workers)
        for worker in targets:
            record.drop_worker(worker)
        await self._retire_workers(record, targets, reason)
        if workers is None:
            # A call may have loaded the plugin again while onUnload ran: then it stays loaded.
            if not record.workers and not self.scheduler.in_progress(record.name):
                record.state = state
            if targets:
                self.bus.emit("plugin:unloaded", record.view(), reason=reason)

    async def _retire_workers(
        self, record: PluginRecord, workers: list[WorkerProcess], reason: str
    ) -> None:
        """onUnload (bounded by unload_timeout), then stop and reap each worker."""
        timeout = self.config.worker_pool.unload_timeout

        async def retire(worker: WorkerProcess) -> None:
            if "onUnload" in record.plugin.manifest.hooks and worker.alive:
                try:
                    await worker.call("onUnload", timeout=timeout)
                except AutoweaveError as exc:
                    log.warning("onUnload of %s failed: %s", record.name, exc)
            await self.pool.retire(worker, reason, timeout)

        await asyncio.gather(*(retire(w) for w in workers), return_exceptions=True)

    async def reload(self, name: str) -> None:
        """Load the plugin's current files in a new worker; swap only if it starts (blue/green).

        Closes an open circuit breaker. If the new version fails, the old one keeps serving
        and the error is raised (and emitted as ``plugin:error``).
        """
        record = self._record(name)
        async with record.lock:
            found = self._check_folder(record)
            if found is None:
                raise LoadError("its folder no longer holds a manifest", name)
            await self._swap(record, found)
        if not record.workers:  # it was not running: an explicit reload loads it now
            await self._request_load(record)

    def _check_folder(self, record: PluginRecord) -> DiscoveredPlugin | None:
        """The plugin's folder as it is now: None if gone; raises (and emits) if invalid."""
        if not os.path.isdir(record.plugin.folder):
            return None
        found = check_plugin_folder(record.plugin.folder, self.cache)
        if found is None:
            return None
        if isinstance(found, DiscoveryProblem):
            error = found.as_error()
            self._report_error(record, error)
            raise error
        if found.name != record.name:
            renamed = LoadError(
                f"the manifest now names {found.name!r}; a rename is a remove plus an add",
                record.name,
            )
            self._report_error(record, renamed)
            raise renamed
        return found

    async def _swap(self, record: PluginRecord, found: DiscoveredPlugin) -> None:
        """Start ``found`` beside the running version; route calls to it only once it loaded."""
        if not record.workers and self.scheduler.in_progress(record.name):
            # A load of the old version is under way: let it finish, then swap over it.
            with contextlib.suppress(AutoweaveError):
                await self.scheduler.request(record.name, record.priority)
        if not record.workers:
            record.plugin = found  # not running: the next call loads the new version
            record.fingerprint = self._fingerprint(found)
            record.breaker.reset()
            record.consecutive_restarts = 0
            record.state = PluginState.DISCOVERED
            return
        deadline = time.monotonic() + self.config.loader.load_timeout
        try:
            self.config.policy.enforce(found.manifest, str(self.config.plugin_directory))
            worker = await self._start_worker(found, deadline, record)
        except AutoweaveError as exc:
            self._report_error(record, exc)
            raise
        old = list(record.workers)
        for previous in old:
            record.drop_worker(previous)  # new calls go to the new version from here on
        record.plugin = found
        record.fingerprint = self._fingerprint(found)
        record.breaker.reset()
        record.consecutive_restarts = 0
        self._attach(record, worker)
        record.loaded_at = time.time()
        record.state = PluginState.IDLE
        self.bus.emit("plugin:reloaded", record.view(), pid=worker.pid)
        self._spawn(self._drain_and_retire(record, old))

    async def _drain_and_retire(self, record: PluginRecord, workers: list[WorkerProcess]) -> None:
        """Let calls in flight on the old version finish, then onUnload and stop it."""
        timeout = self.config.worker_pool.call_timeout
        await asyncio.gather(*(w.drain(timeout) for w in workers))
        await self._retire_workers(record, workers, "reload")

    def _fingerprint(self, plugin: DiscoveredPlugin) -> bytes:
        watcher = self.config.watcher
        return fingerprint_folder(
            plugin.folder,
            self.cache.check(plugin.manifest_path).content_hash,
            manifest_only=watcher.manifest_only,
            max_depth=watcher.max_depth,
            ignore=watcher.ignore_patterns,
        )

    def _plugin_folders(self) -> list[str]:
        return [r.plugin.folder for r in self.records.values()]

    async def _files_changed(self, folders: set[str], structure: bool) -> None:
        """Watcher callback: refresh plugins whose files changed; on structure changes, all."""
        if structure:
            self.rescan()
            folders = folders | set(self._plugin_folders())
        by_folder = {r.plugin.folder: r for r in self.records.values()}
        limit = asyncio.Semaphore(self.config.loader.max_concurrent_loads)

        async def refresh(record: PluginRecord) -> None:
            async with limit, record.lock:
                try:
                    found = self._check_folder(record)
                except AutoweaveError:
                    return  # reported; the running version keeps serving
                if found is None:
                    await self._remove(record)
                elif self._fingerprint(found) != record.fingerprint:
                    with contextlib.suppress(AutoweaveError):  # reported by _swap
                        await self._swap(record, found)

        await asyncio.gather(*(refresh(by_folder[f]) for f in folders if f in by_folder))
        if structure:
            self.rescan()  # a name freed by a removal may now belong to another folder

    async def _remove(self, record: PluginRecord) -> None:
        """The plugin's folder is gone: unload it and forget it."""
        await self._unload(record, "idle", PluginState.DORMANT)
        self.records.pop(record.name, None)
        close_all(record.inbound)
        self.bus.emit("plugin:unloaded", record.view(), reason="removed")

    # --- recovery ------------------------------------------------------------------------

    def _worker_created(self, worker: WorkerProcess) -> None:
        self.bus.emit("worker:created", None, pid=worker.pid)

    def _worker_terminated(self, worker: WorkerProcess, reason: str) -> None:
        record = self.records.get(worker.plugin) if worker.plugin else None
        self.bus.emit(
            "worker:terminated", record.view() if record else None, pid=worker.pid, reason=reason
        )

    def _assigned_worker_exited(
        self, record: PluginRecord, worker: WorkerProcess, reason: str
    ) -> None:
        started = record.worker_started.get(worker)
        attached = worker in record.workers
        record.drop_worker(worker)
        if not attached or reason not in CRASH_REASONS or record.breaker.open:
            return
        now = time.monotonic()
        if started is not None and now - started >= self.config.worker_pool.healthy_period:
            record.consecutive_restarts = 0
        error = PluginCrashed(
            f"worker {worker.pid} exited ({reason}, code {worker.returncode})", record.name
        )
        self._report_error(record, error, reason=reason)
        if record.breaker.record_crash(now):
            for other in list(record.workers):
                record.drop_worker(other)  # detached first: their exits are not new crashes
                other.kill("crashed")
            record.state = PluginState.FAILED
            self.bus.emit("plugin:failed", record.view(), crashes=len(record.breaker.crashes))
            return
        if record.workers or not self._running:
            return
        record.consecutive_restarts += 1
        record.restarts += 1
        pool = self.config.worker_pool
        delay = backoff_delay(
            record.consecutive_restarts, pool.restart_backoff_base, pool.restart_backoff_cap
        )
        record.state = PluginState.QUEUED

        async def restart() -> None:
            await asyncio.sleep(delay)
            if self._running and not record.breaker.open and not record.workers:
                with contextlib.suppress(AutoweaveError):
                    await self._request_load(record)

        self._spawn(restart())

    # --- health and reclaim --------------------------------------------------------------

    async def _health_check(self) -> None:
        timeout = self.config.worker_pool.health_check_timeout

        async def check(record: PluginRecord | None, worker: WorkerProcess) -> None:
            try:
                await worker.ping(timeout)
            except WorkerError:
                return  # ping killed it as unhealthy; recovery follows from the exit
            rss = worker.measure_rss()  # measured here: what a worker says of itself is untrusted
            if record is not None and rss is not None:
                allowance = self.config.worker_pool.rss_allowance_mb
                limit = (record.plugin.manifest.permissions.max_heap_mb + allowance) * (1 << 20)
                if rss > limit:
                    log.warning(
                        "worker %s of %s uses %d bytes RSS > %d; killing",
                        worker.pid,
                        record.name,
                        rss,
                        limit,
                    )
                    worker.kill("memory")

        # A worker running a call is not pinged: a sync hook blocks its loop, and the call's
        # own timeout already bounds it.
        checks = [
            check(r, w)
            for r in self.records.values()
            for w in list(r.workers)
            if w.alive and not r.busy.get(w, 0)
        ]
        checks += [check(None, w) for w in list(self.pool.spares) if w.alive]
        await asyncio.gather(*checks)

    async def _reclaim_idle(self) -> None:
        pool = self.config.worker_pool
        now = time.monotonic()
        for record in list(self.records.values()):
            if not record.workers or record.calls_in_flight:
                continue
            if not record.pinned and now - record.last_used >= pool.worker_idle_timeout:
                await self._unload(record, "idle", PluginState.DORMANT)
                continue
            extra = [
                w
                for w in record.workers[1:]
                if record.busy.get(w, 0) == 0
                and now - record.worker_used.get(w, now) >= pool.scale_in_idle
            ]
            if extra:
                await self._unload(record, "idle", record.state, workers=extra)

    async def _reclaim_lru(self) -> bool:
        """Pool callback at the cap: unload the least recently used idle, unpinned plugin."""
        candidates = [
            r for r in self.records.values() if r.workers and not r.calls_in_flight and not r.pinned
        ]
        if not candidates:
            return False
        victim = min(candidates, key=lambda r: r.last_used)
        await self._unload(victim, "idle", PluginState.DORMANT)
        return True

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

    def get_manager_stats(self) -> dict[str, Any]:
        states = dict.fromkeys((s.value for s in PluginState), 0)
        for record in self.records.values():
            states[record.state.value] += 1
        busy = sum(1 for r in self.records.values() for w in r.workers if r.busy.get(w, 0))
        assigned = sum(len(r.workers) for r in self.records.values())
        cache = self.cache.stats()
        return {
            "plugins": states,
            "workers": {
                "live": len(self.pool.live),
                "spare": len(self.pool.spares),
                "assigned": assigned,
                "busy": busy,
                "created": self.pool.created,
                "spawn_failures": self.pool.spawn_failures,
                "terminated": dict(self.pool.terminated),
            },
            "loader": {
                "queued": self.scheduler.queued,
                "loading": self.scheduler.loading,
                "loads_ok": self.scheduler.loads_ok,
                "loads_failed": self.scheduler.loads_failed,
                "load_time_p50_ms": self.scheduler.load_times.summary_ms()["p50_ms"],
                "load_time_p95_ms": self.scheduler.load_times.summary_ms()["p95_ms"],
            },
            "cache": {
                "hits": cache.hits,
                "misses": cache.misses,
                "size": cache.size,
                "evictions": cache.evictions,
            },
        }

    def get_plugin_metadata(self, name: str) -> dict[str, Any]:
        record = self._record(name)
        workers = []
        for worker in record.workers:
            rss = cpu = None
            if worker.pid is not None:
                with contextlib.suppress(psutil.Error):
                    process = psutil.Process(worker.pid)
                    rss = process.memory_info().rss
                    times = process.cpu_times()
                    cpu = round(times.user + times.system, 3)
            latency = worker.stats.latency.summary_ms()
            workers.append(
                {
                    "pid": worker.pid,
                    "rss": rss,
                    "cpu_seconds": cpu,
                    "calls": worker.stats.calls,
                    "errors": worker.stats.errors,
                    "call_latency_p50_ms": latency["p50_ms"],
                    "call_latency_p99_ms": latency["p99_ms"],
                    "in_flight": record.busy.get(worker, 0),
                }
            )
        return {
            "name": name,
            "version": record.plugin.manifest.version,
            "state": record.state.value,
            "priority": record.priority.name,
            "pinned": record.pinned,
            "loaded_at": record.loaded_at,
            "access_count": record.access_count,
            "restarts": record.restarts,
            "errors": [
                {"time": e.time, "type": e.type, "message": e.message} for e in record.errors
            ],
            "call_latency": record.latency.summary_ms(),
            "worker_metrics": workers,
            "plugin_metrics": [w.metrics.snapshot() for w in record.workers],
        }

    def state(self, name: str) -> PluginState:
        return self._record(name).state
