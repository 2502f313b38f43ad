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
    "MAX_TRACEBACK",
    "WireError",
    "exception_to_wire",
    "read_wire_error",
    "wire_error",
]

MAX_MESSAGE = 4096
"""Characters of an error message the sender keeps."""
MAX_TRACEBACK = 16 * 1024
"""Characters of a traceback the sender keeps: the end, where the raise is."""


@dataclass(frozen=True, slots=True)
class WireError:
    """An error as read from a frame: the name of its type, its message and its traceback text."""

    type: str
    message: str
    traceback: str = ""


def wire_error(type_name: str, message: str, traceback: str | None = None) -> dict[str, str]:
    """The map an ERROR frame (with a traceback, maybe empty) or a REPLY_ERROR frame carries."""
    error = {"type": type_name, "message": message}
    if traceback is not None:
        error["traceback"] = traceback
    return error


def exception_to_wire(exc: BaseException) -> dict[str, str]:
    """An exception raised by plugin code, as the worker reports it to the host."""
    text = "".join(tb.format_exception(exc))
    if len(text) > MAX_TRACEBACK:
        text = "...\n" + text[-MAX_TRACEBACK:]
    return wire_error(type(exc).__name__, str(exc)[:MAX_MESSAGE], text)


def read_wire_error(value: Any, *, default_message: str = "") -> WireError:
    """Read the error map of a frame; anything missing or not a map reads as defaults."""
    error = value if isinstance(value, dict) else {}
    return WireError(
        str(error.get("type", "Exception")),
        str(error.get("message", default_message)),
        str(error.get("traceback", "")),
    )
