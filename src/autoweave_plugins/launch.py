"""How a worker's OS process comes to be: the ``Launch`` a ``WorkerProcess`` starts from.

A launch creates the process and hands over the host's ends of it (``Started``): the RPC
socket, stdout and stderr, and an ``OSProcess`` to wait for and signal it. There are two:
``spawn_interpreter`` here (a fresh ``python -I``, reaped by asyncio's child watcher) and
``forked.fork_from`` (a child of the host forked by the template, reaped through its pidfd).
Whatever made it, the host supervises the process the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from autoweave_plugins.sandbox.world import WorldOptions

__all__ = ["Launch", "OSProcess", "SpawnedProcess", "Started", "spawn_interpreter"]


class OSProcess(Protocol):
    """A worker's OS process as the host holds it, however it was started."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int:
        """Reap it and return its exit code (negative: the signal that ended it)."""
        ...

    def send_signal(self, sig: int) -> None:
        """Signal it through a pidfd: never a recycled pid, never reaping it; a no-op once
        it is reaped."""
        ...


@dataclass(frozen=True, slots=True)
class Started:
    """What a ``Launch`` hands over: a blank worker starting, and the host's ends of it."""

    process: OSProcess
    channel: socket.socket
    """The host's end of the RPC socketpair."""
    stdout: asyncio.StreamReader
    stderr: asyncio.StreamReader
    method: str
    """"spawn" or "template": how it was started (stats, tests)."""


WORLD = WorldOptions()
"""Every namespace the kernel allows: the default of ``worker_pool.namespaces``."""

Launch = Callable[[], Awaitable[Started]]
"""Starts one blank worker process (``spawn_interpreter``, or ``forked.fork_from``)."""


class SpawnedProcess:
    """An interpreter started by asyncio: asyncio reaps it, a pidfd signals it.

    Signals go through the pidfd because ``Popen.send_signal`` polls first, which would steal
    the exit status from asyncio's child watcher.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._pidfd: int | None = os.pidfd_open(process.pid)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    async def wait(self) -> int:
        code = await self._process.wait()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        return code

    def send_signal(self, sig: int) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)


async def spawn_interpreter(
    python: str = sys.executable, flags: tuple[str, ...] = (), world: WorldOptions = WORLD
) -> Started:
    """Start ``python -I -m autoweave_plugins.worker``: empty environment, new session;
    ``world`` says what it is to enter (``worker/world_entry.py``)."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        process = await asyncio.create_subprocess_exec(
            python, "-I", *flags, "-m", "autoweave_plugins.worker", str(child.fileno()), str(os.getpid()),
            world.to_arg(), pass_fds=(child.fileno(),), env={}, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, close_fds=True, cwd="/",
        )  # fmt: skip
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()
    assert process.stdout is not None and process.stderr is not None
    return Started(SpawnedProcess(process), parent, process.stdout, process.stderr, "spawn")
