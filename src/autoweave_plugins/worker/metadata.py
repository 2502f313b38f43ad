"""``os.chmod``, ``os.fchmod`` and ``os.utime`` in a worker: carried out by the host's broker.

seccomp denies every chmod and utime call to the worker itself, and must: Landlock has no right
for inode metadata, and the kernel lets an owner change the mode or times of any file it owns,
granted or not (a root host's worker "owns" the whole runtime: ``chmod u+s`` on a root-owned
file it can read would be the end of the machine). Yet ordinary code needs them inside its
grants: ``Path.touch()`` on an existing file, ``shutil.copy``/``copy2``/``copytree``/``move``
(copymode, copystat), ``dbm.dumb``.

So the worker opens the file itself (``O_PATH``, no access needed, its own cwd and dir_fd
apply) and hands the descriptor to the host over a dedicated socket; the host checks where the
descriptor's file really is and does the change (``broker/metadata.py``). The descriptor, not a
path, is what crosses, so there is nothing to swap between check and use. The call blocks the
calling thread for one round trip (tens of microseconds), event loop thread included, which is
why the socket is not the asyncio channel.

Failures raise the ``OSError`` the kernel call would have raised (``PermissionError`` with
EPERM outside the grants), with the host's reason as its message. ``chown`` stays refused by
seccomp: a plugin cannot give files away.
"""

from __future__ import annotations

import errno
import math
import os
import socket
import threading
from typing import Any

import msgpack

from autoweave_plugins.worker.explain import NOTE_PREFIX, add_note_once
from autoweave_plugins.worker.refusals import replace

__all__ = ["MetadataClient", "install_metadata"]

REPLY_BYTES = 1024
TIMEOUT = 10.0
NS = 1_000_000_000


def _ns(value: Any) -> int:
    if isinstance(value, int):
        return value * NS
    if isinstance(value, float) and math.isfinite(value):
        return math.floor(value * NS)
    raise TypeError("utime: 'times' must be a tuple of two numbers")


def _times(times: Any, ns: Any) -> list[int] | None:
    """[atime_ns, mtime_ns], or None for "now", validated as ``os.utime`` does."""
    if times is not None and ns is not None:
        raise ValueError("utime: you may specify either 'times' or 'ns' but not both")
    if times is not None:
        if not isinstance(times, tuple) or len(times) != 2:
            raise TypeError("utime: 'times' must be either a tuple of two ints or None")
        return [_ns(times[0]), _ns(times[1])]
    if ns is not None:
        if not isinstance(ns, tuple) or len(ns) != 2 or not all(type(v) is int for v in ns):
            raise TypeError("utime: 'ns' must be a tuple of two ints")
        return [ns[0], ns[1]]
    return None


class MetadataClient:
    """The worker's end of the broker socket: one request at a time, from any thread."""

    def __init__(self, sock: socket.socket) -> None:
        sock.settimeout(TIMEOUT)
        self.sock: socket.socket | None = sock
        self.lock = threading.Lock()

    def request(self, fd: int, op: list[Any], shown: object) -> None:
        with self.lock:
            if self.sock is None:
                raise OSError(errno.EIO, "the host's metadata broker is gone", shown)
            try:
                socket.send_fds(self.sock, [msgpack.packb(op)], [fd])
                reply = msgpack.unpackb(self.sock.recv(REPLY_BYTES))
            except BaseException:
                # A late answer would be read as the next request's: never use it again.
                self.sock.close()
                self.sock = None
                raise
        if reply == [0]:
            return
        code, message = reply if isinstance(reply, list) and len(reply) == 2 else (errno.EIO, "")
        error = OSError(int(code), str(message), shown)
        if code in (errno.EPERM, errno.EACCES):
            add_note_once(error, f"{NOTE_PREFIX} (metadata broker): {message}")
        raise error

    def on_path(
        self, path: Any, op: list[Any], *, dir_fd: int | None, follow_symlinks: bool
    ) -> None:
        if isinstance(path, int):
            self.request(path, op, path)
            return
        flags = os.O_PATH | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
        fd = os.open(path, flags, dir_fd=dir_fd)
        try:
            self.request(fd, op, path)
        finally:
            os.close(fd)


def install_metadata(client: MetadataClient) -> None:
    """Replace ``os.chmod``, ``os.fchmod`` and ``os.utime`` with calls to the broker."""

    def chmod(
        path: Any, mode: int, *, dir_fd: int | None = None, follow_symlinks: bool = True
    ) -> None:
        if not isinstance(mode, int):
            raise TypeError(f"chmod: mode must be an integer, not {type(mode).__name__}")
        if not follow_symlinks:  # as CPython on Linux, where no lchmod exists
            raise NotImplementedError("chmod: follow_symlinks unavailable on this platform")
        client.on_path(path, ["chmod", mode], dir_fd=dir_fd, follow_symlinks=follow_symlinks)

    def fchmod(fd: int, mode: int) -> None:
        if not isinstance(fd, int) or not isinstance(mode, int):
            raise TypeError("fchmod: fd and mode must be integers")
        client.request(fd, ["chmod", mode], fd)

    def utime(
        path: Any,
        times: Any = None,
        *,
        ns: Any = None,
        dir_fd: int | None = None,
        follow_symlinks: bool = True,
    ) -> None:
        op = ["utime", _times(times, ns)]
        client.on_path(path, op, dir_fd=dir_fd, follow_symlinks=follow_symlinks)

    replace(os, "chmod", chmod)
    replace(os, "fchmod", fchmod)
    replace(os, "utime", utime)
