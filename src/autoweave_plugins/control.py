"""The control socket of ``autoweave-plugins run``: how ``usb attach`` reaches a running host.

A unix socket (mode 0600, so only the host's user can drive it) speaking one JSON object per
line, one request per connection. Requests: ``{"command": "usb", "action": "attach",
"vendor_id": "0x1234", "product_id": "0xabcd", ...}`` and ``{"command": "status"}``. Every
malformed request gets ``{"ok": false, "error": ...}`` naming what was wrong.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autoweave_plugins.errors import AutoweaveError, ConfigError

if TYPE_CHECKING:
    from autoweave_plugins.manager import PluginManager
    from autoweave_plugins.usb.dispatch import USBDispatcher

__all__ = ["default_control_path", "request", "serve_control"]

MAX_REQUEST = 64 * 1024


def default_control_path() -> str:
    """$XDG_RUNTIME_DIR/autoweave-plugins.sock, else a socket in a private 0700 directory of
    the temp dir (a predictable name directly in /tmp could be taken by another user)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "autoweave-plugins.sock")
    return os.path.join(tempfile.gettempdir(), f"autoweave-plugins-{os.getuid()}", "control.sock")


def _prepare(path: str) -> None:
    """Make the socket's folder private and remove a stale socket of ours; refuse otherwise."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, mode=0o700, exist_ok=True)
    info = os.lstat(folder)
    if info.st_uid != os.getuid() or not stat.S_ISDIR(info.st_mode):
        raise ConfigError("--control", f"{folder} is not a directory owned by this user")
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        return
    if existing.st_uid != os.getuid() or not stat.S_ISSOCK(existing.st_mode):
        raise ConfigError("--control", f"{path} exists and is not this user's socket")
    os.unlink(path)  # a stale socket of ours (a host that is running still answers on it)


async def _answer(
    manager: PluginManager,
    dispatcher: USBDispatcher,
    message: Any,
    extra_status: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    from autoweave_plugins.usb.device import USBEvent  # noqa: PLC0415 - keeps this module light

    if not isinstance(message, dict) or not isinstance(message.get("command"), str):
        return {"ok": False, "error": "a request is a JSON object with a 'command'"}
    command = message.pop("command")
    if command == "status":
        extra = extra_status() if extra_status is not None else {}
        return {"ok": True, "stats": manager.get_manager_stats(), **extra}
    if command == "usb":
        try:
            event = USBEvent.create(**message)
        except TypeError as exc:
            return {"ok": False, "error": f"usb: {exc}"}
        except AutoweaveError as exc:
            return {"ok": False, "error": str(exc)}
        results = await dispatcher.dispatch(event)
        return {
            "ok": True,
            "delivered": {
                name: {
                    "ok": r.ok,
                    "value": r.value if r.ok else None,
                    "error": None if r.ok else str(r.error),
                }
                for name, r in results.items()
            },
        }
    return {"ok": False, "error": f"unknown command {command!r}; commands: usb, status"}


async def serve_control(
    path: str,
    manager: PluginManager,
    dispatcher: USBDispatcher,
    extra_status: Callable[[], dict[str, Any]] | None = None,
) -> asyncio.Server:
    """Serve the control socket; ``extra_status`` adds keys to ``status`` replies (the Redis
    links of ``run``: ``jobs``, ``hotplug``)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            try:
                message = json.loads(line)
            except ValueError as exc:
                reply: dict[str, Any] = {"ok": False, "error": f"not JSON: {exc}"}
            else:
                reply = await _answer(manager, dispatcher, message, extra_status)
            writer.write(json.dumps(reply, default=str).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ValueError, ConnectionError):
            pass  # a slow, oversized or vanished client: nothing to answer
        finally:
            writer.close()

    _prepare(path)
    old_umask = os.umask(0o177)
    try:
        return await asyncio.start_unix_server(handle, path, limit=MAX_REQUEST)
    finally:
        os.umask(old_umask)


async def request(path: str, message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request to a running host and return its reply."""
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
    try:
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()
        reply: dict[str, Any] = json.loads(await asyncio.wait_for(reader.readline(), timeout))
        return reply
    finally:
        writer.close()
