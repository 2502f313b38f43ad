"""Which namespaces this host can give a worker, found by trying: the data behind ``doctor``.

Nothing is inferred from sysctls or kernel versions. Throwaway children (forked, never
exec'ing anything) make the calls a worker would make and answer through a pipe: one
unshares each namespace on its own; another enters a real world end to end (mount view,
pivot_root, its own ``/proc``), which also catches what a per-call check cannot, such as a
``/proc`` the host has partly covered (the kernel then refuses a new one in a user namespace).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import signal
import time
from collections.abc import Callable

from autoweave_plugins.sandbox import kernel
from autoweave_plugins.sandbox.namespaces import (
    FLAGS,
    NAMESPACES,
    enter_world,
    open_namespaces,
    privileged,
)
from autoweave_plugins.sandbox.world import WorldSpec, plan_base

__all__ = ["probe_namespaces", "workers_have_own_identity"]

Verdicts = dict[str, tuple[bool, str]]


def _each_namespace() -> Verdicts:
    results: Verdicts = {}
    root = privileged()
    # Unprivileged, the other namespaces need a user namespace first; as root, try it last.
    order = [*(n for n in NAMESPACES if n != "user"), "user"] if root else list(NAMESPACES)
    for name in order:
        if not root and name != "user" and not results["user"][0]:
            results[name] = (False, "needs a user namespace, which was refused")
            continue
        try:
            kernel.unshare(FLAGS[name])
        except OSError as exc:
            results[name] = (False, f"unshare refused: {exc.strerror}")
        else:
            results[name] = (True, "created as root" if root else "created unprivileged")
    return results


def _whole_world() -> Verdicts:
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        namespaces = open_namespaces(plan_base())
        report = enter_world(WorldSpec(folder=package), namespaces)
    except Exception as exc:  # the verdict is the message; nothing here may escape the child
        return {"world": (False, f"{type(exc).__name__}: {exc}")}
    if not report.active:
        return {"world": (False, "no namespaces: " + "; ".join(sorted(set(report.lost.values()))))}
    with open("/proc/self/mountinfo") as mounts:
        detached = not any(" /.oldroot" in line for line in mounts)
    pids = sorted(entry for entry in os.listdir("/proc") if entry.isdigit())
    lost = f"; lost {', '.join(report.lost)}" if report.lost else ""
    cost = report.timings_ms
    detail = (
        f"start {cost['open'] + cost['base']:.1f} ms, load {cost['world']:.1f} ms, "
        f"worker is uid {report.outside_uid} on the host{lost}"
    )
    if pids != ["1", "2"] or not detached:
        return {
            "world": (False, f"the view leaks: /proc pids {pids}, old root detached {detached}")
        }
    return {"world": (True, detail)}


def _in_child(probe: Callable[[], Verdicts], timeout: float) -> Verdicts:
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child, which always _exits
        try:
            os.close(read_fd)
            os.write(write_fd, json.dumps(probe()).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([read_fd], [], [], remaining)
            chunk = os.read(read_fd, 65536) if ready else b""
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_fd)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)  # the world's W: its death takes the rest along
        os.waitpid(child, 0)
    try:
        found = json.loads(data)
    except ValueError:
        return {}
    return {str(name): (bool(ok), str(detail)) for name, (ok, detail) in found.items()}


def probe_namespaces(timeout: float = 10.0) -> Verdicts:
    """``{name: (available, detail)}`` for user, pid, net, ipc, mount, uts and ``world``."""
    found = _in_child(_each_namespace, timeout)
    results = {n: found.get(n, (False, "the probe child gave no answer")) for n in NAMESPACES}
    world = _in_child(_whole_world, timeout)
    results["world"] = world.get("world", (False, "the probe child gave no answer"))
    return results


@functools.cache
def workers_have_own_identity(disabled: frozenset[str] = frozenset()) -> bool:
    """Whether this root host's workers will be uid 65534 on the host, as they are when they
    build their world (the mount and PID namespaces); probed once, in a child. The host then
    makes the folders it creates for them theirs; without a world they stay root's, like the
    worker."""
    if not privileged() or {"mount", "pid"} & disabled:
        return False
    found = _in_child(_each_namespace, 10.0)
    return all(found.get(name, (False, ""))[0] for name in ("mount", "pid"))
