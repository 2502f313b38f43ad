"""The live view, rendered into fixed-size consoles and a real terminal emulator (pyte)."""

from __future__ import annotations

import asyncio
import io
import logging
import time

import pyte
import pytest
from rich.console import Console

from autoweave_plugins.eventlog import EventLine
from autoweave_plugins.liveview import COLUMNS, live_view, log_above, render
from autoweave_plugins.status import HostStatus, PluginRow

LONG_ERROR = (
    "reload failed; 1.0.0 still serving: EntryError: plugin 'alpha': SyntaxError: invalid "
    "syntax (main.py, line 3)\n" + "Traceback line that goes on and on " * 20
)


def plugin_row(name: str, **fields: object) -> PluginRow:
    row: PluginRow = {
        "name": name,
        "version": "1.0.0",
        "state": "idle",
        "workers": 1,
        "rss_bytes": 30 << 20,
        "calls": 12345,
        "errors": 2,
        "restarts": 1,
        "last_error": None,
        "folder": f"/plugins/{name}",
    }
    row.update(fields)  # type: ignore[typeddict-item]
    return row


def status(plugins: int = 5) -> HostStatus:
    rows = [plugin_row(f"plugin-number-{i}") for i in range(plugins)]
    rows[0]["last_error"] = LONG_ERROR
    rows[1]["state"] = "failed"
    return {
        "version": 1,
        "host": {"directory": "/plugins", "pid": 1},
        "plugins": rows,
        "rejected": [
            {
                "folder": "/plugins/broken",
                "name": "broken",
                "state": "invalid",
                "error": "$.version: is required",
            }
        ],
        "stats": {
            "plugins": {},
            "workers": {
                "live": 3,
                "spare": 1,
                "assigned": 2,
                "busy": 0,
                "created": 3,
                "spawn_failures": 0,
                "terminated": {},
                "start_method": {"requested": "template", "active": "template"},
            },
            "loader": {
                "queued": 0,
                "loading": 0,
                "loads_ok": 4,
                "loads_failed": 1,
                "load_time_p50_ms": None,
                "load_time_p95_ms": None,
            },
            "cache": {"hits": 0, "misses": 0, "size": 0, "evictions": 0},
            "environments": {
                "preparing": 0,
                "in_use": 0,
                "hits": 0,
                "resolutions": 0,
                "builds": 0,
                "failures": 0,
                "uv_runs": 0,
                "pruned": 0,
            },
        },
    }


def events(count: int) -> list[EventLine]:
    return [
        {
            "time": time.time(),
            "event": "plugin:reloaded",
            "plugin": "plugin-number-0",
            "level": "info",
            "kind": "reloaded",
            "text": f"reloaded 1.0.{i} → 1.0.{i + 1}: main.py, helpers/util.py",
        }
        for i in range(count)
    ]


def rendered(width: int, height: int, plugins: int = 5, event_count: int = 8) -> list[str]:
    output = io.StringIO()
    console = Console(
        file=output, width=width, height=height, color_system=None, legacy_windows=False
    )
    console.print(render(status(plugins), events(event_count), width, height))
    return output.getvalue().rstrip("\n").split("\n")


@pytest.mark.parametrize(("width", "height"), [(80, 24), (200, 50)])
def test_fits_the_terminal_with_one_line_per_row(width: int, height: int) -> None:
    lines = rendered(width, height)
    assert len(lines) <= height - 1
    assert all(len(line) <= width for line in lines)
    for i in range(5):  # each row on exactly one line: nothing wrapped onto the next
        assert sum(line.startswith(f"plugin-number-{i} ") for line in lines) == 1
    header = next(line for line in lines if line.startswith("plugin "))
    assert "state" in header and "last error" in header
    error_line = next(line for line in lines if line.startswith("plugin-number-0 "))
    assert "reload failed; 1.0.0 still serving" in error_line
    assert "Traceback" not in "".join(lines[lines.index(error_line) + 1 :])
    invalid = next(line for line in lines if line.startswith("broken"))
    assert "invalid" in invalid and "$.version: is required" in invalid
    assert "recent events" in lines and any("1.0.7 → 1.0.8" in line for line in lines)


def test_full_headers_when_wide_and_abbreviated_columns_dropped_by_priority_when_narrow() -> None:
    wide = rendered(200, 50)
    assert any(
        all(h in line for h in ("version", "workers", "RSS MiB", "restarts")) for line in wide
    )
    by_header = {h: c for c in COLUMNS for h in (c.header, c.short)}
    for width in (120, 100, 80, 60, 48):
        narrow = rendered(width, 24)
        header = next(line for line in narrow if line.startswith("plugin "))
        cells = header.replace("last error", "last_error").replace("RSS MiB", "RSS_MiB").split()
        shown = {by_header[c.replace("_", " ")].key for c in cells}
        priorities = sorted(c.priority for c in COLUMNS if c.key in shown)
        assert priorities == list(range(len(shown)))  # the least important went first
        assert {"name", "state", "last_error"} <= shown
        assert all(len(line) <= width for line in narrow)
    assert len(shown) < len(COLUMNS)


def test_many_plugins_leave_room_for_events_and_say_how_many_more() -> None:
    lines = rendered(80, 24, plugins=40)
    assert len(lines) <= 23
    assert any("more (autoweave-plugins status lists all)" in line for line in lines)
    assert "recent events" in lines
    assert sum("reloaded 1.0." in line for line in lines) >= 3


def screen_of(output: str, width: int = 80, height: int = 24) -> list[str]:
    screen = pyte.Screen(width, height)
    stream = pyte.Stream(screen)
    stream.feed(output.replace("\r\n", "\n").replace("\n", "\r\n"))  # as a tty's onlcr does
    return [line.rstrip() for line in screen.display]


async def test_logs_scroll_above_a_live_view_that_never_stacks() -> None:
    output = io.StringIO()
    console = Console(
        file=output,
        width=80,
        height=24,
        force_terminal=True,
        color_system=None,
        legacy_windows=False,
    )
    logger = logging.getLogger("autoweave_plugins.test_live")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        log_above(console, logging.INFO)
        snapshot = status(4)
        recent = events(3)
        view = asyncio.ensure_future(
            live_view(console, lambda: snapshot, lambda: recent, interval=0.01)
        )
        for i in range(30):
            logger.info("plugin log line %d", i)
            logging.getLogger("watchfiles.main").warning("a third-party line %d", i)
            await asyncio.sleep(0.005)
        view.cancel()
        await asyncio.gather(view, return_exceptions=True)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    screen = screen_of(output.getvalue())
    titles = [i for i, line in enumerate(screen) if line.startswith("autoweave-plugins:")]
    assert len(titles) == 1  # one frame, not a stack of partial tables
    table = screen[titles[0] :]
    assert not any("log line" in line for line in table)  # nothing was written into it
    above = screen[: titles[0]]
    logged = [line for line in above if "plugin log line" in line]
    assert logged and "plugin log line 29" in logged[-1]  # the latest stayed, in order
    numbers = [int(line.rsplit(" ", 1)[1]) for line in logged]
    assert numbers == sorted(numbers)
    assert all(len(line) <= 80 for line in screen)
