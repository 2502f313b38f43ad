"""The host's end of a worker's RPC channel: its single checkpoint at the trust boundary.

Every byte a worker sends arrives here. Frames are decoded under a size cap and a budget,
checked against their shape, and only then dispatched: an answer resolves the host's pending
request with that id; a REQUEST, METRIC or LOG frame goes to the route its owner gave
(``Routes``). A frame that breaks the protocol fails every request in flight with
``ProtocolError`` and is reported to the owner, which ends the worker.

Errors cross here in both directions: an ERROR frame becomes the host's exception for what was
asked (``LoadError`` for an assignment, ``UnknownHook``, ``HookError``), and a refusal of the
host's becomes the REPLY_ERROR map the worker's SDK turns back into an exception.

Writes are bounded too. A worker that stops reading its socket while it makes the host
answer it would have the host queue replies without end, so the channel stops reading from a
worker while more than ``PAUSE_READING_AT`` bytes are queued for it (it sends nothing new to
answer until it has read what it was sent), and a worker with more than ``max_write_buffer``
bytes queued is treated as breaking the protocol.

The channel knows frames, ids and the socket; it does not know the process. Starting, killing
and reaping the worker is ``process``' job.
"""

from __future__ import annotations

import array
import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autoweave_plugins.errors import (
    AutoweaveError,
    PermissionDenied,
    PluginCrashed,
    ProtocolError,
    UnsendableValue,
    WorkerError,
)
from autoweave_plugins.rpc import (
    DEFAULT_MAX_FRAME,
    MAX_REPLY_MESSAGE,
    FrameDecoder,
    Kind,
    ValueBudget,
    check_value,
    check_worker_frame,
    encode,
    read_buffer,
    wire_error,
)
from autoweave_plugins.rpc.deadlines import Deadlines
from autoweave_plugins.rpc.wire_errors import ASSIGN_HOOK, error_from_wire

__all__ = [
    "ASSIGN_HOOK",
    "DEFAULT_MAX_WRITE_BUFFER",
    "PAUSE_READING_AT",
    "PING_HOOK",
    "Channel",
    "Routes",
]

PING_HOOK = "<ping>"

PAUSE_READING_AT = 1 << 20
"""Bytes queued for a worker above which the host stops reading from it, until they drain
to a quarter of this."""
DEFAULT_MAX_WRITE_BUFFER = 4 * DEFAULT_MAX_FRAME
"""Bytes queued for a worker above which it is killed (``protocol``): room for several replies
of the largest frame, which a worker that reads its channel drains as fast as they come."""


_ANSWERS = frozenset({Kind.RESULT, Kind.ERROR, Kind.PONG})
_RESULT = Kind.RESULT


@dataclass(frozen=True, slots=True)
class Routes:
    """Where the channel sends what is not an answer to one of the host's requests."""

    request: Callable[[int, str, Any], None]
    """A REQUEST frame: ``(id, op, payload)``; answered later with ``reply``/``reply_error``."""
    metric: Callable[[Any, Any, Any], object]
    """A METRIC frame: ``(name, value, labels)``, unchecked beyond the frame's shape."""
    log: Callable[[int, Any], None]
    """A LOG frame: ``(level, message)``."""
    violation: Callable[[ProtocolError], None]
    """The worker broke the protocol; everything in flight has already failed."""
    lost: Callable[[], None]
    """The socket closed: the worker exited or is exiting."""


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Any]
    hook: str
    expired: bool = False  # its caller got TimeoutError; a late answer may still come


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class Channel(asyncio.BufferedProtocol):
    """One worker's socket. ``open`` it on the host's end of the socketpair."""

    def __init__(
        self,
        routes: Routes,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_write_buffer: int = DEFAULT_MAX_WRITE_BUFFER,
    ) -> None:
        self.routes = routes
        self.decoder = FrameDecoder(max_frame)
        self.max_write_buffer = max_write_buffer
        self.plugin: str | None = None
        self.transport: asyncio.Transport | None = None
        # Kept: asyncio.get_running_loop() costs a getpid() system call on Python 3.11.
        self._loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._socket: socket.socket | None = None
        self._view = read_buffer()  # of the loop's thread, where the channel is made and read
        self._last_id = 0
        self._pending: dict[int, _Pending] = {}
        self._closed = False
        self.assign_refused = False
        """The worker answered its assignment with an error: its exit is ``load_failed``."""
        self._deadlines = Deadlines(self._loop, self._pending, self._awaited, self._expire)

    async def open(self, sock: socket.socket) -> None:
        """Start reading ``sock``; it is kept to pass file descriptors with sendmsg."""
        self._socket = sock
        await self._loop.create_connection(lambda: self, sock=sock)

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=min(PAUSE_READING_AT, self.max_write_buffer))

    def connection_lost(self, exc: Exception | None) -> None:
        self.routes.lost()

    def pause_writing(self) -> None:
        # Replies to this worker are backed up: read nothing more that it could want answered.
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        try:
            for frame in self.decoder.feed(self._view[:nbytes]):
                if self._closed:
                    return
                # A call's result, most frames by far, resolves its request here; anything
                # else, or a RESULT for no awaited request, has its shape checked in full.
                if (
                    type(frame) is list
                    and len(frame) == 3
                    and type(frame[0]) is int
                    and frame[0] == _RESULT
                    and type(frame[1]) is int
                ):
                    pending = self._pending.get(frame[1])
                    if pending is not None and not pending.future.done():
                        del self._pending[frame[1]]
                        pending.future.set_result(frame[2])
                        continue
                self._dispatch(frame)
        except ProtocolError as exc:
            self._violated(exc)

    def _violated(self, exc: ProtocolError) -> None:
        error = ProtocolError(str(exc), self.plugin)
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)
        self.routes.violation(exc)

    # --- host to worker ------------------------------------------------------------------

    def next_id(self) -> int:
        self._last_id += 1
        return self._last_id

    def send(self, frame: list[Any]) -> None:
        """A one-way frame (CANCEL, EXIT, REPLY); dropped once the channel is closing."""
        if self.transport is not None and not self.transport.is_closing():
            self._write(encode(frame))

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        queued = self.transport.get_write_buffer_size() + len(data)
        if queued <= self.max_write_buffer:
            self.transport.write(data)
        elif not self._closed:  # checked first, so the host never holds more than the cap
            self._violated(
                ProtocolError(
                    f"the worker is not reading its channel: {queued} bytes would be queued "
                    f"for it, over the {self.max_write_buffer}-byte limit"
                )
            )

    def reply(self, ident: int, value: Any) -> None:
        """Answer the worker's REQUEST ``ident``."""
        self.send([Kind.REPLY, ident, value])

    def reply_error(self, ident: int, error: AutoweaveError) -> None:
        """Refuse the worker's REQUEST ``ident``; its SDK raises the same type of error."""
        if isinstance(error, PermissionDenied):
            name, message = "PermissionDenied", error.message
        else:
            name, message = type(error).__name__, str(error)
        wire = wire_error(name, message, max_message=MAX_REPLY_MESSAGE)
        self.send([Kind.REPLY_ERROR, ident, wire])

    def check_arguments(self, hook: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise ``UnsendableValue`` for arguments the worker's decoder would refuse: a CALL
        frame is an array of 5 (the envelope), the args array and the kwargs map."""
        if not args and not kwargs:
            return  # two empty containers: within any budget a decoder can have
        budget = ValueBudget(self.decoder.max_containers - 1, self.decoder.max_elements - 5)
        for value, where in ((args, f"{hook} args"), (kwargs, f"{hook} kwargs")):
            problem = check_value(value, where, budget)
            if problem is not None:
                raise UnsendableValue(*problem)

    async def request(
        self, frame: list[Any], hook: str, timeout: float | None, fds: list[int] | None = None
    ) -> Any:
        """Send a request frame (id in ``frame[1]``) and wait for its answer.

        Raises ``UnsendableValue`` (nothing sent) for a frame over ``max_frame``, which the
        worker's decoder would refuse. Raises TimeoutError after ``timeout``, leaving the
        request pending so that a late answer is still recognised; cancelling the wait forgets
        it, and cancels a CALL in the worker.
        """
        if fds:
            payload = self._encode_request(frame, hook)
            future = self._loop.create_future()
            self._pending[frame[1]] = _Pending(future, hook)
            await self._send_with_fds(payload, fds)
            if timeout is not None:
                self._deadlines.add(timeout, frame[1])
        else:
            future = self.start_request(frame, hook, timeout)
        try:
            return await future
        except asyncio.CancelledError:
            self.abandon(frame)
            raise

    def start_request(
        self, frame: list[Any], hook: str, timeout: float | None
    ) -> asyncio.Future[Any]:
        """``request`` without the wait, for a caller that is a coroutine already (a hook
        call: one coroutine less per call). It awaits the future and, if its wait is
        cancelled, calls ``abandon(frame)``. Raises ``UnsendableValue`` as ``request`` does."""
        payload = self._encode_request(frame, hook)
        ident = frame[1]
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending[ident] = _Pending(future, hook)
        self._write(payload)
        if timeout is not None:
            self._deadlines.add(timeout, ident)
        return future

    def abandon(self, frame: list[Any]) -> None:
        """The wait for ``frame``'s answer was cancelled: forget it, and cancel a CALL."""
        ident = frame[1]
        self._pending.pop(ident, None)
        if frame[0] == Kind.CALL:
            self.send([Kind.CANCEL, ident])

    def _encode_request(self, frame: list[Any], hook: str) -> bytes:
        try:
            payload = encode(frame)
        except (TypeError, ValueError, OverflowError) as exc:
            raise UnsendableValue(
                f"{hook} arguments", f"cannot be sent to the worker: {exc}"
            ) from None
        if len(payload) - 4 > self.decoder.max_frame:
            raise UnsendableValue(
                f"{hook} arguments",
                f"{len(payload) - 4} bytes encoded, over the {self.decoder.max_frame}-byte frame "
                "limit (limits.max_frame); pass a path or a smaller value",
            )
        return payload

    def _awaited(self, ident: int) -> bool:
        pending = self._pending.get(ident)
        return pending is not None and not pending.expired and not pending.future.done()

    def _expire(self, ident: int) -> None:
        """Fail request ``ident`` with TimeoutError. Its id stays pending, with a fresh
        future, so that a late answer is still recognised (and awaited by a cancel, see
        ``process``)."""
        pending = self._pending[ident]
        late = self._loop.create_future()
        late.add_done_callback(_consume)  # a late answer or failure nobody awaits
        self._pending[ident] = _Pending(late, pending.hook, expired=True)
        pending.future.set_exception(TimeoutError())

    def pending(self, ident: int) -> asyncio.Future[Any] | None:
        """The future of request ``ident`` if it is still awaited."""
        pending = self._pending.get(ident)
        return pending.future if pending is not None else None

    def forget(self, ident: int) -> None:
        """Stop waiting for request ``ident``; an answer that still comes is dropped."""
        pending = self._pending.pop(ident, None)
        if pending is not None:
            pending.future.cancel()

    async def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout``) until the requests in flight now have been answered."""
        futures = [pending.future for pending in self._pending.values()]
        if futures:
            await asyncio.wait(futures, timeout=timeout)

    def close(self, reason: str) -> None:
        """The worker is gone (or going): fail everything in flight, naming ``reason``."""
        self._closed = True
        self._deadlines.close()
        for ident, pending in list(self._pending.items()):
            if not pending.future.done():
                pending.future.set_exception(
                    PluginCrashed(f"worker exited ({reason}) during {pending.hook}", self.plugin)
                )
            self._pending.pop(ident, None)
        if not self.ready.done():
            self.ready.set_exception(WorkerError(f"worker exited before it was ready ({reason})"))
        if self.transport is not None:
            self.transport.close()

    async def _send_with_fds(self, payload: bytes, fds: list[int]) -> None:
        """Write one frame with file descriptors attached (SCM_RIGHTS), beside the transport.

        Safe only while the transport has nothing queued, or bytes would be reordered; at
        assignment the channel is idle but for a possible health-check ping.
        """
        assert self._socket is not None and self.transport is not None
        for _ in range(100):
            if self.transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.01)
        else:
            raise WorkerError("the channel stayed busy; cannot hand over sockets", self.plugin)
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        sent = self._socket.sendmsg([payload], rights)
        if sent < len(payload):  # the rest carries no descriptors: the transport may send it
            self._write(payload[sent:])

    # --- worker to host ------------------------------------------------------------------

    def _dispatch(self, frame: Any) -> None:
        kind, ident = check_worker_frame(frame)
        if kind in _ANSWERS:
            pending = self._pending.pop(ident, None)
            if pending is None:
                if ident > self._last_id:
                    raise ProtocolError(f"reply to request {ident}, which was never sent")
                return  # a late answer to a call that timed out or was cancelled
            if pending.future.done():
                return
            if kind == Kind.ERROR:
                self.assign_refused = self.assign_refused or pending.hook == ASSIGN_HOOK
                pending.future.set_exception(error_from_wire(self.plugin, pending.hook, frame[2]))
            else:
                pending.future.set_result(frame[2])
        elif kind == Kind.REQUEST:
            self.routes.request(ident, frame[2], frame[3])
        elif kind == Kind.METRIC:
            self.routes.metric(frame[2], frame[3], frame[4])
        elif kind == Kind.LOG:
            self.routes.log(frame[2], frame[3])
        elif kind == Kind.READY:
            if self.ready.done():
                raise ProtocolError("READY sent twice")
            self.ready.set_result(frame[2])
