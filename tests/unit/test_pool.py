"""The worker pool with a fake spawn: spares, the cap, make_room, counting exits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from autoweave_plugins.errors import LoadTimeout, WorkerError
from autoweave_plugins.pool import WorkerPool
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.recovery import ExitReason
from autoweave_plugins.settings import WorkerPoolConfig
from tests.unit.conftest import FakeWorker, Spawner, as_process


def fake(worker: WorkerProcess) -> FakeWorker:
    assert isinstance(worker, FakeWorker)
    return worker


def pool(
    spawner: Spawner,
    *,
    min_workers: int = 2,
    max_workers: int = 3,
    make_room: Callable[[], Awaitable[bool]] | None = None,
) -> tuple[WorkerPool, list[tuple[FakeWorker, str]]]:
    ended: list[tuple[FakeWorker, str]] = []
    made = WorkerPool(
        WorkerPoolConfig(min_workers=min_workers, max_workers=max_workers),
        on_terminated=lambda w, reason: ended.append((fake(w), reason)),
        spawn=spawner,
    )
    if make_room is not None:
        made.make_room = make_room
    return made, ended


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the loop run until ``predicate`` holds (the pool's background work is timed)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


async def test_start_warms_min_workers_and_acquire_replenishes(spawner: Spawner) -> None:
    created: list[WorkerProcess] = []
    p, _ = pool(spawner)
    p.on_created = created.append
    await p.start()
    assert len(p.spares) == 2 and p.created == 2 and created == list(p.spares)
    worker = await p.acquire(time.monotonic() + 1)
    assert worker is as_process(spawner.started[0]) and worker not in p.spares
    await until(lambda: len(p.spares) == 2)  # topped up, in the background
    assert p.size == 3
    await p.close()


async def test_at_the_cap_make_room_is_asked_first(spawner: Spawner) -> None:
    asked: list[bool] = []
    p, _ = pool(spawner, min_workers=0, max_workers=1)

    async def make_room() -> bool:
        asked.append(True)
        held.exit(ExitReason.IDLE)  # reclaiming an idle plugin frees its worker
        return True

    p.make_room = make_room
    held = fake(await p.acquire(time.monotonic() + 1))
    second = await p.acquire(time.monotonic() + 1)
    assert asked == [True] and second is not as_process(held) and p.size == 1
    await p.close()


async def test_at_the_cap_with_nothing_to_reclaim_it_times_out(spawner: Spawner) -> None:
    p, _ = pool(spawner, min_workers=0, max_workers=1)
    await p.acquire(time.monotonic() + 1)
    with pytest.raises(LoadTimeout, match="max_workers=1"):
        await p.acquire(time.monotonic() + 0.01)
    await p.close()


async def test_a_freed_slot_wakes_a_waiting_acquire(spawner: Spawner) -> None:
    asked = asyncio.Event()

    async def nothing_to_reclaim() -> bool:
        asked.set()
        return False

    p, _ = pool(spawner, min_workers=0, max_workers=1, make_room=nothing_to_reclaim)
    held = fake(await p.acquire(time.monotonic() + 1))
    waiting = asyncio.ensure_future(p.acquire(time.monotonic() + 5))
    await asyncio.wait_for(asked.wait(), 5)  # at the cap, nothing reclaimed: it waits
    assert not waiting.done()
    held.exit(ExitReason.CRASHED)
    assert await asyncio.wait_for(waiting, 5) is as_process(spawner.started[1])
    await p.close()


async def test_exits_are_counted_by_their_reported_reason(spawner: Spawner) -> None:
    p, ended = pool(spawner, min_workers=0)
    workers = [fake(await p.acquire(time.monotonic() + 1)) for _ in range(3)]
    for worker, reason in zip(workers, ("protocol", "memory", "idle"), strict=True):
        worker.exit(reason)
    assert dict(p.terminated) == {"crashed": 1, "memory": 1, "idle": 1}
    assert [r for _, r in ended] == ["crashed", "memory", "idle"] and not p.live
    await p.close()


async def test_spawn_failures_are_counted_and_typed(spawner: Spawner) -> None:
    p, _ = pool(spawner, min_workers=0)
    spawner.fail = OSError(24, "Too many open files")
    with pytest.raises(WorkerError, match="Too many open files"):
        await p.acquire(time.monotonic() + 1)
    spawner.fail = WorkerError("did not start")
    with pytest.raises(WorkerError, match="did not start"):
        await p.acquire(time.monotonic() + 1)
    assert p.spawn_failures == 2 and p.size == 0
    await p.close()


async def test_close_stops_every_live_worker(spawner: Spawner) -> None:
    p, ended = pool(spawner)
    await p.start()
    taken = await p.acquire(time.monotonic() + 1)
    await p.close()
    assert not p.live and not p.spares
    assert {id(w) for w, _ in ended} == {id(w) for w in spawner.started}
    assert all(reason == "shutdown" for _, reason in ended) and not taken.alive
    with pytest.raises(WorkerError, match="shutting down"):
        await p.acquire(time.monotonic() + 1)
