"""A host joins the queue: it reads the job streams of the plugins it has, as far as its
free capacity, and keeps the leases of the jobs it runs.

One reading loop and one heartbeat loop per host:

- **Reading.** Each turn first takes over expired leases (XAUTOCLAIM, every ``heartbeat``
  seconds, or at once after this host gave a job back), then blocks on one XREADGROUP over the
  streams of the plugins with room. When a plugin left out for lack of room gets room again,
  the blocked read is ended with CLIENT UNBLOCK, so a full plugin never waits on an idle one. A read never asks for more entries than there are free
  slots, in total and per plugin, so a busy host leaves the rest of the queue to other hosts.
  Capacity is the manager's: a worker takes ``scale_out_queue`` calls before another is
  started, up to ``memory.max_workers`` for the plugin and the pool's ``max_workers`` overall.
- **Heartbeat.** Every ``heartbeat`` seconds the leases of the jobs in flight are renewed
  (their idle time reset), and the queue's depth, pending count and lag are sampled for
  ``status()`` and the metrics. A job this host no longer holds is noted; its answer will be
  dropped by the fence (see ``scripts``).
- **Draining.** ``drain()`` stops reading, lets the jobs in flight finish and answer (up to
  ``drain_timeout``), releases the rest for other hosts, and closes the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, cast

from redis import exceptions as redis_errors

from autoweave_plugins.jobs import keys
from autoweave_plugins.jobs.link import CONNECTION_ERRORS, RedisLink, connect
from autoweave_plugins.jobs.runner import Delivery, JobRunner
from autoweave_plugins.jobs_config import JobsConfig

if TYPE_CHECKING:
    from autoweave_plugins.manager import PluginManager

__all__ = ["JobConsumer"]

log = logging.getLogger("autoweave_plugins.jobs")

READ_BLOCK = 1.0
"""Longest wait of one XREADGROUP: how late a drain or a due reclaim can be noticed."""


class JobConsumer:
    """Run the jobs queued for this host's plugins. ``start()``, then ``drain()`` to stop."""

    def __init__(
        self,
        manager: PluginManager,
        config: JobsConfig,
        *,
        max_workers: int,
        per_worker: int,
    ) -> None:
        if config.url is None:
            raise ValueError("JobsConfig.url is required to join a queue")
        self.manager = manager
        self.config = config
        self.name = config.consumer_name
        self.max_workers = max_workers
        self.per_worker = per_worker
        self.capacity = max_workers * per_worker
        self.link = RedisLink(config.url, name=self.name, max_connections=self.capacity + 8)
        # The blocking XREADGROUP has a connection of its own, so that it can be cut short
        # (CLIENT UNBLOCK) when a plugin left out of the read gets room again.
        self.reader = connect(config.url, name=self.name, max_connections=1)
        self._reader_id: int | None = None
        self._reading: frozenset[str] | None = None
        self._unblocking = False
        self.counters: dict[str, Counter[str]] = {}
        self.queues: dict[str, dict[str, int]] = {}
        self.in_flight: dict[str, dict[bytes, asyncio.Task[None]]] = {}
        self.lost_leases = 0
        self.runner = JobRunner(
            manager, config, self.link, self.name, self._counters, self._reclaim_soon
        )
        self._groups: set[str] = set()
        self._cursors: dict[str, bytes] = {}
        self._wake = asyncio.Event()
        self._reclaim_due = 0.0
        self._rotation = 0
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self._unblocks: set[asyncio.Task[None]] = set()

    # --- capacity ----------------------------------------------------------------------------

    def _counters(self, plugin: str) -> Counter[str]:
        return self.counters.setdefault(plugin, Counter())

    def _busy(self) -> int:
        return sum(len(tasks) for tasks in self.in_flight.values())

    def plugin_capacity(self, plugin: str) -> int:
        record = self.manager.records.get(plugin)
        if record is None or record.state == "failed":
            return 0
        workers = min(record.plugin.manifest.permissions.max_workers, self.max_workers)
        return workers * self.per_worker

    def _plugin_free(self, plugin: str) -> int:
        return self.plugin_capacity(plugin) - len(self.in_flight.get(plugin, ()))

    def _reclaim_soon(self) -> None:
        self._reclaim_due = 0.0
        self._wake.set()

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start reading and renewing. Returns at once, even if Redis is unreachable."""
        self._loops = [
            asyncio.ensure_future(self._read_loop()),
            asyncio.ensure_future(self._heartbeat_loop()),
        ]
        log.info(
            "jobs: %s joins group %r as %r (capacity %d)",
            self.link.status()["url"],
            keys.GROUP,
            self.name,
            self.capacity,
        )

    async def drain(self, timeout: float | None = None) -> None:
        """Stop reading, finish (or release) the jobs in flight, close the link."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        self._unblock()
        if self._loops:
            done, _ = await asyncio.wait([self._loops[0]], timeout=READ_BLOCK + 1)
            if not done:  # backing off from an unreachable server: nothing is being read
                self._loops[0].cancel()
        tasks = [t for jobs in self.in_flight.values() for t in jobs.values()]
        if tasks:
            log.info("jobs: draining %d job(s) in flight", len(tasks))
            _, late = await asyncio.wait(tasks, timeout=timeout or self.config.drain_timeout)
            self.runner.closing = True
            for task in late:
                task.cancel()  # the runner releases each for another host
            await asyncio.gather(*late, return_exceptions=True)
        self.runner.closing = True
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self.link.close()
        await self.reader.aclose()

    # --- reading -----------------------------------------------------------------------------

    def _eligible(self) -> list[str]:
        names = [n for n in self.manager.records if self._plugin_free(n) > 0]
        if names:
            turn = self._rotation % len(names)
            self._rotation += 1
            names = names[turn:] + names[:turn]
        return names

    async def _read_loop(self) -> None:
        while not self._stopping:
            free = self.capacity - self._busy()
            eligible = self._eligible() if free > 0 else []
            if not eligible:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.config.heartbeat)
                continue
            try:
                await self.link.retry(
                    functools.partial(self._read_once, eligible, free),
                    until=lambda: self._stopping,
                )
            except CONNECTION_ERRORS:
                return  # stopping while the server is unreachable
            except redis_errors.ResponseError as exc:
                # NOGROUP: the server lost its data (restarted without persistence); anything
                # else (a key of the wrong type...) is logged, and reading goes on after a pause.
                self._groups.clear()
                if "NOGROUP" not in str(exc):
                    log.error("jobs: reading refused: %s", exc)
                    await asyncio.sleep(self.config.heartbeat)

    async def _read_once(self, eligible: list[str], free: int) -> None:
        await self._ensure_groups(eligible)
        if time.monotonic() >= self._reclaim_due:
            self._reclaim_due = time.monotonic() + self.config.heartbeat
            if await self._reclaim(eligible):
                return  # capacity changed: look again before reading
        take = eligible[:free]
        per = min(self.config.batch_size, free // len(take), *map(self._plugin_free, take))
        if per <= 0:
            return
        try:
            if self._reader_id is None:
                self._reader_id = int(await self.reader.client_id())
            self._reading, self._unblocking = frozenset(take), False
            reply = await self.reader.xreadgroup(
                keys.GROUP,
                self.name,
                {keys.jobs_stream(p): ">" for p in take},
                count=per,
                block=int(min(READ_BLOCK, self.config.heartbeat) * 1000),
            )
        except CONNECTION_ERRORS:
            self._reader_id = None  # a new connection will have a new id
            raise
        finally:
            self._reading = None
        for stream, entries in cast(list[Any], reply or []):
            plugin = stream.decode().removeprefix("autoweave:jobs:")
            for entry_id, fields in entries:
                self._start(Delivery(plugin, entry_id, fields or {}, 1))

    async def _ensure_groups(self, plugins: list[str]) -> None:
        for plugin in plugins:
            stream = keys.jobs_stream(plugin)
            if stream in self._groups:
                continue
            try:  # from 0: jobs submitted before any host joined are not skipped
                await self.link.redis.xgroup_create(stream, keys.GROUP, id="0", mkstream=True)
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._groups.add(stream)

    async def _reclaim(self, plugins: list[str]) -> int:
        """Take over expired leases, as far as there is room; returns how many were taken."""
        taken = 0
        for plugin in plugins:
            room = min(self._plugin_free(plugin), self.capacity - self._busy())
            if room <= 0:
                continue
            stream = keys.jobs_stream(plugin)
            cursor, claimed, gone = await self.runner.scripts.reclaim(
                stream,
                keys.stats_key(plugin),
                keys.GROUP,
                self.name,
                int(self.config.lease * 1000),
                self._cursors.get(plugin, b"0-0"),
                room,
            )
            self._cursors[plugin] = cursor
            if gone:
                self._counters(plugin)["trimmed"] += gone
                log.warning("jobs: %d entries of %s were deleted while pending", gone, stream)
            for entry in claimed:
                if entry.entry_id in self.in_flight.get(plugin, {}):
                    continue  # ours already: a late heartbeat let it lapse, and we took it back
                self._counters(plugin)["redelivered"] += 1
                self._start(
                    Delivery(plugin, entry.entry_id, entry.fields, entry.deliveries, entry.previous)
                )
                taken += 1
        return taken

    def _start(self, delivery: Delivery) -> None:
        jobs = self.in_flight.setdefault(delivery.plugin, {})
        task = asyncio.ensure_future(self.runner.run(delivery))
        jobs[delivery.entry_id] = task

        def finished(_: asyncio.Task[None]) -> None:
            if jobs.get(delivery.entry_id) is task:
                del jobs[delivery.entry_id]
            if not task.cancelled() and task.exception() is not None:
                log.error("job entry %s failed", delivery.entry_id, exc_info=task.exception())
            self._wake.set()
            if self._reading is not None and delivery.plugin not in self._reading:
                self._unblock()  # its plugin has room now, and the read does not include it

        task.add_done_callback(finished)

    def _unblock(self) -> None:
        """End the blocked read now (it returns nothing, as on a timeout; no entry is lost)."""
        if self._reading is None or self._reader_id is None or self._unblocking:
            return
        self._unblocking = True
        reader_id = self._reader_id

        async def unblock() -> None:
            with contextlib.suppress(*CONNECTION_ERRORS, redis_errors.ResponseError):
                await self.link.redis.client_unblock(reader_id)

        task = asyncio.ensure_future(unblock())
        self._unblocks.add(task)
        task.add_done_callback(self._unblocks.discard)

    # --- heartbeat ---------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat)
            try:
                await self._renew()
                await self._sample()
            except CONNECTION_ERRORS as exc:
                self.link.failed(exc)
            except redis_errors.ResponseError as exc:
                log.warning("jobs: heartbeat refused: %s", exc)

    async def _renew(self) -> None:
        for plugin, jobs in list(self.in_flight.items()):
            if not jobs:
                continue
            lost = await self.runner.scripts.heartbeat(
                keys.jobs_stream(plugin), keys.GROUP, self.name, list(jobs)
            )
            self.link.ok()
            for entry in lost:
                if entry in jobs:
                    self.lost_leases += 1
                    self._counters(plugin)["lease_lost"] += 1
                    log.warning("jobs: lost the lease of %s entry %s", plugin, entry.decode())

    async def _sample(self) -> None:
        names = list(self.manager.records)
        if not names:
            await self.link.redis.ping()  # still say whether the link is up
            self.link.ok()
            return
        async with self.link.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.xlen(keys.jobs_stream(name))
                pipe.xpending(keys.jobs_stream(name), keys.GROUP)
            replies = await pipe.execute(raise_on_error=False)
        self.link.ok()
        for index, name in enumerate(names):
            depth, pending = replies[2 * index], replies[2 * index + 1]
            if isinstance(depth, int) and isinstance(pending, dict):
                count = int(pending.get("pending", 0))
                self.queues[name] = {"depth": depth, "pending": count, "lag": max(0, depth - count)}

    # --- visibility --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The jobs link for ``status`` and the metrics: health, capacity, per-plugin counts."""
        plugins: dict[str, Any] = {}
        for name in sorted(set(self.counters) | set(self.queues) | set(self.in_flight)):
            plugins[name] = {
                "in_flight": len(self.in_flight.get(name, ())),
                "capacity": self.plugin_capacity(name),
                **self.queues.get(name, {}),
                **dict(self.counters.get(name, Counter())),
            }
        return {
            "consumer": self.name,
            "group": keys.GROUP,
            "link": self.link.status(),
            "reading": not self._stopping,
            "capacity": self.capacity,
            "in_flight": self._busy(),
            "lost_leases": self.lost_leases,
            "plugins": plugins,
        }
