"""Forking from the template so that the child is the host's: ``clone(CLONE_PARENT)``.

A worker forked with ``os.fork()`` would be the template's child: only the template could reap
it, see its exit status or be what its parent-death signal watches. With ``CLONE_PARENT`` the
kernel makes the new process a child of the template's own parent, the host, so the host waits
for it (pidfd, ``waitid``), signals it and captures its exit status exactly as it does for a
worker it spawned, and ``PR_SET_PDEATHSIG`` in the child watches the host. The template keeps
no record of its children and could not reap them if it tried.

No C library call makes that clone, so it is made here as a raw syscall, with what
``os.fork()`` and glibc's ``fork()`` do around it done by hand:

- Python's own bookkeeping, ``PyOS_BeforeFork``/``PyOS_AfterFork_Child``/``_Parent``, which
  ``os.fork()`` calls, is left out on purpose. Every step of it re-creates or releases a lock
  that *another thread* may hold at the fork (the GIL, the import lock, the runtime's mutexes,
  and through the ``os.register_at_fork`` hooks, ``threading``'s and ``logging``'s locks).
  The template has one thread, checked before every clone, which holds the GIL across it
  (``PyDLL``) and no other lock, so none of those can be held, and the child's thread is the
  same thread (same ``pthread_self()``, same thread state). What those hooks do that does
  differ per process, the child does itself (``reseed``): ``random`` is re-seeded and
  ``threading`` learns the main thread's new native id. Measured, the bookkeeping cost every
  worker ~750 KB of pages of its own (the hooks iterate WeakSets and take new locks, which
  writes to objects the template shares) and part of a millisecond.
- glibc's cached thread id: ``struct pthread`` keeps the thread's TID, which ``fork()`` has the
  kernel overwrite in the child (``CLONE_CHILD_SETTID``). The same is asked for here, at the
  offset glibc publishes for debuggers (``_thread_db_pthread_tid``), checked against
  ``gettid()`` before it is trusted. Without it the child's ``pthread_self()`` would carry the
  template's TID, which glibc uses for mutex owners and ``pthread_*`` calls on the main thread.
- The robust-futex list, which the kernel clears at clone, is registered again in the child.
- glibc's internal locks (malloc arenas, stdio): ``fork()`` takes them across the clone
  because another thread may hold one. The template has no other thread, which ``fork()``
  here checks before every clone, so none can be held. The ``pthread_atfork`` handlers of
  native libraries are not run: in the template that is libcrypto (``hashlib``), whose
  OpenSSL 3 handlers do nothing; its random generator notices the new pid by itself.

Only x86_64 and aarch64 (the clone argument order differs) with glibc are supported; anywhere
else ``SiblingFork()`` raises ``OSError`` and the host falls back to spawning workers.
"""

from __future__ import annotations

import ctypes
import errno
import os
import random
import signal
import threading
from typing import NamedTuple

__all__ = ["SiblingFork", "reseed"]

CLONE_PARENT = 0x00008000
CLONE_CHILD_SETTID = 0x01000000


class _Arch(NamedTuple):
    clone: int
    child_tid_arg: int  # which clone argument is the child TID pointer
    gettid: int
    set_robust_list: int
    get_robust_list: int


ARCHES = {
    # x86_64: clone(flags, stack, parent_tid, child_tid, tls)
    "x86_64": _Arch(clone=56, child_tid_arg=3, gettid=186, set_robust_list=273, get_robust_list=274),
    # aarch64 (CLONE_BACKWARDS): clone(flags, stack, parent_tid, tls, child_tid)
    "aarch64": _Arch(clone=220, child_tid_arg=4, gettid=178, set_robust_list=99, get_robust_list=100),
}  # fmt: skip


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


class SiblingFork:
    """``fork()`` for the template: returns the child's pid in the template, 0 in the child."""

    def __init__(self) -> None:
        arch = ARCHES.get(os.uname().machine)
        if arch is None:
            raise OSError(errno.ENOSYS, f"template forks are not supported on {os.uname().machine}")
        self._arch = arch
        try:
            # PyDLL: the GIL stays held across the clone, as os.fork() holds it.
            libc = ctypes.PyDLL("libc.so.6", use_errno=True)
            descriptor = (ctypes.c_uint32 * 3).in_dll(libc, "_thread_db_pthread_tid")
        except (OSError, ValueError) as exc:
            raise OSError(errno.ENOSYS, f"template forks need glibc: {exc}") from None
        libc.syscall.restype = ctypes.c_long
        libc.pthread_self.restype = ctypes.c_void_p
        self._syscall = libc.syscall
        bits, _count, offset = descriptor
        tid_address = (libc.pthread_self() or 0) + offset
        own_tid = int(self._syscall(ctypes.c_long(arch.gettid)))
        if bits != 32 or ctypes.c_int.from_address(tid_address).value != own_tid:
            raise OSError(errno.ENOSYS, "glibc's cached thread id is not where glibc says")
        self._tid_address = tid_address
        head, length = ctypes.c_void_p(), ctypes.c_size_t()
        if self._syscall(
            ctypes.c_long(arch.get_robust_list), 0, ctypes.byref(head), ctypes.byref(length)
        ):
            raise OSError(ctypes.get_errno(), "get_robust_list")
        self._robust = (head.value or 0, length.value)
        args = [ctypes.c_ulong(0)] * 5
        args[arch.child_tid_arg] = ctypes.c_ulong(tid_address)
        self._clone_args = [ctypes.c_long(arch.clone), *args]

    def fork(self, namespaces: int = 0) -> int:
        """Clone this (single-threaded) process as a sibling; raises OSError on failure.

        ``namespaces`` (``CLONE_NEW*`` flags) puts the child in new namespaces at once: with
        ``CLONE_NEWPID`` it is pid 1 of its own PID namespace (``namespaces.adopt``)."""
        flags = CLONE_PARENT | CLONE_CHILD_SETTID | signal.SIGCHLD | namespaces
        self._clone_args[1] = ctypes.c_ulong(flags)
        threads = _threads()
        if threads != 1:
            # Another thread could hold a lock (malloc's, the GIL's waiters) across the clone.
            raise OSError(errno.EDEADLK, f"the template has {threads} threads; it must have 1")
        pid = int(self._syscall(*self._clone_args))
        if pid == 0:
            head, length = self._robust
            self._syscall(
                ctypes.c_long(self._arch.set_robust_list),
                ctypes.c_void_p(head),
                ctypes.c_size_t(length),
            )
            return 0
        failure = ctypes.get_errno()
        if pid < 0:
            raise OSError(failure, f"clone: {os.strerror(failure)}")
        return pid


def reseed() -> None:
    """In the child of a ``SiblingFork``: what ``os.fork()``'s after-fork hooks do that must
    differ per process. ``random`` gets a new seed from the kernel, and ``threading``'s main
    thread its new native id (its ident, ``pthread_self()``, is the same in the child)."""
    random.seed()
    threading.main_thread()._set_native_id()  # type: ignore[attr-defined]
