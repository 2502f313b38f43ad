"""Manager events as one-line records: the live view's events pane and ``events`` read these.

Each event becomes an ``EventLine``: a stable, JSON-ready shape (``events --json`` prints one per
line) with a ``text`` that says what happened in words: "reloaded 1.0.0 → 1.1.0: main.py",
"reload failed; 1.0.0 still serving: ...", "refused: network.outbound: ...", "breaker open after
5 crashes". ``RecentEvents`` keeps the last few (bounded) for clients that connect later.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Literal, TypedDict

from autoweave_plugins.errors import HookError
from autoweave_plugins.events import Event

__all__ = ["EventLine", "RecentEvents", "event_line"]

Level = Literal["info", "warning", "error"]
MAX_TEXT = 500
"""Characters of an event's text kept: a plugin chooses its error messages."""
QUIET = frozenset({"worker:created"})
"""Events the pane and the recent list leave out (a spare worker starting is not news)."""


class EventLine(TypedDict):
    """One event, as ``events --json`` prints it."""

    time: float
    """Unix time of the event."""
    event: str
    """Its name (``plugin:reloaded``...)."""
    plugin: str | None
    level: Level
    """``error`` (crashes, breaker, load failures), ``warning`` (refusals, rejected folders,
    failed reloads, hook errors), else ``info``."""
    kind: str
    """What it was, finer than ``event``: ``loaded``, ``reloaded``, ``reload_failed``,
    ``refused``, ``rejected``, ``error``, ``crashed``, ``failed``, ``unloaded``, ``started``..."""
    text: str
    """One line, in words."""


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_TEXT else line[: MAX_TEXT - 1] + "…"


def _files(changed: Any) -> str:
    if not isinstance(changed, list | tuple) or not changed:
        return "no file changed"
    shown = ", ".join(str(f) for f in changed[:4])
    return shown + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")


def _error(data: Any) -> tuple[str, str]:
    error = data.get("error")
    if error is None:
        return "Error", ""
    return type(error).__name__, str(error)


def _describe(event: Event) -> tuple[Level, str, str]:
    data = event.data
    name = event.name
    if name == "plugin:loaded":
        version = event.plugin.manifest.version if event.plugin else "?"
        ms = float(data.get("seconds", 0)) * 1000
        return "info", "loaded", f"loaded {version} in {ms:.0f} ms (pid {data.get('pid')})"
    if name == "plugin:reloaded":
        old, new = data.get("old_version", "?"), data.get("version", "?")
        return "info", "reloaded", f"reloaded {old} → {new}: {_files(data.get('changed'))}"
    if name == "plugin:error":
        kind, message = _error(data)
        if data.get("refused"):
            return "warning", "refused", f"refused: {message}"
        if data.get("folder") is not None:
            return "warning", "rejected", f"rejected folder {data['folder']}: {message}"
        if data.get("reload_failed"):
            serving = data.get("still_serving")
            where = f"{serving} still serving" if serving else "not running"
            return "warning", "reload_failed", f"reload failed ({where}): {kind}: {message}"
        if kind == "PluginCrashed":
            return "error", "crashed", message
        if kind in (
            "LoadError",
            "LoadTimeout",
            "EntryError",
            "PolicyRefused",
            "SandboxUnavailable",
        ):
            return "error", "load_failed", f"load failed: {kind}: {message}"
        error = data.get("error")
        if isinstance(error, HookError) and error.error_type in (
            "PermissionError",
            "PermissionDenied",
        ):
            return "warning", "refused", f"refused by the sandbox: {message}"
        return "warning", "error", f"{kind}: {message}"
    if name == "plugin:failed":
        crashes = data.get("crashes", "?")
        return (
            "error",
            "failed",
            f"breaker open after {crashes} crashes; calls are refused until a reload",
        )
    if name == "plugin:unloaded":
        return "info", "unloaded", f"unloaded ({data.get('reason')})"
    if name == "plugin:discovered":
        version = event.plugin.manifest.version if event.plugin else "?"
        return "info", "discovered", f"discovered {version}"
    if name == "worker:terminated":
        reason = str(data.get("reason"))
        level: Level = (
            "warning" if reason in ("crashed", "unhealthy", "memory", "timeout") else "info"
        )
        return level, "worker_ended", f"worker {data.get('pid')} ended ({reason})"
    if name == "worker:created":
        return "info", "worker_started", f"worker {data.get('pid')} started"
    if name == "manager:started":
        return "info", "started", f"host started with {data.get('plugins', 0)} plugins"
    return "info", name.partition(":")[2] or name, "stopped" if name == "manager:stopped" else name


def event_line(event: Event) -> EventLine:
    level, kind, text = _describe(event)
    return {
        "time": event.time,
        "event": event.name,
        "plugin": event.plugin.name if event.plugin else None,
        "level": level,
        "kind": kind,
        "text": _one_line(text),
    }


class RecentEvents:
    """The last ``size`` event lines (a manager listener: ``manager.on("*", recent)``)."""

    def __init__(self, size: int = 200) -> None:
        self.lines: deque[EventLine] = deque(maxlen=size)

    def __call__(self, event: Event) -> None:
        if event.name not in QUIET:
            self.lines.append(event_line(event))

    def last(self, count: int) -> list[EventLine]:
        return list(self.lines)[-count:] if count > 0 else []
