"""TaskSet: background tasks kept, logged when they fail, cancelled together."""

from __future__ import annotations

import asyncio
import logging

import pytest

from autoweave_plugins.tasks import TaskSet


async def test_spawned_tasks_are_kept_until_done() -> None:
    tasks = TaskSet("test")
    gate = asyncio.Event()

    async def wait() -> str:
        await gate.wait()
        return "done"

    task = tasks.spawn(wait())
    assert len(tasks) == 1
    gate.set()
    assert await task == "done"
    await asyncio.sleep(0)  # done callbacks run on the next loop pass
    assert len(tasks) == 0


async def test_a_failure_is_logged_with_the_label(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet("my-owner")

    async def fail() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="autoweave_plugins.tasks"):
        tasks.spawn(fail())
        await tasks.wait()
        await asyncio.sleep(0)
    [record] = caplog.records
    assert "my-owner" in record.getMessage() and record.exc_info is not None


async def test_cancel_all_cancels_and_waits() -> None:
    tasks = TaskSet("test")
    started = asyncio.Event()
    cancelled: list[bool] = []

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    tasks.spawn(forever())
    await started.wait()
    await tasks.cancel_all()
    assert cancelled == [True] and len(tasks) == 0


async def test_every_repeats_and_survives_a_failing_run(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet("test")
    runs: list[int] = []
    third = asyncio.Event()

    async def job() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("first run fails")
        if len(runs) == 3:
            third.set()

    with caplog.at_level(logging.ERROR, logger="autoweave_plugins.tasks"):
        tasks.every(0.001, job)
        await asyncio.wait_for(third.wait(), 5)
        await tasks.cancel_all()
    assert any("periodic job" in r.getMessage() for r in caplog.records)
