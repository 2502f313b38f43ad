"""Namespaces made by the clone that creates the worker: the template's way into a world.

A spawned worker enters its namespaces with ``open_namespaces`` (unshare, then two forks:
the relay W stays outside, C becomes pid 1). A template can do better: it clones each worker
straight into new namespaces (``clone_attempts`` gives the flags, best first), so the process
the host supervises is already pid 1 of its own PID namespace, holding it and relaying the
host's signals at once (``holders.hold_and_relay``). ``split`` forks the worker, pid 2, the
moment the clone returns: every page pid 1 writes is a copy it keeps for its whole life, so it
runs as little Python as possible. ``adopt`` then builds the base of the view in the worker. One process and one fork fewer per worker than the
spawned path, with the same guarantees: pid 1 runs no plugin code and dies with the host
(its own PDEATHSIG), and the kernel kills the namespace with it.
"""

from __future__ import annotations

import os
import select
import signal
import time

from autoweave_plugins.errors import WorldError
from autoweave_plugins.sandbox import kernel, native
from autoweave_plugins.sandbox.holders import EXIT_ORPHANED, hold_and_relay
from autoweave_plugins.sandbox.mounts import build_base
from autoweave_plugins.sandbox.namespaces import (
    _OPTIONAL,
    FLAGS,
    NAMESPACES,
    Namespaces,
    _map_to,
    _ms,
    privileged,
)
from autoweave_plugins.sandbox.world import BasePlan, WorldOptions

__all__ = ["Attempt", "adopt", "clone_attempts", "split"]

Attempt = tuple[int, tuple[str, ...], dict[str, str]]
"""``(clone flags, namespaces they create, namespaces lost with why)``."""


def clone_attempts(options: WorldOptions, root: bool) -> list[Attempt]:
    """What to ask ``clone`` for, best first: every namespace, then the ones a world needs
    without the optional ones. Empty when the layer is off or a needed one is disabled (the
    child then goes the spawned way, which reports what was lost)."""
    if not options.enabled:
        return []
    required = ("mount", "pid") if root else ("user", "mount", "pid")
    if set(required) & options.disabled:
        return []
    wanted = tuple(n for n in (*required, *_OPTIONAL) if n not in options.disabled)
    # A root host's worker takes its user namespace last, at assignment (namespaces.py).
    lost = {n: f"{n} namespace disabled by the host" for n in NAMESPACES if n in options.disabled}
    if root and "user" in options.disabled:
        lost["user"] = "user namespace disabled by the host"
    attempts: list[Attempt] = [(_flags(wanted), wanted, lost)]
    if wanted != required:
        refused = "the kernel refused it"
        fewer = lost | {n: refused for n in wanted if n not in required}
        attempts.append((_flags(required), required, fewer))
    return attempts


def _flags(names: tuple[str, ...]) -> int:
    flags = 0
    for name in names:
        flags |= FLAGS[name]
    return flags


def split(host: int) -> None:
    """In the clone, at once: fork the worker and return in it; this process stays behind as
    pid 1 and never returns. ``host`` is a pidfd of the host, readable once it has exited.

    Pid 1 takes a process group of its own (the worker's too), asks to die with the host, and
    keeps no descriptor: the channel's only holder is the worker, and no pipe of the
    template's stays open for its sake.
    """
    os.setpgid(0, 0)  # a signal to the template's group misses both
    with native.own_forks():
        worker = os.fork()
    if worker == 0:
        return
    try:
        kernel.set_pdeathsig(signal.SIGKILL)
        if select.select([host], [], [], 0)[0]:  # the host died before the prctl could cover it
            os.kill(worker, signal.SIGKILL)
            os._exit(EXIT_ORPHANED)
        hold_and_relay(worker)
    finally:
        os._exit(EXIT_ORPHANED)


def adopt(
    plan: BasePlan, created: tuple[str, ...], lost: dict[str, str], host_ids: tuple[int, int]
) -> Namespaces:
    """In the worker that ``split`` made in namespaces ``created``: build the base of its view.

    ``host_ids`` are the template's uid and gid, which an unprivileged worker maps its user
    namespace to. Raises ``WorldError`` if the view cannot be built.
    """
    started = time.perf_counter()
    root = privileged()
    if not root:
        try:
            _map_to(*host_ids)
        except OSError as exc:
            raise WorldError("namespaces", "/proc/self/uid_map", exc.strerror or str(exc)) from exc
    os.chdir("/")  # no process may pin the host's tree once the world detaches it
    opened = _ms(started)
    if "uts" in created:
        try:
            kernel.sethostname(plan.spec.hostname)
        except OSError as exc:
            raise WorldError("namespaces", "hostname", exc.strerror or str(exc)) from exc
    final_uid = plan.spec.outside_uid if root else host_ids[0]
    scaffold = build_base(plan, cover_proc=final_uid == 0)
    made = tuple(name for name in NAMESPACES if name in created)
    timings = {"open": opened, "base": round(_ms(started) - opened, 3)}
    return Namespaces(made, dict(lost), root, host_ids[0], plan, scaffold, timings)
