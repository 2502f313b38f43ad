"""The load scheduler with a fake load: priorities, the cap, retries, timeouts, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from autoweave_plugins.errors import LoadError, LoadTimeout, PolicyRefused, WorkerError
from autoweave_plugins.scheduler import LoadScheduler
from autoweave_plugins.settings import LoaderConfig, Priority


class FakeLoad:
    """Records each load; a load waits for its gate, then raises what ``plan`` says."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.running = 0
        self.peak = 0
        self.gates: dict[str, asyncio.Event] = {}
        self.plan: dict[str, list[BaseException | None]] = {}
        self.changed = asyncio.Event()

    async def until_running(self, count: int) -> None:
        while self.running != count:
            self.changed.clear()
            await self.changed.wait()

    def gate(self, key: str) -> asyncio.Event:
        return self.gates.setdefault(key, asyncio.Event())

    async def __call__(self, key: str, deadline: float) -> None:
        self.started.append(key)
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.changed.set()
        try:
            await self.gate(key).wait()
            outcomes = self.plan.get(key)
            error = outcomes.pop(0) if outcomes else None
            if error is not None:
                raise error
        finally:
            self.running -= 1


def scheduler(load: FakeLoad, **config: object) -> LoadScheduler[str]:
    options = {"max_concurrent_loads": 1, "load_retries": 0, **config}
    return LoadScheduler(
        LoaderConfig(**options),  # type: ignore[arg-type]
        load,
        backoff_base=0.0001,
        backoff_cap=0.0001,
    )


async def test_queued_loads_start_by_priority_then_arrival() -> None:
    load = FakeLoad()
    s = scheduler(load)
    first = s.request("first", Priority.LOW)  # takes the free slot at once
    later = [
        s.request("background", Priority.BACKGROUND),
        s.request("normal", Priority.NORMAL),
        s.request("critical", Priority.CRITICAL),
        s.request("normal2", Priority.NORMAL),
    ]
    assert s.queued == 4 and s.loading == 1
    for key in ("first", "critical", "normal", "normal2", "background"):
        load.gate(key).set()
    await asyncio.gather(first, *later)
    assert load.started == ["first", "critical", "normal", "normal2", "background"]
    assert load.peak == 1 and s.loads_ok == 5 and s.load_times.count == 5


async def test_the_concurrency_cap_holds() -> None:
    load = FakeLoad()
    s = scheduler(load, max_concurrent_loads=2)
    futures = [s.request(f"p{i}", Priority.NORMAL) for i in range(6)]
    await asyncio.wait_for(load.until_running(2), 5)
    assert s.queued == 4
    for i in range(6):
        load.gate(f"p{i}").set()
    await asyncio.gather(*futures)
    assert load.peak == 2


async def test_repeated_requests_share_one_load() -> None:
    load = FakeLoad()
    s = scheduler(load)
    futures = {s.request("same", Priority.NORMAL) for _ in range(10)}
    assert len(futures) == 1 and s.in_progress("same")
    load.gate("same").set()
    await futures.pop()
    assert load.started == ["same"] and not s.in_progress("same")


async def test_transient_failures_are_retried_permanent_ones_are_not() -> None:
    load = FakeLoad()
    s = scheduler(load, load_retries=2)
    load.plan["flaky"] = [WorkerError("spawn failed"), None]
    load.plan["refused"] = [PolicyRefused("refused", "$.permissions", "no")]
    load.gate("flaky").set()
    load.gate("refused").set()
    await s.request("flaky", Priority.NORMAL)
    with pytest.raises(PolicyRefused):
        await s.request("refused", Priority.NORMAL)
    assert load.started == ["flaky", "flaky", "refused"]
    assert s.loads_ok == 1 and s.loads_failed == 1


async def test_retries_run_out() -> None:
    load = FakeLoad()
    s = scheduler(load, load_retries=1)
    load.plan["bad"] = [LoadError("one", "bad"), LoadError("two", "bad")]
    load.gate("bad").set()
    with pytest.raises(LoadError, match="two"):
        await s.request("bad", Priority.NORMAL)
    assert load.started == ["bad", "bad"]


async def test_an_unexpected_exception_becomes_a_load_error() -> None:
    load = FakeLoad()
    s = scheduler(load)
    load.plan["emfile"] = [OSError(24, "Too many open files")]
    load.gate("emfile").set()
    with pytest.raises(LoadError, match="OSError"):
        await s.request("emfile", Priority.NORMAL)


async def test_a_load_past_its_timeout_fails_with_load_timeout() -> None:
    load = FakeLoad()
    s = scheduler(load, load_timeout=0.01)
    with pytest.raises(LoadTimeout, match=r"longer than 0\.01 s"):
        await s.request("slow", Priority.NORMAL)  # its gate never opens
    assert load.running == 0


async def test_close_fails_queued_and_running_loads() -> None:
    load = FakeLoad()
    s = scheduler(load)
    running = s.request("running", Priority.NORMAL)
    queued = s.request("queued", Priority.NORMAL)
    await asyncio.wait_for(load.until_running(1), 5)
    await s.close()
    for future in (running, queued):
        with pytest.raises(LoadError, match="stopping"):
            await future
    assert s.queued == 0 and s.loading == 0
