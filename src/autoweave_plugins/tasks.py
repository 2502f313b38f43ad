"""A set of background tasks that one owner starts, keeps track of, and cancels together.

asyncio keeps only a weak reference to a running task, so a task started and forgotten can be
garbage-collected mid-flight; and a task nobody awaits loses its exception with a warning at
exit. ``TaskSet`` holds a strong reference until each task is done, logs (and so retrieves) an
exception nobody else will see, and cancels what is left when its owner stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["TaskSet"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class TaskSet:
    """Background tasks of one owner. ``label`` names them in the log when one fails."""

    __slots__ = ("_tasks", "label")

    def __init__(self, label: str) -> None:
        self.label = label
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` in the background; the task is kept until it is done."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def every(self, interval: float, job: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run ``job`` every ``interval`` seconds until cancelled; a failing run is logged."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await job()
                except Exception:
                    log.exception("%s: periodic job %s failed", self.label, _name(job))

        return self.spawn(loop())

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: background task failed", self.label, exc_info=task.exception())

    async def wait(self) -> None:
        """Wait for the tasks running now (their errors are logged, not raised)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel_all(self) -> None:
        """Cancel every task and wait until each has finished."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _name(job: Callable[..., Any]) -> str:
    return getattr(job, "__qualname__", None) or repr(job)
