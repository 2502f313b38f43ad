"""Native libraries by soname, and a tripwire: no program runs in a worker before its sandbox.

``ctypes.util.find_library`` runs ``/sbin/ldconfig -p`` (then ``gcc``, ``cc`` and ``ld`` as
fallbacks) to turn ``"c"`` into ``"libc.so.6"``. pyseccomp calls it at import and landlockpy at
its first syscall, so every new worker used to run a program as the host's user (root) before
any sandbox layer existed: whoever could write ``/sbin/ldconfig`` owned the host. Here the
libraries the sandbox needs are opened by soname, which the dynamic loader resolves through
``/etc/ld.so.cache`` and the system library folders (never granted to a plugin, see ``roots``),
and nothing is ever executed.

``forbid_programs()`` adds an audit hook that refuses every way the stdlib starts a program or
process (``subprocess``, ``os.exec*``, ``os.posix_spawn``, ``os.system``, ``os.fork``...) with
EPERM, the answer seccomp gives once the sandbox is on, so a library's own fallback behaves the
same before and after. It is a tripwire against a new code path, not the boundary: ctypes can
make the raw syscall, which seccomp denies from ``sandbox_complete()`` on, when the hook steps
aside so the kernel answers.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import sys
from collections.abc import Iterator
from typing import Any

__all__ = [
    "SONAMES",
    "forbid_programs",
    "libc",
    "load",
    "own_forks",
    "sandbox_complete",
    "sonames_only",
]

SONAMES = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}
"""What the sandbox's libraries ask ``find_library`` for, answered without ldconfig."""

PROGRAM_EVENTS = frozenset(
    (
        "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
        "os.forkpty", "pty.spawn", "os.startfile",
    )
)  # fmt: skip

_state = {"installed": False, "sandboxed": False, "own_forks": False}


def load(name: str) -> ctypes.CDLL:
    """Open one of ``SONAMES`` (raises OSError if the loader cannot find it)."""
    return ctypes.CDLL(SONAMES[name], use_errno=True)


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library, with errno; the running interpreter's own if the soname is not glibc's."""
    try:
        return load("c")
    except OSError:
        return ctypes.CDLL(None, use_errno=True)  # musl: libc is already in the process


@contextlib.contextmanager
def sonames_only() -> Iterator[None]:
    """While active, ``find_library`` answers from ``SONAMES`` and runs nothing.

    Unknown names get None, as ``find_library`` answers for a library it cannot find.
    """
    original = ctypes.util.find_library

    def by_soname(name: str) -> str | None:
        return SONAMES.get(name)

    ctypes.util.find_library = by_soname
    try:
        yield
    finally:
        ctypes.util.find_library = original


def _refuse_programs(event: str, args: tuple[Any, ...]) -> None:
    if event == "os.fork" and _state["own_forks"]:
        return
    if event in PROGRAM_EVENTS and not _state["sandboxed"]:
        raise PermissionError(
            errno.EPERM, f"{event}: no program may run in a worker before its sandbox is complete"
        )


def forbid_programs() -> None:
    """Install the tripwire in this process (a worker; never the host). Idempotent."""
    if not _state["installed"]:
        sys.addaudithook(_refuse_programs)
        _state["installed"] = True


@contextlib.contextmanager
def own_forks() -> Iterator[None]:
    """While active, ``os.fork`` passes: the namespace layer's own forks (its pid 1 and the
    worker), made before any plugin code exists in the process. Nothing is executed."""
    _state["own_forks"] = True
    try:
        yield
    finally:
        _state["own_forks"] = False


def sandbox_complete() -> None:
    """From here on seccomp denies exec and fork itself; the tripwire steps aside."""
    _state["sandboxed"] = True
