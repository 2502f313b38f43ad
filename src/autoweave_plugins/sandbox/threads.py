"""Capping a worker's threads (the manifest's ``memory.max_threads``) with RLIMIT_NPROC.

Threads are tasks, and the kernel checks RLIMIT_NPROC at every clone, threads included, against
the number of tasks of the caller's *real* uid (per user namespace). Two facts shape the means:

- Without a user namespace of its own, a worker shares its uid with the host and every other
  worker, so the count is machine-wide for that uid.
- uid 0 in the initial user namespace is exempt from RLIMIT_NPROC altogether, so a host running
  as root had no thread cap at all.

Means, best first (``cap_threads`` reports which it used; ``doctor`` says which is available):

- ``private_uid`` (the host is root): the worker changes its *real* uid to one of its own,
  ``PRIVATE_UID_BASE + pid``, keeping effective and saved uid 0 for file access, then sets
  RLIMIT_NPROC to its current threads plus ``max_threads``. The count is then exactly this
  worker's, as a per-worker user namespace would make it. seccomp denies every set*id call
  afterwards, so the plugin cannot take uid 0 back.
- ``uid_count`` (any other host): RLIMIT_NPROC is set to the tasks this uid has right now,
  machine-wide, plus ``max_threads``. The trade-off: the cap is shared with the uid's other
  processes, so when they grow this worker gets fewer threads, and when they shrink it may get
  more than ``max_threads``. Every worker's own growth is still bounded, so together they can
  never take the machine's PIDs. Inside a per-worker user namespace (the namespace layer, when
  present) the same call is exact.
- ``none``: uid 0 of the initial user namespace without CAP_SETUID; reported, not capped.
"""

from __future__ import annotations

import contextlib
import os
import resource

__all__ = ["PRIVATE_UID_BASE", "cap_threads", "thread_cap_means"]

PRIVATE_UID_BASE = 0x70000000
"""Above the ranges distributions and systemd hand out (users, dynamic users, containers up to
0x6FFFFFFF); a worker's pid (at most 2^22) is added, so live workers never share one."""


def _status_field(pid: str, name: str) -> list[str] | None:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(name):
                return line.split()[1:]
    return None


def _own_threads() -> int:
    threads = _status_field("self", "Threads:")
    return int(threads[0]) if threads else 1


def _tasks_of_uid(uid: int) -> int:
    """Tasks (threads) whose real uid is ``uid``, across the machine, read from /proc."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        uids = _status_field(entry, "Uid:")
        if uids and int(uids[0]) == uid:
            threads = _status_field(entry, "Threads:")
            total += int(threads[0]) if threads else 1
    return total


def _in_initial_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map") as uid_map:
            return uid_map.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return True  # assume the worst: the exemption applies


def thread_cap_means() -> str:
    """Which means ``cap_threads`` would use on this host (for ``doctor``)."""
    if os.getuid() != 0 or not _in_initial_user_namespace():
        return "uid_count"
    return "private_uid"


def _set_nproc(limit: int) -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
    return limit


def cap_threads(max_threads: int) -> dict[str, object]:
    """Let this worker start at most ``max_threads`` more threads. Must run while the worker
    still has CAP_SETUID (before privileges are dropped) and before any thread is started."""
    if os.getuid() == 0 and os.geteuid() == 0 and _in_initial_user_namespace():
        private = PRIVATE_UID_BASE + os.getpid()
        try:
            os.setresuid(private, 0, 0)
        except OSError as exc:
            return {"means": "none", "max_threads": max_threads, "why": str(exc)}
        limit = _set_nproc(_own_threads() + max_threads)
        return {"means": "private_uid", "uid": private, "limit": limit, "max_threads": max_threads}
    limit = _set_nproc(_tasks_of_uid(os.getuid()) + max_threads)
    return {"means": "uid_count", "limit": limit, "max_threads": max_threads}
