"""Namespaces made by the clone that creates the worker: the template's way into a world.

A spawned worker enters its namespaces with ``open_namespaces`` (unshare, then two forks:
the relay W stays outside, C becomes pid 1, the worker is pid 2), because an unshared PID
namespace only takes the caller's children. A template can do better: it clones each worker
straight into a new PID namespace (``clone_flags``), so the process the host supervises is
pid 1 there and is the worker itself. ``adopt`` then makes the other namespaces and the base
of the view in it. No holder and no relay: two processes and two forks fewer per worker
than the spawned path. The holder, a Python process too, kept ~1.7 MB of pages of its own:
more than a third of what a whole idle worker costs.

The guarantees a holder gave hold without one:

- It dies with the host: its PDEATHSIG (SIGKILL) comes from an ancestor namespace, which
  the kernel delivers to a pid 1, and the seccomp filter refuses the prctl that would clear
  it; its death ends the namespace.
- The host's signals end it, as they ended a worker behind a relay (``end_on_signals``): a
  pid 1 ignores every signal it has no handler for, SIGKILL from the host excepted.
- A crash is its own: a fault (SIGSEGV, SIGBUS...) is forced on a pid 1 as on any process,
  so the host sees the signal itself, where a relay could only report 128 + N.

What differs, and is documented: a plugin's ``os.kill(os.getpid(), sig)`` with no handler
installed does nothing (a pid 1 cannot signal itself to death), as in a container's init.
"""

from __future__ import annotations

import os
import signal
import time
from types import FrameType

from autoweave_plugins.errors import WorldError
from autoweave_plugins.sandbox.holders import FORWARDED
from autoweave_plugins.sandbox.namespaces import (
    FLAGS,
    Namespaces,
    _create,
    _map_to,
    privileged,
    with_base,
)
from autoweave_plugins.sandbox.world import BasePlan, WorldOptions

__all__ = ["adopt", "clone_flags", "end_on_signals"]


def clone_flags(options: WorldOptions, root: bool) -> int | None:
    """What to clone a worker with: its PID namespace (and, unprivileged, the user namespace
    every other one needs); None when the layer is off or a needed namespace is disabled (the
    child then goes the spawned way, which reports what was lost). The other namespaces the
    worker unshares itself, after READY (``adopt``): a new network namespace alone costs
    about a millisecond, which the clone would otherwise add to every start."""
    required = ("pid",) if root else ("user", "pid")
    if not options.enabled or {*required, "mount"} & options.disabled:
        return None
    flags = 0
    for name in required:
        flags |= FLAGS[name]
    return flags


def end_on_signals() -> None:
    """In a worker that is pid 1 of its namespace: end on the signals a relay passed on
    (``holders.FORWARDED``), with 128 + N, as a worker behind a relay ended. The plugin may
    install handlers of its own over these, as it could behind a relay."""

    def end(signum: int, frame: FrameType | None) -> None:
        os._exit(128 + signum)

    for sig in FORWARDED:
        if sig != signal.SIGINT:  # Python's own handler: KeyboardInterrupt, as anywhere
            signal.signal(sig, end)


def adopt(plan: BasePlan, host_ids: tuple[int, int]) -> Namespaces:
    """In the worker, pid 1 of its PID namespace: create the rest of its namespaces (mount,
    and network, IPC and UTS as far as the kernel allows) and build the base of its view.

    ``host_ids`` are the template's uid and gid, which an unprivileged worker maps its user
    namespace to. Raises ``WorldError`` if a namespace a world needs or the view cannot be had.
    """
    started = time.perf_counter()
    root = privileged()
    disabled = plan.spec.disabled
    try:
        if not root:
            _map_to(*host_ids)
        lost = _create(("mount",), disabled)
    except OSError as exc:
        raise WorldError("namespaces", "unshare", exc.strerror or str(exc)) from exc
    if root and "user" in disabled:
        lost["user"] = "user namespace disabled by the host"
    os.chdir("/")  # no process may pin the host's tree once the world detaches it
    required = ("pid", "mount") if root else ("user", "pid", "mount")
    return with_base(plan, required, lost, root, host_ids[0], started)
