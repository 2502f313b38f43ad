"""Workers forked by the template: the host's own children, waited for through a pidfd.

``fork_from(template)`` is the ``Launch`` of the template start method. It makes the worker's
channel (a socketpair) and stdout/stderr (two pipes), hands the worker's ends to the template
in one request, and gets back the pid of a process that is the host's child (the template
forks with ``CLONE_PARENT``, see ``worker/sibling.py``). ``ForkedChild`` then does for it what
asyncio's child watcher does for a spawned worker: it reaps it when its pidfd becomes
readable, with ``waitid(P_PIDFD)``, which names exactly this process and no other child, so
asyncio's watcher (which waits for specific pids) and this one never take each other's status.

A request can go wrong between the clone and the answer: the template dies in that window, or
the caller is cancelled. The child, if it exists, is still the host's. It reports its pid in
its READY frame, so ``fork_from`` reads that (briefly) from the channel, and kills and reaps
it, instead of leaving a zombie nobody knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket

from autoweave_plugins.errors import ProtocolError
from autoweave_plugins.launch import Started
from autoweave_plugins.rpc import FrameDecoder, Kind
from autoweave_plugins.template import Template, TemplateDied

__all__ = ["ForkedChild", "fork_from"]

log = logging.getLogger(__name__)

ORPHAN_GRACE = 1.0
"""Seconds to wait for the READY of a child whose fork was not answered."""
_abandoned: set[asyncio.Task[int]] = set()  # reaps of children nobody else waits for


def _exit_code(info: os.waitid_result) -> int:
    killed = info.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
    return -info.si_status if killed else info.si_status


class ForkedChild:
    """A child of the host made by the template; an ``OSProcess``."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        # Our child and not yet reaped: its pid cannot be reused before we wait for it.
        self._pidfd: int | None = os.pidfd_open(pid)
        self._returncode: int | None = None
        self._exited: asyncio.Future[int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._returncode

    async def wait(self) -> int:
        if self._returncode is not None:
            return self._returncode
        if self._exited is None:
            assert self._pidfd is not None
            self._loop = asyncio.get_running_loop()
            self._exited = self._loop.create_future()
            self._loop.add_reader(self._pidfd, self._poll)
            self._poll()
        return await asyncio.shield(self._exited)

    def _poll(self) -> None:
        if self._pidfd is None:
            return
        try:
            info = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            # Reaped by someone else (a waitpid(-1) in the host program): the status is lost.
            log.warning("worker %d was reaped by someone else; exit status unknown", self._pid)
            code = 255
        else:
            if info is None:
                return
            code = _exit_code(info)
        self._returncode = code
        if self._loop is not None:
            self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(code)

    def send_signal(self, sig: int) -> None:
        if self._pidfd is not None and self._returncode is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)


def _discard(pid: int) -> None:
    """Kill a child of ours that will not be used, and reap it in the background."""
    try:
        child = ForkedChild(pid)
    except OSError:
        return
    child.send_signal(signal.SIGKILL)
    task = asyncio.ensure_future(child.wait())
    _abandoned.add(task)
    task.add_done_callback(_abandoned.discard)


def _own_child(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return False
    return len(fields) > 1 and int(fields[1]) == os.getpid()


async def _discard_unanswered(channel: socket.socket) -> None:
    """The template died after maybe forking: find the child by its READY and discard it."""
    loop = asyncio.get_running_loop()
    decoder = FrameDecoder(1 << 16)
    with contextlib.suppress(TimeoutError, OSError, ProtocolError):
        async with asyncio.timeout(ORPHAN_GRACE):
            while data := await loop.sock_recv(channel, 4096):
                for frame in decoder.feed(data):
                    pid = frame[2].get("pid") if frame[0] == Kind.READY else None
                    if isinstance(pid, int) and pid > 0 and _own_child(pid):
                        _discard(pid)
                    return


def _discard_when_answered(reply: asyncio.Future[int]) -> None:
    def done(future: asyncio.Future[int]) -> None:
        if not future.cancelled() and future.exception() is None:
            _discard(future.result())

    reply.add_done_callback(done)


async def _pipe_reader(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(loop=loop)
    pipe = os.fdopen(fd, "rb", buffering=0)
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    except BaseException:
        pipe.close()
        raise
    return reader


async def fork_from(template: Template, timeout: float = 30.0) -> Started:
    """A blank worker forked by ``template``. Raises TemplateDied, TemplateError, OSError."""
    channel, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    host_fds: list[int] = []
    worker_fds = [child_end.fileno()]
    try:
        for _ in range(2):  # stdout, stderr
            read, write = os.pipe2(os.O_CLOEXEC)
            host_fds.append(read)
            worker_fds.append(write)
        reply = template.request_fork(worker_fds)
    except BaseException:
        channel.close()
        for fd in host_fds:
            os.close(fd)
        raise
    finally:
        child_end.close()  # the template holds its own copies from here on
        for fd in worker_fds[1:]:
            os.close(fd)
    try:
        pid = await asyncio.wait_for(asyncio.shield(reply), timeout)
        process = ForkedChild(pid)
    except BaseException as exc:
        if isinstance(exc, TimeoutError):
            template.kill()  # a template that does not answer is hung: it is replaced
        if not reply.done():
            _discard_when_answered(reply)  # our caller was cancelled; the answer will come
        elif isinstance(exc, TimeoutError | TemplateDied):
            await _discard_unanswered(channel)
        channel.close()
        for fd in host_fds:
            os.close(fd)
        if isinstance(exc, TimeoutError):
            raise TemplateDied(f"the template did not answer within {timeout:g} s") from None
        raise
    stdout = await _pipe_reader(host_fds[0])
    stderr = await _pipe_reader(host_fds[1])
    return Started(process, channel, stdout, stderr, "template")
