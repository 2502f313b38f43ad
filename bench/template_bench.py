"""Workers forked from the template: start, load, memory, scale, and the call round trip.

Run: .venv/bin/python bench/template_bench.py [--plugins 200] [--thousand] [--call-only]
(prints JSON; ``--call-only`` measures only the call round trip, to iterate on the call path)

Each figure is beside its floor or reference, measured in the same run:

- blank worker ready (fork request -> READY at the host) vs. a bare ``os.fork()`` of a process
  warmed exactly like the template (child alive -> parent told), interleaved in rounds;
  and a spawned interpreter for reference;
- a load with no spare (``min_workers=0``): ``call`` -> result of a plugin not yet loaded;
- N plugins at once with ``load_many``; each idle worker's PSS from /proc/PID/smaps_rollup;
- ``--thousand``: 1,000 trivial plugins loaded at once (total PSS, host RSS, host idle CPU);
- a trivial hook through ``PluginManager.call`` vs. the socketpair floor (an asyncio host and
  a blocking msgpack echo child), pinned to one core and across cores.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stats import emit, pin, summary_ms, summary_us, unpin
from worker_bench import start_floor

from autoweave_plugins import PluginManager
from autoweave_plugins.forked import fork_from
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.template import Template

ROUNDS = 10
PER_ROUND = 10
ROUND_TRIPS = 4000

BARE_FORK = """
import gc, json, os, sys, time
from autoweave_plugins.worker import template
template.warm()
gc.collect()
gc.freeze()
for line in sys.stdin:
    samples = []
    for _ in range(int(line)):
        read, write = os.pipe()
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.write(write, b"x")
            os._exit(0)
        os.read(read, 1)
        samples.append(time.perf_counter() - start)
        os.close(read)
        os.close(write)
        os.waitpid(pid, 0)
    print(json.dumps(samples), flush=True)
"""


def trivial(root: Path, name: str) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    doc = {"name": name, "version": "1.0.0", "entry": "main.py", "hooks": {"onTrivial": "trivial"}}
    (folder / "autoweave.plugin.json").write_text(json.dumps(doc))
    (folder / "main.py").write_text("def trivial():\n    return None\n")


def _tree(pid: int | None) -> list[int]:
    """A worker's processes: the one the host started and, in its own namespaces, the
    pid 1 that holds them and the plugin's process."""
    assert pid is not None
    return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]


def pss_kib(pid: int | None) -> int:
    """Proportional memory of a worker, all its processes, from /proc/PID/smaps_rollup."""
    total = 0
    for member in _tree(pid):
        with open(f"/proc/{member}/smaps_rollup") as rollup:
            total += next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
    return total


def uss_kib(pid: int | None) -> int:
    """Private (unshared) memory: what the worker alone costs, all its processes."""
    total = 0
    for member in _tree(pid):
        with open(f"/proc/{member}/smaps_rollup") as rollup:
            total += sum(int(line.split()[1]) for line in rollup if line.startswith("Private_"))
    return total


def stats_kib(values: list[int]) -> dict[str, float]:
    return {"p50_kib": statistics.median(values), "max_kib": max(values), "sum_kib": sum(values)}


def bare_forker() -> subprocess.Popen[str]:
    """A process warmed up exactly like the template, which forks on request."""
    return subprocess.Popen(
        [sys.executable, "-I", "-c", BARE_FORK],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={},
    )


async def blank_ready() -> dict[str, Any]:
    template = Template()
    await template.start()
    bare = bare_forker()
    assert bare.stdin is not None and bare.stdout is not None
    ours: list[float] = []
    floor: list[float] = []
    blank_pss: list[int] = []
    blank_uss: list[int] = []
    for _ in range(ROUNDS):
        bare.stdin.write(f"{PER_ROUND}\n")
        bare.stdin.flush()
        floor += json.loads(await asyncio.to_thread(bare.stdout.readline))
        workers = []
        for _ in range(PER_ROUND):
            start = time.perf_counter()
            workers.append(await WorkerProcess.start(functools.partial(fork_from, template)))
            ours.append(time.perf_counter() - start)
        for worker in workers:  # PSS splits shared pages among those alive: 10 and the template
            await worker.ping()
            blank_pss.append(pss_kib(worker.pid))
            blank_uss.append(uss_kib(worker.pid))
        for worker in workers:
            await worker.stop()
    bare.stdin.close()
    bare.wait()
    template_pss = pss_kib(template.pid)
    await template.close()
    spawned: list[float] = []
    for _ in range(5):
        start = time.perf_counter()
        worker = await WorkerProcess.spawn()
        spawned.append(time.perf_counter() - start)
        await worker.stop()
    return {
        "template_start_s": round(template.startup_seconds or 0.0, 3),
        "template_pss_kib": template_pss,
        "blank_worker_ready": summary_ms(ours),
        "bare_os_fork_of_a_warmed_process": summary_ms(floor),
        "ready_over_bare_fork_p50": round(statistics.median(ours) / statistics.median(floor), 2),
        "blank_worker_pss_10_alive": stats_kib(blank_pss),
        "blank_worker_uss": stats_kib(blank_uss),
        "spawned_worker_ready": summary_ms(spawned),
    }


def manager(root: Path, **pool: Any) -> PluginManager:
    return PluginManager(root, worker_pool=pool, watcher={"enabled": False})


async def lazy_loads(root: Path, count: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for method, n in (("template", count), ("spawn", 5)):
        names = [f"lazy-{method}-{i}" for i in range(n)]
        for name in names:
            trivial(root, name)
        samples = []
        pool = {"min_workers": 0, "max_workers": n + 2, "start_method": method}
        async with manager(root, **pool) as m:
            for name in names:
                start = time.perf_counter()
                await m.call(name, "onTrivial")
                samples.append(time.perf_counter() - start)
        results[method] = summary_ms(samples)
        for name in names:
            for file in (root / name).iterdir():
                file.unlink()
            (root / name).rmdir()
    return {"no_spare_call_to_result": results}


async def many(root: Path, count: int, settle: float, idle: float = 5.0) -> dict[str, Any]:
    names = [f"many-{i}" for i in range(count)]
    for name in names:
        trivial(root, name)
    host = psutil.Process()
    async with manager(root, min_workers=0, max_workers=count + 10) as m:
        start = time.perf_counter()
        failed = {k: str(v) for k, v in (await m.load_many(names)).items() if v is not None}
        seconds = time.perf_counter() - start
        await asyncio.sleep(settle)  # let the loads' garbage and page faults settle
        workers = [w for r in m.records.values() for w in r.workers]
        pss = [pss_kib(w.pid) for w in workers]
        uss = [uss_kib(w.pid) for w in workers]
        method = m.pool.start_method
        template_pid = method.template.pid if method and method.template else None
        template_pss = pss_kib(template_pid) if template_pid else 0
        cpu_before = sum(host.cpu_times()[:2])
        idle_start = time.perf_counter()
        await asyncio.sleep(idle)  # long enough to hold memory checks (1 s) and their noise
        idle_cpu = (sum(host.cpu_times()[:2]) - cpu_before) / (time.perf_counter() - idle_start)
        host_rss = host.memory_info().rss
        answered = await m.broadcast("onTrivial")
        ok = sum(1 for r in answered.values() if r.error is None)
    return {
        "plugins": count,
        "load_many_s": round(seconds, 3),
        "failed": failed,
        "worker_pss": stats_kib(pss),
        "worker_uss": stats_kib(uss),
        "total_pss_mib_workers_and_template": round((sum(pss) + template_pss) / 1024, 1),
        "host_rss_mib": round(host_rss / (1 << 20), 1),
        "host_idle_cpu_percent_of_one_core": round(idle_cpu * 100, 2),
        "broadcast_answered": ok,
    }


async def round_trips(root: Path) -> dict[str, Any]:
    trivial(root, "rt")
    host, echo = await start_floor()
    placements: dict[str, Any] = {}
    async with manager(root, min_workers=0) as m:
        await m.call("rt", "onTrivial")
        worker = m.records["rt"].workers[0]
        for ident in range(1, 301):
            await m.call("rt", "onTrivial")
            await host.call(-ident)
        ident = 0
        for placement, child_cpu in (("same_core", 0), ("cross_core", 1)):
            pin(0, child_cpu, [worker.plugin_pid, echo.pid])
            ours: list[float] = []
            floor: list[float] = []
            for _ in range(ROUNDS):
                for _ in range(ROUND_TRIPS // ROUNDS):
                    start = time.perf_counter()
                    await m.call("rt", "onTrivial")
                    ours.append(time.perf_counter() - start)
                for _ in range(ROUND_TRIPS // ROUNDS):
                    ident += 1
                    start = time.perf_counter()
                    await host.call(ident)
                    floor.append(time.perf_counter() - start)
            placements[placement] = {
                "manager_call": summary_us(ours),
                "floor": summary_us(floor),
                "ratio_p50": round(statistics.median(ours) / statistics.median(floor), 2),
            }
        unpin()
    assert host.transport is not None
    host.transport.close()
    await echo.wait()
    return placements


def progress(part: dict[str, Any]) -> dict[str, Any]:
    print(json.dumps(part), file=sys.stderr, flush=True)
    return part


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plugins", type=int, default=200)
    parser.add_argument("--lazy", type=int, default=40, help="no-spare loads measured")
    parser.add_argument("--thousand", action="store_true", help="also load 1,000 at once")
    parser.add_argument("--call-only", action="store_true", help="only the call round trip")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # ~4 descriptors per worker
    results: dict[str, Any] = {"command": " ".join(["bench/template_bench.py", *sys.argv[1:]])}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if not args.call_only:
            results["start"] = progress(await blank_ready())
            results["lazy_load"] = progress(await lazy_loads(root / "lazy", args.lazy))
            results["many"] = progress(await many(root / "many", args.plugins, 2.0))
        # Before the thousand: tearing down 1,000 workers keeps the kernel busy for a while
        # (network namespaces are freed by a kernel worker), which a round trip would feel.
        results["round_trip_pinned"] = progress(await round_trips(root / "rt"))
        if args.thousand and not args.call_only:
            results["thousand"] = progress(await many(root / "thousand", 1000, 5.0, 15.0))
    results["goals"] = {
        "blank_worker_ready_p50_ms": 3,
        "ready_over_bare_fork_p50": 3,
        "no_spare_call_to_result_p50_ms": 15,
        "load_many_200_s": 2,
        "idle_worker_pss_kib": 3072,
        "thousand": {"load_s": 10, "total_pss_gib": 3, "host_rss_mib": 200, "host_idle_cpu": 2},
        "round_trip_ratio_p50": 1.5,
        "round_trip_p99_us": 300,
    }
    results["machine"] = {"cpus": os.cpu_count(), "load_average": os.getloadavg()}
    emit("template", results)


if __name__ == "__main__":
    asyncio.run(main())
