"""What a running host is doing, as data: the live view, ``status`` and ``status --json``
all show this one snapshot.

``host_status`` reads the manager once and returns a ``HostStatus``, a stable JSON shape
(documented in README, "status --json"): a row per plugin (state, version, workers, RSS, calls,
errors, restarts, last error), a row per rejected folder (state ``invalid``, first error), and
the manager's stats. ``EventLogger`` is the view where there is no terminal: one log line per
event.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict

from autoweave_plugins.eventlog import event_line
from autoweave_plugins.events import Event
from autoweave_plugins.stats import ManagerStats

if TYPE_CHECKING:
    from autoweave_plugins.manager import PluginManager
    from autoweave_plugins.registry import PluginRecord

__all__ = ["STATUS_VERSION", "EventLogger", "HostStatus", "PluginRow", "RejectedRow", "host_status"]

log = logging.getLogger("autoweave_plugins.run")

STATUS_VERSION = 1
"""Bumped only when a field of ``HostStatus`` changes meaning or goes away."""


class PluginRow(TypedDict):
    name: str
    version: str
    state: str
    """discovered, queued, loading, active, idle, dormant or failed."""
    workers: int
    rss_bytes: int | None
    """Summed over its workers, measured by the host; None without a live worker."""
    calls: int
    errors: int
    restarts: int
    last_error: str | None
    """One line: "[context: ]Type: message"; cleared when a new version is adopted."""
    folder: str


class RejectedRow(TypedDict):
    folder: str
    name: str | None
    """The name its manifest declares, when it could be read."""
    state: Literal["invalid"]
    error: str
    """The first problem found (``validate`` lists all of them)."""


class HostInfoRow(TypedDict):
    directory: str
    pid: int


class HostStatus(TypedDict):
    version: int
    host: HostInfoRow
    plugins: list[PluginRow]
    rejected: list[RejectedRow]
    stats: ManagerStats
    jobs: NotRequired[dict[str, Any]]
    """The Redis job queue link and its health, when ``run --jobs`` joined one."""
    hotplug: NotRequired[dict[str, Any]]
    """The ``aw:hotplug`` link and its health, when ``run --usb redis://...`` reads it."""


def _last_error(record: PluginRecord) -> str | None:
    last = record.last_error
    if last is None:
        return None
    text = f"{last.type}: {' '.join(last.message.split())}"
    return f"{last.context}: {text}" if last.context else text


def _row(record: PluginRecord) -> PluginRow:
    measured = [w.measure_rss() for w in record.workers if w.alive]
    known = [rss for rss in measured if rss is not None]
    return {
        "name": record.name,
        "version": record.version,
        "state": record.state.value,
        "workers": len(record.assignments),
        "rss_bytes": sum(known) if known else None,
        "calls": record.access_count,
        "errors": record.error_count,
        "restarts": record.restarts,
        "last_error": _last_error(record),
        "folder": record.plugin.folder,
    }


def host_status(manager: PluginManager) -> HostStatus:
    """One snapshot of the manager (plugins by name, rejected folders by path)."""
    records = manager.records
    rejected = sorted(records.rejected.values(), key=lambda r: r.folder)
    return {
        "version": STATUS_VERSION,
        "host": {
            "directory": os.path.realpath(manager.config.plugin_directory),
            "pid": os.getpid(),
        },
        "plugins": [_row(records[name]) for name in sorted(records)],
        "rejected": [
            {"folder": r.folder, "name": r.name, "state": "invalid", "error": r.error}
            for r in rejected
        ],
        "stats": manager.get_manager_stats(),
    }


class EventLogger:
    """Logs every manager event as one line (the view where there is no terminal)."""

    def __call__(self, event: Event) -> None:
        line = event_line(event)
        level = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
        log.log(level[line["level"]], "%s %s: %s", event.name, line["plugin"] or "-", line["text"])
