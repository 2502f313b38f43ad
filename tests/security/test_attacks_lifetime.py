"""A worker never outlives its host, and the prctl calls real plugin code makes still work.

The red team's route: ``prctl(PR_SET_PDEATHSIG, 0)`` clears the signal the kernel sends when the
host dies, and a non-daemon thread keeps the interpreter alive after the channel closes. The
worker then survives ``kill -9`` of the host with its grants and its inbound port, and a new
host gets EADDRINUSE. The host here is a real subprocess, killed with SIGKILL. Evidence: no
task anywhere in /proc carries the thread name the plugin set, and the inbound port can be bound
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.sandbox.world import NAMESPACES
from tests.helpers.workers import START_METHOD, running, write_plugin
from tests.security._support import CALL_TIMEOUT, LOAD_TIMEOUT, PRELUDE, assert_responsive

pytestmark = pytest.mark.asyncio(loop_scope="module")

LINGER_CODE = (
    PRELUDE
    + '''
import ctypes
import threading

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SYS_PRCTL = 157 if os.uname().machine == "x86_64" else 167
PR_SET_PDEATHSIG, PR_SET_NAME = 1, 15
STOP = threading.Event()


def call(*args):
    if libc.syscall(SYS_PRCTL, *[ctypes.c_ulong(a) for a in args], 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def linger(marker):
    name = ctypes.create_string_buffer(marker.encode())
    call(PR_SET_NAME, ctypes.addressof(name))
    STOP.wait()


def stay(marker, route):
    """Clear the parent-death signal, then keep a non-daemon thread alive forever."""
    option = PR_SET_PDEATHSIG if route == "prctl" else PR_SET_PDEATHSIG | (1 << 32)
    cleared = attempt(call, option, 0)
    threading.Thread(target=linger, args=(marker,), daemon=False).start()
    return cleared


def options():
    """What ordinary code asks of prctl, and what only an escape would."""
    name, names = ctypes.create_string_buffer(b"worker"), ctypes.create_string_buffer(16)
    return {
        "set_name": attempt(call, PR_SET_NAME, ctypes.addressof(name)),
        "get_name": attempt(call, 16, ctypes.addressof(names)),
        "get_dumpable": attempt(lambda: libc.prctl(3, 0, 0, 0, 0)),
        "capbset_read": attempt(lambda: libc.prctl(23, 0, 0, 0, 0)),
        "get_no_new_privs": attempt(lambda: libc.prctl(39, 0, 0, 0, 0)),
        "set_dumpable": attempt(call, 4, 1),
        "set_child_subreaper": attempt(call, 36, 1),
        "set_ptracer_any": attempt(call, 0x59616D61, (1 << 64) - 1),
        "set_mm": attempt(call, 35, 1),
        "cap_ambient_raise": attempt(call, 47, 2),
        "set_pdeathsig_truncated": attempt(call, (1 << 32) | PR_SET_PDEATHSIG, 0),
        "dumpable_after": attempt(lambda: libc.prctl(3, 0, 0, 0, 0)),
    }


async def threads_and_asyncio():
    """Real plugin code: threads, a thread pool through asyncio, and timers."""
    import asyncio
    done = []
    workers = [threading.Thread(target=done.append, args=(i,)) for i in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results = await asyncio.gather(*[asyncio.to_thread(sum, [i, 1]) for i in range(16)])
    await asyncio.sleep(0.01)
    return len(done) + len(results)
'''
)
HOOKS = {"onStay": "stay", "onOptions": "options", "onReal": "threads_and_asyncio"}

HOST = """
import asyncio, json, sys
from autoweave_plugins.broker.inbound import bind_inbound
from autoweave_plugins.discovery import check_plugin_folder
from autoweave_plugins.manifest import ManifestCache
from autoweave_plugins.loader import build_spec
from autoweave_plugins.settings import LimitsConfig, WorkerPoolConfig
from autoweave_plugins.startmethod import StartMethod

async def main():
    plugin = check_plugin_folder(sys.argv[1], ManifestCache())
    listeners = bind_inbound(plugin.manifest.name, plugin.manifest.permissions.inbound)
    disabled = tuple(sys.argv[5].split(",")) if sys.argv[5] else ()
    pool = WorkerPoolConfig(start_method=sys.argv[4], disabled_namespaces=disabled)
    method = StartMethod(pool, LimitsConfig())
    await method.open()
    worker = await method()
    await worker.assign(build_spec(plugin, extra_imports=("ctypes",)), inbound=listeners)
    cleared = await worker.call("onStay", sys.argv[2], sys.argv[3], timeout=15)
    print(json.dumps({"worker": worker.plugin_pid, "cleared": cleared}), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _tasks_named(marker: str) -> list[int]:
    """Every task (thread) on the machine whose name is ``marker``: its process id."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{entry}/task"):
                with open(f"/proc/{entry}/task/{tid}/comm") as comm:
                    if comm.read().strip() == marker:
                        found.append(int(entry))
    return found


def _wait_until(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return bool(condition())  # type: ignore[operator]


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen(1)
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("route", "world"),
    [("prctl", "world"), ("raw_syscall_high_bits", "world"), ("prctl", "fallback")],
)
async def test_a_worker_dies_with_its_host(tmp_path: Path, route: str, world: str) -> None:
    """In its world nothing but the worker's own parent-death signal ends it with the host:
    a template's worker is pid 1 of its namespace, and the kernel clears that signal when the
    worker takes its uid, so the worker sets it again. Without namespaces the same holds."""
    marker = "aw" + secrets.token_hex(6)  # a thread name: at most 15 characters
    port = _free_port()
    plugin = write_plugin(
        tmp_path / "plugins",
        "lingerer",
        LINGER_CODE,
        hooks=HOOKS,
        permissions={"network": {"inbound": {"port": port}}},
    )
    host = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOST,
        plugin.folder,
        marker,
        route,
        START_METHOD,
        ",".join(NAMESPACES) if world == "fallback" else "",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert host.stdout is not None
        line = await asyncio.wait_for(host.stdout.readline(), LOAD_TIMEOUT + CALL_TIMEOUT)
        started = json.loads(line)
        # The oracles work: the worker's thread carries the marker and holds the port.
        assert _wait_until(lambda: _tasks_named(marker) == [started["worker"]], 5)
        assert not _bindable(port)
        host.send_signal(signal.SIGKILL)
        await host.wait()
        # Evidence: the worker is gone (no task with the marker) and the port is free again.
        gone = _wait_until(lambda: not _tasks_named(marker), 10)
        assert gone, (
            f"worker {started['worker']} outlived its host; prctl said {started['cleared']}"
        )
        # The marker thread can be gone a moment before the process has closed its files.
        assert _wait_until(lambda: _bindable(port), 5)
        assert started["cleared"]["ok"] is False, started
    finally:
        if host.returncode is None:
            host.kill()
            await host.wait()
        for pid in _tasks_named(marker):  # a survivor of a failed run: do not leave it behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_prctl_allows_what_real_code_needs_and_nothing_else(
    plugin_root: Path, sibling: WorkerProcess
) -> None:
    plugin = write_plugin(plugin_root, "prctl-prober", LINGER_CODE, hooks=HOOKS)
    async with running(plugin, extra_imports=("ctypes",), load_timeout=LOAD_TIMEOUT) as worker:
        report = await worker.call("onOptions", timeout=CALL_TIMEOUT)
        assert await worker.call("onReal", timeout=CALL_TIMEOUT) == 24
    for allowed in ("set_name", "get_name", "get_dumpable", "capbset_read", "get_no_new_privs"):
        assert report[allowed]["ok"] is True, (allowed, report[allowed])
    for denied in (
        "set_dumpable",
        "set_child_subreaper",
        "set_ptracer_any",
        "set_mm",
        "cap_ambient_raise",
        "set_pdeathsig_truncated",
    ):
        assert report[denied]["ok"] is False, (denied, report[denied])
    assert report["dumpable_after"]["value"] == 0  # still undumpable: set_dumpable was refused
    await assert_responsive(sibling)
