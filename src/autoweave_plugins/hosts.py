"""Which host: each running ``autoweave-plugins run`` has a name, a lock and a control socket.

A host's name is ``run --name NAME``, or is derived from its plugin directory (the folder's
name and a hash of its real path), so two hosts on two directories never share a socket and
``--host DIR`` finds the host serving DIR. Everything lives in a private runtime directory
(``$XDG_RUNTIME_DIR/autoweave-plugins``, else ``/tmp/autoweave-plugins-UID``, mode 0700 and
owned by this user, or refused):

- ``NAME.lock``: held (``flock``) for the host's whole life. A second host with the same name
  fails to take it and says "already running (pid N)"; it never touches the first one's
  socket. The lock file is never deleted: deleting it would let two hosts lock two files.
- ``NAME.sock``: the control socket, created and removed only by the lock's holder.
- ``NAME.json``: what client commands list: name, directory, pid and socket.

Clients pick a host with ``--host DIR_OR_NAME``, else ``$AUTOWEAVE_PLUGINS_HOST``, else the
only one running; with several running and none named, they list them (``AmbiguousHost``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import socket
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoweave_plugins.errors import AutoweaveError

__all__ = [
    "HOST_ENV",
    "AmbiguousHost",
    "HostError",
    "HostInfo",
    "HostLock",
    "NoHost",
    "host_name_for",
    "running_hosts",
    "runtime_dir",
    "runtime_path",
    "select_host",
]

HOST_ENV = "AUTOWEAVE_PLUGINS_HOST"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes, with the terminating NUL


class HostError(AutoweaveError):
    """A host cannot start under this name (already running, a bad name or runtime dir)."""


class NoHost(HostError):
    """No running host matches (or none runs at all)."""


class AmbiguousHost(HostError):
    """Several hosts run and none was named; ``hosts`` lists them."""

    def __init__(self, hosts: list[HostInfo]) -> None:
        listing = "".join(f"\n  {h.name}  {h.directory}  (pid {h.pid})" for h in hosts)
        super().__init__(
            f"{len(hosts)} hosts are running; name one with --host DIR_OR_NAME "
            f"(or ${HOST_ENV}):{listing}"
        )
        self.hosts = hosts


@dataclass(frozen=True, slots=True)
class HostInfo:
    name: str
    directory: str
    pid: int
    socket: str
    started: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "directory": self.directory,
            "pid": self.pid,
            "socket": self.socket,
            "started": self.started,
        }


def runtime_path() -> Path:
    """Where the control sockets and locks are (unchecked: see ``runtime_dir``)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "autoweave-plugins"
    return Path(tempfile.gettempdir()) / f"autoweave-plugins-{os.getuid()}"


def runtime_dir(create: bool = False) -> Path:
    """The private folder of control sockets and locks; refused unless it is this user's
    and closed to others (a socket in a shared folder could be swapped for another's)."""
    folder = runtime_path()
    if create:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise HostError(f"{folder} must be a directory of this user's, mode 0700")
    return folder


def host_name_for(directory: str | os.PathLike[str]) -> str:
    """The name of the host serving ``directory``: its folder name and a hash of its real path."""
    real = os.path.realpath(directory)
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", os.path.basename(real) or "root").strip("-.")
    digest = hashlib.sha256(real.encode()).hexdigest()[:8]
    return f"{(base or 'plugins')[:24]}-{digest}"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise HostError(
            f"host names are letters, digits, '.', '_' and '-', at most 64 (got {name!r})"
        )
    return name


class HostLock:
    """Held by a running host: its name, its socket path, and proof that no other host runs
    under that name. ``acquire`` raises ``ConfigError`` ("already running (pid N)")."""

    def __init__(self, name: str, directory: str, control: str | None = None) -> None:
        self.name = check_name(name)
        self.directory = os.path.realpath(directory)
        folder = runtime_dir(create=True)
        self.lock_path = folder / f"{name}.lock"
        self.info_path = folder / f"{name}.json"
        self.socket = control or str(folder / f"{name}.sock")
        if len(os.fsencode(self.socket)) > MAX_SOCKET_PATH:
            raise HostError(
                f"control socket path {self.socket} is longer than {MAX_SOCKET_PATH} bytes"
            )
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise HostError(
                f"a host named {self.name!r} is already running (pid {holder}); stop it, or "
                "give this one another name with --name"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def publish(self) -> None:
        """Write the info file clients list (once the socket is listening)."""
        info = HostInfo(self.name, self.directory, os.getpid(), self.socket, time.time())
        temporary = self.info_path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(info.to_dict()))
        temporary.replace(self.info_path)

    def release(self) -> None:
        """Remove the socket and info file (ours: we hold the lock), then unlock."""
        if self._fd is None:
            return
        for path in (self.socket, str(self.info_path)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        os.close(self._fd)
        self._fd = None


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def running_hosts() -> list[HostInfo]:
    """Hosts whose control socket answers, by name."""
    folder = runtime_dir()
    hosts = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            data = json.loads(path.read_text())
            info = HostInfo(
                str(data["name"]),
                str(data["directory"]),
                int(data["pid"]),
                str(data["socket"]),
                float(data["started"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _answers(info.socket):
            hosts.append(info)
    return hosts


def select_host(host: str | None) -> str:
    """The control socket to use: ``host`` (a plugin directory or a host name), else
    ``$AUTOWEAVE_PLUGINS_HOST``, else the only running host. Raises ``NoHost`` or
    ``AmbiguousHost``."""
    wanted = host or os.environ.get(HOST_ENV) or None
    hosts = running_hosts()
    if wanted is None:
        if len(hosts) == 1:
            return hosts[0].socket
        if not hosts:
            raise NoHost("no autoweave-plugins host is running (start one with 'run DIR')")
        raise AmbiguousHost(hosts)
    name = host_name_for(wanted) if os.path.isdir(wanted) else wanted
    for info in hosts:
        if info.name == name:
            return info.socket
    running = ", ".join(h.name for h in hosts) or "none"
    raise NoHost(f"no running host is named {name!r} (from {wanted!r}); running: {running}")
