"""What ``autoweave-plugins run`` shows: a live table on a terminal, log lines otherwise."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from autoweave_plugins.events import Event

if TYPE_CHECKING:
    from autoweave_plugins.manager import PluginManager

__all__ = ["EventLogger", "live_status", "status_table"]

log = logging.getLogger("autoweave_plugins.run")


def _mib(value: Any) -> str:
    return f"{value / 2**20:.1f}" if isinstance(value, int | float) and value else "-"


def status_table(manager: PluginManager) -> Table:
    stats = manager.get_manager_stats()
    workers = stats["workers"]
    title = (
        f"autoweave-plugins: {len(manager.records)} plugins, {workers['live']} workers "
        f"({workers['spare']} spare), loads {stats['loader']['loads_ok']} ok / {stats['loader']['loads_failed']} failed"
    )
    table = Table(title=title, expand=True)
    for column in (
        "plugin",
        "version",
        "state",
        "workers",
        "RSS MiB",
        "calls",
        "errors",
        "restarts",
        "last error",
    ):
        table.add_column(column, overflow="fold")
    for name in sorted(manager.records):
        record = manager.records[name]
        rss = sum(w.measure_rss() or 0 for w in record.workers)
        last = record.errors[-1] if record.errors else None
        table.add_row(
            name,
            record.plugin.manifest.version,
            record.state.value,
            str(len(record.workers)),
            _mib(rss),
            str(record.access_count),
            str(len(record.errors)),
            str(record.restarts),
            f"{last.type}: {last.message[:80]}" if last else "",
        )
    return table


async def live_status(manager: PluginManager, console: Console) -> None:
    """Redraw the table twice a second until cancelled."""
    with Live(
        status_table(manager), console=console, refresh_per_second=2, transient=False
    ) as live:
        while True:
            await asyncio.sleep(0.5)
            live.update(status_table(manager))


class EventLogger:
    """Logs every manager event as one line (the non-terminal view)."""

    def __call__(self, event: Event) -> None:
        plugin = event.plugin.name if event.plugin else "-"
        details = " ".join(f"{k}={v}" for k, v in event.data.items())
        level = logging.WARNING if event.name in ("plugin:error", "plugin:failed") else logging.INFO
        log.log(level, "%s %s %s", event.name, plugin, details)
