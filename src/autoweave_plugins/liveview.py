"""The live view of ``autoweave-plugins run`` on a terminal: a table of plugins and a pane of
recent events, fitted to the terminal, with logs scrolling above it.

Fitting is done here, not left to rich: every line is built to the terminal's width, so no
cell ever wraps. Columns are dropped by priority as the terminal narrows (restarts, RSS,
workers, errors, calls, version, in that order), headers are abbreviated first, and errors are
cut to one line. Rows beyond the terminal's height give way to a "… N more" line; the events
pane keeps a few lines whatever happens.

Logs go through a ``RichHandler`` on the same console, which rich prints above the live region
(its own way of sharing the screen); nothing else may write to the terminal while it is live.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.cells import cell_len, set_cell_size
from rich.console import Console, Group
from rich.live import Live
from rich.logging import RichHandler
from rich.text import Text

from autoweave_plugins.eventlog import EventLine
from autoweave_plugins.status import HostStatus

__all__ = ["COLUMNS", "live_view", "log_above", "render"]

GAP = 1
ERROR_ROOM = 36
"""Cells the last error gets before any other column than the name and state."""
MIN_EVENTS = 3
STATE_STYLE = {
    "active": "green",
    "idle": "green",
    "loading": "cyan",
    "queued": "cyan",
    "failed": "bold red",
    "invalid": "bold red",
    "dormant": "dim",
    "discovered": "dim",
}
LEVEL_STYLE = {"info": "", "warning": "yellow", "error": "red"}


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    header: str
    short: str
    right: bool
    minimum: int
    maximum: int
    priority: int
    """Lower stays longer; the last error (flexible) takes what is left."""


COLUMNS = (
    Column("name", "plugin", "plugin", False, 8, 28, 0),
    Column("state", "state", "state", False, 7, 10, 1),
    Column("version", "version", "ver", False, 5, 12, 6),
    Column("workers", "workers", "wk", True, 2, 4, 4),
    Column("rss", "RSS MiB", "RSS", True, 3, 7, 7),
    Column("calls", "calls", "calls", True, 3, 8, 3),
    Column("errors", "errors", "err", True, 3, 6, 5),
    Column("restarts", "restarts", "rst", True, 3, 8, 8),
    Column("last_error", "last error", "last error", False, 10, 10_000, 2),
)


def _fit(text: str, width: int) -> str:
    """``text`` on one line, in exactly ``width`` cells, cut with an ellipsis if too long."""
    if width <= 0:
        return ""
    text = " ".join(text.split()) if "\n" in text or "\t" in text or "\r" in text else text
    if cell_len(text) > width:
        return set_cell_size(text, width - 1) + "…"
    return set_cell_size(text, width)


def _cells(status: HostStatus) -> list[dict[str, str]]:
    rows = []
    for p in status["plugins"]:
        rss = p["rss_bytes"]
        rows.append(
            {
                "name": p["name"],
                "state": p["state"],
                "version": p["version"],
                "workers": str(p["workers"]),
                "rss": f"{rss / 2**20:.1f}" if rss else "-",
                "calls": str(p["calls"]),
                "errors": str(p["errors"]),
                "restarts": str(p["restarts"]),
                "last_error": p["last_error"] or "",
            }
        )
    for r in status["rejected"]:
        rows.append(
            {
                "name": r["name"] or r["folder"].rstrip("/").rpartition("/")[2],
                "state": "invalid",
                "version": "",
                "workers": "",
                "rss": "",
                "calls": "",
                "errors": "",
                "restarts": "",
                "last_error": r["error"],
            }
        )
    return rows


def _layout(rows: list[dict[str, str]], width: int) -> list[tuple[Column, int, str]]:
    """The columns that fit ``width``: (column, its width, its header). Errors come first:
    other columns are abbreviated, then dropped, until the last error has ``ERROR_ROOM``
    cells (or all it needs); only if that cannot be had does it settle for its minimum."""
    needed = max([0, *(cell_len(r["last_error"]) for r in rows)])
    for room in (min(ERROR_ROOM, needed), COLUMNS[-1].minimum):
        found = _try_layout(rows, width, max(room, COLUMNS[-1].minimum))
        if found is not None:
            return found
    name = COLUMNS[0]
    return [(name, max(1, width), name.header)]


def _try_layout(
    rows: list[dict[str, str]], width: int, room: int
) -> list[tuple[Column, int, str]] | None:
    for short in (False, True):
        columns = sorted(COLUMNS, key=lambda c: c.priority)
        while columns:
            sized = []
            for column in columns:
                header = column.short if short else column.header
                natural = max([column.minimum, *(cell_len(r[column.key]) for r in rows)])
                size = max(cell_len(header), min(column.maximum, natural))  # headers stay whole
                sized.append((column, size, header))
            fixed = [(c, w, h) for c, w, h in sized if c.key != "last_error"]
            used = sum(w for _, w, _ in fixed) + GAP * (len(sized) - 1)
            flexible = next(s for s in sized if s[0].key == "last_error")
            spare = width - used
            if spare >= room:
                return _ordered([*fixed, (flexible[0], spare, flexible[2])])
            if not short and len(columns) == len(COLUMNS):
                break  # abbreviate the headers before dropping anything
            if columns[-1].key == "last_error":
                break  # never dropped here: the caller asks again for less room
            columns = columns[:-1]
    return None


def _ordered(sized: list[tuple[Column, int, str]]) -> list[tuple[Column, int, str]]:
    order = {c.key: i for i, c in enumerate(COLUMNS)}
    return sorted(sized, key=lambda s: order[s[0].key])


def _line(cells: Sequence[tuple[str, int, bool]], style: Callable[[int], str]) -> Text:
    line = Text(no_wrap=True, overflow="ellipsis")
    for index, (text, width, right) in enumerate(cells):
        if index:
            line.append(" " * GAP)
        fitted = _fit(text, width)
        if right:
            fitted = _fit(text.rjust(width), width)
        line.append(fitted, style=style(index))
    return line


def _styler(index: int, style: str) -> Callable[[int], str]:
    return lambda i: style if i == index else ""


def render(status: HostStatus, events: Sequence[EventLine], width: int, height: int) -> Group:
    """The view for a ``width`` by ``height`` terminal: never wider, never taller than
    ``height - 1`` lines (the last line stays free so that the terminal never scrolls)."""
    width = max(20, width)
    budget = max(4, height - 1)
    stats = status["stats"]
    workers, loader = stats["workers"], stats["loader"]
    invalid = len(status["rejected"])
    title = (
        f"autoweave-plugins: {len(status['plugins'])} plugins"
        + (f" ({invalid} invalid)" if invalid else "")
        + f", {workers['live']} workers ({workers['spare']} spare), "
        f"loads {loader['loads_ok']} ok / {loader['loads_failed']} failed"
    )
    lines: list[Text] = [Text(_fit(title, width).rstrip(), style="bold", no_wrap=True)]
    rows = _cells(status)
    layout = _layout(rows, width)
    header = [(h, w, c.right) for c, w, h in layout]
    lines.append(_line(header, lambda _: "bold"))
    remaining = budget - len(lines)
    wanted = min(len(events), max(MIN_EVENTS, remaining - len(rows) - 1))
    events_room = max(0, min(wanted, remaining - 3))  # the table keeps a row and its "more"
    table_room = remaining - (events_room + 1 if events_room else 0)
    shown = rows if len(rows) <= table_room else rows[: max(0, table_room - 1)]
    state_index = next((i for i, (c, _, _) in enumerate(layout) if c.key == "state"), -1)
    for row in shown:
        cells = [(row[c.key], w, c.right) for c, w, _ in layout]
        lines.append(_line(cells, _styler(state_index, STATE_STYLE.get(row["state"], ""))))
    if len(shown) < len(rows):
        more = f"… and {len(rows) - len(shown)} more (autoweave-plugins status lists all)"
        lines.append(Text(_fit(more, width).rstrip(), style="dim", no_wrap=True))
    room = budget - len(lines) - 1
    if events and room > 0:
        lines.append(Text(_fit("recent events", width).rstrip(), style="bold", no_wrap=True))
        for event in list(events)[-room:]:
            stamp = time.strftime("%H:%M:%S", time.localtime(event["time"]))
            text = f"{stamp} {event['plugin'] or '-'}: {event['text']}"
            lines.append(
                Text(_fit(text, width).rstrip(), style=LEVEL_STYLE[event["level"]], no_wrap=True)
            )
    return Group(*lines)


def log_above(console: Console, level: int) -> None:
    """Send every log record to ``console`` through rich, which prints them above the live
    region; the handlers that wrote to the terminal directly are removed."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = RichHandler(
        console=console, show_path=False, markup=False, rich_tracebacks=False, log_time_format="%X"
    )
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)


async def live_view(
    console: Console,
    snapshot: Callable[[], HostStatus],
    events: Callable[[], Sequence[EventLine]],
    interval: float = 0.5,
) -> None:
    """Redraw the view every ``interval`` seconds until cancelled."""

    def view() -> Group:
        width, height = console.size
        return render(snapshot(), events(), width, height)

    with Live(
        view(),
        console=console,
        auto_refresh=False,
        transient=False,
        vertical_overflow="crop",
        redirect_stdout=True,
        redirect_stderr=True,
    ) as live:
        while True:
            await asyncio.sleep(interval)
            live.update(view(), refresh=True)
