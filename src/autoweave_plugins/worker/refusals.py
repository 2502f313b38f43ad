"""Wrappers that let the kernel answer, then say what its answer means (``explain.py``).

Each wrapper calls the real function: the kernel layers still decide, and the security tests
still exercise them through these very calls. Only when the call fails the way a sandbox
refusal does does the wrapper add the note (or, for ``os.system``, whose refusal glibc hides in
a status of 32512, raise the error it should have raised). What is wrapped:

- files: ``open``, ``os.open`` and the ``os`` calls that create, list, move or remove;
- processes: ``os.fork``/``forkpty``/``system``/``posix_spawn*``/``exec*``, ``fork_exec``
  behind ``subprocess`` and ``multiprocessing``, and, when first imported, ``multiprocessing``'s
  semaphores and processes and ``ProcessPoolExecutor`` (refused outright: it cannot start);
- network: ``socket.getaddrinfo`` is where clients name the host they want (``socket``,
  ``urllib.request``, ``http.client``, ``httpx``, ``requests``, ``asyncio.open_connection``).
  A name never resolves in a worker (no resolver is reachable), and that failure becomes a
  ``PermissionDenied`` naming the host and the outbound pattern to declare; an address literal
  resolves, and the ``socket()`` seccomp then refuses gets the same note.

Wrapping is not a boundary and need not be complete: ``annotate`` at the hook boundary explains
what reaches it unexplained, and the kernel refuses regardless.
"""

from __future__ import annotations

import builtins
import errno
import functools
import importlib.abc
import importlib.machinery
import io
import os
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from autoweave_plugins.errors import PermissionDenied
from autoweave_plugins.sandbox.imports import PROCESS_REFUSAL
from autoweave_plugins.worker.explain import REFUSED, Explainer, add_note_once

__all__ = ["install_refusals"]

Function = Callable[..., Any]
SYSTEM_FAILED = 127 << 8
"""What glibc's ``system()`` returns when it could not start the shell."""
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
FILE_CALLS = {
    "listdir": False, "scandir": False, "mkdir": True, "rmdir": True, "remove": True,
    "unlink": True, "rename": True, "replace": True, "link": True, "truncate": True,
}  # fmt: skip
"""``os`` calls wrapped for filesystem notes, and whether each one writes."""
SPECIAL_FILE_CALLS = ("symlink", "mkfifo", "mknod")
"""Calls that make what Landlock grants no plugin (``LANDLOCK_ACCESS_FS_MAKE_SYM``...)."""
PROCESS_CALLS = ("fork", "forkpty", "posix_spawn", "posix_spawnp", "execv", "execve")
OWNER_CALLS = ("chown", "lchown", "fchown")
OWNER_NOTE = (
    "autoweave sandbox (seccomp): a plugin cannot change a file's owner; files it makes "
    "belong to the host's user"
)
SUPPORT_SETS = ("supports_dir_fd", "supports_fd", "supports_follow_symlinks")


def replace(module: ModuleType | type, name: str, wrapper: Function) -> None:
    """Put ``wrapper`` in place of ``module.name``, keeping it in ``os.supports_*``."""
    original = getattr(module, name)
    functools.update_wrapper(wrapper, original)
    setattr(module, name, wrapper)
    if module is os:
        for set_name in SUPPORT_SETS:
            supported = getattr(os, set_name)
            if original in supported:
                supported.add(wrapper)


def _argument(args: Sequence[Any], kwargs: dict[str, Any], index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _wrap_files(explainer: Explainer) -> None:
    def noted(exc: OSError, writes: bool) -> None:
        note = explainer.file_note(exc, writes)
        if note is not None:
            add_note_once(exc, note)

    def wrap(
        original: Function, writes: Callable[[Sequence[Any], dict[str, Any]], bool]
    ) -> Function:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return original(*args, **kwargs)
            except OSError as exc:
                noted(exc, writes(args, kwargs))
                raise

        return wrapper

    def open_writes(args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
        mode = _argument(args, kwargs, 1, "mode") or "r"
        return isinstance(mode, str) and any(flag in mode for flag in "wax+")

    def os_open_writes(args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
        flags = _argument(args, kwargs, 1, "flags") or 0
        return isinstance(flags, int) and bool(flags & WRITE_FLAGS)

    opener = wrap(io.open, open_writes)
    functools.update_wrapper(opener, io.open)
    builtins.open = io.open = opener
    replace(os, "open", wrap(os.open, os_open_writes))
    for name, writes in FILE_CALLS.items():
        if hasattr(os, name):
            replace(os, name, wrap(getattr(os, name), _constant(writes)))
    for name in OWNER_CALLS:
        replace(os, name, _noting(getattr(os, name), OWNER_NOTE))
    for name in SPECIAL_FILE_CALLS:
        replace(os, name, _special(getattr(os, name), explainer))


def _special(original: Function, explainer: Explainer) -> Function:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except OSError as exc:
            made = exc.filename2 if exc.filename2 is not None else exc.filename
            if exc.errno in REFUSED and isinstance(made, str | bytes):
                add_note_once(exc, explainer.special_file(os.fsdecode(made)))
            raise

    return wrapper


def _constant(writes: bool) -> Callable[[Sequence[Any], dict[str, Any]], bool]:
    def judge(args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
        return writes

    return judge


def _refusal(what: str) -> PermissionError:
    """The error for a process start refused before or instead of the kernel call: its message
    already says everything a note would."""
    return PermissionError(errno.EPERM, f"{what}: {PROCESS_REFUSAL}")


def _noting(original: Function, note: str, absent: bool = False) -> Function:
    """``original``, with ``note`` on the refusals (EPERM, EACCES, ENOSYS) it raises; and on
    ENOENT if ``absent``, for what a worker's own view does not hold (``/dev/shm``)."""
    refusals = (*REFUSED, errno.ENOSYS, *((errno.ENOENT,) if absent else ()))

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except OSError as exc:
            if exc.errno in refusals:
                add_note_once(exc, note)
            raise

    return wrapper


def _noting_processes(original: Function, what: str) -> Function:
    return _noting(original, Explainer.processes(what))


def _refuse_process_pool(module: ModuleType) -> None:
    def refused_init(self: object, *args: Any, **kwargs: Any) -> None:
        raise _refusal("ProcessPoolExecutor")

    replace(module.ProcessPoolExecutor, "__init__", refused_init)


def _note_multiprocessing(module: ModuleType) -> None:
    semaphores = getattr(module, "SemLock", None)
    if semaphores is not None:
        noted = _noting(semaphores.__init__, Explainer.semaphores(), absent=True)
        replace(semaphores, "__init__", noted)
    processes = getattr(module, "BaseProcess", None)
    if processes is not None:
        replace(processes, "start", _noting_processes(processes.start, "multiprocessing"))


FIXUPS: dict[str, Callable[[ModuleType], None]] = {
    "concurrent.futures.process": _refuse_process_pool,
    "multiprocessing.synchronize": _note_multiprocessing,
    "multiprocessing.process": _note_multiprocessing,
}
"""Modules fixed up when imported (by anyone), or at once if already imported."""


class _FixupFinder(importlib.abc.MetaPathFinder):
    """Finds the ``FIXUPS`` modules as usual, and fixes each one up after it has run."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        fixup = FIXUPS.get(name)
        if fixup is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = spec.loader if spec is not None else None
        if spec is None or not isinstance(loader, importlib.machinery.SourceFileLoader):
            return spec

        def exec_module(module: ModuleType) -> None:
            importlib.machinery.SourceFileLoader.exec_module(loader, module)
            fixup(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _wrap_processes() -> None:
    def system(command: Any) -> int:
        status = int(original_system(command))
        if status == SYSTEM_FAILED:  # no shell can start in a worker: this is the refusal
            raise _refusal("os.system")
        return status

    original_system = os.system
    replace(os, "system", system)
    for name in PROCESS_CALLS:
        if hasattr(os, name):
            replace(os, name, _noting_processes(getattr(os, name), f"os.{name}"))
    import _posixsubprocess  # noqa: PLC0415  (imported by subprocess already; no cost)

    replace(
        _posixsubprocess, "fork_exec", _noting_processes(_posixsubprocess.fork_exec, "subprocess")
    )
    subprocess = sys.modules.get("subprocess")
    if subprocess is not None:
        subprocess._fork_exec = _posixsubprocess.fork_exec  # type: ignore[attr-defined]
    for name, fixup in FIXUPS.items():
        if name in sys.modules:
            fixup(sys.modules[name])
    sys.meta_path.insert(0, _FixupFinder())


def _wrap_network() -> None:
    original_getaddrinfo = socket.getaddrinfo
    original_init = socket.socket.__init__
    last = threading.local()  # the host a thread looked up last: what its socket() was for

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            found = original_getaddrinfo(host, port, *args, **kwargs)
        except OSError as exc:  # no resolver is reachable from a worker: DNS always fails
            if host is None:
                raise
            note = Explainer.network(host, port)
            raise PermissionDenied("network.outbound", note.partition(": ")[2]) from exc
        last.target = (host, port)  # an address literal resolves without the network
        return found

    def init(self: socket.socket, *args: Any, **kwargs: Any) -> None:
        try:
            original_init(self, *args, **kwargs)
        except OSError as exc:
            if exc.errno in REFUSED and _argument(args, kwargs, 3, "fileno") is None:
                host, port = getattr(last, "target", (None, None))
                add_note_once(exc, Explainer.network(host, port))
            raise

    replace(socket, "getaddrinfo", getaddrinfo)
    replace(socket.socket, "__init__", init)


def install_refusals(explainer: Explainer) -> None:
    """Install every wrapper in this (sandboxed) process, before plugin code is imported."""
    _wrap_files(explainer)
    _wrap_processes()
    _wrap_network()
