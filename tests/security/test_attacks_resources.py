"""Attack classes 8, 9 and 11: memory bombs, CPU spin, and floods of metrics, logs and output.

Evidence lives in the host: the worker's resident memory read from /proc by the host, the
system's shared-memory counter, the host's own RSS, the host's metric store and log records,
and a benign sibling worker that must keep answering in under a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from autoweave_plugins.errors import HookTimeout, PluginCrashed
from autoweave_plugins.process import WorkerProcess
from tests.helpers.processes import process_exists
from tests.helpers.waiting import plugin_logged, wait_until
from tests.helpers.workers import running, write_plugin
from tests.security._support import (
    CALL_TIMEOUT,
    LOAD_TIMEOUT,
    PRELUDE,
    RAW_WRITE,
    assert_responsive,
    host_rss,
    shmem_bytes,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

MB = 1 << 20
MAX_HEAP_MB = 64
BOMB_MB = 512  # eight times the heap the manifest grants

MEMORY_CODE = (
    PRELUDE
    + """
import mmap

MB = 1 << 20
HOLD = []
PROGRESS = {"held": 0}  # megabytes held so far, kept up to date by every route


def bytearray_1gib(target_mb):
    HOLD.append(bytearray(1 << 30))
    return 1024


def grow_heap(target_mb):
    held = 0
    while held < target_mb:
        HOLD.append(bytearray(MB))
        held = PROGRESS["held"] = held + 1
    return held


def shared_mmap(target_mb):
    held = 0
    while held < target_mb:
        region = mmap.mmap(-1, 64 * MB)  # MAP_SHARED | MAP_ANONYMOUS
        for offset in range(0, 64 * MB, 4096):
            region[offset] = 1
        HOLD.append(region)
        held = PROGRESS["held"] = held + 64
    return held


def memfd(target_mb):
    held = 0
    chunk = b"m" * MB
    while held < target_mb:
        if held % 128 == 0:  # a fresh file before RLIMIT_FSIZE (256 MB) would stop one
            fd = os.memfd_create("bomb")
            HOLD.append(fd)
        os.write(fd, chunk)
        held = PROGRESS["held"] = held + 1
    return held


ROUTES = {
    "bytearray_1gib": bytearray_1gib,
    "grow_heap": grow_heap,
    "shared_mmap": shared_mmap,
    "memfd": memfd,
}


def bomb(route, target_mb):
    # Grab target_mb; report the most that was held (still held unless MemoryError).
    PROGRESS["held"] = 0
    try:
        held = ROUTES[route](target_mb)
        error = None
    except MemoryError:
        error = "MemoryError"
        held = PROGRESS["held"]
        HOLD.clear()
    except OSError as exc:
        error = f"OSError: {exc}"
        held = PROGRESS["held"]
    return {"held_mb": held, "error": error}


def release():
    for item in HOLD:
        if isinstance(item, int):
            os.close(item)
    HOLD.clear()
"""
)


def _worker_rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.parametrize(
    "route",
    [
        "bytearray_1gib",
        "grow_heap",
        "shared_mmap",
        "memfd",
    ],
)
async def test_memory_bomb_is_contained(
    plugin_root: Path, sibling: WorkerProcess, route: str
) -> None:
    plugin = write_plugin(
        plugin_root,
        "memory-bomber",
        MEMORY_CODE,
        hooks={"onBomb": "bomb", "onRelease": "release"},
        permissions={"memory": {"max_heap_mb": MAX_HEAP_MB}},
    )
    host_before = host_rss()
    async with running(plugin, extra_imports=("mmap",), load_timeout=LOAD_TIMEOUT) as worker:
        assert worker.pid is not None
        shmem_before = shmem_bytes()
        try:
            report = await worker.call("onBomb", route, BOMB_MB, timeout=CALL_TIMEOUT)
        except PluginCrashed:
            report = {"held_mb": 0, "error": "killed"}  # being killed is containment too
            killed = True
        else:
            killed = False
        await assert_responsive(sibling)
        # Measured outside the plugin, while whatever it managed to grab is still held.
        shmem_growth = shmem_bytes() - shmem_before
        worker_rss = 0 if killed else _worker_rss(worker.pid)
        if not killed:
            await worker.call("onRelease", timeout=CALL_TIMEOUT)
    host_growth = host_rss() - host_before
    assert host_growth < 64 * MB, f"host RSS grew by {host_growth / MB:.0f} MB"
    if route in ("shared_mmap", "memfd"):
        # System-wide, so only checked where shared memory is what the plugin grabs.
        assert shmem_growth < MAX_HEAP_MB * MB, f"shared memory grew by {shmem_growth / MB:.0f} MB"
    assert worker_rss < 2 * MAX_HEAP_MB * MB + 64 * MB, f"worker RSS {worker_rss / MB:.0f} MB"
    assert report["held_mb"] <= MAX_HEAP_MB, report
    assert report["error"] in ("MemoryError", "killed") or report["error"].startswith("OSError")
    await assert_responsive(sibling)


SPIN_CODE = """
import asyncio
import autoweave


def spin():
    autoweave.log.warning("spinning")  # leaves at once: the host knows the spin started
    while True:
        pass


async def stubborn():
    autoweave.log.warning("spinning")
    while True:
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            pass  # ignore the host's cancel and keep burning CPU
"""


@pytest.mark.parametrize("hook", ["onSpin", "onStubborn"])
async def test_cpu_spin_times_out_and_is_killed(
    plugin_root: Path, sibling: WorkerProcess, caplog: pytest.LogCaptureFixture, hook: str
) -> None:
    plugin = write_plugin(
        plugin_root, "spinner", SPIN_CODE, hooks={"onSpin": "spin", "onStubborn": "stubborn"}
    )
    async with running(plugin, load_timeout=LOAD_TIMEOUT) as worker:
        pid = worker.pid
        assert pid is not None
        spinning = asyncio.ensure_future(worker.call(hook, timeout=0.4, cancel_grace=0.25))
        await plugin_logged(caplog, "spinner", "spinning")
        await assert_responsive(sibling)  # while it spins
        with pytest.raises(HookTimeout):
            await asyncio.wait_for(spinning, 5)
        await asyncio.wait_for(worker.wait_closed(), 5)
        assert worker.exit_reason == "timeout"
        assert not process_exists(pid)
    await assert_responsive(sibling)


FLOOD_CODE = (
    PRELUDE
    + RAW_WRITE
    + '''
import struct
import autoweave


def sdk_metrics(count):
    for i in range(count):
        autoweave.metric(f"flood.metric_{i}", i)
    return count


def metric_frame(name, value):
    encoded = name.encode()
    body = b"\\x95\\x0f\\x00\\xd9" + bytes([len(encoded)]) + encoded
    body += b"\\xcb" + struct.pack(">d", value) + b"\\x80"
    return struct.pack(">I", len(body)) + body


def raw_metrics(count, invalid):
    """Bypass the SDK's checks and rate limit: write METRIC frames straight to the socket."""
    frames = [metric_frame(f"raw.metric_{i}", float(i)) for i in range(count)]
    frames += [metric_frame(f"9bad name {i}", 1.0) for i in range(invalid)]
    return write_raw(b"".join(frames))


def output(megabytes):
    line = "x" * 1023
    for _ in range(megabytes * 512):  # half of it as 1 KiB lines
        print(line)
    print("y" * (megabytes * 512 * 1024))  # the other half as one enormous line
    sys.stderr.write("z" * (1 << 20) + "\\n")
    for i in range(100_000):
        autoweave.log.info("log flood %d %s", i, "w" * 100)
    return megabytes
'''
)
FLOOD_HOOKS = {"onSdk": "sdk_metrics", "onRaw": "raw_metrics", "onOutput": "output"}


async def test_metric_flood_through_the_sdk_is_capped(
    plugin_root: Path, sibling: WorkerProcess
) -> None:
    plugin = write_plugin(plugin_root, "metric-flooder", FLOOD_CODE, hooks=FLOOD_HOOKS)
    async with running(plugin, load_timeout=LOAD_TIMEOUT) as worker:
        flood = asyncio.ensure_future(worker.call("onSdk", 100_000, timeout=CALL_TIMEOUT))
        await assert_responsive(sibling)
        assert await flood == 100_000
        pong = await worker.ping(timeout=2)
        snapshot = worker.metrics.snapshot()
    kept = sum(series["count"] for series in snapshot["series"])
    host_dropped = snapshot["dropped_rate"] + snapshot["dropped_series"] + snapshot["rejected"]
    # The series cap holds, and each of the 100 000 samples is either kept or counted as
    # dropped, by the worker's rate limit or by the host's.
    assert len(snapshot["series"]) <= worker.metrics.max_series
    assert pong["metrics_dropped"] + host_dropped + kept == 100_000, (pong, snapshot["series"][:3])
    assert pong["metrics_dropped"] > 90_000, pong
    await assert_responsive(sibling)


async def test_raw_metric_frames_cannot_grow_the_host(
    plugin_root: Path, sibling: WorkerProcess
) -> None:
    plugin = write_plugin(plugin_root, "raw-metric-flooder", FLOOD_CODE, hooks=FLOOD_HOOKS)
    host_before = host_rss()
    async with running(plugin, load_timeout=LOAD_TIMEOUT) as worker:
        flood = asyncio.ensure_future(worker.call("onRaw", 100_000, 1000, timeout=CALL_TIMEOUT))
        await wait_until(lambda: bool(worker.metrics.snapshot()["series"]), "the flood arrives")
        await assert_responsive(sibling)  # while the host digests the flood
        assert await flood > 100_000
        assert worker.alive
        snapshot = worker.metrics.snapshot()
    kept = sum(series["count"] for series in snapshot["series"])
    # The series cap holds, and every one of the 101 000 frames is accounted for.
    assert len(snapshot["series"]) <= worker.metrics.max_series
    assert snapshot["rejected"] == 1000
    dropped = snapshot["dropped_rate"] + snapshot["dropped_series"]
    assert kept + dropped + snapshot["rejected"] == 101_000, snapshot | {
        "series": len(snapshot["series"])
    }
    assert dropped >= 100_000 - worker.metrics.max_series
    assert host_rss() - host_before < 64 * MB
    await assert_responsive(sibling)


async def test_output_and_log_flood_is_rate_limited(
    plugin_root: Path, sibling: WorkerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="autoweave_plugins.plugin.log-flooder")
    plugin = write_plugin(plugin_root, "log-flooder", FLOOD_CODE, hooks=FLOOD_HOOKS)
    host_before = host_rss()
    started = time.monotonic()
    async with running(plugin, load_timeout=LOAD_TIMEOUT) as worker:
        flood = asyncio.ensure_future(worker.call("onOutput", 10, timeout=CALL_TIMEOUT))
        await plugin_logged(caplog, "log-flooder", "x" * 1023)
        await assert_responsive(sibling)  # while 10 MB of output pours in
        assert await flood == 10
        await asyncio.sleep(0.2)  # let the pipes drain
        elapsed = time.monotonic() - started
    records = [r for r in caplog.records if r.name == "autoweave_plugins.plugin.log-flooder"]
    # Three rate limiters (stdout, stderr, log frames): burst 200 plus 50 lines/s each.
    bound = 3 * (200 + 50 * elapsed) + 10
    assert len(records) <= bound, (len(records), bound)
    assert max(len(r.getMessage()) for r in records) <= 2048
    assert host_rss() - host_before < 64 * MB
    await assert_responsive(sibling)
