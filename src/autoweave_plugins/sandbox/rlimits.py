"""Resource limits the worker sets on itself: memory, stack, file size, open files, no core.

Memory uses RLIMIT_DATA, not RLIMIT_AS: the address space of a Python process is mostly
file mappings and reserved-but-unused arena space, so an AS cap of a few hundred MB breaks
thread creation long before the heap is large. RLIMIT_DATA (Linux >= 4.7) counts private
writable memory, which is what a heap bomb grows. The limit is the heap the manifest grants
on top of what the blank interpreter already uses. The host's RSS watchdog backs it up.

The main thread's stack is not data to the kernel: it grows on demand, bounded only by
RLIMIT_STACK, which a host may have set to unlimited (a plugin then touched 1.5 GiB below its
stack at a 64 MB heap). It is capped at ``MAX_STACK_BYTES``, or lower if inherited lower.
Threads' stacks are ordinary mappings, counted as data. Threads themselves: threads.py.
"""

from __future__ import annotations

import resource

__all__ = ["MAX_STACK_BYTES", "apply_rlimits", "data_in_use_bytes"]

MAX_STACK_BYTES = 8 << 20
"""The usual Linux default; CPython's recursion limit keeps far below it."""


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
        "stack_bytes": stack,
        "file_bytes": max_file_bytes,
        "open_files": max_open_files,
    }
