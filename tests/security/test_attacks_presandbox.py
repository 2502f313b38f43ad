"""Before its sandbox is complete, a worker runs no program and reads only what no plugin can change.

The red team's escape: the policy granted ``/usr/sbin`` readwrite, a plugin replaced
``ldconfig`` and crashed, and the restarted worker ran ``/sbin/ldconfig -p`` (through
``ctypes.util.find_library``) as root before sandboxing itself. The grant is refused now (see
``test_attacks_grants``); this test closes the class from the other side. The worker runs
under ``strace`` (outside the worker, in the kernel's view; on the template start method, the
template runs under it and strace follows its forks): every program it executes and every
file it opens is recorded until its seccomp filter is loaded, the last layer. Evidence: no
``execve`` but its own, and every path opened before the filter is one that no grant policy,
whatever its config, ever grants (``policy.never_granted``).
"""

from __future__ import annotations

import functools
import re
import shutil
import sys
from pathlib import Path

import pytest

from autoweave_plugins.forked import fork_from
from autoweave_plugins.loader import build_spec
from autoweave_plugins.policy import never_granted
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.template import Template
from tests.helpers.workers import START_METHOD, grant_folder, write_plugin
from tests.security._support import CALL_TIMEOUT, LOAD_TIMEOUT

STRACE = shutil.which("strace")
pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(STRACE is None, reason="needs strace to watch the worker from outside"),
]

CODE = """
import threading

def work():
    done = []
    thread = threading.Thread(target=done.append, args=(1,))
    thread.start()
    thread.join()
    return done
"""
TRACED = "execve,execveat,open,openat,openat2,creat,seccomp"
SYSCALL = re.compile(r"^(\d+) +(\w+)\((.*)\) += (-?\d+|0x[0-9a-f]+|\?)")
OPENED = re.compile(r'^(?:AT_FDCWD|-100), "([^"]*)", ([A-Z_|]+)')


def _parse(log: Path) -> list[tuple[int, str, str, str]]:
    calls = []
    for line in log.read_text().splitlines():
        match = SYSCALL.match(line)
        if match is not None:
            calls.append((int(match[1]), match[2], match[3], match[4]))
    return calls


async def test_nothing_runs_or_is_read_from_plugin_writable_places_before_the_sandbox(
    tmp_path: Path,
) -> None:
    log = tmp_path / "worker.trace"
    wrapper = tmp_path / "traced-python"
    # -D keeps strace out of the process tree, so the worker's parent is still the host.
    wrapper.write_text(
        f'#!/bin/sh\nexec {STRACE} -D -f -qq -s 4096 -o {log} -e trace={TRACED} {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    data = grant_folder(tmp_path / "data")
    plugins = tmp_path / "plugins"
    plugin = write_plugin(
        plugins,
        "traced",
        CODE,
        hooks={"onWork": "work"},
        permissions={"filesystem": [{"path": str(data), "mode": "readwrite"}]},
    )
    template = Template(python=str(wrapper))  # traced from its start, its forks too (-f)
    if START_METHOD == "template":
        await template.start()
        worker = await WorkerProcess.start(functools.partial(fork_from, template))
    else:
        worker = await WorkerProcess.spawn(python=str(wrapper))
    try:
        await worker.assign(build_spec(plugin), timeout=LOAD_TIMEOUT)
        assert await worker.call("onWork", timeout=CALL_TIMEOUT) == [1]
    finally:
        await worker.stop()
        await template.close()
    calls = _parse(log)
    loaded = [
        index
        for index, (_pid, name, args, result) in enumerate(calls)
        if name == "seccomp" and args.startswith("SECCOMP_SET_MODE_FILTER") and result == "0"
    ]
    assert loaded, "the trace never saw the seccomp filter being loaded"
    before = calls[: loaded[0]]
    # Evidence 1: the only program ever started is the worker's own interpreter.
    execs = [(pid, name, args[:120]) for pid, name, args, _ in calls if name.startswith("exec")]
    assert len(execs) == 1 and sys.executable in execs[0][2], execs
    # Evidence 2: every file opened (or probed) before the sandbox was complete is somewhere
    # no plugin can ever be granted. O_PATH opens are the Landlock rules being added: they
    # pin the grant's inode and read nothing.
    risky = []
    for _pid, name, args, result in before:
        if not name.startswith(("open", "creat")):
            continue
        match = OPENED.match(args)
        if match is None:
            risky.append(f"{name}({args[:160]}) = {result}: not an absolute path")
            continue
        path, flags = match[1], match[2]
        if "O_PATH" in flags:
            continue
        if never_granted(path, str(plugins)) is None:
            risky.append(f"{name}({path}, {flags}) = {result}")
    assert risky == [], "\n".join(risky)
