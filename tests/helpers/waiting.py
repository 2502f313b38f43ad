"""Waiting for a condition, never for a guessed amount of time.

A test that sleeps "long enough" is slow when the machine is idle and flaky when it is busy.
These helpers return the moment the condition holds and fail, saying what was awaited, when
it has not held within a generous bound. Where the manager emits an event for the moment a
test needs, wait on the event instead (``tests.helpers.events``).

Pure standard library at run time, so benchmarks use it too.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

    from autoweave_plugins.process import WorkerProcess

__all__ = ["hooks_running", "plugin_logged", "stays_true", "wait_until", "wait_until_sync"]

Condition = Callable[[], bool | Awaitable[bool]]
Detail = Callable[[], object]


def _timed_out(what: str, timeout: float, detail: Detail | None) -> AssertionError:
    message = f"timed out after {timeout:g} s waiting until {what}"
    return AssertionError(f"{message}; {detail()}" if detail is not None else message)


async def _holds(condition: Condition) -> bool:
    outcome = condition()
    return bool(await outcome) if inspect.isawaitable(outcome) else bool(outcome)


async def wait_until(
    condition: Condition,
    what: str,
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
    detail: Detail | None = None,
) -> None:
    """Return once ``condition()`` (sync or async) is true; fail after ``timeout`` seconds.

    ``what`` completes "waiting until ...", and ``detail()``, if given, is added to the
    failure to show the state that was reached instead.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await _holds(condition):
        if loop.time() >= deadline:
            raise _timed_out(what, timeout, detail)
        await asyncio.sleep(interval)


def wait_until_sync(
    condition: Callable[[], bool],
    what: str,
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
    detail: Detail | None = None,
) -> None:
    """``wait_until`` for code outside an event loop (subprocess logs, signal handlers)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, detail)
        time.sleep(interval)


async def stays_true(
    condition: Callable[[], bool], what: str, *, seconds: float, interval: float = 0.01
) -> None:
    """Fail as soon as ``condition()`` turns false during the next ``seconds``.

    Only for proving that something does *not* happen when nothing marks the moment it would
    have (a signal carries no identity; a pinned plugin is simply never reclaimed). The window
    is then the claim under test, so it is named here rather than hidden in a sleep.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        assert condition(), f"{what} stopped holding within {seconds:g} s"
        if loop.time() >= deadline:
            return
        await asyncio.sleep(interval)


async def hooks_running(worker: WorkerProcess, count: int, timeout: float = 10.0) -> None:
    """Until exactly ``count`` async hook calls are running inside ``worker``, by its own count.

    The worker answers a ping between hook steps, so this sees calls that have really started
    there, not just been sent. A sync hook blocks the worker's loop, so it cannot be seen this
    way: have such a hook log a line first and wait for the line.
    """

    async def reached() -> bool:
        return bool((await worker.ping())["tasks"] == count)

    await wait_until(
        reached,
        f"{count} hook calls run in worker {worker.pid}",
        timeout=timeout,
        detail=lambda: f"worker alive: {worker.alive}",
    )


async def plugin_logged(caplog: pytest.LogCaptureFixture, plugin: str, text: str) -> None:
    """Until ``plugin``'s worker has logged a line holding ``text`` through the host.

    The marker a sync hook can send before it blocks its worker: a log frame leaves at once.
    Log it at WARNING, which pytest captures without raising any logger's level.
    """
    logger = f"autoweave_plugins.plugin.{plugin}"
    await wait_until(
        lambda: any(r.name == logger and text in r.getMessage() for r in caplog.records),
        f"{plugin} logs {text!r}",
    )
