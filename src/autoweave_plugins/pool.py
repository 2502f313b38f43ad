"""Worker processes: pre-warmed spares, the live-process cap, and counting births and deaths.

The pool owns process lifecycles, not plugins. It keeps ``min_workers`` blank spares ready and
never lets live processes (spares included) exceed ``max_workers``. When a worker is needed at
the cap, it asks ``make_room`` (the supervisor reclaims the least recently used idle plugin);
if nothing can be reclaimed, the request waits for a slot until its deadline.

The pool imports nothing above it: ``make_room``, ``on_created`` and ``on_terminated`` are
callables its owner injects, and ``spawn`` starts one process (a fake in unit tests). With a
``start_method`` (``startmethod.StartMethod``: the template, or spawning, with the fallback)
the pool starts workers through it, opens it before the first spare and closes it last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

from autoweave_plugins.errors import LoadTimeout, WorkerError
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.recovery import ExitReason
from autoweave_plugins.settings import WorkerPoolConfig
from autoweave_plugins.startmethod import StartMethod

__all__ = ["WorkerPool"]

log = logging.getLogger(__name__)

REPLENISH_DELAY = 0.05


async def _nothing_to_reclaim() -> bool:
    return False


def _ignore(*_: object) -> None:
    return None


class WorkerPool:
    """Live worker processes under ``max_workers``, with ``min_workers`` blank spares.

    ``make_room``, ``on_created`` and ``on_terminated`` may be given here or installed later
    by the part that owns those decisions (the supervisor does, when it is created).
    """

    def __init__(
        self,
        config: WorkerPoolConfig,
        *,
        make_room: Callable[[], Awaitable[bool]] = _nothing_to_reclaim,
        on_created: Callable[[WorkerProcess], None] = _ignore,
        on_terminated: Callable[[WorkerProcess, ExitReason], None] = _ignore,
        spawn: Callable[[], Awaitable[WorkerProcess]] = WorkerProcess.spawn,
        start_method: StartMethod | None = None,
    ) -> None:
        self.config = config
        self.make_room = make_room
        """At the cap: free a slot (True) or say none can be freed (False)."""
        self.on_created = on_created
        self.on_terminated = on_terminated
        self.start_method = start_method
        self._spawn_worker = start_method or spawn
        self.spares: deque[WorkerProcess] = deque()
        self.live: set[WorkerProcess] = set()
        self.created = 0
        self.terminated: Counter[str] = Counter()
        self.spawn_failures = 0
        self._spawning: set[asyncio.Future[WorkerProcess]] = set()
        self._slot_freed = asyncio.Event()
        self._replenisher: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def size(self) -> int:
        """Live processes plus those being spawned: what counts against the cap."""
        return len(self.live) + len(self._spawning)

    @property
    def start_method_stats(self) -> dict[str, Any]:
        """The start method's snapshot (spawning through ``spawn`` when there is none)."""
        if self.start_method is not None:
            return self.start_method.snapshot()
        return {"requested": "spawn", "active": "spawn", "fallback_reason": None}

    async def _spawn(self) -> WorkerProcess:
        if self._closing:
            raise WorkerError("the pool is shutting down")
        # Shielded: a cancelled caller must not lose track of a process that is starting.
        future = asyncio.ensure_future(self._spawn_worker())
        self._spawning.add(future)
        try:
            worker = await asyncio.shield(future)
        except WorkerError:
            self.spawn_failures += 1
            raise
        except OSError as exc:  # EMFILE, EAGAIN from socketpair, fork or pidfd_open
            self.spawn_failures += 1
            raise WorkerError(f"cannot start a worker process: {exc}") from exc
        finally:
            if future.done():
                self._spawning.discard(future)
            else:
                future.add_done_callback(self._spawning.discard)
        self.live.add(worker)
        self.created += 1
        worker.on_exit.append(self._exited)
        self.on_created(worker)
        return worker

    def _exited(self, worker: WorkerProcess, reason: str, returncode: int | None) -> None:
        self.live.discard(worker)
        with contextlib.suppress(ValueError):
            self.spares.remove(worker)
        reported = ExitReason.of(reason).reported
        self.terminated[reported] += 1
        self.on_terminated(worker, reported)
        self._slot_freed.set()
        self.replenish(REPLENISH_DELAY)

    def replenish(self, delay: float = 0.0) -> None:
        """Top spares up to min_workers in the background (never past the cap).

        After a spare is taken, the replacement starts ``REPLENISH_DELAY`` later: starting an
        interpreter costs ~100 ms of CPU, and on a small machine it would otherwise compete
        with the assignment that just took the spare.
        """
        if self._closing or (self._replenisher is not None and not self._replenisher.done()):
            return
        self._replenisher = asyncio.ensure_future(self._replenish(delay))

    async def _replenish(self, delay: float = 0.0) -> None:
        if delay:
            await asyncio.sleep(delay)
        failures = 0
        while not self._closing:
            missing = min(
                self.config.min_workers - len(self.spares), self.config.max_workers - self.size
            )
            if missing <= 0:
                return
            results = await asyncio.gather(
                *(self._spawn() for _ in range(missing)), return_exceptions=True
            )
            for result in results:
                if isinstance(result, WorkerError):
                    failures += 1
                    log.error("could not start a spare worker: %s", result)
                elif isinstance(result, BaseException):
                    raise result
                else:
                    self.spares.append(result)
                    failures = 0
            if failures:
                await asyncio.sleep(min(30.0, 0.1 * 2**failures))

    async def start(self) -> None:
        """Start the spares and wait until they are ready: a started pool is a warm pool."""
        if self.start_method is not None:
            await self.start_method.open()
        self.replenish()
        if self._replenisher is not None:
            await asyncio.shield(self._replenisher)

    async def acquire(self, deadline: float) -> WorkerProcess:
        """A blank worker: a spare, a new process, or one freed by reclaiming an idle plugin."""
        while True:
            while self.spares:
                worker = self.spares.popleft()
                if worker.alive:
                    self.replenish(REPLENISH_DELAY)
                    return worker
            if self.size < self.config.max_workers:
                worker = await self._spawn()
                self.replenish()
                return worker
            if await self.make_room():
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LoadTimeout(
                    f"no worker slot free within the load timeout (max_workers={self.config.max_workers})"
                )
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), remaining)

    async def retire(self, worker: WorkerProcess, reason: ExitReason, timeout: float = 2.0) -> None:
        """Stop one worker (graceful, then forced) and wait until it is reaped."""
        await worker.stop(timeout=timeout, reason=reason)

    async def close(self, timeout: float = 2.0) -> None:
        """Stop every live worker, spares included; returns when all are reaped."""
        self._closing = True
        if self._replenisher is not None:
            self._replenisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replenisher
        # Processes still starting are waited for, so that they are stopped below too.
        started = await asyncio.gather(*self._spawning, return_exceptions=True)
        self.live.update(w for w in started if not isinstance(w, BaseException))
        await asyncio.gather(
            *(w.stop(timeout=timeout, reason=ExitReason.SHUTDOWN) for w in list(self.live)),
            return_exceptions=True,
        )
        self.spares.clear()
        if self.start_method is not None:
            await self.start_method.close()
