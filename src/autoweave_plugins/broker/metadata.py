"""The host's chmod/utime broker: mode and time changes for files inside a plugin's write grants.

The worker may not change inode metadata itself (see ``worker/metadata.py`` for why), so it
sends the host a descriptor of the file, opened with ``O_PATH``, and the operation. The host
judges the descriptor, not a path the plugin wrote:

- its path as the kernel reports it (``/proc/self/fd``) must lie strictly inside one of the
  plugin's writable grants (a directory's own entries, never the grant itself) or be a writable
  file grant, or lie in the worker's private tmp; grants are taken only where their path has
  no symlink, as Landlock takes them. That path must still name the same inode (a file deleted
  or moved since, or a mount the host does not see, is refused);
- or it lies on the worker's own ``/tmp``, when it has a world: a tmpfs that exists only in
  its mount namespace, so its path means nothing on the host. The host finds that tmpfs's
  device itself, through the worker's root as ``/proc`` shows it (``private_tmp_device``);
  nothing else on the machine is on that device;
- Landlock keeps the plugin from moving or linking a file into a grant from anywhere else, so a
  file found inside one is the plugin's own; a file with more than one name is refused all the
  same, in case another name lies outside (a link made by someone else);
- setuid and setgid bits are never set: the host may be root, and the plugin writes the file's
  contents.

Then the host changes the file through the same descriptor. Every request is bounded: one
datagram of at most ``MAX_REQUEST`` bytes with one descriptor (anything more is closed unread),
``rate`` requests a second per worker (reading pauses when the bucket is empty), and a few
system calls each.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import socket
import stat
from collections.abc import Callable, Iterable
from typing import Any

import msgpack

from autoweave_plugins.ratelimit import TokenBucket
from autoweave_plugins.sandbox.namespaces import worker_pid
from autoweave_plugins.sandbox.native import libc

__all__ = ["MetadataService", "private_tmp_device", "writable_roots"]

log = logging.getLogger(__name__)

MAX_REQUEST = 256
MAX_PER_WAKE = 64
DEFAULT_RATE = 2000.0
AT_EMPTY_PATH = 0x1000
SETID_BITS = stat.S_ISUID | stat.S_ISGID
Reply = list[Any]


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


def writable_roots(filesystem: Iterable[tuple[str, str]], tmp_dir: str = "") -> tuple[str, ...]:
    """The grants the broker may change things in: writable, and free of symlinks."""
    roots = [p for p, mode in filesystem if mode in ("write", "readwrite")]
    roots += [tmp_dir] if tmp_dir else []
    return tuple(p for p in roots if os.path.realpath(p) == p)


def private_tmp_device(outer_pid: int) -> int | None:
    """The device of the private ``/tmp`` in the world of the worker the host started as
    ``outer_pid``, read by the host; None when it has no mount namespace of its own (or the
    host may not look into it: an unprivileged host cannot see a non-dumpable worker's root).
    """
    inner = worker_pid(outer_pid)
    try:
        if os.readlink(f"/proc/{inner}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
            return None
        device = os.stat(f"/proc/{inner}/root/tmp").st_dev
        return None if device == os.stat("/tmp").st_dev else device
    except OSError:
        return None


def _refused(message: str, code: int = errno.EPERM) -> Reply:
    return [code, message]


class MetadataService:
    """Serves one worker's broker socket on the host's event loop until closed."""

    def __init__(
        self,
        sock: socket.socket,
        roots: Iterable[str],
        *,
        rate: float = DEFAULT_RATE,
        own_tmp: Callable[[], int | None] | None = None,
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.roots = tuple(roots)
        self.own_tmp = own_tmp  # finds the device of the worker's world /tmp, if it has one
        self._tmp_device: int | None = None
        self.bucket = TokenBucket(rate, rate)
        self.served = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    def close(self) -> None:
        if self._paused is not None:
            self._paused.cancel()
        if self._loop is not None and self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def _readable(self) -> None:
        assert self._loop is not None
        for _ in range(MAX_PER_WAKE):
            if not self.bucket.allow():
                self._loop.remove_reader(self.sock.fileno())
                self._paused = self._loop.call_later(1 / self.bucket.rate, self._resume)
                return
            try:
                data, fds, flags, _address = socket.recv_fds(self.sock, MAX_REQUEST, 1)
            except BlockingIOError:
                return
            except OSError:
                self.close()
                return
            if not data and not fds:
                self.close()  # the worker is gone
                return
            try:
                reply = self._serve(data, fds, flags)
            finally:
                for fd in fds:
                    os.close(fd)
            try:
                self.sock.send(msgpack.packb(reply))
            except OSError:  # a worker that does not read its answers loses the broker
                self.close()
                return
            self.served += 1

    def _resume(self) -> None:
        self._paused = None
        if self._loop is not None and self.sock.fileno() >= 0:
            self._loop.add_reader(self.sock.fileno(), self._readable)

    def _serve(self, data: bytes, fds: list[int], flags: int) -> Reply:
        if len(fds) != 1 or flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
            return _refused("a request carries exactly one descriptor", errno.EINVAL)
        try:
            request = msgpack.unpackb(data, max_array_len=4, max_str_len=16, max_bin_len=0)
        except Exception:  # msgpack raises several unrelated types for garbage
            return _refused("malformed request", errno.EINVAL)
        if not isinstance(request, list) or len(request) != 2 or request[0] not in OPS:
            return _refused("unknown request", errno.EINVAL)
        fd = fds[0]
        try:
            where = self._judge(fd)
            if isinstance(where, list):
                return where
            return OPS[request[0]](fd, request[1], where)
        except OSError as exc:
            return _refused(exc.strerror or str(exc), exc.errno or errno.EIO)

    def _judge(self, fd: int) -> os.stat_result | Reply:
        """The file's status if it may be changed, else the refusal."""
        path = os.readlink(f"/proc/self/fd/{fd}")
        info = os.fstat(fd)
        inside = any(
            path.startswith(root + "/") or (path == root and not stat.S_ISDIR(info.st_mode))
            for root in self.roots
        )
        if not inside and self._on_own_tmp(info):
            return info  # nothing but the worker's own tmpfs is on that device: no other name
        if not inside:
            return _refused(
                f"{path} is not inside a writable filesystem grant of this plugin or its "
                "private temp folder; modes and times can be changed only there"
            )
        try:
            named = os.stat(path, follow_symlinks=False)
        except OSError:
            named = None
        if named is None or (named.st_dev, named.st_ino) != (info.st_dev, info.st_ino):
            return _refused(f"{path} changed while it was being checked", errno.ESTALE)
        if not stat.S_ISDIR(info.st_mode) and info.st_nlink > 1:
            return _refused(f"{path} has several names, and another may lie outside the grants")
        return info

    def _on_own_tmp(self, info: os.stat_result) -> bool:
        if self._tmp_device is None and self.own_tmp is not None:
            self._tmp_device = self.own_tmp()  # kept once found: the worker's world is settled
        return self._tmp_device is not None and info.st_dev == self._tmp_device


def _chmod(fd: int, mode: object, info: os.stat_result) -> Reply:
    if not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        return _refused("a mode is an integer from 0 to 0o7777", errno.EINVAL)
    if mode & SETID_BITS:
        return _refused("setuid and setgid bits cannot be set by a plugin")
    if stat.S_ISLNK(info.st_mode):
        return _refused("a symlink has no mode of its own on Linux", errno.EOPNOTSUPP)
    os.chmod(f"/proc/self/fd/{fd}", mode)
    return [0]


def _utime(fd: int, times: object, info: os.stat_result) -> Reply:
    pair: Any = None
    if times is not None:
        if not (isinstance(times, list) and len(times) == 2):
            return _refused("times are [atime_ns, mtime_ns] or nil", errno.EINVAL)
        if not all(isinstance(t, int) and -(1 << 62) < t < (1 << 62) for t in times):
            return _refused("times out of range", errno.EINVAL)
        pair = (_Timespec * 2)(*(_Timespec(*divmod(t, 1_000_000_000)) for t in times))
    if libc().utimensat(fd, b"", pair, AT_EMPTY_PATH) != 0:
        code = ctypes.get_errno()
        return _refused(os.strerror(code), code)
    return [0]


OPS = {"chmod": _chmod, "utime": _utime}
