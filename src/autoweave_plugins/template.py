"""The template (zygote), seen from the host: start it, ask it to fork, notice when it is stale.

The template is a clean, pre-imported worker interpreter (``worker/template.py``) that forks
blank workers on request, as children of the host (DESIGN §8). ``Template`` is one such
process: started like a spawned worker (``python -I``, empty environment, new session, its own
parent-death signal), spoken to over a private ``SOCK_SEQPACKET`` pair, and reaped through its
pidfd. It needs no event loop of its own: replies are read by a reader registered on the
running loop only while requests are pending, so one template can serve several loops one
after the other (the test suite does).

Requests are pipelined: ``request_fork`` sends one datagram with the new worker's descriptors and
awaits the template's answer, which comes in request order. If the template dies, every
pending request fails with ``TemplateDied`` (a child may or may not have been forked: see
``forked.fork_from``). ``stale()`` says when the template should be replaced: the files it
loaded changed on disk (an upgrade; checked at most once a second), it forked ``max_forks``
workers, or it is older than ``max_age`` (see ``startmethod`` for why).
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import msgpack

from autoweave_plugins.errors import WorkerError
from autoweave_plugins.launch import WORLD
from autoweave_plugins.sandbox.world import WorldOptions

__all__ = ["Template", "TemplateDied", "TemplateError"]

log = logging.getLogger(__name__)

FORK_REQUEST = b"fork"
MAX_MESSAGE = 1 << 20  # the READY message lists a few hundred files
FINGERPRINT_EVERY = 1.0  # seconds between checks of the loaded files on disk
STDERR_KEPT = 16384  # bytes of the template's stderr logged when it fails


class TemplateError(WorkerError):
    """The template could not be started, or refused a fork."""


class TemplateDied(TemplateError):
    """The template exited (or was killed) with requests pending."""


def fingerprint(files: list[list[Any]]) -> bytes:
    """A digest of [path, mtime_ns, size] entries, as the template saw them or as now on disk."""
    digest = hashlib.blake2b(digest_size=16)
    for path, mtime, size in files:
        digest.update(f"{path}\0{mtime}\0{size}\n".encode(errors="surrogateescape"))
    return digest.digest()


def on_disk(files: list[list[Any]]) -> list[list[Any]]:
    """The same entries, re-read from the filesystem now (a missing file: -1, -1)."""
    current: list[list[Any]] = []
    for path, _mtime, _size in files:
        try:
            status = os.stat(path)
        except OSError:
            current.append([path, -1, -1])
        else:
            current.append([path, status.st_mtime_ns, status.st_size])
    return current


class Template:
    """One template process: ``await start()``, then ``request_fork(fds)`` for each worker."""

    def __init__(
        self,
        *,
        python: str = sys.executable,
        python_flags: tuple[str, ...] = (),
        ready_timeout: float = 30.0,
        max_forks: int = 0,
        max_age: float = 0.0,
        world: WorldOptions = WORLD,
    ) -> None:
        self.python = python
        self.world = world
        """What every worker it forks enters (``worker/world_entry.py``)."""
        self.python_flags = python_flags
        self.ready_timeout = ready_timeout
        self.max_forks = max_forks
        """Forks after which ``stale()`` asks for a new template; 0: no limit."""
        self.max_age = max_age
        """Seconds after which ``stale()`` asks for a new template; 0: no limit."""
        self.pid: int | None = None
        self.started_at = 0.0
        self.forks = 0
        self.returncode: int | None = None
        self.startup_seconds: float | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        self._ctl: socket.socket | None = None
        self._stderr: int | None = None
        self._files: list[list[Any]] = []
        self._fingerprint = b""
        self._checked_at = 0.0
        self._waiting: collections.deque[asyncio.Future[int]] = collections.deque()
        self._reader_loop: asyncio.AbstractEventLoop | None = None

    # --- life ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the process and wait for it to be ready. Raises TemplateError."""
        began = time.monotonic()
        host_end, template_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        stderr_read, stderr_write = os.pipe2(os.O_CLOEXEC)
        try:
            self._popen = self._launch(template_end, stderr_write)
        except OSError as exc:
            host_end.close()
            os.close(stderr_read)
            raise TemplateError(f"cannot start the template: {exc}") from exc
        finally:
            template_end.close()
            os.close(stderr_write)
        self.pid = self._popen.pid
        self._pidfd = os.pidfd_open(self.pid)
        os.set_blocking(stderr_read, False)
        self._stderr = stderr_read
        host_end.setblocking(False)
        self._ctl = host_end
        try:
            ready = await asyncio.wait_for(self._receive(), self.ready_timeout)
        except TimeoutError:
            await self._abort()
            raise TemplateError(
                f"the template did not start within {self.ready_timeout:g} s"
            ) from None
        except BaseException:
            await asyncio.shield(self._abort())
            raise
        if not isinstance(ready.get("ready"), dict):
            reason = ready.get("error") or self._stderr_tail()
            await self._abort()
            raise TemplateError(
                f"the template cannot serve: {reason or f'it exited (code {self.returncode})'}"
            )
        self._files = [f for f in ready["ready"].get("files", []) if len(f) == 3]
        self._fingerprint = fingerprint(self._files)
        self.started_at = self._checked_at = time.monotonic()
        self.startup_seconds = self.started_at - began

    async def _abort(self) -> None:
        """A start that failed: kill it, reap it, close what it held."""
        self.kill()
        await self.close(timeout=0.0)

    def running(self) -> bool:
        """Whether it is running; reaps it if it has exited, failing what was pending."""
        self._reap()
        return self.returncode is None and self._ctl is not None

    def _reap(self, *, expected: bool = False) -> None:
        if self._pidfd is not None and self.returncode is None:
            info = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG)
            if info is not None:
                self._reaped(info, expected=expected)

    @property
    def files(self) -> list[str]:
        """The files whose change on disk makes it stale: the interpreter and every module
        file it had loaded when it became ready."""
        return [entry[0] for entry in self._files]

    def _launch(self, template_end: socket.socket, stderr: int) -> subprocess.Popen[bytes]:
        # Popen (vfork and exec, about a millisecond, once per template) rather than asyncio:
        # the template must not depend on one loop's child watcher. It is reaped through its
        # pidfd, by whichever loop notices its exit.
        return subprocess.Popen(
            [self.python, "-I", *self.python_flags, "-m", "autoweave_plugins.worker.template",
             str(template_end.fileno()), str(os.getpid()), self.world.to_arg()],
            pass_fds=(template_end.fileno(),), env={}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True, close_fds=True,
            cwd="/",
        )  # fmt: skip

    @property
    def pidfd(self) -> int | None:
        """Readable once the template has exited (the start method watches it)."""
        return self._pidfd

    def _reaped(self, info: os.waitid_result, *, expected: bool = False) -> None:
        killed = info.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
        self.returncode = -info.si_status if killed else info.si_status
        if self._popen is not None:
            self._popen.returncode = self.returncode  # so Popen never polls (reaps) it again
        if expected:
            return
        tail = self._stderr_tail()
        log.warning(
            "template %s exited (code %s)%s", self.pid, self.returncode, f": {tail}" if tail else ""
        )
        self._disconnect(TemplateDied(f"the template exited (code {self.returncode})"))

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        chunks = b""
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(self._stderr, 65536):
                chunks = (chunks + chunk)[-STDERR_KEPT:]
        return chunks.decode("utf-8", "replace").strip()

    def kill(self) -> None:
        """SIGKILL it now; pending requests fail with TemplateDied."""
        if self._pidfd is not None and self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        self._disconnect(TemplateDied("the template was killed"))

    async def close(self, timeout: float = 2.0) -> None:
        """Let it exit (EOF on its socket), SIGKILL it after ``timeout``, and reap it."""
        self._disconnect(TemplateDied("the template was closed"))
        if self._pidfd is None:
            return
        if self.returncode is None:
            exited = await _readable(self._pidfd, timeout)
            if not exited:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
                await _readable(self._pidfd, None)
            self._reap(expected=True)
        os.close(self._pidfd)
        self._pidfd = None
        if self._stderr is not None:
            os.close(self._stderr)
            self._stderr = None

    def _disconnect(self, error: TemplateError) -> None:
        if self._ctl is not None:
            self._stop_reading()
            self._ctl.close()
            self._ctl = None
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)

    # --- staleness -------------------------------------------------------------------------

    def stale(self) -> str | None:
        """Why this template should be replaced now, or None."""
        if self.max_forks and self.forks >= self.max_forks:
            return "max_forks"
        now = time.monotonic()
        if self.max_age and now - self.started_at >= self.max_age:
            return "max_age"
        if now - self._checked_at >= FINGERPRINT_EVERY:
            self._checked_at = now
            if fingerprint(on_disk(self._files)) != self._fingerprint:
                return "package_changed"
        return None

    # --- forking ---------------------------------------------------------------------------

    def request_fork(self, fds: list[int]) -> asyncio.Future[int]:
        """Ask for a worker that gets ``fds`` (channel, stdout, stderr); the future gives its pid.

        The request is sent before this returns, so the caller may close its copies of
        ``fds`` right away. Raises TemplateDied if the template is gone, TemplateError if it
        does not take requests; the future fails the same ways.
        """
        if not self.running() or self._ctl is None:
            raise TemplateDied("the template is not running")
        loop = asyncio.get_running_loop()
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        try:
            self._ctl.sendmsg([FORK_REQUEST], rights)
        except BlockingIOError:
            raise TemplateError("the template is not taking requests (its queue is full)") from None
        except OSError as exc:
            self.running()  # reaps it, if that is why
            raise TemplateDied(f"the template is gone: {exc}") from None
        self.forks += 1
        future: asyncio.Future[int] = loop.create_future()
        self._waiting.append(future)
        self._start_reading(loop)
        return future

    def _start_reading(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._reader_loop is not None and self._reader_loop.is_closed():
            self._reader_loop = None  # a loop that ended with requests pending (tests do)
        if self._reader_loop is None and self._ctl is not None:
            loop.add_reader(self._ctl.fileno(), self._on_readable)
            self._reader_loop = loop

    def _stop_reading(self) -> None:
        if self._reader_loop is not None and self._ctl is not None:
            if not self._reader_loop.is_closed():
                self._reader_loop.remove_reader(self._ctl.fileno())
            self._reader_loop = None

    def _on_readable(self) -> None:
        while self._ctl is not None and self._waiting:
            try:
                data = self._ctl.recv(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                if not self.running():
                    return  # _reaped failed the waiters
                self._disconnect(TemplateDied("the template closed its socket"))
                return
            future = self._waiting.popleft()
            reply = decode_message(data)
            if future.get_loop().is_closed():
                # Asked for from a loop that is gone: nobody will take this child. It is our
                # own and unreaped, so its pid is still its own to signal.
                orphan = reply.get("pid")
                if isinstance(orphan, int) and orphan > 0:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(orphan, signal.SIGKILL)
                continue
            if future.done():
                continue  # nobody waits any more; forked.fork_from handles an abandoned child
            pid = reply.get("pid")
            if isinstance(pid, int) and pid > 0:
                future.set_result(pid)
            else:
                future.set_exception(TemplateError(f"fork refused: {reply.get('error')}"))
        if not self._waiting:
            self._stop_reading()

    async def _receive(self) -> dict[str, Any]:
        """One message from the template (used before any request is pending)."""
        assert self._ctl is not None
        while True:
            try:
                data = self._ctl.recv(MAX_MESSAGE)
            except BlockingIOError:
                await _readable(self._ctl.fileno(), None)
                continue
            return decode_message(data) if data else {}


async def _readable(fd: int, timeout: float | None) -> bool:
    """Wait until ``fd`` is readable (True) or ``timeout`` passes (False)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await asyncio.wait_for(ready, timeout)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
    return True


def decode_message(data: bytes) -> dict[str, Any]:
    try:
        value = msgpack.unpackb(data)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return {"error": "undecodable message from the template"}
    return value if isinstance(value, dict) else {"error": "unexpected message from the template"}
