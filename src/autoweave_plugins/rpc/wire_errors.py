"""Wire errors: the maps that ERROR and REPLY_ERROR frames carry, built and read in one place.

A hook that raises in the worker travels to the host as ``[ERROR, id, {type, message,
traceback}]``; a brokered request the host refuses travels back as ``[REPLY_ERROR, id, {type,
message}]``. Both sides build these maps only with ``wire_error`` or ``exception_to_wire`` and
read them only with ``read_wire_error``, so that what an error may carry is decided here once.
"""

from __future__ import annotations

import traceback as tb
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_MESSAGE",
    "MAX_REPLY_MESSAGE",
    "MAX_TRACEBACK",
    "WireError",
    "clip",
    "exception_to_wire",
    "read_wire_error",
    "wire_error",
]

MAX_MESSAGE = 4096
"""Characters of an error message the sender keeps."""
MAX_TRACEBACK = 16 * 1024
"""Characters of a traceback the sender keeps: the end, where the raise is."""
MAX_REPLY_MESSAGE = 1024
"""Characters of the host's error message for a worker's request. The worker knows what it
asked; whatever of its request an error quotes, a reply stays small, so that requests the host
refuses cannot make it write more than it read."""


def clip(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, keeping its head and its tail (the reason)."""
    if len(text) <= limit:
        return text
    if limit < 16:
        return text[:limit]
    keep = (limit - 5) // 2
    return f"{text[:keep]} ... {text[len(text) - keep :]}"


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


@dataclass(frozen=True, slots=True)
class WireError:
    """An error as read from a frame: the name of its type, its message and its traceback text."""

    type: str
    message: str
    traceback: str = ""


def wire_error(
    type_name: str,
    message: str,
    traceback: str | None = None,
    *,
    max_message: int = MAX_MESSAGE,
) -> dict[str, str]:
    """The map an ERROR frame (with a traceback, maybe empty) or a REPLY_ERROR frame carries."""
    error = {"type": type_name, "message": clip(message, max_message)}
    if traceback is not None:
        error["traceback"] = _tail(traceback, MAX_TRACEBACK)
    return error


def exception_to_wire(exc: BaseException) -> dict[str, str]:
    """An exception raised by plugin code, as the worker reports it to the host."""
    return wire_error(type(exc).__name__, str(exc), "".join(tb.format_exception(exc)))


def read_wire_error(value: Any, *, default_message: str = "") -> WireError:
    """Read the error map of a frame; anything missing or not a map reads as defaults."""
    error = value if isinstance(value, dict) else {}
    return WireError(
        str(error.get("type", "Exception")),
        str(error.get("message", default_message)),
        str(error.get("traceback", "")),
    )
