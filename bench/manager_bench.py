"""PluginManager costs, each beside a floor measured in the same run.

Run: .venv/bin/python bench/manager_bench.py [--plugins 200]   (prints JSON)

- lazy load of a trivial plugin through call() with a warm pool, vs. a bare `python -I -S` spawn
- call() round trip vs. the IPC floor (asyncio host <-> blocking child msgpack echo), interleaved
- crash -> serving again (first restart, spare ready)
- N trivial plugins loaded at once: host RSS, sum of worker PSS, host idle CPU, broadcast to all
- concurrent.futures.ProcessPoolExecutor round trip, the alternative a Python user reaches for
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # for tests.helpers
import contextlib

from _stats import emit, pin, summary_ms, summary_us, unpin
from tests.helpers.plugins import write_plugin_folder
from tests.helpers.waiting import wait_until
from worker_bench import start_floor

from autoweave_plugins import PluginManager


def trivial(root: Path, name: str) -> None:
    code = "def trivial():\n    return None\n"
    write_plugin_folder(root, name, code, hooks={"onTrivial": "trivial"})


async def spares_ready(manager: PluginManager) -> None:
    """A warm pool: both spares started, so what follows does not wait for an interpreter."""
    await wait_until(lambda: len(manager.pool.spares) >= 2, "two spares are ready", timeout=60)


async def bare_spawns(count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(sys.executable, "-I", "-S", "-c", "pass")
        await proc.wait()
        samples.append(time.perf_counter() - start)
    return samples


async def lazy_loads(root: Path, count: int) -> list[float]:
    for i in range(count):
        trivial(root, f"lazy-{i}")
    samples = []
    async with PluginManager(
        root, worker_pool={"min_workers": 2, "max_workers": count + 4}
    ) as manager:
        for i in range(count):
            await spares_ready(manager)
            start = time.perf_counter()
            await manager.call(f"lazy-{i}", "onTrivial")
            samples.append(time.perf_counter() - start)
    return samples


async def round_trips_and_crash(root: Path, calls: int, crashes: int) -> dict[str, Any]:
    trivial(root, "rt")
    host, echo = await start_floor()
    ours: list[float] = []
    floor: list[float] = []
    restart: list[float] = []
    async with PluginManager(root, worker_pool={"min_workers": 2}) as manager:
        await manager.call("rt", "onTrivial")
        placements: dict[str, dict[str, Any]] = {}
        ident = 0
        for placement, child_cpu in (("same_core", 0), ("cross_core", 1)):
            # Pinned: on 2 cores, placement alone moves a ping-pong between ~40 and ~100 us.
            pin(0, child_cpu, [manager.records["rt"].workers[0].pid, echo.pid])
            ours.clear()
            floor.clear()
            for _ in range(calls):
                ident += 1
                start = time.perf_counter()
                await manager.call("rt", "onTrivial")
                ours.append(time.perf_counter() - start)
                start = time.perf_counter()
                await host.call(ident)
                floor.append(time.perf_counter() - start)
            placements[placement] = {
                "call_round_trip": summary_us(ours),
                "ipc_floor_round_trip": summary_us(floor),
                "call_ratio_p50": round(statistics.median(ours) / statistics.median(floor), 2),
            }
        unpin()
        for _ in range(crashes):
            await spares_ready(manager)
            [worker] = manager.records["rt"].workers
            assert worker.pid is not None
            start = time.perf_counter()
            os.kill(worker.pid, signal.SIGKILL)
            while not manager.records["rt"].workers or manager.records["rt"].workers[0] is worker:
                await asyncio.sleep(0.0005)
            await manager.call("rt", "onTrivial")
            restart.append(time.perf_counter() - start)
            await asyncio.sleep(1.1 * manager.config.worker_pool.restart_backoff_cap / 1000)
            manager.records["rt"].consecutive_restarts = 0  # measure the *first* restart each time
            manager.records["rt"].breaker.reset()
    assert host.transport is not None
    host.transport.close()
    await echo.wait()
    return {
        "call_vs_ipc_floor_pinned": placements,
        "crash_to_serving_first_restart": summary_ms(restart),
    }


def pss_of(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_full_info().pss
    return total


async def scale(root: Path, count: int) -> dict[str, Any]:
    for i in range(count):
        trivial(root, f"many-{i:03d}")
    names = [f"many-{i:03d}" for i in range(count)]
    me = psutil.Process()
    async with PluginManager(
        root,
        worker_pool={"min_workers": 2, "max_workers": count + 4},
        loader={"max_concurrent_loads": 8},
    ) as manager:
        start = time.perf_counter()
        errors = await manager.load_many(names)
        load_all = time.perf_counter() - start
        assert not any(errors.values()), [e for e in errors.values() if e][:3]
        pids = [w.pid for r in manager.records.values() for w in r.workers if w.pid]
        cpu_before = me.cpu_times()
        await asyncio.sleep(5)
        cpu_after = me.cpu_times()
        idle_cpu = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / 5
        broadcasts = []
        for _ in range(5):
            start = time.perf_counter()
            results = await manager.broadcast("onTrivial")
            broadcasts.append(time.perf_counter() - start)
            assert len(results) == count and all(r.ok for r in results.values())
        return {
            "plugins": count,
            "load_all_s": round(load_all, 2),
            "host_rss_mb": round(me.memory_info().rss / 2**20, 1),
            "workers_pss_sum_mb": round(pss_of(pids) / 2**20, 1),
            "host_idle_cpu_percent": round(idle_cpu * 100, 2),
            "broadcast_all": summary_ms(broadcasts),
        }


def _noop() -> None:
    return None


def process_pool(calls: int) -> dict[str, float]:
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as executor:
        executor.submit(_noop).result()
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            executor.submit(_noop).result()
            samples.append(time.perf_counter() - start)
    return summary_us(samples)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plugins", type=int, default=200)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bare = await bare_spawns(15)
        lazy = await lazy_loads(root / "lazy", 15)
        trips = await round_trips_and_crash(root / "rt", args.calls, 10)
        scaled = await scale(root / "scale", args.plugins)
    pool = process_pool(args.calls)
    emit(
        "manager",
        {
            "lazy_load_through_call_warm_pool": summary_ms(lazy),
            "bare_python_I_S_spawn": summary_ms(bare),
            "lazy_load_ratio_to_bare_spawn_p50": round(
                statistics.median(lazy) / statistics.median(bare), 3
            ),
            **trips,
            "process_pool_executor_round_trip": pool,
            "scale": scaled,
            "goals": {
                "lazy_load_p50_ms": 5,
                "lazy_load_ratio_to_bare_spawn": 0.5,
                "call_ratio_p50": 1.5,
                "crash_to_serving_ms": 25,
            },
        },
    )


if __name__ == "__main__":
    asyncio.run(main())
