"""Lazy loading with priorities: a priority queue, a concurrency cap, a timeout and retries.

A load request for a plugin that is already queued or loading returns the same future, so a
burst of calls to a dormant plugin starts one load. Queued loads start in priority order
(CRITICAL first), then first-come. A failed load is retried with the restart backoff unless the
error is permanent: an invalid manifest, a policy refusal, a strict-mode sandbox refusal, a
dependency that is missing or out of range, or the plugin's own code failing to load
(``EntryError``: a SyntaxError, a missing hook function, an exception in onLoad), which would
fail the same way again, or an open breaker.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from autoweave_plugins.errors import (
    AutoweaveError,
    DependencyError,
    EntryError,
    LoadError,
    LoadTimeout,
    ManifestError,
    PluginFailed,
    PolicyRefused,
    SandboxUnavailable,
)
from autoweave_plugins.latency import LatencyWindow
from autoweave_plugins.recovery import backoff_delay
from autoweave_plugins.settings import LoaderConfig, Priority
from autoweave_plugins.tasks import TaskSet

__all__ = ["PERMANENT_ERRORS", "LoadScheduler"]

log = logging.getLogger(__name__)

PERMANENT_ERRORS = (
    ManifestError,
    PolicyRefused,
    SandboxUnavailable,
    DependencyError,
    EntryError,
    PluginFailed,
)

Key = TypeVar("Key")


@dataclass(order=True)
class _Queued(Generic[Key]):
    priority: int
    sequence: int
    key: Key = field(compare=False)
    future: asyncio.Future[None] = field(compare=False)


class LoadScheduler(Generic[Key]):
    """Runs ``load(key, deadline)`` for requested keys, at most ``max_concurrent_loads`` at once.

    ``load`` is injected (the loader's, or a fake in unit tests); the scheduler knows nothing
    of workers or plugins, only keys, priorities and outcomes.
    """

    def __init__(
        self,
        config: LoaderConfig,
        load: Callable[[Key, float], Awaitable[None]],
        *,
        backoff_base: float,
        backoff_cap: float,
    ) -> None:
        self.config = config
        self._load = load
        self._backoff = (backoff_base, backoff_cap)
        self._queue: list[_Queued[Key]] = []
        self._futures: dict[Key, asyncio.Future[None]] = {}
        self._sequence = itertools.count()
        self._tasks = TaskSet("load scheduler")
        self.loading = 0
        self.loads_ok = 0
        self.loads_failed = 0
        self.load_times = LatencyWindow()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def request(self, key: Key, priority: Priority) -> asyncio.Future[None]:
        """Load ``key`` (once, however often asked); the future resolves when it is loaded."""
        existing = self._futures.get(key)
        if existing is not None and not existing.done():
            return existing
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures[key] = future
        heapq.heappush(self._queue, _Queued(int(priority), next(self._sequence), key, future))
        self._pump()
        return future

    def in_progress(self, key: Key) -> bool:
        future = self._futures.get(key)
        return future is not None and not future.done()

    def _pump(self) -> None:
        while self._queue and self.loading < self.config.max_concurrent_loads:
            item = heapq.heappop(self._queue)
            if item.future.done():  # cancelled while queued
                continue
            self.loading += 1
            self._tasks.spawn(self._run(item))

    async def _run(self, item: _Queued[Key]) -> None:
        started = time.monotonic()
        try:
            for attempt in range(1, self.config.load_retries + 2):
                deadline = time.monotonic() + self.config.load_timeout
                try:
                    await asyncio.wait_for(self._load(item.key, deadline), self.config.load_timeout)
                except TimeoutError:
                    error: AutoweaveError = LoadTimeout(
                        f"load took longer than {self.config.load_timeout:g} s", str(item.key)
                    )
                except PERMANENT_ERRORS as exc:
                    self._fail(item, exc)
                    return
                except AutoweaveError as exc:
                    error = exc
                except Exception as exc:  # e.g. EMFILE from socketpair: a failed load all the same
                    log.exception("loading %s failed unexpectedly", item.key)
                    error = LoadError(f"{type(exc).__name__}: {exc}", str(item.key))
                else:
                    self.loads_ok += 1
                    self.load_times.add(time.monotonic() - started)
                    if not item.future.done():
                        item.future.set_result(None)
                    return
                if attempt <= self.config.load_retries:
                    delay = backoff_delay(attempt, *self._backoff)
                    log.warning(
                        "loading %s failed (%s); retry %d in %.3f s",
                        item.key,
                        error,
                        attempt,
                        delay,
                    )
                    await asyncio.sleep(delay)
            self._fail(item, error)
        finally:
            self.loading -= 1
            if not item.future.done():  # cancelled (shutdown): waiting callers must not hang
                self._fail(item, LoadError("the manager is stopping", str(item.key)))
            self._pump()

    def _fail(self, item: _Queued[Key], error: BaseException) -> None:
        self.loads_failed += 1
        if not item.future.done():
            item.future.set_exception(error)
            item.future.exception()  # retrieved here: a load nobody awaited must not warn

    async def close(self) -> None:
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(LoadError("the manager is stopping", str(item.key)))
                item.future.exception()
        self._queue.clear()
        await self._tasks.cancel_all()
