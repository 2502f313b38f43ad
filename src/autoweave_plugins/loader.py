"""Giving a plugin a worker, and taking it away.

A load runs under the scheduler (priority, concurrency cap, timeout, retries): the grant policy
is checked, a blank worker comes from the pool, the plugin's inbound sockets are bound (once,
and kept across restarts and reloads), the worker is assigned its ``WorkerSpec`` and runs
onLoad, and only then is it attached to the record. Unloading runs onUnload (bounded) and stops
and reaps the workers. ``start_worker`` is the one place a worker is started for a plugin, so
the grant policy is enforced in one place, for loads, restarts, scale-out and reloads alike.

The loader imports nothing above it. When an attached worker exits it calls
``on_worker_exit``, which the supervisor installs; until then an exit only detaches the worker.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from autoweave_plugins.broker.inbound import bind_inbound, close_all
from autoweave_plugins.discovery import DiscoveredPlugin
from autoweave_plugins.environments.leases import Leases
from autoweave_plugins.environments.model import Environment
from autoweave_plugins.errors import (
    AutoweaveError,
    DependencyError,
    EntryError,
    LoadError,
    PluginFailed,
)
from autoweave_plugins.events import EventBus
from autoweave_plugins.manifest.dependencies import dependency_problem
from autoweave_plugins.metrics import ManagerMetrics
from autoweave_plugins.pool import WorkerPool
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.recovery import ExitReason
from autoweave_plugins.registry import PluginRecord, PluginState, Registry
from autoweave_plugins.sandbox.nsprobe import workers_have_own_identity
from autoweave_plugins.sandbox.world import WORKER_IDENTITY
from autoweave_plugins.scheduler import LoadScheduler
from autoweave_plugins.settings import LimitsConfig, ManagerConfig, Priority
from autoweave_plugins.spec_builder import build_spec

__all__ = ["Loader", "WorkerExit", "build_spec", "spawner"]

log = logging.getLogger(__name__)

WorkerExit = Callable[[PluginRecord, WorkerProcess, str], None]
"""Called when a worker attached to a record exits: (record, worker, reason)."""


def spawner(limits: LimitsConfig) -> Callable[[], Awaitable[WorkerProcess]]:
    """``WorkerProcess.spawn`` with the configured limits (the pool's way to start a worker)."""
    return functools.partial(
        WorkerProcess.spawn,
        max_frame=limits.max_frame,
        output=limits.output,
        ready_timeout=limits.ready_timeout,
        max_concurrent_requests=limits.max_concurrent_requests,
    )


def _ignore_exit(record: PluginRecord, worker: WorkerProcess, reason: str) -> None:
    record.detach(worker)


class Loader:
    """Loads and unloads plugins for the manager; owns the scheduler and the HTTP client."""

    def __init__(
        self,
        config: ManagerConfig,
        registry: Registry,
        pool: WorkerPool,
        bus: EventBus,
        metrics: ManagerMetrics,
        leases: Leases | None = None,
    ) -> None:
        self.config = config
        self.leases = leases
        """Each worker holds a lease on its plugin's environment until it exits."""
        self.registry = registry
        self.pool = pool
        self.bus = bus
        self.metrics = metrics
        self.scheduler: LoadScheduler[str] = LoadScheduler(
            config.loader,
            self.load,
            backoff_base=config.worker_pool.restart_backoff_base,
            backoff_cap=config.worker_pool.restart_backoff_cap,
        )
        self.http: httpx.AsyncClient | None = None
        self.running = False
        """Between start and stop: no worker is attached outside it."""
        self.on_worker_exit: WorkerExit = _ignore_exit
        self.await_prepared: Callable[[PluginRecord], Awaitable[None]] | None = None
        """Installed by the preparer: wait until a ``preparing`` record is ready to load, or
        raise why it cannot be (its environment failed to build, a dependency is missing)."""

    # --- lifecycle -----------------------------------------------------------------------

    def open(self) -> None:
        self.running = True
        self.http = httpx.AsyncClient(follow_redirects=False, trust_env=False)

    async def close(self) -> None:
        """Stop loading, onUnload every plugin (bounded), stop every worker, free sockets."""
        self.running = False
        await self.scheduler.close()
        loaded = [r for r in self.registry.values() if r.assignments]
        await asyncio.gather(
            *(self.unload(r, ExitReason.SHUTDOWN, PluginState.DORMANT) for r in loaded),
            return_exceptions=True,
        )
        await self.pool.close(timeout=self.config.worker_pool.unload_timeout)
        for record in self.registry.values():
            close_all(record.inbound)
        if self.http is not None:
            await self.http.aclose()

    # --- loading -------------------------------------------------------------------------

    def request_load(self, record: PluginRecord) -> asyncio.Future[None]:
        """Queue a load of ``record`` (or join the one under way); resolves once loaded.

        A record still preparing (or whose preparing failed) is loaded once it is ready.
        """
        if self.await_prepared is not None and (record.preparing or record.prepare_error):
            return asyncio.ensure_future(self._load_when_prepared(record, self.await_prepared))
        if not self.scheduler.in_progress(record.name):
            record.move_to(PluginState.QUEUED)
        return self.scheduler.request(record.name, record.priority)

    async def _load_when_prepared(
        self, record: PluginRecord, prepared: Callable[[PluginRecord], Awaitable[None]]
    ) -> None:
        await prepared(record)
        await self.request_load(record)

    def dependency_error(self, name: str, plugin: DiscoveredPlugin) -> DependencyError | None:
        """Why ``plugin`` (as ``name``'s version) may not load beside the plugins known now."""
        if not plugin.manifest.dependencies:
            return None
        manifests = {n: r.plugin.manifest for n, r in self.registry.items()}
        manifests[name] = plugin.manifest
        problem = dependency_problem(name, manifests)
        if problem is None:
            return None
        return DependencyError(problem.message, name, problem.dependency, problem.cycle)

    async def preload(self) -> None:
        """Load preload_queue and every CRITICAL/HIGH plugin, in priority order."""
        order = list(self.config.loader.preload_queue)
        order += [
            n for n, r in self.registry.items() if r.priority <= Priority.HIGH and n not in order
        ]
        for name in order:
            if name not in self.registry:
                log.warning("preload_queue names %r, which was not discovered", name)
        # One still preparing is loaded by the preparer once ready: start must not wait for it.
        futures = [
            self.request_load(self.registry[n])
            for n in order
            if n in self.registry and not self.registry[n].preparing
        ]
        await asyncio.gather(*futures, return_exceptions=True)

    async def load(self, name: str, deadline: float) -> None:
        """Scheduler callback: give a worker this plugin. Raises on failure."""
        record = self.registry.get(name)
        if record is None:
            raise LoadError("removed while queued", name)
        if record.breaker.open:  # it opened while this load was queued: it stays failed
            record.move_to(PluginState.IDLE if record.assignments else PluginState.FAILED)
            raise PluginFailed("its circuit breaker is open; reload it", name)
        record.move_to(PluginState.LOADING)
        started = time.monotonic()
        plugin = record.plugin
        try:
            refused = self.dependency_error(name, plugin)
            if refused is not None:
                raise refused
            worker = await self.start_worker(record, plugin, deadline)
        except BaseException as exc:  # a timeout arrives as a cancellation: reset the state too
            record.move_to(PluginState.IDLE if record.assignments else PluginState.FAILED)
            if isinstance(exc, AutoweaveError):
                self.report_error(record, exc)
            raise
        if not await self.still_wanted(record, plugin, worker):
            raise LoadError(
                "superseded while loading (reloaded, removed, or the manager stopped)", name
            )
        if record.breaker.open:
            # Another worker's crash opened the breaker meanwhile: the plugin stays failed
            # (attaching this one would show it idle while every call is refused).
            await self.retire(worker, ExitReason.IDLE)
            record.move_to(PluginState.IDLE if record.assignments else PluginState.FAILED)
            raise PluginFailed("its circuit breaker opened while it was loading; reload it", name)
        self.attach(record, worker)
        record.loaded_at = time.time()
        record.move_to(PluginState.IDLE)
        seconds = time.monotonic() - started
        self.metrics.load_seconds.labels(name).observe(seconds)
        self.bus.emit("plugin:loaded", record.view(), pid=worker.pid, seconds=round(seconds, 6))

    async def still_wanted(
        self, record: PluginRecord, plugin: DiscoveredPlugin, worker: WorkerProcess
    ) -> bool:
        """After an await: is this worker still for the current version of a known plugin?
        If not, retire it, rather than attach a stale version or leave an orphan."""
        if self.running and self.registry.is_current(record) and record.plugin is plugin:
            return True
        await self.retire(worker, ExitReason.RELOAD)
        return False

    async def start_worker(
        self,
        record: PluginRecord,
        plugin: DiscoveredPlugin,
        deadline: float,
        environment: Environment | None = None,
    ) -> WorkerProcess:
        """A worker running ``plugin`` (not yet attached), with its inbound sockets handed
        over. Checks the grant policy first: every worker a plugin gets passes through here.

        ``environment`` is the plugin's own; by default the record's, when ``plugin`` is the
        record's current version (a reload passes the new version's).
        """
        self.config.policy.enforce(plugin.manifest, str(self.config.plugin_directory))
        if environment is None and plugin is record.plugin:
            environment = record.environment
        if plugin.manifest.requirements and environment is None:
            raise LoadError("its environment is not prepared yet", plugin.name)
        listeners = self._listeners(record, plugin)
        try:
            worker = await self._assign(plugin, deadline, listeners, environment)
        except BaseException:
            if listeners is not record.inbound:
                close_all(listeners)
            raise
        if listeners is not record.inbound:
            close_all(record.inbound)  # the worker that used them holds its own copies
            record.inbound = listeners
            record.inbound_spec = plugin.manifest.permissions.inbound
        return worker

    def _listeners(self, record: PluginRecord, plugin: DiscoveredPlugin) -> list[socket.socket]:
        """The plugin's inbound listening sockets: bound once, reused by restarts and reloads."""
        spec = plugin.manifest.permissions.inbound
        if spec is None:
            return []
        if record.inbound_spec == spec and record.inbound:
            return record.inbound
        return bind_inbound(plugin.name, spec)  # a new port (first load, or changed by reload)

    def _grant_owner(self) -> tuple[int, int] | None:
        """Who the folders the host makes for a plugin's grants belong to: the worker's
        identity on the host (65534 for a root host's workers in their world)."""
        pool = self.config.worker_pool
        if not pool.namespaces:
            return None
        if workers_have_own_identity(frozenset(pool.disabled_namespaces)):
            return WORKER_IDENTITY
        return None

    async def _assign(
        self,
        plugin: DiscoveredPlugin,
        deadline: float,
        listeners: list[socket.socket],
        environment: Environment | None,
    ) -> WorkerProcess:
        # Before a worker is taken: a declared path that must be made, or is refused, leaves
        # no worker behind.
        spec = build_spec(
            plugin,
            strict=self.config.strict,
            config=dict(self.config.plugin_config.get(plugin.name, {})),
            serve_limits=self.config.limits.serve,
            environment=environment,
            max_frame=self.config.limits.max_frame,
            grant_owner=self._grant_owner(),
            **self.config.worker_options(plugin.name),
        )
        lease = None
        if environment is not None and self.leases is not None:
            lease = self.leases.take(environment)
            if lease is None:
                raise LoadError("its environment was deleted meanwhile; reload it", plugin.name)
        try:
            worker = await self.pool.acquire(deadline)
        except BaseException:
            if lease is not None:
                lease.release()
            raise
        if lease is not None:
            held = lease  # the old version's worker keeps its environment while it drains
            worker.on_exit.append(lambda w, reason, code: held.release())
        try:
            await worker.assign(
                spec,
                timeout=max(0.001, deadline - time.monotonic()),
                http=self.http,
                fetch_limits=self.config.limits.fetch,
                inbound=listeners,
                on_refused=functools.partial(self._refused, plugin.name),
            )
        except BaseException as exc:
            if worker.alive:
                failed = isinstance(exc, EntryError)
                worker.kill(ExitReason.LOAD_FAILED if failed else ExitReason.CRASHED)
            raise
        return worker

    def attach(self, record: PluginRecord, worker: WorkerProcess) -> None:
        """Route the record's calls to ``worker`` too; its exit goes to ``on_worker_exit``."""
        record.attach(worker)
        worker.on_exit.append(lambda w, reason, code: self.on_worker_exit(record, w, reason))

    def report_error(
        self, record: PluginRecord, error: AutoweaveError, context: str = "", **data: Any
    ) -> None:
        """Keep the error in the plugin's recent errors (with what it means for the plugin,
        ``context``), count it, and emit plugin:error."""
        record.record_error(error, context)
        self.metrics.errors.labels(record.name, type(error).__name__).inc()
        self.bus.emit("plugin:error", record.view(), error=error, **data)

    def _refused(self, name: str, error: AutoweaveError) -> None:
        """A brokered request of the plugin was refused: an event for the operator, not an
        error of the plugin's (it was told, and may well expect it)."""
        record = self.registry.get(name)
        self.bus.emit("plugin:error", record.view() if record else None, error=error, refused=True)

    # --- unloading -----------------------------------------------------------------------

    async def unload(
        self,
        record: PluginRecord,
        reason: ExitReason,
        state: PluginState,
        workers: list[WorkerProcess] | None = None,
    ) -> None:
        """onUnload (bounded) then stop the given workers (all by default)."""
        targets = record.workers if workers is None else list(workers)
        for worker in targets:
            record.detach(worker)
        await self.retire_workers(record, targets, reason)
        if workers is None:
            # A call may have loaded the plugin again while onUnload ran: then it stays loaded.
            if not record.assignments and not self.scheduler.in_progress(record.name):
                record.move_to(state)
            if targets:
                self.bus.emit("plugin:unloaded", record.view(), reason=reason)

    async def retire_workers(
        self, record: PluginRecord, workers: list[WorkerProcess], reason: ExitReason
    ) -> None:
        """onUnload (bounded by unload_timeout), then stop and reap each worker."""
        timeout = self.config.worker_pool.unload_timeout

        async def retire(worker: WorkerProcess) -> None:
            if "onUnload" in record.plugin.manifest.hooks and worker.alive:
                try:
                    await worker.call(
                        "onUnload", timeout=timeout, cancel_grace=self.config.limits.cancel_grace
                    )
                except AutoweaveError as exc:
                    log.warning("onUnload of %s failed: %s", record.name, exc)
            await self.retire(worker, reason)

        await asyncio.gather(*(retire(w) for w in workers), return_exceptions=True)

    async def retire(self, worker: WorkerProcess, reason: ExitReason) -> None:
        """Stop one worker (graceful, then forced) and wait until it is reaped."""
        await self.pool.retire(worker, reason, self.config.worker_pool.unload_timeout)
