"""Namespaces made by the clone that creates the worker: the template's way into a world.

A spawned worker enters its namespaces with ``open_namespaces`` (unshare, then two forks:
the relay W stays outside, C becomes pid 1). A template can do better: it clones each worker
straight into a new PID namespace (``clone_flags``), so the process the host supervises is
already pid 1 there, holding it and relaying the host's signals at once
(``holders.hold_and_relay``). Once it has reported READY, ``split`` forks the worker, pid 2:
every page pid 1 writes is a copy it keeps for its whole life, so it runs as little Python as
possible. ``adopt`` then makes the other namespaces and the base of the view in the worker.
One process and one fork fewer per worker than the spawned path, with the same guarantees:
pid 1 runs no plugin code and dies with the host (its own PDEATHSIG), and the kernel kills
the namespace with it.
"""

from __future__ import annotations

import os
import time

from autoweave_plugins.errors import WorldError
from autoweave_plugins.sandbox import native
from autoweave_plugins.sandbox.holders import EXIT_ORPHANED, hold_and_relay
from autoweave_plugins.sandbox.namespaces import (
    FLAGS,
    Namespaces,
    _create,
    _map_to,
    privileged,
    with_base,
)
from autoweave_plugins.sandbox.world import BasePlan, WorldOptions

__all__ = ["adopt", "clone_flags", "split"]


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


def split() -> None:
    """In the clone, once it has told the host it is READY: fork the worker and return in it;
    this process stays behind as pid 1 and never returns.

    The caller has made it die with the host (PDEATHSIG, checked against a pidfd) and given it
    a process group of its own, which the worker shares. Pid 1 keeps no descriptor: the
    channel's only holder is the worker, and no pipe of the template's stays open for it.
    """
    with native.own_forks():
        worker = os.fork()
    if worker == 0:
        return
    try:
        hold_and_relay(worker)
    finally:
        os._exit(EXIT_ORPHANED)


def adopt(plan: BasePlan, host_ids: tuple[int, int]) -> Namespaces:
    """In the worker ``split`` made: create the rest of its namespaces (mount, and network,
    IPC and UTS as far as the kernel allows) and build the base of its view.

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
