"""The template (zygote): ``python -I -m autoweave_plugins.worker.template CTL HOST_PID WORLD``.

Started by the host like a blank worker (clean interpreter, empty environment, new session),
it does once what every worker would otherwise do for itself: imports the worker runtime, the
SDK and the standard modules plugins commonly use, and the plugin-independent sandbox
preparation (libseccomp and Landlock loaded by soname) and the plan of the base of every
worker's view (``WORLD``, as for a spawned worker: ``world_entry``). Then it freezes its objects out of
the garbage collector's reach (``gc.freeze``, so collections in a child do not write to, and
so copy, every page the template filled) and does nothing but fork on request.

The rules that keep a fork clean: the template never runs plugin code and never receives a
secret (a request carries three file descriptors and nothing else); it has one thread and no
event loop, and waits for requests with a plain blocking ``recvmsg``, so no lock, epoll set or
buffered data exists to be inherited half-way; it refuses to run programs (``forbid_programs``).

Control protocol, over a private ``SOCK_SEQPACKET`` pair (one message per datagram):

- template → host, once: ``{"ready": {"pid", "files": [[path, mtime_ns, size], ...]}}`` (the
  files of every module it loaded, which the host re-checks to notice an upgrade on disk), or
  ``{"error": text}`` if it cannot serve.
- host → template: ``b"fork"`` with SCM_RIGHTS ``[channel, stdout, stderr]`` for the new worker.
- template → host, one per request, in order: ``{"pid": n}`` or ``{"error": text}``.

The child closes the control socket, takes the passed descriptors as its channel and stdio,
starts a process group of its own, asks to die with the host, and from there lives exactly like a
spawned worker (``serve_blank``): READY, ASSIGN, the sandbox, the plugin.
"""

from __future__ import annotations

import array
import fcntl
import functools
import gc
import importlib
import os
import select
import socket
import sys
import traceback
from typing import Any

import msgpack

from autoweave_plugins.sandbox import Prepared, native, prepare
from autoweave_plugins.sandbox.cloned import clone_flags, end_on_signals
from autoweave_plugins.sandbox.namespaces import Namespaces, privileged
from autoweave_plugins.sandbox.privileges import die_with_parent, watch_parent
from autoweave_plugins.sandbox.world import NAMESPACES, BasePlan, WorldOptions
from autoweave_plugins.worker.__main__ import ready_frame, serve_blank
from autoweave_plugins.worker.sibling import SiblingFork, reseed
from autoweave_plugins.worker.world_entry import Opened, Opener, adopt_world, open_world, plan

__all__ = ["COMMON_MODULES", "FORK_REQUEST", "loaded_files", "main", "warm"]

COMMON_MODULES = (
    "asyncio", "base64", "collections", "copy", "csv", "dataclasses", "datetime", "decimal",
    "enum", "functools", "gzip", "hashlib", "hmac", "html", "itertools", "json", "logging",
    "math", "pathlib", "random", "re", "secrets", "statistics", "string", "struct", "textwrap",
    "time", "typing", "urllib.parse", "uuid", "zlib",
)  # fmt: skip
"""Imported once in the template so that plugins find them loaded: the allow-listed modules
plugin code commonly imports. Most come with the runtime anyway; the rest (hashlib, uuid,
decimal, statistics, secrets, html, csv, gzip: ~2 MB shared, 50-60 ms of imports) would be
paid by every plugin that imports one."""

FORK_REQUEST = b"fork"
FDS_PER_FORK = 3  # channel, stdout, stderr
CHANNEL_FD = 3


def warm() -> Prepared:
    """Everything the template does before it forks, beyond importing this module (which
    brings the runtime and the SDK); the benchmark's bare fork warms up the same way."""
    for name in COMMON_MODULES:
        importlib.import_module(name)
    return prepare()


def loaded_files() -> list[list[Any]]:
    """[path, mtime_ns, size] of the interpreter and every module file loaded now."""
    paths = {os.path.realpath(sys.executable)}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str):
            paths.add(path)
    files: list[list[Any]] = []
    for path in sorted(paths):
        try:
            status = os.stat(path)
        except OSError:
            continue
        files.append([path, status.st_mtime_ns, status.st_size])
    return files


def _send(ctl: socket.socket, message: dict[str, Any]) -> None:
    ctl.send(msgpack.packb(message))


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


class _Forking:
    """What every child starts from, made once: the host, the world options, the plan of the
    view's base, the sandbox preparation for pid 1 (each worker's pid in its own PID
    namespace), and how to clone a child straight into its namespaces."""

    def __init__(self, host_pid: int, options: WorldOptions) -> None:
        self.host_pid = host_pid
        self.host = os.pidfd_open(host_pid)  # readable once the host has exited
        self.options = options
        self.base = plan(options)
        self.host_ids = (os.geteuid(), os.getegid())
        self.flags = clone_flags(options, privileged()) if self.base else None
        self.prepared = prepare(pid=1) if self.flags is not None else None

    def fork(self, sibling: SiblingFork) -> tuple[int, Opener]:
        """Clone a child, in its own namespaces if the kernel allows; returns its pid, and in
        the child 0 and how it enters its world."""
        base = self.base
        if self.flags is not None and base is not None:
            try:
                pid = sibling.fork(self.flags)
            except OSError as exc:  # the kernel refused: every namespace lost, with why
                lost = dict.fromkeys(NAMESPACES, f"clone refused: {exc.strerror or exc}")
                opener = functools.partial(_without_namespaces, base, lost, self.host_ids)
                return sibling.fork(), opener
            return pid, functools.partial(adopt_world, base, self.host_ids)
        return sibling.fork(), functools.partial(open_world, self.options, base)

    def host_gone(self) -> bool:
        return bool(select.select([self.host], [], [], 0)[0])


def _without_namespaces(base: BasePlan, lost: dict[str, str], host_ids: tuple[int, int]) -> Opened:
    return Namespaces((), lost, privileged(), host_ids[0], base)


def _become_worker(ctl: socket.socket, fds: list[int], forking: _Forking, opener: Opener) -> int:
    """In the child: take the passed descriptors, detach from the template, serve as a worker.

    A child cloned into its own PID namespace is its pid 1, and serves there itself
    (``sandbox/cloned.py``). It reports READY first, on the channel as passed: each step a
    child takes costs it pages to copy, about 0.5 ms before READY for the ones below, which
    can as well overlap with the host getting its assignment ready.
    """
    channel, stdout, stderr = fds
    # A process group of its own, so that a signal to the template's group misses it. Not a
    # session: the template's has no controlling terminal already, and setsid() costs 1-8 ms
    # here (it creates a scheduler autogroup), more than the whole fork.
    os.setpgid(0, 0)
    os.write(channel, ready_frame())  # a few bytes on a new socket: never a short write
    ctl.close()  # through its object, so nothing later closes a reused descriptor number
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    os.close(stdout)
    os.close(stderr)
    # PDEATHSIG, then whether the host is still there: asked of its pidfd, because in a PID
    # namespace of its own the child's getppid() is 0.
    die_with_parent(forking.host_pid)
    if forking.host_gone():
        return 0
    os.close(forking.host)
    if channel != CHANNEL_FD:  # the lowest free number, as a spawned worker has it
        moved = fcntl.fcntl(channel, fcntl.F_DUPFD, CHANNEL_FD)
        os.close(channel)
        channel = moved
    sock = socket.socket(fileno=channel)
    settled = functools.partial(_settle, channel, forking, opener)
    return serve_blank(sock, settled, forking.prepared, announced=True)


def _settle(channel: int, forking: _Forking, opener: Opener) -> Opened:
    """In the child, once READY is sent: what need not delay it, then its world."""
    if os.getpid() == 1:
        end_on_signals()
    watch_parent(channel)  # nothing holds a world for it: its own PDEATHSIG must survive
    world = forking.options.to_arg()
    sys.argv[:] = [serve_blank.__code__.co_filename, str(channel), str(forking.host_pid), world]
    reseed()  # before anything of the worker's may draw from random
    return opener()


def serve_forks(ctl: socket.socket, sibling: SiblingFork, forking: _Forking) -> int:
    """Fork on each request until the host closes the socket. Returns in the child too: with
    the child's exit code, so it unwinds and exits through the interpreter like a spawned one."""
    while True:
        fds = array.array("i")
        message, ancillary, flags, _address = ctl.recvmsg(
            64, socket.CMSG_SPACE(FDS_PER_FORK * fds.itemsize)
        )
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        if not message:
            _close(list(fds))
            return 0
        if message != FORK_REQUEST or len(fds) != FDS_PER_FORK or flags & socket.MSG_CTRUNC:
            _close(list(fds))
            _send(ctl, {"error": f"bad request: {len(fds)} descriptors, {len(message)} bytes"})
            continue
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            pid, opener = forking.fork(sibling)
        except OSError as exc:
            _close(list(fds))
            _send(ctl, {"error": str(exc)})
            continue
        if pid == 0:
            return _become_worker(ctl, list(fds), forking, opener)
        _close(list(fds))
        _send(ctl, {"pid": pid})


def main() -> int:
    native.forbid_programs()  # as in a spawned worker: no program runs here, ever
    host_pid = int(sys.argv[2])
    if not die_with_parent(host_pid):
        return 0
    ctl = socket.socket(fileno=int(sys.argv[1]))
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    try:
        warm()
        options = WorldOptions.from_arg(sys.argv[3]) if len(sys.argv) > 3 else WorldOptions(False)
        forking = _Forking(host_pid, options)
        sibling = SiblingFork()
        files = loaded_files()
    except Exception as exc:
        _send(ctl, {"error": "".join(traceback.format_exception_only(exc)).strip()})
        return 1
    gc.collect()
    gc.freeze()
    _send(ctl, {"ready": {"pid": os.getpid(), "files": files}})
    return serve_forks(ctl, sibling, forking)


if __name__ == "__main__":
    sys.exit(main())
