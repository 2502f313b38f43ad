"""The control socket of ``autoweave-plugins run``: how ``call``, ``status``, ``load``,
``unload``, ``reload``, ``events`` and ``usb`` reach a running host.

A unix socket (mode 0600 in a 0700 folder: only the host's user can drive it, see ``hosts``)
speaking JSON lines: one request per connection, then one reply line (``events`` with
``follow`` keeps sending one line per event). Requests are objects with a ``command``:

- ``{"command": "call", "plugin", "hook", "args": [...], "kwargs": {...}, "timeout": s|null}``
  → ``{"ok": true, "result": value}``;
- ``{"command": "load"|"unload"|"reload", "plugin"}`` → ``{"ok": true, "state", "version"}``;
- ``{"command": "status"}`` → ``{"ok": true, "status": HostStatus}``;
- ``{"command": "events", "follow": bool}`` → ``{"ok": true, "events": [EventLine...]}``, then
  with follow ``{"event": EventLine}`` lines until the host stops;
- ``{"command": "usb", "action", "vendor_id", "product_id", ...}`` → ``{"ok": true, "delivered"}``.

Every failure is ``{"ok": false, "error": {"type", "message", "traceback"?}}``. In JSON,
``bytes`` travel as ``{"$bytes": "<base64>"}``.

Everything the socket reads is bounded: a request line (``MAX_REQUEST``), the clients served at
once (``MAX_CLIENTS``, the rest are told the host is busy), the time to send a request
(``READ_TIMEOUT``) and to take each reply (``WRITE_TIMEOUT``: an ``events --follow`` client that
stops reading is dropped). Calls are bounded by their own timeouts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from autoweave_plugins.errors import AutoweaveError, ConfigError, HookError, LoadError
from autoweave_plugins.eventlog import QUIET, EventLine, event_line
from autoweave_plugins.events import Event
from autoweave_plugins.status import HostStatus

if TYPE_CHECKING:
    from autoweave_plugins.manager import PluginManager
    from autoweave_plugins.usb.dispatch import USBDispatcher

__all__ = [
    "MAX_CLIENTS",
    "MAX_REQUEST",
    "READ_TIMEOUT",
    "WRITE_TIMEOUT",
    "ControlServer",
    "request",
    "stream",
    "to_json",
]

MAX_REQUEST = 4 << 20
"""Bytes of one request line (a ``call``'s JSON arguments included)."""
MAX_CLIENTS = 16
"""Connections served at once; more are answered "busy" and closed."""
READ_TIMEOUT = 10.0
"""Seconds a client has to send its request line."""
WRITE_TIMEOUT = 10.0
"""Seconds a client has to take each reply line."""
DISCARD_TIMEOUT = 1.0
"""Seconds spent reading what a refused client still sends, before answering it."""
FOLLOW_BACKLOG = 1024
"""Events queued for one ``events --follow`` client that is slow to read."""
COMMANDS = ("call", "load", "unload", "reload", "status", "events", "usb")


class ControlError(Exception):
    """A request the host refuses before acting on it (malformed, unknown command)."""


def _default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    return str(value)


def to_json(value: Any) -> str:
    """One JSON line; bytes as ``{"$bytes": base64}``, anything else unknown as its str."""
    return json.dumps(value, default=_default, ensure_ascii=False)


def error_reply(error: BaseException) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    traceback = getattr(error, "traceback", None)
    if isinstance(error, HookError | LoadError) and traceback:
        body["traceback"] = traceback
    return {"ok": False, "error": body}


def _field(message: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = message.get(key)
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ControlError(f"{key!r} must be {names}")
    return value


async def _discard(reader: asyncio.StreamReader) -> None:
    """Read what the client is still sending (bounded), so that closing the connection does
    not reset it before it reads our answer (a unix socket closed with unread data does)."""

    async def drain() -> None:
        left = MAX_REQUEST
        while left > 0 and (chunk := await reader.read(min(left, 1 << 16))):
            left -= len(chunk)
            if chunk.endswith(b"\n"):  # the end of what a client sends: one request line
                return

    with contextlib.suppress(TimeoutError, ConnectionError, ValueError):
        await asyncio.wait_for(drain(), DISCARD_TIMEOUT)


class ControlServer:
    """Serves one manager's control socket. ``status`` and ``recent`` are the host's views."""

    def __init__(
        self,
        manager: PluginManager,
        dispatcher: USBDispatcher,
        status: Callable[[], HostStatus],
        recent: Callable[[], Sequence[EventLine]],
    ) -> None:
        self.manager = manager
        self.dispatcher = dispatcher
        self.status = status
        self.recent = recent
        self.clients = 0
        self.server: asyncio.Server | None = None

    async def start(self, path: str) -> asyncio.Server:
        """Listen on ``path``, which the caller owns (``hosts.HostLock``): a stale socket there
        is replaced, and the socket is created 0600."""
        if os.path.lexists(path):
            os.unlink(path)
        old_umask = os.umask(0o177)
        try:
            self.server = await asyncio.start_unix_server(self._handle, path, limit=MAX_REQUEST)
        except OSError as exc:
            raise ConfigError(
                "control socket", f"cannot listen on {path}: {exc.strerror}"
            ) from None
        finally:
            os.umask(old_umask)
        return self.server

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients += 1
        try:
            if self.clients > MAX_CLIENTS:
                busy = ControlError(f"the host is serving {MAX_CLIENTS} clients; try again")
                await _discard(reader)
                await self._send(writer, error_reply(busy))
                return
            try:
                line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
                message = json.loads(line)
            except ValueError as exc:  # not JSON, or over MAX_REQUEST (LimitOverrunError)
                reason = f"over {MAX_REQUEST} bytes" if "limit" in str(exc) else f"not JSON: {exc}"
                await _discard(reader)
                await self._send(writer, error_reply(ControlError(f"bad request: {reason}")))
                return
            if not isinstance(message, dict) or message.get("command") not in COMMANDS:
                known = ", ".join(COMMANDS)
                refusal = ControlError(f"a request is a JSON object with a command ({known})")
                await self._send(writer, error_reply(refusal))
                return
            if message["command"] == "events" and message.get("follow"):
                await self._follow(writer)
                return
            try:
                reply = await self._answer(message)
            except (AutoweaveError, ControlError) as exc:
                reply = error_reply(exc)
            await self._send(writer, reply)
        except (TimeoutError, ConnectionError):
            pass  # a slow or vanished client: nothing more to say to it
        finally:
            self.clients -= 1
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
        writer.write(to_json(reply).encode() + b"\n")
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)

    async def _follow(self, writer: asyncio.StreamWriter) -> None:
        # A listener, registered before the backlog is taken: no event falls in between. A
        # client that falls behind by FOLLOW_BACKLOG events loses the oldest.
        queue: deque[Event] = deque(maxlen=FOLLOW_BACKLOG)
        wakeup = asyncio.Event()

        def listener(event: Event) -> None:
            queue.append(event)
            wakeup.set()

        self.manager.on("*", listener)
        try:
            await self._send(writer, {"ok": True, "events": list(self.recent())})
            while True:
                await wakeup.wait()
                wakeup.clear()
                while queue:
                    event = queue.popleft()
                    if event.name not in QUIET:
                        await self._send(writer, {"event": event_line(event)})
                    if event.name == "manager:stopped":
                        return
        finally:
            self.manager.off("*", listener)

    async def _answer(self, message: dict[str, Any]) -> dict[str, Any]:
        command = message.pop("command")
        manager = self.manager
        if command == "status":
            return {"ok": True, "status": self.status()}
        if command == "events":
            return {"ok": True, "events": list(self.recent())}
        if command == "usb":
            return await self._usb(message)
        name = _field(message, "plugin", str)
        if command == "call":
            hook = _field(message, "hook", str)
            args = message.get("args", [])
            kwargs = message.get("kwargs", {})
            timeout = message.get("timeout")
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise ControlError("'args' must be a list and 'kwargs' an object")
            if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
                raise ControlError("'timeout' must be a number of seconds > 0")
            result = await manager.call(name, hook, *args, timeout=timeout, **kwargs)
            return {"ok": True, "result": result}
        operations: dict[str, Callable[[str], Awaitable[None]]] = {
            "load": manager.load,
            "unload": manager.unload,
            "reload": manager.reload,
        }
        await operations[command](name)
        record = manager.records.get_record(name)
        return {"ok": True, "state": record.state.value, "version": record.version}

    async def _usb(self, message: dict[str, Any]) -> dict[str, Any]:
        from autoweave_plugins.usb.device import USBEvent  # noqa: PLC0415 - keeps this light

        try:
            event = USBEvent.create(**message)
        except TypeError as exc:
            raise ControlError(f"usb: {exc}") from None
        results = await self.dispatcher.dispatch(event)
        delivered = {
            name: {
                "ok": r.ok,
                "value": r.value if r.ok else None,
                "error": None if r.ok else str(r.error),
            }
            for name, r in results.items()
        }
        return {"ok": True, "delivered": delivered}


async def _open(path: str, message: dict[str, Any], timeout: float) -> tuple[Any, Any]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_unix_connection(path, limit=64 << 20), timeout
    )
    writer.write(to_json(message).encode() + b"\n")
    with contextlib.suppress(ConnectionError):  # a busy host answers before it reads
        await writer.drain()
    return reader, writer


async def request(path: str, message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request to a running host and return its reply (OSError if none answers)."""
    reader, writer = await _open(path, message, timeout)
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            raise ConnectionResetError("the host closed the connection without a reply")
        reply: dict[str, Any] = json.loads(line)
        return reply
    finally:
        writer.close()


async def stream(path: str, message: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """Every reply line of a request that streams (``events`` with ``follow``)."""
    reader, writer = await _open(path, message, 10.0)
    try:
        while line := await reader.readline():
            yield json.loads(line)
    finally:
        writer.close()
