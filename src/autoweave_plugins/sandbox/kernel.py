"""The Linux calls the sandbox needs and Python 3.11 lacks, made through ctypes.

Python 3.11 has no ``os.unshare``, ``os.setns``, ``mount`` or ``pivot_root``. libc is loaded by
its soname (never ``ctypes.util.find_library``, which runs ``ldconfig``: a program executed
before the sandbox is complete), falling back to the symbols already in this process. Calls
that glibc does not wrap (``pivot_root``, ``mount_setattr``; Landlock's and ``seccomp``'s for
their layers, through ``syscall``) go through ``syscall(2)`` with the number for this
architecture; on an architecture missing from the table the layer reports
itself unavailable rather than guessing.

Every wrapper raises ``OSError`` with the kernel's errno and the call named, so a failure in
the world's construction says which step and which path.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal

from autoweave_plugins.sandbox.native import libc

__all__ = [
    "AT_RECURSIVE",
    "CLONE_NEWIPC",
    "CLONE_NEWNET",
    "CLONE_NEWNS",
    "CLONE_NEWPID",
    "CLONE_NEWUSER",
    "CLONE_NEWUTS",
    "MNT_DETACH",
    "MOUNT_ATTR_NODEV",
    "MOUNT_ATTR_NOEXEC",
    "MOUNT_ATTR_NOSUID",
    "MOUNT_ATTR_RDONLY",
    "MS_BIND",
    "MS_NODEV",
    "MS_NOEXEC",
    "MS_NOSUID",
    "MS_PRIVATE",
    "MS_REC",
    "missing_syscall",
    "mount",
    "mount_setattr",
    "pivot_root",
    "set_dumpable",
    "set_pdeathsig",
    "sethostname",
    "umount2",
    "unshare",
]

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
AT_FDCWD = -100
AT_RECURSIVE = 0x8000

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4

# pivot_root has an old per-architecture number; calls added since Linux 5.1 share one number
# on every architecture (mount_setattr: 442, Linux 5.12).
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "loongarch64": 41, "ppc64le": 203}
_MOUNT_SETATTR = 442


_libc = libc()
_libc.mount.argtypes = (
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


def _check(result: int, call: str, path: str | None = None) -> None:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{call}: {os.strerror(code)}", path)


def syscall(call: str, number: int, *args: object) -> int:
    """``syscall(number, *args)``; raises OSError naming ``call`` when the kernel refuses."""
    result = int(_libc.syscall(ctypes.c_long(number), *args))
    _check(result, call)
    return result


def _path(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def missing_syscall() -> str | None:
    """Why this kernel or architecture cannot build a world, or None if it can.

    pivot_root needs a known number here; mount_setattr (Linux 5.12) is asked with an empty
    path: ENOSYS means absent, any other refusal means present.
    """
    if os.uname().machine not in _PIVOT_ROOT:
        return f"no pivot_root number known for {os.uname().machine}"
    result = _libc.syscall(
        ctypes.c_long(_MOUNT_SETATTR), ctypes.c_int(-1), ctypes.c_char_p(b""),
        ctypes.c_uint(0), None, ctypes.c_size_t(0),
    )  # fmt: skip
    if result < 0 and ctypes.get_errno() == errno.ENOSYS:
        return "the kernel has no mount_setattr (Linux 5.12 or later is needed)"
    return None


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    result = _libc.mount(
        _path(source), os.fsencode(target), _path(fstype), flags, data.encode() or None
    )
    _check(result, f"mount {fstype or 'bind'} {source or ''} on", target)


def umount2(target: str, flags: int) -> None:
    _check(_libc.umount2(os.fsencode(target), flags), "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    number = _PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(errno.ENOSYS, f"pivot_root: unknown syscall number on {os.uname().machine}")
    result = _libc.syscall(
        ctypes.c_long(number), ctypes.c_char_p(os.fsencode(new_root)), os.fsencode(put_old)
    )
    _check(result, "pivot_root", new_root)


def mount_setattr(target: str, attr_set: int, *, recursive: bool) -> None:
    """Set mount attributes (read-only, nosuid, ...) on ``target``, and its submounts if asked.

    Unlike a ``MS_REMOUNT|MS_BIND`` remount, this only adds flags: flags the kernel locked on
    a mount copied into a user namespace are kept without having to be restated.
    """
    attr = _MountAttr(attr_set, 0, 0, 0)
    result = _libc.syscall(
        ctypes.c_long(_MOUNT_SETATTR),
        ctypes.c_int(AT_FDCWD),
        ctypes.c_char_p(os.fsencode(target)),
        ctypes.c_uint(AT_RECURSIVE if recursive else 0),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(result, "mount_setattr", target)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def set_pdeathsig(sig: int = signal.SIGKILL) -> None:
    _check(_libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(sig), 0, 0, 0), "prctl(PDEATHSIG)")


def set_dumpable(dumpable: bool) -> None:
    _check(_libc.prctl(_PR_SET_DUMPABLE, ctypes.c_ulong(int(dumpable)), 0, 0, 0), "prctl(DUMPABLE)")
