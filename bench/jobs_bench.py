"""The Redis job queue, each figure beside a floor measured in the same run on the same server.

Run: .venv/bin/python bench/jobs_bench.py [--jobs 2000]   (prints JSON)

- trivial hook through one real host (``autoweave-plugins run --jobs``): jobs/s from the first
  submit to the last recorded answer, vs the bare loop XADD -> XREADGROUP -> XACK, one entry at
  a time, against the same server (goal >= 50%); and vs that loop batched, for scale
- submit -> result latency, one job at a time on an idle queue: p50 and p99
- a hook that sleeps 20 ms: two hosts vs one host, jobs/s (goal >= 1.8x)
- hiredis vs the pure-Python parser: the bare loop, and reading 1000 entries at once
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import redis.asyncio as aioredis
from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser
from redis.utils import HIREDIS_AVAILABLE

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _stats import emit, summary_us
from tests.redisserver import RedisServer, find_redis_server, free_port

from autoweave_plugins.jobs import JobQueue

SCRIPT = shutil.which("autoweave-plugins", path=str(Path(sys.executable).parent))
CODE = """
import time

def trivial(job):
    return job

def sleepy(job):
    time.sleep(0.02)
    return job
"""
CONFIG = """
[worker_pool]
min_workers = 0
max_workers = 8

[jobs]
lease = 10.0
heartbeat = 2.0
"""


def make_plugins(root: Path) -> Path:
    for name, hook, workers in (("trivial", "trivial", 4), ("sleepy", "sleepy", 2)):
        folder = root / "plugins" / name
        folder.mkdir(parents=True)
        manifest = {
            "name": name,
            "version": "1.0.0",
            "entry": "main.py",
            "hooks": {"onJobReceived": hook},
            "permissions": {"memory": {"max_workers": workers}},
        }
        (folder / "autoweave.plugin.json").write_text(json.dumps(manifest))
        (folder / "main.py").write_text(CODE)
    (root / "host.toml").write_text(CONFIG)
    return root


def start_host(root: Path, url: str, name: str) -> subprocess.Popen[bytes]:
    assert SCRIPT is not None
    control = root / f"{name}.sock"
    command = [
        SCRIPT, "run", str(root / "plugins"), "--plain", "--no-watch", "--usb", "simulated",
        "--config", str(root / "host.toml"), "--jobs", url, "--name", name,
        "--control", str(control), "--metrics-port", "0",
    ]  # fmt: skip
    log = (root / f"{name}.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not control.exists():
        assert process.poll() is None and time.monotonic() < deadline, "host did not start"
        time.sleep(0.02)
    return process


def stop_host(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


async def throughput(queue: JobQueue, plugin: str, count: int) -> float:
    """Jobs/s from the first submit to the last recorded answer."""
    before = await queue.stats(plugin)
    target = before.get("done", 0) + count
    started = time.perf_counter()
    for first in range(0, count, 200):
        await asyncio.gather(
            *(
                queue.submit(plugin, "onJobReceived", {"n": n})
                for n in range(first, min(count, first + 200))
            )
        )
    while (await queue.stats(plugin)).get("done", 0) < target:
        await asyncio.sleep(0.005)
    return count / (time.perf_counter() - started)


async def bare_loop(url: str, count: int, parser: Any, batch: int = 1) -> float:
    """XADD -> XREADGROUP -> XACK: ``batch`` entries per turn, one turn after another."""
    client = aioredis.Redis.from_url(url, parser_class=parser)
    stream = f"bench:bare:{time.monotonic_ns()}"
    await client.xgroup_create(stream, "g", id="0", mkstream=True)
    started = time.perf_counter()
    for _ in range(count // batch):
        async with client.pipeline(transaction=False) as pipe:
            for n in range(batch):
                pipe.xadd(stream, {"id": str(n), "hook": "onJobReceived", "args": "[{}]"})
            await pipe.execute()
        reply = cast(list[Any], await client.xreadgroup("g", "c", {stream: ">"}, count=batch))
        ids = [entry_id for entry_id, _ in reply[0][1]]
        await client.xack(stream, "g", *ids)
    rate = count / (time.perf_counter() - started)
    await client.delete(stream)
    await client.aclose()
    return rate


async def bulk_read(url: str, parser: Any) -> float:
    """Microseconds to read 1000 job-sized entries in one XRANGE."""
    client = aioredis.Redis.from_url(url, parser_class=parser)
    stream = "bench:bulk"
    if not await client.exists(stream):
        async with client.pipeline(transaction=False) as pipe:
            for n in range(1000):
                pipe.xadd(stream, {"id": f"job-{n}", "hook": "onJobReceived", "args": '[{"n": 1}]'})
            await pipe.execute()
    samples = []
    for _ in range(30):
        started = time.perf_counter()
        await client.xrange(stream, count=1000)
        samples.append(time.perf_counter() - started)
    await client.aclose()
    return sorted(samples)[len(samples) // 2] * 1e6


async def latency(queue: JobQueue, samples: int) -> list[float]:
    out = []
    for n in range(samples):
        started = time.perf_counter()
        job = await queue.submit("trivial", "onJobReceived", {"n": n})
        await queue.result(job, timeout=30)
        out.append(time.perf_counter() - started)
    return out


async def measure(root: Path, url: str, jobs: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    parsers: dict[str, Any] = {"python": _AsyncRESP2Parser}
    if HIREDIS_AVAILABLE:  # not a dependency: measured here to show what it would bring
        parsers["hiredis"] = _AsyncHiredisParser
    default = _AsyncHiredisParser if HIREDIS_AVAILABLE else _AsyncRESP2Parser
    results["bare_loop_jobs_per_s"] = {
        k: round(await bare_loop(url, jobs, p)) for k, p in parsers.items()
    }
    results["bare_loop_batch16_jobs_per_s"] = round(await bare_loop(url, jobs, default, 16))
    results["bulk_read_1000_entries_us"] = {
        k: round(await bulk_read(url, p)) for k, p in parsers.items()
    }
    async with JobQueue(url) as queue:
        host_a = start_host(root, url, "host-a")
        try:
            await throughput(queue, "trivial", 100)  # warm: workers started and scaled out
            rate = await throughput(queue, "trivial", jobs)
            floor = results["bare_loop_jobs_per_s"]["hiredis" if HIREDIS_AVAILABLE else "python"]
            results["trivial_one_host"] = {
                "jobs_per_s": round(rate),
                "vs_bare_loop": round(rate / floor, 3),
                "goal": ">= 0.5",
            }
            samples = await latency(queue, 300)
            results["submit_to_result"] = summary_us(samples)
            await throughput(queue, "sleepy", 40)
            one = await throughput(queue, "sleepy", jobs // 5)
            host_b = start_host(root, url, "host-b")
            try:
                await throughput(queue, "sleepy", 40)
                two = await throughput(queue, "sleepy", jobs // 5)
            finally:
                stop_host(host_b)
        finally:
            stop_host(host_a)
        results["sleep_20ms"] = {
            "one_host_jobs_per_s": round(one, 1),
            "two_hosts_jobs_per_s": round(two, 1),
            "ratio": round(two / one, 2),
            "goal": ">= 1.8",
        }
        results["shared_counters"] = {p: await queue.stats(p) for p in ("trivial", "sleepy")}
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = make_plugins(Path(folder))
        server = RedisServer(find_redis_server(), root / "redis", port=free_port())
        server.start()
        try:
            results = asyncio.run(measure(root, server.url, args.jobs))
        finally:
            server.stop()
    results["cores"] = os.cpu_count()
    results["load_average_1m"] = round(os.getloadavg()[0], 2)
    emit("jobs", results)


if __name__ == "__main__":
    main()
