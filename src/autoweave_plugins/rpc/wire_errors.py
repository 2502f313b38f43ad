"""Wire errors: the maps that ERROR and REPLY_ERROR frames carry, built and read in one place.

A hook that raises in the worker travels to the host as ``[ERROR, id, {type, message,
traceback}]``; a brokered request the host refuses travels back as ``[REPLY_ERROR, id, {type,
message}]``. Both sides build these maps only with ``wire_error`` or ``exception_to_wire`` and
read them only with ``read_wire_error``, so that what an error may carry is decided here once.

The bounds are applied twice: by the sender, and again by the reader, because the sender of an
ERROR frame is the plugin's process. A hostile plugin writes whatever frame it likes, and the
host keeps errors (a plugin's recent errors, the exceptions it raises to its callers), so what
the host reads is cut to the same bounds whatever the worker sent.
"""

from __future__ import annotations

import re
import reprlib
import traceback as tb
from dataclasses import dataclass
from typing import Any

from autoweave_plugins.errors import (
    AutoweaveError,
    EntryError,
    HookError,
    SandboxUnavailable,
    UnknownHook,
)

__all__ = [
    "ASSIGN_HOOK",
    "MAX_MESSAGE",
    "MAX_REPLY_MESSAGE",
    "MAX_TRACEBACK",
    "MAX_TYPE",
    "WireError",
    "brief",
    "clip",
    "error_from_wire",
    "exception_to_wire",
    "read_wire_error",
    "sandbox_unavailable",
    "wire_error",
]

MAX_TYPE = 128
"""Characters of an error's type name kept."""
MAX_MESSAGE = 4096
"""Characters of an error message kept."""
MAX_TRACEBACK = 16 * 1024
"""Characters of a traceback kept: the end, where the raise is."""
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


_brief = reprlib.Repr()
_brief.maxstring = _brief.maxother = 80


def brief(value: object) -> str:
    """A short repr of a value a worker sent, for an error message: never its whole size."""
    return _brief.repr(value)


def _field(error: dict[Any, Any], key: str, default: str) -> str:
    value = error.get(key, default)
    return value if isinstance(value, str) else brief(value)


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
    error = {"type": clip(type_name, MAX_TYPE), "message": clip(message, max_message)}
    if traceback is not None:
        error["traceback"] = _tail(traceback, MAX_TRACEBACK)
    return error


def exception_to_wire(exc: BaseException) -> dict[str, str]:
    """An exception raised by plugin code, as the worker reports it to the host.

    Its notes (``add_note``) follow the message: the sandbox explains its refusals there.
    """
    notes = getattr(exc, "__notes__", None)  # plugin code may have set it to anything
    notes = [n for n in notes if isinstance(n, str)] if isinstance(notes, list) else []
    message = "\n".join([str(exc), *notes]) if notes else str(exc)
    return wire_error(type(exc).__name__, message, "".join(tb.format_exception(exc)))


def read_wire_error(value: Any, *, default_message: str = "") -> WireError:
    """Read the error map of a frame, bounded; anything missing or not a map reads as defaults.

    A field that is not a string reads as a short repr of it, never as ``str()`` of it: a
    frame's worth of nested values would make a string many times the frame's size.
    """
    error = value if isinstance(value, dict) else {}
    return WireError(
        clip(_field(error, "type", "Exception"), MAX_TYPE),
        clip(_field(error, "message", default_message), MAX_MESSAGE),
        _tail(_field(error, "traceback", ""), MAX_TRACEBACK),
    )


_MISSING = re.compile(r"missing sandbox layers: ([\w, ]+?)(?: \((.*)\))?$", re.DOTALL)


def sandbox_unavailable(message: str) -> SandboxUnavailable:
    """A worker's ``SandboxUnavailable`` again, from its message (``errors.py`` wording), so
    the host's error names the same missing layers."""
    found = _MISSING.search(message)
    if found is None:
        return SandboxUnavailable(("unknown",), message)
    return SandboxUnavailable(tuple(found.group(1).split(", ")), found.group(2) or "")


ASSIGN_HOOK = "<assign>"
"""The pseudo-hook name of an assignment, in errors and pending requests."""


def error_from_wire(plugin: str | None, hook: str, value: Any) -> AutoweaveError:
    """The host's exception for an error frame a worker sent in answer to ``hook``."""
    error = read_wire_error(value)
    if hook == ASSIGN_HOOK:
        if error.type == "SandboxUnavailable":
            return sandbox_unavailable(error.message)
        # The plugin's own code raised (import, a missing hook function, onLoad): retrying
        # would fail the same way.
        return EntryError(f"{error.type}: {error.message}", plugin, error.traceback)
    if error.type == "UnknownHook":
        return UnknownHook(error.message, plugin)
    returned = error.type == "UnsendableValue" and not error.traceback  # rpc.values.UNSENDABLE
    return HookError(plugin, hook, error.type, error.message, error.traceback, returned=returned)
