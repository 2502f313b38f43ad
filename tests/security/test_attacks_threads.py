"""A thread bomb is capped per worker, and the host can still start workers while it holds.

The red team's plugin started threads in a loop (small stacks, so RLIMIT_DATA did not stop it)
until the machine ran out of PIDs and the host could not start a worker (EAGAIN). The manifest's
``memory.max_threads`` is now enforced by the kernel (RLIMIT_NPROC). The bomb here stops by
itself at ``BOMB`` threads, so that on a machine without the cap the test fails instead of
starving everyone else. Evidence: the worker's thread count as /proc shows it to this (host)
process, and a new worker started and answering while the bomb still holds its threads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from autoweave_plugins.process import WorkerProcess
from tests.helpers.workers import running, write_plugin
from tests.security._support import (
    CALL_TIMEOUT,
    LOAD_TIMEOUT,
    SIBLING_CODE,
    SIBLING_HOOKS,
    assert_responsive,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_THREADS = 32
BOMB = 1500

BOMB_CODE = """
import threading

STOP = threading.Event()
HELD = []


def bomb(limit):
    threading.stack_size(64 * 1024)  # the smallest stacks, so memory is not what stops it
    error = None
    while len(HELD) < limit:
        thread = threading.Thread(target=STOP.wait, daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread": EAGAIN from clone
            error = str(exc)
            break
        HELD.append(thread)
    return {"started": len(HELD), "error": error}


def release():
    STOP.set()
    for thread in HELD:
        thread.join()
    HELD.clear()
    return threading.active_count()
"""


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads line")


async def test_a_thread_bomb_is_capped_and_the_host_still_starts_workers(
    plugin_root: Path, sibling: WorkerProcess
) -> None:
    plugin = write_plugin(
        plugin_root,
        "thread-bomber",
        BOMB_CODE,
        hooks={"onBomb": "bomb", "onRelease": "release"},
        permissions={"memory": {"max_heap_mb": 256, "max_threads": MAX_THREADS}},
    )
    fresh = write_plugin(plugin_root, "newcomer", SIBLING_CODE, hooks=SIBLING_HOOKS)
    async with running(plugin, load_timeout=LOAD_TIMEOUT) as worker:
        assert worker.pid is not None
        report = await worker.call("onBomb", BOMB, timeout=CALL_TIMEOUT)
        held = _threads(worker.pid)  # from outside, while the bomb holds its threads
        # The host can still start a worker and load a plugin into it.
        async with running(fresh, load_timeout=LOAD_TIMEOUT) as newcomer:
            await assert_responsive(newcomer)
        await assert_responsive(sibling)
        assert await worker.call("onRelease", timeout=CALL_TIMEOUT) >= 1
    # Evidence: the kernel stopped the bomb at the manifest's cap (plus the main thread).
    assert held <= MAX_THREADS + 1, f"{held} threads held ({report})"
    assert report["started"] <= MAX_THREADS, report
    assert report["error"] is not None, report
