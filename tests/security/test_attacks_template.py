"""Attack class: a worker reaching for the template that forked it.

A worker forked from the template shares its memory layout and was, for a moment, a copy of
it. A plugin with ``ctypes`` and ``socket`` granted (the strongest plugin the host allows)
tries every route back to it: a leftover control socket to ask for forks of its own (every
descriptor up to the limit, with its own descriptors attached, as the host would send them),
signals to stop or kill it, and its memory, maps and environment through /proc. Evidence,
outside the plugin: the template keeps its pid and is neither stopped nor dead, no new
process appeared among the host's children, and the next worker it forks for the host starts
and serves.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from autoweave_plugins.forked import fork_from
from autoweave_plugins.loader import build_spec
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.template import Template
from tests.helpers.processes import children_of
from tests.helpers.workers import write_plugin
from tests.security._support import (
    CALL_TIMEOUT,
    LOAD_TIMEOUT,
    PRELUDE,
    SIBLING_CODE,
    SIBLING_HOOKS,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

CODE = (
    PRELUDE
    + '''
import array
import signal
import socket


def ask_for_forks():
    """Send a fork request, with descriptors attached, down every other socket it has."""
    tried = []
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))]
    channel = int(sys.argv[1])  # its own RPC socket: writing there only gets it killed
    for fd in range(1024):
        if fd == channel:
            continue
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            sock.setblocking(False)
            tried.append((fd, attempt(sock.sendmsg, [b"fork"], rights)))
        finally:
            sock.close()
    return tried


def reach(template):
    return {
        "forks": ask_for_forks(),
        "stop": attempt(os.kill, template, signal.SIGSTOP),
        "kill": attempt(os.kill, template, signal.SIGKILL),
        "mem": attempt(lambda: open(f"/proc/{template}/mem", "rb").read(16)),
        "maps": attempt(lambda: open(f"/proc/{template}/maps").read(64)),
        "environ": attempt(lambda: open(f"/proc/{template}/environ", "rb").read(64)),
    }

'''
)


def state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0]


async def test_a_worker_cannot_reach_the_template_that_forked_it(plugin_root: Path) -> None:
    attacker = write_plugin(plugin_root, "reacher", CODE, hooks={"onReach": "reach"})
    benign = write_plugin(plugin_root, "benign", SIBLING_CODE, hooks=SIBLING_HOOKS)
    template = Template()
    await template.start()
    fork = functools.partial(fork_from, template)
    try:
        assert template.pid is not None
        worker = await WorkerProcess.start(fork)
        spec = build_spec(attacker, extra_imports=("ctypes", "socket", "signal", "array"))
        await worker.assign(spec, timeout=LOAD_TIMEOUT)
        before = set(children_of(os.getpid()))
        report = await worker.call("onReach", template.pid, timeout=CALL_TIMEOUT)
        # Evidence: the template is untouched and nothing was forked for the plugin.
        assert template.running() and state(template.pid) in ("S", "R"), report
        assert set(children_of(os.getpid())) <= before, report
        assert report["forks"], "the attack found no socket at all: the oracle is broken"
        # ... and it still forks for the host, in order: the next worker serves.
        after = await WorkerProcess.start(fork)
        await after.assign(build_spec(benign), timeout=LOAD_TIMEOUT)
        assert await after.call("onEcho", "still here", timeout=CALL_TIMEOUT) == "still here"
        assert after.pid not in before
        for denied in ("stop", "kill", "mem", "environ"):
            assert report[denied]["ok"] is False, (denied, report[denied])
        await after.stop()
        await worker.stop()
    finally:
        await template.close()
