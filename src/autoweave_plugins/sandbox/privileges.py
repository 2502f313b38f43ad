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
import signal

from autoweave_plugins.sandbox.native import libc

__all__ = ["die_with_parent", "drop_privileges", "no_new_privs_set"]

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_LAST_CAP_FALLBACK = 40


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


def no_new_privs_set() -> bool:
    return _prctl(PR_GET_NO_NEW_PRIVS) == 1


def drop_privileges() -> dict[str, bool]:
    """Set no_new_privs, make the process undumpable and drop all capabilities."""
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
    return report
