"""The processes that hold a worker's world and never run plugin code (namespaces.py).

C, pid 1 of the worker's PID namespace, dies with W (PDEATHSIG, set here where no plugin can
reset it), and its death makes the kernel kill everything in the namespace. W, the process
the host started, relays: it forwards the host's signals to the worker and ends as the
worker ended. Neither keeps any of the worker's descriptors, so the host sees the worker's
channel close the moment the worker dies. Both are entered by a fork and never return.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import signal
from types import FrameType
from typing import NoReturn

from autoweave_plugins.sandbox import kernel
from autoweave_plugins.sandbox.privileges import EXIT_ORPHANED  # C found W gone: so is the host

__all__ = ["FORWARDED", "hold", "relay"]

FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


def _close_all_except(keep: set[int]) -> None:
    low = 0
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 30)


def hold(parent: int) -> NoReturn:
    """C, pid 1: die with W, keep nothing, reap whatever is reparented here."""
    kernel.set_pdeathsig(signal.SIGKILL)
    kernel.set_dumpable(False)  # nothing in the worker's uid may trace it or read its /proc
    poller = select.poll()
    poller.register(parent, select.POLLIN)
    if poller.poll(0):  # W exited before the prctl above could cover it
        os._exit(EXIT_ORPHANED)
    _close_all_except(set())
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # pid 1 ignores what it has no handler for
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    while True:
        signal.sigwait({signal.SIGCHLD})
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass


def _end_as(status: int) -> NoReturn:
    """Leave with ``status``: the same exit code, or death by the same signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the worker's crash, not ours
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _forward_signals(worker: int) -> None:
    """Pass the host's signals (``FORWARDED``) on to the worker."""

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)


def relay(worker: int) -> NoReturn:
    """W: hold nothing of the worker's, forward signals to it, and end as it ended."""
    _close_all_except({0, 1, 2})
    _forward_signals(worker)
    _, status = os.waitpid(worker, 0)
    _end_as(status)
