"""Keeping workers healthy: a few verbs over the table of records and their workers, after
gunicorn's arbiter.

- ``worker_exited`` (reap): an attached worker ended; a crash is counted against the breaker
  and restarted after a capped, jittered backoff; enough crashes in the window fail the plugin.
- ``health_check`` (murder): ping every worker not running a call; one that does not answer is
  killed as ``unhealthy``.
- ``memory_check`` (murder): every ``memory_check_interval`` (1 s), far more often than the
  health check, kill any assigned worker whose host-measured RSS is over its budget, busy or
  not, with reason ``memory``. It backs the rlimits for memory they do not count.
- ``reclaim_idle`` and ``reclaim_lru`` (manage): unload plugins idle past their timeout, stop
  extra workers idle past ``scale_in_idle``, and free a slot for the pool at its cap.
- ``maybe_scale_out`` (spawn): give a busy plugin another worker, up to its manifest's
  ``memory.max_workers``.

It installs its verbs on the pool and the loader when it is created, so that they call down
into it through injected callables, never by importing it. Calls are at-most-once: a call in
flight when its worker dies fails with ``PluginCrashed`` and is never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from autoweave_plugins.errors import AutoweaveError, PluginCrashed, WorkerError
from autoweave_plugins.events import EventBus
from autoweave_plugins.loader import Loader
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.recovery import ExitReason, backoff_delay
from autoweave_plugins.registry import PluginRecord, PluginState, Registry
from autoweave_plugins.settings import ManagerConfig
from autoweave_plugins.tasks import TaskSet

__all__ = ["ExitReason", "Supervisor"]

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(
        self, config: ManagerConfig, registry: Registry, loader: Loader, bus: EventBus
    ) -> None:
        self.config = config
        self.registry = registry
        self.loader = loader
        self.pool = loader.pool
        self.bus = bus
        self.tasks = TaskSet("supervisor")
        self.pool.make_room = self.reclaim_lru
        self.pool.on_created = self.worker_created
        self.pool.on_terminated = self.worker_terminated
        loader.on_worker_exit = self.worker_exited

    def start(self) -> None:
        """Start the periodic jobs: health check, memory check and idle reclaim."""
        pool = self.config.worker_pool
        self.tasks.every(pool.health_check_interval, self.health_check)
        self.tasks.every(pool.memory_check_interval, self.memory_check)
        self.tasks.every(
            min(1.0, pool.scale_in_idle / 4, pool.worker_idle_timeout / 4), self.reclaim_idle
        )

    async def stop(self) -> None:
        """Cancel periodic jobs, pending restarts and scale-outs."""
        await self.tasks.cancel_all()

    # --- births and deaths ---------------------------------------------------------------

    def worker_created(self, worker: WorkerProcess) -> None:
        self.bus.emit("worker:created", None, pid=worker.pid)

    def worker_terminated(self, worker: WorkerProcess, reason: ExitReason) -> None:
        record = self.registry.owner(worker)
        self.bus.emit(
            "worker:terminated", record.view() if record else None, pid=worker.pid, reason=reason
        )

    def worker_exited(self, record: PluginRecord, worker: WorkerProcess, reason: str) -> None:
        """An attached worker ended: detach it; after a crash, restart or open the breaker."""
        assignment = record.detach(worker)
        exit_reason = ExitReason.of(reason)
        if assignment is None or not exit_reason.is_crash or record.breaker.open:
            return
        now = time.monotonic()
        if now - assignment.started >= self.config.worker_pool.healthy_period:
            record.consecutive_restarts = 0
        if exit_reason is not ExitReason.TIMEOUT:
            # A worker killed for a hook's timeout was reported once already, as the caller's
            # HookTimeout: it still counts towards the breaker, but is not a second error.
            error = PluginCrashed(
                f"worker {worker.pid} exited ({reason}, code {worker.returncode})", record.name
            )
            self.loader.report_error(record, error, reason=reason)
        if record.breaker.record_crash(now):
            for other in record.workers:
                record.detach(other)  # detached first: their exits are not new crashes
                other.kill(ExitReason.CRASHED)
            record.move_to(PluginState.FAILED)
            self.bus.emit("plugin:failed", record.view(), crashes=len(record.breaker.crashes))
            return
        if record.assignments or not self.loader.running:
            return
        record.consecutive_restarts += 1
        record.restarts += 1
        pool = self.config.worker_pool
        delay = backoff_delay(
            record.consecutive_restarts, pool.restart_backoff_base, pool.restart_backoff_cap
        )
        record.move_to(PluginState.QUEUED)
        self.tasks.spawn(self._restart(record, delay))

    async def _restart(self, record: PluginRecord, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.loader.running and not record.breaker.open and not record.assignments:
            with contextlib.suppress(AutoweaveError):
                await self.loader.request_load(record)

    # --- health --------------------------------------------------------------------------

    async def health_check(self) -> None:
        timeout = self.config.worker_pool.health_check_timeout

        async def check(worker: WorkerProcess) -> None:
            with contextlib.suppress(WorkerError):  # ping killed it as unhealthy
                await worker.ping(timeout)

        # A worker running a call is not pinged: a sync hook blocks its loop, and the call's
        # own timeout already bounds it.
        workers = [
            a.worker
            for r in self.registry.values()
            for a in list(r.assignments)
            if a.worker.alive and not a.busy
        ]
        workers += [w for w in list(self.pool.spares) if w.alive]
        await asyncio.gather(*(check(w) for w in workers))

    async def memory_check(self) -> None:
        """Kill each assigned worker whose RSS is over its plugin's budget (reason ``memory``).
        Measured by the host from /proc: what a worker says of itself is untrusted."""
        allowance = self.config.worker_pool.rss_allowance_mb
        for record in list(self.registry.values()):
            limit = (record.plugin.manifest.permissions.max_heap_mb + allowance) * (1 << 20)
            for assignment in list(record.assignments):
                worker = assignment.worker
                rss = worker.measure_rss() if worker.alive else None
                if rss is not None and rss > limit:
                    log.warning(
                        "worker %s of %s uses %d bytes RSS > %d; killing",
                        worker.pid,
                        record.name,
                        rss,
                        limit,
                    )
                    worker.kill(ExitReason.MEMORY)

    # --- reclaim and scale ---------------------------------------------------------------

    async def reclaim_idle(self) -> None:
        pool = self.config.worker_pool
        now = time.monotonic()
        for record in list(self.registry.values()):
            if not record.assignments or record.calls_in_flight:
                continue
            if not record.pinned and now - record.last_used >= pool.worker_idle_timeout:
                await self.loader.unload(record, ExitReason.IDLE, PluginState.DORMANT)
                continue
            extra = [
                a.worker
                for a in record.assignments[1:]
                if a.busy == 0 and now - a.used >= pool.scale_in_idle
            ]
            if extra:
                await self.loader.unload(record, ExitReason.IDLE, record.state, workers=extra)

    async def reclaim_lru(self) -> bool:
        """Pool callback at the cap: unload the least recently used idle, unpinned plugin."""
        candidates = [
            r
            for r in self.registry.values()
            if r.assignments and not r.calls_in_flight and not r.pinned
        ]
        if not candidates:
            return False
        victim = min(candidates, key=lambda r: r.last_used)
        await self.loader.unload(victim, ExitReason.IDLE, PluginState.DORMANT)
        return True

    def maybe_scale_out(self, record: PluginRecord) -> None:
        """Start another worker for ``record`` if every live one has ``scale_out_queue`` calls."""
        queue = self.config.worker_pool.scale_out_queue
        first = record.assignments[0] if record.assignments else None
        if record.scaling or first is None or (first.worker.alive and first.busy < queue):
            return  # on every call: the common answer, without building a list
        limit = record.plugin.manifest.permissions.max_workers
        alive = [a for a in record.assignments if a.worker.alive]
        if record.scaling or len(alive) >= limit or not alive:
            return
        if min(a.busy for a in alive) < queue:
            return
        record.scaling = True
        self.tasks.spawn(self._scale_out(record))

    async def _scale_out(self, record: PluginRecord) -> None:
        try:
            deadline = time.monotonic() + self.config.loader.load_timeout
            plugin = record.plugin
            worker = await self.loader.start_worker(record, plugin, deadline)
            if await self.loader.still_wanted(record, plugin, worker) and record.assignments:
                self.loader.attach(record, worker)
            elif worker.alive:
                await self.loader.retire(worker, ExitReason.IDLE)
        except AutoweaveError as exc:
            log.warning("scale-out of %s failed: %s", record.name, exc)
        finally:
            record.scaling = False
