"""Dropping what a process could escalate with: capabilities, dumpability, new privileges.

Workers may be started by a host running as root. Landlock and seccomp still bind root, but
capabilities would let a plugin raise its own rlimits or bypass file permissions, so the
worker drops every capability (bounding, ambient, effective, permitted, inheritable) for
itself. ``PR_SET_DUMPABLE 0`` keeps same-uid siblings from reading its memory through /proc.
No library offers these three prctl/capset calls, so they are made with ctypes here.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal

from autoweave_plugins.sandbox.native import libc

__all__ = [
    "EXIT_ORPHANED",
    "die_with_parent",
    "drop_privileges",
    "no_new_privs_set",
    "watch_parent",
]

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_LAST_CAP_FALLBACK = 40
EXIT_ORPHANED = 125
"""The exit code of a worker that found its host gone when it set its parent-death signal."""

_watched: list[int] = []  # the channel, whose host end closes when the host dies


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


_libc = libc()  # by soname: find_library would run /sbin/ldconfig before the sandbox exists


def _prctl(option: int, arg: int = 0) -> int:
    return int(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0))


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return _LAST_CAP_FALLBACK


def die_with_parent(parent_pid: int) -> bool:
    """Have the kernel SIGKILL this process when its parent (the host) dies, so a host that is
    itself killed leaves no orphan workers. False if the parent is already gone."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    return os.getppid() == parent_pid  # the parent may have died before the prctl


def watch_parent(channel: int) -> None:
    """Have ``drop_privileges`` set the parent-death signal again, and then check through
    ``channel`` (the host's end closes when it dies) that the host is still there.

    The kernel clears that signal on a change of effective uid or gid, which a worker makes
    at assignment (to its own uid, ``namespaces``). Behind a holder that did not matter, as
    the holder's death ended the namespace; a template's worker is its own pid 1, so it must
    carry the signal itself, up to the seccomp filter that keeps it from clearing it."""
    _watched[:] = [channel]


def _rearm_parent_death() -> None:
    if not _watched:
        return
    channel = _watched.pop()
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    poller = select.poll()
    poller.register(channel, select.POLLRDHUP)
    if poller.poll(0):  # the host died between the change of uid and now
        os._exit(EXIT_ORPHANED)


def no_new_privs_set() -> bool:
    return _prctl(PR_GET_NO_NEW_PRIVS) == 1


def drop_privileges() -> dict[str, bool]:
    """Set no_new_privs, make the process undumpable and drop all capabilities; then set the
    parent-death signal again (``watch_parent``), now that no credential changes."""
    report = {"no_new_privs": _prctl(PR_SET_NO_NEW_PRIVS, 1) == 0}
    report["undumpable"] = _prctl(PR_SET_DUMPABLE, 0) == 0
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in range(_last_cap() + 1):
        _prctl(PR_CAPBSET_DROP, cap)  # fails harmlessly without CAP_SETPCAP
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    report["capabilities_dropped"] = _libc.capset(ctypes.byref(header), data) == 0
    if os.geteuid() == 0 and not report["capabilities_dropped"]:
        report["capabilities_dropped"] = False
    _rearm_parent_death()
    return report
