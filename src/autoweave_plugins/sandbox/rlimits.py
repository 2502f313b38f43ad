"""Resource limits the worker sets on itself: memory, stack, file size, open files, no core.

Memory uses RLIMIT_DATA, not RLIMIT_AS: the address space of a Python process is mostly
file mappings and reserved-but-unused arena space, so an AS cap of a few hundred MB breaks
thread creation long before the heap is large. RLIMIT_DATA (Linux >= 4.7) counts private
writable memory, which is what a heap bomb grows. The limit is the heap the manifest grants
on top of what the blank interpreter already uses. The host's RSS watchdog backs it up.

The main thread's stack is not data to the kernel: it grows on demand, bounded only by
RLIMIT_STACK, which a host may have set to unlimited (a plugin then touched 1.5 GiB below its
stack at a 64 MB heap). It is capped at ``MAX_STACK_BYTES``, or lower if inherited lower.
Threads themselves: threads.py.

Other threads' stacks are ordinary private mappings, so RLIMIT_DATA counts each one whole,
touched or not. glibc sizes them from RLIMIT_STACK as it was at process start (8 MiB, or 2 MiB
when unlimited), so 32 threads took the whole default heap of 256 MB and
``ThreadPoolExecutor(32)`` failed with "can't start new thread". Here every new thread gets
``THREAD_STACK_BYTES`` instead: Python's (``threading.stack_size``) and those C libraries start
(``pthread_setattr_default_np``). 2 MiB is measured, not guessed: recursing to the default
recursion limit (1000) through a C call that is heavy on the stack (``sorted(key=...)``) needs
between 1.5 and 2 MiB (a thread crashes with SIGSEGV below that); ``map`` or ``__init__``
recursion needs under 1 MiB. Stacks still count in ``max_heap_mb``: RLIMIT_DATA cannot tell a
stack from a heap, and any allowance for stacks would be heap for a plugin that starts no
thread. So each thread costs 2 MiB of the budget: ``ThreadPoolExecutor(32)`` takes 64 MB of
the default 256 MB (it took all of it before), and a plugin that wants many threads asks for
more heap.
"""

from __future__ import annotations

import ctypes
import resource
import threading

from autoweave_plugins.sandbox.native import libc

__all__ = [
    "MAX_STACK_BYTES",
    "THREAD_STACK_BYTES",
    "apply_rlimits",
    "data_in_use_bytes",
    "size_thread_stacks",
]

MAX_STACK_BYTES = 8 << 20
"""The usual Linux default; CPython's recursion limit keeps far below it."""
THREAD_STACK_BYTES = 2 << 20
"""The stack of every thread but the main one (see the module docstring)."""
PTHREAD_ATTR_BYTES = 128  # sizeof(pthread_attr_t) is 56 on x86_64 and 64 on aarch64


def size_thread_stacks(size: int = THREAD_STACK_BYTES) -> bool:
    """Give threads started from now on a stack of ``size`` bytes; True if C threads get it too.

    Python threads always do. C libraries that start their own threads use glibc's default
    attributes, which only ``pthread_setattr_default_np`` (glibc >= 2.18) changes.
    """
    threading.stack_size(size)
    try:
        c = libc()
        attr = ctypes.create_string_buffer(PTHREAD_ATTR_BYTES)
        if c.pthread_attr_init(attr) != 0:
            return False
        try:
            return bool(
                c.pthread_attr_setstacksize(attr, ctypes.c_size_t(size)) == 0
                and c.pthread_setattr_default_np(attr) == 0
            )
        finally:
            c.pthread_attr_destroy(attr)
    except AttributeError:  # a C library without the call (musl before 1.1.21)
        return False


def data_in_use_bytes() -> int:
    """Private writable memory in use now (VmData), or 0 when /proc is unreadable."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _lower(limit: int, value: int) -> int:
    _soft, hard = resource.getrlimit(limit)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(limit, (value, value))
    return value


def apply_rlimits(*, max_heap_mb: int, max_file_bytes: int, max_open_files: int) -> dict[str, int]:
    """Set the limits (soft = hard, so the plugin cannot raise them) and return what was set."""
    data = data_in_use_bytes() + max_heap_mb * 1024 * 1024
    _lower(resource.RLIMIT_DATA, data)
    _lower(resource.RLIMIT_FSIZE, max_file_bytes)
    _lower(resource.RLIMIT_NOFILE, max_open_files)
    _lower(resource.RLIMIT_CORE, 0)
    soft, _hard = resource.getrlimit(resource.RLIMIT_STACK)
    inherited = MAX_STACK_BYTES if soft == resource.RLIM_INFINITY else soft
    stack = _lower(resource.RLIMIT_STACK, min(inherited, MAX_STACK_BYTES))
    return {
        "data_bytes": data,
        "thread_stack_bytes": THREAD_STACK_BYTES,
        "stack_bytes": stack,
        "file_bytes": max_file_bytes,
        "open_files": max_open_files,
    }
